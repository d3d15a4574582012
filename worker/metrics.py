"""The worker's Prometheus metrics, every one defined here, and its /metrics endpoint.

Only what the worker does is counted (tasks, rounds, steps, refusals), never anything read from
its data, such as rows: that is what a holder's min_rows hides.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from sdk.prometheus import serve_metrics

REGISTRY = CollectorRegistry()

TASKS = Counter("deltaflow_worker_tasks", "tasks loaded to run, by kind (analytics, learning)",
                ["kind"], registry=REGISTRY)
ROUNDS = Counter("deltaflow_worker_rounds_trained", "learning rounds trained and sent",
                 registry=REGISTRY)
STEPS = Counter("deltaflow_worker_steps_computed", "analytics steps computed and sent",
                registry=REGISTRY)
REFUSALS = Counter("deltaflow_worker_refusals",
                   "tasks refused, by reason (policy, signature, rerun, weights)", ["reason"],
                   registry=REGISTRY)
FAILURES = Counter("deltaflow_worker_failures", "assignments that failed, by phase", ["phase"],
                   registry=REGISTRY)


def serve(listen: str) -> str:
    """Serves the metrics on `listen` ([HOST:]PORT), in a daemon thread; their URL."""
    return serve_metrics(listen, REGISTRY)
