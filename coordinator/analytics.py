"""Runs an analytics task: workers join, then one compute phase per stage of its graph.

Workers send the additive parts of each reduction over their own rows; the coordinator adds
them up and feeds the aggregates that later stages need back to the same workers. Under secure
aggregation (the default) each stage's parts are summed by the protocol instead, so the
coordinator sees the layout of each worker's parts (labels and dtypes) and only the sum of their
values. If a worker drops after the first stage, the stages run again over the survivors, so
that every aggregate of the result covers the same rows; under secure aggregation the task fails
instead, as two sums of a stage over different workers would reveal the difference. Under
differential privacy the workers add the noise themselves; the coordinator only says in the
task's log what the task spends and how much noise each output carries.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from coordinator.metrics import ROUND_SECONDS
from coordinator.registry import WorkerRegistry
from coordinator.rounds import Round, RoundFailed, select_workers
from coordinator.secure import SecureRound, describe_mode
from coordinator.store import Store
from sdk import values
from sdk.analytics import secure
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Aggregation, Parts, Plan
from sdk.privacy import DifferentialPrivacy
from sdk.privacy.accounting import fewest_honest
from sdk.privacy.analytics import PrivacyPlan
from sdk.proto import task_pb2, values_pb2
from sdk.secagg import Rule


async def run_analytics(
    registry: WorkerRegistry, store: Store, task_id: int, spec: task_pb2.TaskSpec,
    log: Callable[[str], None], resumed: bool = False,
) -> tuple[Any, list[str]]:
    """The task's result, and the workers whose rows it covers: those whose inputs were summed
    in every step (a worker may leave after its input was summed, and still be covered).

    A task `resumed` after a coordinator restart runs again from the start, over the workers
    that joined it before (all of them, or it fails): a worker's input is never summed over
    two different sets of workers."""
    plan = Plan(*Graph.from_proto(spec.analytics))
    privacy = await asyncio.to_thread(_privacy_plan, spec, plan)  # seconds: not in the loop
    rules = spec.rules
    files = [d.file for d in spec.datasets]
    previous = store.task_workers(task_id) if resumed else []
    if resumed:
        over = f" over the workers it ran over ({', '.join(previous)})" if previous else ""
        log(f"the coordinator restarted while the task was running: it runs again from the "
            f"start{over}")
    workers = await select_workers(registry, rules, files, log, previous)
    if len(workers) < len(previous):
        missing = sorted(set(previous) - {worker.name for worker in workers})
        raise RoundFailed(
            f"{', '.join(missing)} did not come back within connection_timeout="
            f"{rules.connection_timeout:g}s of the coordinator's restart; the task runs again "
            "only over the workers it ran over, since a worker's input is never summed over two "
            "different sets of workers; submit it again")
    round_ = Round(registry, task_id, 1, workers, rules.min_clients, log)
    log(f"round 1: selected {len(workers)} worker(s): {round_.names}")
    log(describe_mode(spec))
    for line in _privacy_lines(spec, privacy, len(workers)):
        log(line)
    await round_.phase("join", rules.connection_timeout)
    store.set_workers(task_id, sorted(worker.name for worker in round_.workers))
    log(f"round 1: {len(round_.workers)} worker(s) joined; {plan.stage_count} step(s) to compute")
    while True:
        started, started_with = time.perf_counter(), len(round_.workers)
        aggregation = Aggregation(plan)
        first_summed: list[str] = []
        for stage in range(plan.stage_count):
            inputs = aggregation.inputs_for(stage)
            if spec.secure_aggregation:
                parts, summed = await _secure_stage(round_, plan, rules, spec.precision, stage,
                                                    inputs, Rule.of(spec))
                first_summed = first_summed or summed
                _check_same_workers(first_summed, summed, stage)
            else:
                answers = await round_.phase("compute", rules.wait_timeout, stage, inputs)
                parts, summed = [_decode_parts(data) for data in answers.values()], list(answers)
                if len(round_.workers) < started_with and stage > 0:
                    break  # someone dropped after contributing to an earlier stage
            aggregation.add_stage(stage, parts)
            log(f"round {round_.number}, step {stage + 1}/{plan.stage_count}: "
                f"aggregated {len(summed)} worker(s)")
        else:
            ROUND_SECONDS.labels("analytics").observe(time.perf_counter() - started)
            return aggregation.result(), sorted(summed)
        ROUND_SECONDS.labels("analytics").observe(time.perf_counter() - started)
        round_.number += 1
        log(f"round {round_.number}: computing again over the {len(round_.workers)} remaining "
            f"worker(s) ({round_.names}) so that every aggregate covers the same rows")


def _privacy_plan(spec: task_pb2.TaskSpec, plan: Plan) -> PrivacyPlan | None:
    privacy = DifferentialPrivacy.from_spec(spec)
    return None if privacy is None else PrivacyPlan(plan, privacy, spec.precision)


def _privacy_lines(spec: task_pb2.TaskSpec, dp: PrivacyPlan | None, selected: int) -> list[str]:
    """The task log's lines on what protects the rows: min_rows, or differential privacy's
    cost, who adds the noise, how much of it a sum is sure to hold, and each output's noise."""
    if dp is None:
        return ["sets of fewer than a holder's min_rows rows (what a filter kept, a group, a "
                "column's values in one) count as empty there, so that no answer tells them "
                "from none"]
    cost = dp.cost()
    lines = [f"differential privacy: the task spends epsilon {dp.epsilon():.4g} at delta "
             f"{dp.privacy.delta:g} (zCDP rho {cost.rho:.4g}, xi {cost.xi:.4g}) on "
             f"{len(dp.noise)} released parts, noise multiplier {dp.noise_multiplier:.4g}; no "
             "amplification by sampling is claimed",
             "differential privacy: no set is suppressed by min_rows, since the noise protects "
             "every set and suppression would break the sensitivity (one row could turn a "
             "suppressed group into a released one)"]
    if spec.secure_aggregation:
        rule = Rule.of(spec)
        honest = fewest_honest(rule, selected)
        spread = (selected / honest) ** 0.5
        lines.append(
            f"differential privacy: each worker's daemon adds 1/{honest} of the noise in fixed "
            f"point before masking; every sum holds at least {honest} workers' shares (the "
            f"threshold, {rule.describe(selected)}), so the noise is whole while {honest} of the "
            "summed workers are honest (colluding workers can subtract their own shares); "
            f"with all {selected} summed it is {spread:.3g} times the calibrated std")
    else:
        spread = selected ** 0.5
        lines.append(
            "differential privacy without secure aggregation: each worker adds all of the noise "
            "to its own parts, which the coordinator sees; it costs accuracy: the sum of "
            f"{selected} carries {spread:.3g} times the calibrated std")
    return lines + [f"noise of {line}" for line in dp.describe(spread)]


