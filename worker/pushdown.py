"""Steps of an analytics graph pushed down to a SQL database as aggregate queries."""

from __future__ import annotations

from typing import Any

from sdk.analytics.plan import Parts, Plan
from worker.sources import SqlTable


def pushed_parts(plan: Plan, stage: int, argument: str, table: SqlTable, inputs: dict[int, Any],
                 min_rows: int) -> Parts | None:
    return None
