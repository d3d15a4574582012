"""Runs an analytics task: workers join, then one compute phase per stage of its graph.

Workers send the additive parts of each reduction over their own rows; the coordinator adds
them up and feeds the aggregates that later stages need back to the same workers. If a worker
drops after the first stage, the stages run again over the survivors, so that every aggregate
of the result covers the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordinator.registry import WorkerRegistry
from coordinator.rounds import Round, RoundFailed, select_workers
from sdk import values
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Aggregation, Parts, Plan
from sdk.proto import task_pb2, values_pb2


async def run_analytics(
    registry: WorkerRegistry, task_id: int, spec: task_pb2.TaskSpec, log: Callable[[str], None]
) -> Any:
    """The task's result, computed over the workers that stay to the end."""
    plan = Plan(*Graph.from_proto(spec.analytics))
    rules = spec.rules
    files = [d.file for d in spec.datasets]
    workers = await select_workers(registry, rules, files, log)
    round_ = Round(registry, task_id, 1, workers, rules.min_clients, log)
    log(f"round 1: selected {len(workers)} worker(s): {round_.names}")
    await round_.phase("join", rules.connection_timeout)
    log(f"round 1: {len(round_.workers)} worker(s) joined; {plan.stage_count} step(s) to compute")
    while True:
        started_with = len(round_.workers)
        aggregation = Aggregation(plan)
        for stage in range(plan.stage_count):
            answers = await round_.phase(
                "compute", rules.wait_timeout, stage, aggregation.inputs_for(stage)
            )
            if len(round_.workers) < started_with and stage > 0:
                break  # someone dropped after contributing to an earlier stage
            aggregation.add_stage(stage, [_decode_parts(data) for data in answers.values()])
            log(f"round {round_.number}, step {stage + 1}/{plan.stage_count}: "
                f"aggregated {len(answers)} worker(s)")
        else:
            return aggregation.result()
        round_.number += 1
        log(f"round {round_.number}: computing again over the {len(round_.workers)} remaining "
            f"worker(s) ({round_.names}) so that every aggregate covers the same rows")


def _decode_parts(data: bytes) -> Parts:
    message = values_pb2.Value()
    try:
        message.ParseFromString(data)
        parts = values.decode(message)
    except Exception as error:  # noqa: BLE001 - a worker's bad bytes fail the task clearly
        raise RoundFailed(f"a worker sent parts that cannot be read: {error}") from None
    return {int(node): named for node, named in parts.items()}