def _check_same_workers(first: list[str], summed: list[str], stage: int) -> None:
    """Under secure aggregation a later step must sum the workers that step 1 summed. Steps are
    not computed again over fewer workers: the difference between two sums of the same step
    over different workers would be the aggregates of those left out."""
    gone = sorted(set(first) - set(summed))
    if gone:
        raise RoundFailed(
            f"worker(s) {', '.join(gone)} dropped after step 1, so step {stage + 1} does not "
            "cover the same rows; under secure aggregation the steps are not computed again "
            "over the others (the difference between two sums would reveal what the dropped "
            "worker sent): submit the task again")


async def _secure_stage(round_: Round, plan: Plan, rules: task_pb2.RoundRules, precision: int,
                        stage: int, inputs: Any,
                        rule: Rule) -> tuple[list[Parts], list[str]]:
    """The stage's parts summed by secure aggregation: workers compute their parts and answer
    with their keys and the layout of their parts, then mask their parts laid out on the union
    of layouts. Returns the summed parts and the workers they cover."""
    protocol = SecureRound(round_, rules, rule, stage)
    answers = await round_.phase("compute", rules.wait_timeout, stage, inputs,
                                 secagg=protocol.opening())
    responses = protocol.parse(answers, "compute")
    layouts = _usable_layouts(protocol, responses, plan.reductions_in(stage))
    round_.check("compute")
    try:
        union = secure.union(list(layouts.values()))
    except (TypeError, ValueError) as error:
        raise RoundFailed(
            f"the workers' parts of step {stage + 1} cannot be summed: {error}") from None
    protocol.start({name: responses[name] for name in layouts}, secure.vector_length(union))
    peers = await protocol.exchange_shares()
    requests = protocol.masked_requests(peers, inputs, None, layout=values.encode(union))
    answers = await round_.phase("secagg_masked", rules.wait_timeout, stage, secagg=requests)
    for name, data in answers.items():
        if len(data) % 8:
            protocol.drop(name, "secagg_masked", f"it sent {len(data)} bytes, not whole words")
        else:
            words = np.frombuffer(data, dtype="<u8")
            protocol.add_masked(name, words.size, [words])
    total = await protocol.unmask()
    summed = secure.decode(total, union, precision)
    summed_union = secure.union([layouts[name] for name in protocol.summed])
    return [secure.restrict(summed, summed_union)], protocol.summed


def _usable_layouts(protocol: SecureRound, responses: dict[str, Any],
                    nodes: list[int]) -> dict[str, Parts]:
    """The layouts the workers sent, by worker; one that cannot be used, or that names other
    parts than most workers' do, drops its worker."""
    layouts = {}
    for name, response in responses.items():
        try:
            layout = values.decode(response.layout)
            secure.check_layout(layout, nodes)
            layouts[name] = layout
        except Exception as error:  # noqa: BLE001 - whatever a worker sends, the round goes on
            protocol.drop(name, "compute", f"its layout cannot be used: {error}")
    shapes = Counter(_part_names(layout) for layout in layouts.values())
    for name, layout in list(layouts.items()):
        if _part_names(layout) != shapes.most_common(1)[0][0]:
            protocol.drop(name, "compute", "its layout names other parts than the others'")
            del layouts[name]
    return layouts


def _part_names(layout: Parts) -> tuple:
    return tuple((node, tuple(sorted(named))) for node, named in sorted(layout.items()))


def _decode_parts(data: bytes) -> Parts:
    message = values_pb2.Value()
    try:
        message.ParseFromString(data)
        parts = values.decode(message)
    except Exception as error:  # noqa: BLE001 - a worker's bad bytes fail the task clearly
        raise RoundFailed(f"a worker sent parts that cannot be read: {error}") from None
    return {int(node): named for node, named in parts.items()}
