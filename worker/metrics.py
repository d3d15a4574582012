"""The worker's Prometheus metrics, every one defined here, and its /metrics endpoint.

Only what the worker does is counted (tasks, rounds, steps, refusals, its engine's tasks, its
GPUs' memory), never anything read from its data, such as rows: that is what a holder's
min_rows hides. Counters are updated where things happen, in the daemon; what mirrors the
engine's state is read at scrape time (`EngineCollector`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sdk.prometheus import serve_metrics
from worker.engine import ENDINGS, EngineSession

REGISTRY = CollectorRegistry()

TASKS = Counter("deltaflow_worker_tasks", "tasks loaded to run, by kind (analytics, learning)",
                ["kind"], registry=REGISTRY)
ROUNDS = Counter("deltaflow_worker_rounds_trained", "learning rounds trained and sent",
                 registry=REGISTRY)
STEPS = Counter("deltaflow_worker_steps_computed", "analytics steps computed and sent",
                registry=REGISTRY)
REFUSALS = Counter("deltaflow_worker_refusals",
                   "tasks refused, by reason (policy, signature, rerun, weights, threshold)", ["reason"],
                   registry=REGISTRY)
FAILURES = Counter("deltaflow_worker_failures", "assignments that failed, by phase", ["phase"],
                   registry=REGISTRY)
OUTCOMES = ("served", "failed", "refused")
ENDED = Counter("deltaflow_worker_tasks_ended",
                "tasks the coordinator released (they ended, or left this worker out), by "
                "outcome here: served (every phase asked of it answered), failed (one failed "
                "here), refused (this worker refused one)", ["outcome"], registry=REGISTRY)
for _outcome in OUTCOMES:
    ENDED.labels(_outcome)


class TaskOutcomes:
    """Each task this worker was asked to work on, counted once in `ENDED` when released, by
    the worst of its phases here. Used on the daemon's event loop only."""

    def __init__(self) -> None:
        self._worst: dict[int, str] = {}

    def answered(self, task_id: int, outcome: str = "served") -> None:
        """A phase of `task_id` was answered, with `outcome` (one of `OUTCOMES`)."""
        worst = self._worst.get(task_id, "served")
        self._worst[task_id] = max(worst, outcome, key=OUTCOMES.index)

    def released(self, task_id: int) -> None:
        outcome = self._worst.pop(task_id, None)
        if outcome is not None:
            ENDED.labels(outcome).inc()


class EngineCollector(Collector):
    """The engine's tasks and each GPU's memory, read at each scrape (no GPU: no samples)."""

    def __init__(self, engine: EngineSession) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        counts = self.engine.counts()
        yield GaugeMetricFamily("deltaflow_worker_engine_tasks_running",
                                "engine tasks (one subprocess each) open now: loading, "
                                "training or waiting for their next round", value=counts.running)
        yield CounterMetricFamily("deltaflow_worker_engine_tasks_started",
                                  "engine tasks opened", value=counts.started)
        ended = CounterMetricFamily("deltaflow_worker_engine_tasks_ended",
                                    "engine tasks ended, by how: closed (by the daemon, as "
                                    "their task ended), load_failed, died (in train)",
                                    labels=["outcome"])
        for ending in ENDINGS:
            ended.add_metric([ending], counts.ended.get(ending, 0))
        yield ended
        total = GaugeMetricFamily("deltaflow_worker_gpu_memory_total_bytes",
                                  "each GPU's memory, as NVML reports it",
                                  labels=["device", "model"])
        free = GaugeMetricFamily("deltaflow_worker_gpu_memory_free_bytes",
                                 "each GPU's free memory now, as NVML reports it",
                                 labels=["device", "model"])
        for gpu in self.engine.pool.inventory.devices():
            total.add_metric([gpu.device, gpu.name], gpu.total_bytes)
            free.add_metric([gpu.device, gpu.name], gpu.free_bytes)
        yield total
        yield free


def serve(listen: str, engine: EngineSession) -> str:
    """Serves the metrics, with `engine`'s, on `listen` ([HOST:]PORT), in a daemon thread;
    their URL."""
    REGISTRY.register(EngineCollector(engine))
    return serve_metrics(listen, REGISTRY)
