"""A worker's data dir: which dataset files it holds, and reading one safely."""

from __future__ import annotations

import os
from pathlib import Path

from sdk.dataset import check_relative_name

class DatasetError(Exception):
    """A dataset that cannot be used here: the message says which and why."""


class DataDir:
    """The folder whose files this worker offers; no name may reach outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def names(self) -> list[str]:
        """Every regular file under the data dir, as a relative POSIX path: hidden ones, links
        that lead out of the data dir, and names a task could not give (control characters,
        over 255 bytes) are left out."""
        found = []
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            relative = Path(folder).relative_to(self.root)
            for file in sorted(files):
                name = (relative / file).as_posix()
                if not file.startswith(".") and self._acceptable(name):
                    found.append(name)
        return found

    def _acceptable(self, name: str) -> bool:
        try:
            check_relative_name(name)
        except ValueError:
            return False
        path = (self.root / name).resolve()
        return path.is_relative_to(self.root) and path.is_file()

    def resolve(self, name: str) -> Path:
        """The file a dataset name stands for, or DatasetError if it escapes or is missing."""
        try:
            check_relative_name(name)
        except ValueError as error:
            raise DatasetError(str(error)) from None
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise DatasetError(f"dataset {name!r} escapes the worker's data dir (through a link)")
        if not path.is_file():
            raise DatasetError(f"dataset {name!r} is not in this worker's data dir {self.root}")
        return path
