"""The user's settings file, `$XDG_CONFIG_HOME/deltaflow/config.toml` (by default
`~/.config/deltaflow/config.toml`): the last fallback for the coordinator's address and the kit.

    coordinator = "coord.example.org:6700"
    kit = "~/fed/users/alice"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

KEYS = ("coordinator", "kit")


def config_path() -> Path:
    """Where the settings file is, whether or not it exists."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "deltaflow" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, str]:
    """The file's settings ({} when there is no file); ValueError saying what to fix."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        settings = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}; fix that line") from None
    for key, value in settings.items():
        if key not in KEYS:
            raise ValueError(f"{path}: unknown key {key!r}; the keys are {', '.join(KEYS)}")
        if not isinstance(value, str) or not value:
            raise ValueError(f"{path}: {key} must be a non-empty string in quotes, "
                             f"like {key} = \"...\"")
    if "kit" in settings:
        settings["kit"] = str(Path(settings["kit"]).expanduser())
    return settings


def file_stamp(path: Path) -> tuple[int, int] | None:
    """A file's modification time (ns) and size, None while it cannot be read: what a daemon
    watching a file it was given (a policy, a revocation list) compares to see it changed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
