"""A learning task's progress, read from the coordinator's log lines ("round 3/5: mse=0.41
from 3 workers"), and the line that shows it on a terminal."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TextIO

_ROUND = re.compile(r"^round (\d+)/(\d+): (.*?)(?: from \d+ workers)?$")
_METRIC = re.compile(r"^\S+=\S+$")


@dataclass(frozen=True)
class RoundDone:
    number: int
    max_rounds: int
    metrics: str  # "mse=0.41 mae=0.3", or "" when the round did not validate


def parse_round(message: str) -> RoundDone | None:
    """The round a coordinator's log line reports as done; None for any other line."""
    found = _ROUND.match(message)
    if found is None:
        return None
    rest = found.group(3)
    metrics = rest if all(_METRIC.match(word) for word in rest.split()) else ""
    return RoundDone(int(found.group(1)), int(found.group(2)), metrics)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressLine:
    """Log lines on a terminal with the latest round drawn below them, redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started: float | None = None  # when the task's log began (unix seconds)
        self.latest = 0.0  # the time of its latest line
        self.last: RoundDone | None = None
        self.last_at = 0.0

    def show(self, line: str, time_: float, message: str) -> None:
        """Prints a log line above the progress line, and redraws it."""
        self.started = self.started if self.started is not None else time_
        self.latest = time_
        done = parse_round(message)
        if done is not None:
            self.last, self.last_at = done, time_
        self.out.write(f"\r\033[K{line}\n{self.render()}")
        self.out.flush()

    def render(self) -> str:
        """The progress line: round k of n, the last metrics, the time from the log's first
        line to its latest, and the time left at the pace of the rounds so far."""
        if self.last is None or self.started is None:
            return ""
        done = self.last
        per_round = (self.last_at - self.started) / done.number
        left = per_round * (done.max_rounds - done.number)
        parts = [f"round {done.number}/{done.max_rounds}", done.metrics,
                 f"elapsed {_duration(self.latest - self.started)}",
                 f"about {_duration(left)} left" if done.number < done.max_rounds else "done"]
        return "  ".join(part for part in parts if part)

    def close(self) -> None:
        """Leaves the progress line as the last line of the output."""
        if self.last is not None:
            self.out.write("\n")
            self.out.flush()
