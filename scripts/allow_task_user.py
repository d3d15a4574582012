"""Lets an unprivileged task user (`deltaflow worker --task-user`) run this Python and import
deltaflow: as root, gives others the right to traverse (not to list) every folder above the
interpreter, the virtualenv and the repository that lacks it, as on a machine where Python was
installed in root's home. Run by scripts/test.sh for the confinement tests; prints what it
changed."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path


def main() -> int:
    if os.geteuid() != 0:
        return 0
    repository = Path(__file__).resolve().parent.parent
    for place in (Path(sys.base_prefix), Path(sys.prefix), repository):
        for folder in [place.resolve(), *place.resolve().parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
                print(f"allow_task_user: others may now traverse {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
