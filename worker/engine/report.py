"""A group's report: ``<reports>/<group_name>.json`` and ``.md``."""

from __future__ import annotations

import json
import os
from datetime import datetime

from .group import TaskGroup


def write_reports(group: TaskGroup, directory: str | os.PathLike) -> tuple[str, str]:
    """Write the group's JSON and Markdown reports into ``directory``; return both paths."""
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, group.group_name)
    entries = {t.task_id: group.result[t.task_id] for t in group.tasks if t.task_id in group.result}
    counts = {"tasks": len(group.tasks), "finished": 0, "failed": 0}
    for entry in entries.values():
        counts["finished" if entry["status"] == "FINISHED" else "failed"] += 1
    document = {"group": group.group_name, "index": group.index, "workdir": group.workdir,
                **counts, "tasks": {str(key): value for key, value in entries.items()}}
    with open(base + ".json", "w") as handle:
        json.dump(_json_safe(document), handle, indent=2, default=repr)
    with open(base + ".md", "w") as handle:
        handle.write(_markdown(group.group_name, entries, counts))
    return base + ".json", base + ".md"


def _json_safe(value: object) -> object:
    """`value` with every dict key a string (JSON allows no other), recursively."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _markdown(name: str, entries: dict, counts: dict) -> str:
    lines = [f"# Group {name}", "",
             f"{counts['tasks']} tasks: {counts['finished']} finished, {counts['failed']} failed.",
             "",
             "| task | status | stage | device | started | load s | train s | result or error |",
             "|---|---|---|---|---|---|---|---|"]
    for task_id, entry in entries.items():
        if entry["status"] == "FINISHED":
            outcome = json.dumps(_json_safe(entry["data"]), default=repr)
        else:
            outcome = _headline(entry["message"])
        lines.append(" | ".join([
            f"| {task_id}", entry["status"], entry["stage"], str(entry["device"] or "-"),
            _clock(entry["started"]), _seconds(entry["load_seconds"]),
            _seconds(entry["train_seconds"]), _cell(outcome)]) + " |")
    return "\n".join(lines) + "\n"


def _headline(message: str) -> str:
    """The line that says what went wrong: a traceback's last, any other message's first."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _clock(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp).strftime("%H:%M:%S.%f")[:-3] if stamp else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _cell(text: str, width: int = 120) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."
