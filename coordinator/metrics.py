"""The coordinator's Prometheus metrics, every one defined here, and its /metrics endpoint.

Counters and histograms are updated where things happen: the gate (`auth.Gate`) for every RPC,
the round engine for rounds, phases and drops. Gauges that mirror state (tasks by state, workers
connected) are read at scrape time, on the event loop that owns that state.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sdk.prometheus import serve_metrics
from sdk.proto import services_pb2 as pb

if TYPE_CHECKING:  # the registry's module imports the gate's, which imports this one
    from coordinator.registry import WorkerRegistry
    from coordinator.store import Store

REGISTRY = CollectorRegistry()
_LONG = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

RPCS = Counter("deltaflow_coordinator_rpcs", "RPCs handled, by method and status code",
               ["method", "code"], registry=REGISTRY)
RPC_SECONDS = Histogram("deltaflow_coordinator_rpc_seconds", "time to handle an RPC, by method",
                        ["method"], registry=REGISTRY, buckets=_LONG)
RECEIVED = Counter("deltaflow_coordinator_received_bytes",
                   "bytes of messages received, by method", ["method"], registry=REGISTRY)
SENT = Counter("deltaflow_coordinator_sent_bytes", "bytes of messages sent, by method",
               ["method"], registry=REGISTRY)
ROUND_SECONDS = Histogram("deltaflow_coordinator_round_seconds",
                          "rounds run and their duration, by task kind", ["kind"],
                          registry=REGISTRY, buckets=_LONG)
PHASE_SECONDS = Histogram("deltaflow_coordinator_phase_seconds",
                          "a round's phases (join, compute, train, secagg_*) and their duration",
                          ["phase"], registry=REGISTRY, buckets=_LONG)
DROPS = Counter("deltaflow_coordinator_worker_drops",
                "workers dropped from a round, by the phase they dropped in", ["phase"],
                registry=REGISTRY)


def rpc_handled(method: str, code: grpc.StatusCode, seconds: float) -> None:
    name = _method(method)
    RPCS.labels(name, code.name).inc()
    RPC_SECONDS.labels(name).observe(seconds)


def rpc_bytes(method: str, received: int = 0, sent: int = 0) -> None:
    """Counts one message's bytes (called for every message: the counters are looked up once
    per method, as a label lookup costs more than the count)."""
    if received:
        _counter(RECEIVED, method).inc(received)
    if sent:
        _counter(SENT, method).inc(sent)


@functools.cache
def _counter(counter: Counter, method: str) -> Counter:
    return counter.labels(_method(method))


def _method(method: str) -> str:
    """"/deltaflow.v1.TaskService/GetTask" -> "TaskService/GetTask"."""
    service, _, name = method.strip("/").partition("/")
    return f"{service.rpartition('.')[2]}/{name}"


class _State(Collector):
    """Tasks by state and workers connected, read on the event loop at each scrape."""

    def __init__(self, store: Store, workers: WorkerRegistry,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.workers, self.loop = store, workers, loop

    async def _read(self) -> tuple[dict[int, int], int]:
        return self.store.count_by_state(), len(self.workers.connected())

    def collect(self) -> Iterator[Metric]:
        counts, connected = asyncio.run_coroutine_threadsafe(self._read(), self.loop).result(10)
        tasks = GaugeMetricFamily("deltaflow_coordinator_tasks", "tasks by state",
                                  labels=["state"])
        for name, value in pb.TaskState.items()[1:]:
            tasks.add_metric([name.removeprefix("TASK_STATE_").lower()], counts.get(value, 0))
        yield tasks
        yield GaugeMetricFamily("deltaflow_coordinator_workers_connected",
                                "workers connected now", value=connected)


def serve(listen: str, store: Store, workers: WorkerRegistry) -> str:
    """Serves the metrics on `listen` ([HOST:]PORT), in a daemon thread; their URL. Call it on
    the event loop the store and the registry belong to."""
    REGISTRY.register(_State(store, workers, asyncio.get_running_loop()))
    return serve_metrics(listen, REGISTRY)
