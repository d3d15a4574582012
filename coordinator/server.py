"""The coordinator daemon: one gRPC port with TaskService, WorkerService, health and reflection.

With a kit it speaks mutual TLS only: every caller presents a certificate of the federation's CA,
and `auth.Gate`, the server's one interceptor, decides what each may call. Without one
(`--insecure`) it listens on loopback only and authenticates nobody.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator import limits, metrics
from coordinator.auth import Gate
from coordinator.registry import WorkerRegistry
from coordinator.store import StateError, Store
from coordinator.task_service import TaskService
from coordinator.tasks import TaskManager
from coordinator.worker_service import WorkerService, add_worker_service
from coordinator.writes import WriteFailed
from sdk.config import file_stamp
from sdk.prometheus import add_metrics_argument
from sdk.proto import services_pb2, services_pb2_grpc
from sdk.trust import Kit, TrustError, Verifier
from sdk.wire import SERVER_OPTIONS, is_loopback

log = logging.getLogger("deltaflow.coordinator")

SERVICE_NAMES = [
    services_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    services_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
]


CRL_POLL_SECONDS = 1.0  # how often the kit's revoked.crl is looked at for a change
STOP_GRACE_SECONDS = 5.0  # calls ended at a stop get this long to send their status
WRITES_POLL_SECONDS = 0.5  # how often health looks at the state dir's writes (and probes them)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kit", type=Path, default=None,
                        help="the coordinator's kit from `deltaflow provision` (DIR/coordinator): "
                             "mutual TLS, with every caller identified by its certificate")
    parser.add_argument("--insecure", action="store_true",
                        help="no kit, no TLS, nobody authenticated: loopback development only")
    parser.add_argument("--listen", default=None,
                        help="HOST:PORT (default: 0.0.0.0 and the kit's port with a kit, "
                             "127.0.0.1:6700 with --insecure)")
    parser.add_argument("--state-dir", type=Path, default=Path("deltaflow-state"),
                        help="where tasks, logs and results are kept (default %(default)s)")
    parser.add_argument("--heartbeat-interval", type=float, default=90.0,
                        help="seconds between heartbeats on each worker channel, both ways "
                             "(default %(default)s); dead connections are found sooner by "
                             "HTTP/2 keepalive, this finds hung workers")
    parser.add_argument("--heartbeat-timeout", type=float, default=270.0,
                        help="a worker silent this long is dropped, and one that registered "
                             "without connecting is forgotten (default %(default)s)")
    limits.add_arguments(parser)
    add_metrics_argument(parser)


def _identity(args: argparse.Namespace) -> tuple[Kit | None, str]:
    """The kit (None with --insecure) and the address to listen on; SystemExit saying what to
    fix when neither or both are given, or --insecure would listen beyond loopback."""
    if args.kit is None and not args.insecure:
        raise SystemExit("give --kit DIR (a coordinator kit made by `deltaflow provision`), or "
                         "--insecure for a development coordinator on loopback")
    if args.kit is not None and args.insecure:
        raise SystemExit("--kit and --insecure exclude each other")
    if args.insecure:
        listen = args.listen or "127.0.0.1:6700"
        if not is_loopback(listen):
            raise SystemExit(f"--insecure listens on loopback only, not on {listen}: "
                             "give the coordinator a kit to serve a network")
        return None, listen
    try:
        kit = Kit.load(args.kit, roles={"coordinator"})
    except TrustError as error:
        raise SystemExit(f"--kit: {error}") from None
    return kit, args.listen or f"0.0.0.0:{kit.coordinator.rpartition(':')[2]}"


def _load_crl(kit: Kit, verifier: Verifier) -> None:
    """Takes the kit's revoked.crl into `verifier`; TrustError when it is missing or not one
    the CA signed (a stale one is taken, and logged: workers refuse tasks until it is renewed)."""
    try:
        data = kit.crl_path.read_bytes()
    except FileNotFoundError:
        raise TrustError(f"{kit.crl_path} is missing: copy revoked.crl from the CA's folder, or "
                         "write one with `deltaflow provision crl --ca DIR/ca`") from None
    verifier.set_crl(data)
    try:
        verifier.check_crl_fresh()
    except TrustError as error:
        log.error("%s: %s", kit.crl_path, error)


async def _watch_crl(kit: Kit, verifier: Verifier, gate: Gate, registry: WorkerRegistry,
                     seen: tuple[int, int] | None) -> None:
    """Re-reads the kit's revoked.crl when it changes (`seen`: the stamp of the one read at
    start): ends the revoked parties' calls, and so their sessions, and hands the new list to
    every connected worker."""
    while True:
        await asyncio.sleep(CRL_POLL_SECONDS)
        current = file_stamp(kit.crl_path)
        if current is None or current == seen:
            continue
        seen = current
        try:
            _load_crl(kit, verifier)
        except TrustError as error:
            log.error("kept the last revocation list: %s", error)
            continue
        ended = gate.end_revoked()
        log.info("revocation list reloaded from %s; %d call(s) of revoked parties ended",
                 kit.crl_path, ended)
        if verifier.crl_der:
            registry.broadcast(services_pb2.CoordinatorMessage(crl=verifier.crl_der))


async def watch_writes(store: Store, health_servicer: health.aio.HealthServicer) -> None:
    """Health answers NOT_SERVING from a failed write of the state dir until a probe write
    succeeds again (tried every WRITES_POLL_SECONDS), then SERVING."""
    serving = True
    while True:
        await asyncio.sleep(WRITES_POLL_SECONDS)
        if store.writes.failing is None:
            continue
        if serving:
            log.error("not serving until the state dir takes writes again: %s",
                      store.writes.failing)
        elif store.retry_writes():
            log.info("the state dir takes writes again: serving")
        else:
            continue
        serving = not serving
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ["", *SERVICE_NAMES]:
            await health_servicer.set(name, status)


async def serve(args: argparse.Namespace) -> None:
    """Serves until SIGINT or SIGTERM. In order: the state dir's lock (a second coordinator on
    it exits here, having touched nothing), the port (one that cannot be bound exits before
    recovery), the recovery of the tasks the last run left, then serving."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    kit, listen = _identity(args)
    verifier = Verifier(kit.ca_pem) if kit is not None else None
    crl_stamp = None
    if kit is not None:
        crl_stamp = file_stamp(kit.crl_path)
        try:
            _load_crl(kit, verifier)
        except TrustError as error:
            raise SystemExit(f"--kit: {error}") from None
    else:
        log.warning("--insecure: no TLS and no identities; every caller may do everything")
    try:
        store = Store(args.state_dir)
    except StateError as error:
        raise SystemExit(str(error)) from None
    bounds = limits.from_args(args)
    registry = WorkerRegistry(args.heartbeat_interval, args.heartbeat_timeout, bounds)
    tasks = TaskManager(store, registry, bounds)
    gate = Gate(verifier, store.append_audit)
    # The gate first: the guard counts streams by the caller the gate sets.
    guard = limits.StreamGuard(bounds)
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[gate, guard])
    services_pb2_grpc.add_TaskServiceServicer_to_server(TaskService(tasks, verifier), server)
    add_worker_service(WorkerService(registry, store, verifier), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        if kit is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, kit.server_credentials())
    except RuntimeError as error:
        raise SystemExit(f"cannot listen on {listen}: {error} (the tasks in the state dir "
                         "are left as they were)") from None
    try:
        tasks.recover()
    except WriteFailed as error:
        raise SystemExit(str(error)) from None
    await server.start()
    for name in ["", *SERVICE_NAMES]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = listen.rpartition(":")[0]
    mode = f"mutual TLS as {kit.name}" if kit is not None else "plaintext, insecure"
    log.info("coordinator listening on %s:%d (%s), state in %s", host, port, mode,
             args.state_dir.resolve())
    print(f"deltaflow coordinator listening on {host}:{port}", flush=True)
    if args.metrics_listen is not None:  # a daemon thread: it ends with the process
        url = metrics.serve(args.metrics_listen, store, registry)
        print(f"deltaflow coordinator metrics at {url}", flush=True)

    watchers = [asyncio.create_task(watch_writes(store, health_servicer))]
    if kit is not None:
        watchers.append(asyncio.create_task(
            _watch_crl(kit, verifier, gate, registry, crl_stamp)))
    await stop.wait()
    log.info("coordinator stopping")
    await health_servicer.enter_graceful_shutdown()
    gate.close()  # every call ends, UNAVAILABLE: workers and followers come back later
    for watcher in watchers:
        watcher.cancel()
    await tasks.shutdown()
    await server.stop(grace=STOP_GRACE_SECONDS)
    store.close()
    log.info("coordinator stopped")
