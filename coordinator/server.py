"""The coordinator daemon: one gRPC port with TaskService, WorkerService, health and reflection."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.registry import WorkerRegistry
from coordinator.store import Store
from coordinator.task_service import TaskService
from coordinator.tasks import TaskManager
from coordinator.worker_service import WorkerService, add_worker_service
from sdk.proto import services_pb2, services_pb2_grpc
from sdk.wire import SERVER_OPTIONS

log = logging.getLogger("deltaflow.coordinator")

SERVICE_NAMES = [
    services_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    services_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:6700", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--state-dir", type=Path, default=Path("deltaflow-state"),
                        help="where tasks, logs and results are kept (default %(default)s)")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0,
                        help="seconds between heartbeats on each worker channel (default %(default)s)")
    parser.add_argument("--heartbeat-timeout", type=float, default=4.0,
                        help="a worker silent this long is dropped (default %(default)s)")


async def serve(args: argparse.Namespace) -> None:
    args.state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(args.state_dir)
    registry = WorkerRegistry(args.heartbeat_interval, args.heartbeat_timeout)
    tasks = TaskManager(store, registry)
    tasks.recover()

    server = grpc.aio.server(options=SERVER_OPTIONS)
    services_pb2_grpc.add_TaskServiceServicer_to_server(TaskService(tasks), server)
    add_worker_service(WorkerService(registry, store), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        port = server.add_insecure_port(args.listen)
    except RuntimeError as error:
        raise SystemExit(f"cannot listen on {args.listen}: {error}") from None
    await server.start()
    for name in ["", *SERVICE_NAMES]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = args.listen.rpartition(":")[0]
    log.info("coordinator listening on %s:%d, state in %s", host, port, args.state_dir.resolve())
    print(f"deltaflow coordinator listening on {host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    watchdog = asyncio.create_task(registry.watch_heartbeats())
    await stop.wait()
    log.info("coordinator stopping")
    await health_servicer.enter_graceful_shutdown()
    watchdog.cancel()
    await tasks.shutdown()
    await server.stop(grace=1.0)
    store.close()
    log.info("coordinator stopped")
