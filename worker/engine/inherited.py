"""What a task process inherited from the warm template (see template.py).

The template imports this module last, so in a process forked from it ``TEMPLATE_PID`` is the
template's pid and ``MODULES`` the modules the template had imported; a process that imports it
itself (one not forked from a template) finds its own pid there.
"""

import os
import sys

TEMPLATE_PID = os.getpid()
MODULES = frozenset(sys.modules)


def from_template() -> bool:
    """Whether this process forked from a template."""
    return TEMPLATE_PID != os.getpid()


def imported_here() -> list[str]:
    """The modules this process imported itself, not inherited from a template."""
    return sorted(sys.modules.keys() - (MODULES if from_template() else frozenset()))
