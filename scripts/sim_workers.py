"""Simulated workers: N lightweight workers in one process, speaking the real protocol.

Each simulated worker has its own identity (a kit that `sdk.trust` provisions for it, an EC key
and certificate of the federation's CA) and its own mutual-TLS channel to the coordinator's real
WorkerService: it registers, keeps the live channel with heartbeats at the interval the
coordinator gives, and answers analytics tasks with fixed, known data: every simulated worker
holds the same ROWS rows (`sim.csv`, see `frame()`), so a result is checkable (a mean is the
mean of those rows, a count N times theirs). Plain tasks are computed once and the answer sent by
every worker; under secure aggregation each worker runs its own side of the protocol with
`worker.secure` (the daemon's protocol client), on its own keys. Learning tasks are refused.

Worker i also offers `shard-{i % shards}.csv` (the same rows), so that tasks can select subsets.

    python scripts/sim_workers.py --workers 1000 --fed /tmp/simfed --coordinator 127.0.0.1:6700
    python scripts/sim_workers.py --workers 10000 --fed /tmp/simfed --measure 30 --task 1000

With --measure (or --task) it starts a coordinator of the federation in another process, waits
until every worker is connected, and reports the idle coordinator's CPU, RSS and health-check
latency, then runs the tasks asked for and checks their results.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # not a line per channel as thousands close
import grpc  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deltaflow.localcluster import Daemon, wait_for  # noqa: E402
from sdk import dataset, values  # noqa: E402
from sdk import pandas as fpd  # noqa: E402
from sdk.client import Client  # noqa: E402
from sdk.proto import services_pb2 as pb  # noqa: E402
from sdk.proto import services_pb2_grpc, task_pb2  # noqa: E402
from sdk.task import HorizontalAnalytics  # noqa: E402
from sdk.trust import Kit, Verifier  # noqa: E402
from sdk.trust.kit import CERT_FILE, KEY_FILE  # noqa: E402
from sdk.trust.provision import add_participants, create_federation  # noqa: E402
from sdk.wire import CHANNEL_OPTIONS, split_chunks  # noqa: E402
from worker.analytics import AnalyticsJob  # noqa: E402
from worker.contributions import ContributionLedger  # noqa: E402
from worker.datasets import DataDir  # noqa: E402
from worker.secure import Contribution, SecureRounds  # noqa: E402
from worker.sources import Catalog  # noqa: E402

log = logging.getLogger("sim_workers")

ROWS = 10  # rows every simulated worker holds
ADMIN, ANALYST = "sim-admin", "sim-analyst"


def frame() -> pd.DataFrame:
    """The rows every simulated worker holds: x = 1..ROWS, y = 2x."""
    x = pd.Series(range(1, ROWS + 1), dtype="float64")
    return pd.DataFrame({"x": x, "y": 2 * x})


def worker_name(index: int) -> str:
    return f"sim-{index:05d}"


def raise_open_files(needed: int) -> int:
    """Raises this process's open-file limit to its hard limit; the soft limit now, which
    must cover `needed` (SystemExit saying so otherwise)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{needed:,} connections need {needed:,} open files, and this "
                         f"process may open {hard:,} (ulimit -Hn): raise the hard limit")
    return hard


def provision(fed: Path, count: int) -> tuple[list[Path], float]:
    """The kits of workers sim-00000.. sim-{count-1} in the federation at `fed` (made, with a
    coordinator, ADMIN and ANALYST, if it does not exist; workers added if missing), and the
    seconds provisioning took."""
    started = time.perf_counter()
    if not (fed / "ca").exists():
        create_federation(fed, ["127.0.0.1:6700"], [], [(ADMIN, "admin"), (ANALYST, "analyst")])
    folders = [fed / "workers" / worker_name(i) for i in range(count)]
    missing = [folder.name for folder in folders if not folder.is_dir()]
    if missing:
        add_participants(fed / "ca", None, missing, [])
    return folders, time.perf_counter() - started


def own_kit(folder: Path, ca_pem: bytes) -> Kit:
    """A simulated worker's kit as `provision` wrote it, read without `Kit.load`'s checks
    (milliseconds each, minutes for ten thousand): the coordinator checks every certificate."""
    return Kit(folder, folder.name, "worker", "", ca_pem, (folder / CERT_FILE).read_bytes(),
               (folder / KEY_FILE).read_bytes())


class Shared:
    """What every simulated worker shares: the data, and each task loaded and each plain step
    computed once (the workers hold the same rows, so their answers are the same)."""

    def __init__(self, data_dir: Path, shards: int, ca_pem: bytes) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in ["sim.csv", *(f"shard-{s}.csv" for s in range(shards))]:
            frame().to_csv(data_dir / name, index=False)
        self.catalog = Catalog(DataDir(data_dir))
        self.shards = shards
        self.verifier = Verifier(ca_pem)
        self.ledgers = Path(tempfile.mkdtemp(prefix="sim-ledgers-"))
        self._jobs: dict[bytes, tuple[AnalyticsJob, bytes]] = {}
        self._answers: dict[tuple[bytes, int, bytes], bytes] = {}

    def datasets(self, index: int) -> list[str]:
        return ["sim.csv", f"shard-{index % self.shards}.csv"]

    def job(self, data: bytes, signature: task_pb2.TaskSignature | None,
            task_id: int) -> tuple[AnalyticsJob, bytes]:
        """The task's job and its rerun key, its signature checked as a worker checks it,
        loaded once per task's bytes."""
        key = hashlib.sha256(data).digest()
        if key not in self._jobs:
            if signature is None:
                raise ValueError("the task is not signed")
            _, claims = self.verifier.verify_task(signature, data)
            spec = task_pb2.TaskSpec.FromString(data)
            if spec.kind == task_pb2.TASK_KIND_LEARNING:
                raise ValueError("simulated workers run analytics only")
            self._jobs[key] = (AnalyticsJob(spec, self.catalog, min_rows=1), claims.nonce)
        return self._jobs[key]

    def compute(self, job: AnalyticsJob, stage: int, inputs: pb.Assignment) -> bytes:
        key = (id(job).to_bytes(8, "big"), stage, inputs.inputs.SerializeToString())
        if key not in self._answers:
            self._answers[key] = job.compute(stage, values.decode(inputs.inputs))
        return self._answers[key]


class SimWorker:
    """One simulated worker: its registration, live channel and answers. `hang()` makes it
    a hung worker: its connection stays open (HTTP/2 pings still answered) but it sends
    nothing more."""

    def __init__(self, index: int, kit: Kit, address: str, shared: Shared) -> None:
        self.index, self.kit, self.address, self.shared = index, kit, address, shared
        self.name = kit.name
        self.connected = asyncio.Event()
        self.hung = asyncio.Event()
        self.answered = 0
        self._secure: SecureRounds | None = None
        self._loads: dict[int, asyncio.Task[tuple[AnalyticsJob, bytes]]] = {}

    def hang(self) -> None:
        self.hung.set()

    async def run(self, gate: asyncio.Semaphore) -> None:
        """Registers and keeps the channel, again after a failure, until cancelled."""
        delay = 0.5
        while not self.hung.is_set():
            channel = grpc.aio.secure_channel(self.address, self.kit.channel_credentials(),
                                              options=CHANNEL_OPTIONS)
            try:
                async with gate:
                    stub = services_pb2_grpc.WorkerServiceStub(channel)
                    reply = await stub.Register(pb.RegisterRequest(
                        name=self.name, datasets=self.shared.datasets(self.index),
                        version="sim"), timeout=60)
                delay = 0.5
                await self._live(stub, reply)
            except grpc.aio.AioRpcError as error:
                log.debug("%s: %s %s", self.name, error.code().name, error.details())
            finally:
                self.connected.clear()
                await channel.close()
            if not self.hung.is_set():
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)
        await self.hung.wait()

    async def _live(self, stub: services_pb2_grpc.WorkerServiceStub,
                    reply: pb.RegisterResponse) -> None:
        outgoing: asyncio.Queue[pb.WorkerMessage | None] = asyncio.Queue()
        outgoing.put_nowait(pb.WorkerMessage(session_id=reply.session_id))

        async def requests() -> AsyncIterator[pb.WorkerMessage]:
            while (message := await outgoing.get()) is not None:
                if not self.hung.is_set():
                    yield message

        async def beats() -> None:
            while True:
                await asyncio.sleep(reply.heartbeat_interval or 1.0)
                outgoing.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(time=time.time())))

        call = stub.Connect(requests())
        beating = asyncio.create_task(beats())
        handlers: set[asyncio.Task[None]] = set()
        self.connected.set()
        try:
            async for message in call:
                if self.hung.is_set():
                    continue
                if message.HasField("assignment"):
                    handler = asyncio.create_task(
                        self._answer(stub, reply.session_id, message.assignment))
                    handlers.add(handler)
                    handler.add_done_callback(handlers.discard)
                elif message.HasField("release_task_id"):
                    self._release(message.release_task_id)
        finally:
            beating.cancel()
            outgoing.put_nowait(None)  # its requests end before the call is cancelled
            call.cancel()
            for handler in handlers:
                handler.cancel()

    async def _answer(self, stub: services_pb2_grpc.WorkerServiceStub, session_id: str,
                      assignment: pb.Assignment) -> None:
        data, error = b"", ""
        try:
            job, nonce = await self._job(stub, session_id, assignment.task_id)
            data = self._phase(assignment, job, nonce)
        except Exception as failure:  # noqa: BLE001 - the coordinator learns why, as from a worker
            error = f"worker {self.name}: {type(failure).__name__}: {failure}"
        if self.hung.is_set():
            return

        def upload() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(
                session_id=session_id, exchange_id=assignment.exchange_id, error=error))
            for chunk in split_chunks(data):
                yield pb.UploadRequest(chunk=chunk)

        try:
            await stub.Upload(upload())
            self.answered += 1
        except grpc.aio.AioRpcError as failure:
            log.debug("%s: upload failed: %s", self.name, failure.details())

    def _phase(self, assignment: pb.Assignment, job: AnalyticsJob, nonce: bytes) -> bytes:
        phase, stage = assignment.phase, assignment.stage
        if phase == "join":
            return b""
        if phase == "compute" and not assignment.HasField("secagg"):
            return self.shared.compute(job, stage, assignment)
        secure = self._secure_rounds()
        if phase == "compute":  # under secure aggregation: this worker's keys, and its layout
            parts = job.parts(stage, values.decode(assignment.inputs))
            contribution = Contribution(nonce, f"step {stage + 1}", job.secagg)
            return secure.open(assignment, contribution, parts)
        if phase == "secagg_masked":
            return secure.masked_parts(assignment, job.precision, job.max_clients, job.noise)
        return secure.answer(assignment)

    def _secure_rounds(self) -> SecureRounds:
        """This worker's side of secure aggregation (made at its first secure round)."""
        if self._secure is None:
            ledger = ContributionLedger(self.shared.ledgers / f"{self.name}.sqlite3")
            self._secure = SecureRounds(ledger, self.kit, self.shared.verifier)
        return self._secure

    async def _job(self, stub: services_pb2_grpc.WorkerServiceStub, session_id: str,
                   task_id: int) -> tuple[AnalyticsJob, bytes]:
        """The task, downloaded by this worker as a worker does, loaded once per task."""
        if task_id not in self._loads:
            self._loads[task_id] = asyncio.create_task(self._download(stub, session_id, task_id))
        return await asyncio.shield(self._loads[task_id])

    async def _download(self, stub: services_pb2_grpc.WorkerServiceStub, session_id: str,
                        task_id: int) -> tuple[AnalyticsJob, bytes]:
        signature, chunks = None, []
        async for message in stub.FetchTask(pb.FetchTaskRequest(session_id=session_id,
                                                                task_id=task_id)):
            if message.HasField("signature"):
                signature = message.signature
            chunks.append(message.chunk)
        return self.shared.job(b"".join(chunks), signature, task_id)

    def _release(self, task_id: int) -> None:
        self._loads.pop(task_id, None)
        if self._secure is not None:
            self._secure.release(task_id)


class Simulation:
    """N simulated workers of the federation at `fed`, connecting to `address`."""

    def __init__(self, fed: Path, count: int, shards: int = 10) -> None:
        raise_open_files(count + 1000)
        self.fed = fed
        self.kit_folders, self.provision_seconds = provision(fed, count)
        started = time.perf_counter()
        ca_pem = (fed / "ca" / "ca.crt").read_bytes()
        self.kits = [own_kit(folder, ca_pem) for folder in self.kit_folders]
        self.load_seconds = time.perf_counter() - started
        self.shared = Shared(fed.parent / f"{fed.name}-data", shards, ca_pem)
        self.workers: list[SimWorker] = []
        self._runs: list[asyncio.Task[None]] = []

    def start(self, address: str, concurrency: int = 100) -> None:
        """Starts every worker (on the running loop), `concurrency` registrations at a time."""
        gate = asyncio.Semaphore(concurrency)
        self.workers = [SimWorker(i, kit, address, self.shared) for i, kit in enumerate(self.kits)]
        self._runs = [asyncio.create_task(worker.run(gate)) for worker in self.workers]

    def connected(self) -> int:
        return sum(worker.connected.is_set() for worker in self.workers)

    async def wait_connected(self, timeout: float) -> float:
        """Seconds until every worker is connected; TimeoutError saying how many are."""
        started = time.monotonic()
        while self.connected() < len(self.workers):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{self.connected():,} of {len(self.workers):,} simulated "
                                   f"workers connected within {timeout:g} s")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def stop(self) -> None:
        for run in self._runs:
            run.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)


class SimMean(HorizontalAnalytics):
    """The mean of every column of `file` over `clients` simulated workers."""

    def __init__(self, clients: int, secure: bool, file: str = "sim.csv",
                 timeout: float = 120) -> None:
        super().__init__(name="sim_mean", min_clients=clients, max_clients=clients,
                         wait_timeout=timeout, connection_timeout=timeout,
                         secure_aggregation=secure)
        self.file = file

    def dataset(self) -> dict[str, dataset.DataFrame]:
        return {"frame": dataset.DataFrame(self.file)}

    def execute(self, frame: fpd.DataFrame) -> Any:
        return frame.mean()


def start_coordinator(fed: Path, state: Path, *flags: str) -> tuple[Daemon, str]:
    """A coordinator of the federation at `fed` in its own process; it and its address."""
    daemon = Daemon(["coordinator", "--kit", str(fed / "coordinator"), "--listen",
                     "127.0.0.1:0", "--state-dir", str(state), *flags], state / "coordinator.log")
    found = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)\n", daemon.log()), 60,
                     "the coordinator to listen")
    return daemon, f"127.0.0.1:{found.group(1)}"


def health_latency(fed: Path, address: str, checks: int = 20) -> list[float]:
    """Seconds each of `checks` health checks took, one after another, as ADMIN."""
    kit = Kit.load(fed / "users" / ADMIN)
    with grpc.secure_channel(address, kit.channel_credentials()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)  # the connection, set up
        took = []
        for _ in range(checks):
            started = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            took.append(time.perf_counter() - started)
            time.sleep(0.05)
    return took


def idle_cost(pid: int, seconds: float) -> tuple[float, int]:
    """The process's CPU (fraction of one core) over `seconds`, and its RSS at the end."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return used / seconds, process.memory_info().rss


def run_task(fed: Path, address: str, clients: int, secure: bool, file: str = "sim.csv",
             timeout: float = 120) -> dict[str, Any]:
    """Runs SimMean over `clients` workers; its seconds, log rows and whether it is right."""
    with Client(address, kit=fed / "users" / ANALYST) as client:
        started = time.perf_counter()
        task_id = client.create_task(SimMean(clients, secure, file, timeout).build())
        finished = client.wait(task_id)
        took = time.perf_counter() - started
        rows = len(client.logs(task_id))
        right = False
        if finished:
            pd.testing.assert_series_equal(client.get_result(task_id), frame().mean(),
                                           check_names=False)
            right = True
        last = client.logs(task_id)[-1].message
    return {"task_id": task_id, "finished": finished, "seconds": took, "log_rows": rows,
            "right": right, "last": last}


class Rows(list):
    """The measurements, each printed as it is added (a later failure loses none)."""

    def append(self, row: tuple[str, str]) -> None:
        super().append(row)
        print(f"{row[0]:<48}  {row[1]}", flush=True)


async def measure(args: argparse.Namespace) -> None:
    """Starts a coordinator, connects the workers, and measures (see the module's doc)."""
    sim = Simulation(args.fed, args.workers, args.shards)
    rows = Rows()
    rows.append(("workers", f"{args.workers:,}"))
    rows.append(("provisioning (s)", f"{sim.provision_seconds:.1f}"))
    rows.append(("loading kits (s)", f"{sim.load_seconds:.1f}"))
    state = Path(tempfile.mkdtemp(prefix="sim-coordinator-"))
    flags = [f"--heartbeat-interval={args.heartbeat_interval}",
             f"--heartbeat-timeout={args.heartbeat_timeout}"]
    daemon, address = start_coordinator(args.fed, state, *flags)
    try:
        sim.start(address, args.concurrency)
        rows.append(("all connected after (s)", f"{await sim.wait_connected(args.timeout):.1f}"))
        await asyncio.sleep(args.settle)
        cpu, rss = await asyncio.to_thread(idle_cost, daemon.process.pid, args.measure)
        rows.append((f"idle coordinator CPU over {args.measure:g} s (% of a core)",
                     f"{100 * cpu:.1f}"))
        rows.append(("idle coordinator RSS (MiB)", f"{rss / 2**20:.0f}"))
        took = await asyncio.to_thread(health_latency, args.fed, address)
        rows.append(("health check (ms, median / max of 20)",
                     f"{1000 * statistics.median(took):.1f} / {1000 * max(took):.1f}"))
        for secure, sizes in ((False, args.task), (True, args.secure_task)):
            for clients in sizes:
                result = await asyncio.to_thread(run_task, args.fed, address, clients, secure,
                                                 "sim.csv", args.task_timeout)
                if not result["finished"]:
                    print(f"task {result['task_id']}: {result['last']}", file=sys.stderr)
                rows.append((f"{'secure' if secure else 'plain'} task, {clients:,} workers "
                             "(s, log rows, right)", f"{result['seconds']:.1f}, "
                             f"{result['log_rows']}, {result['right']}"))
        if args.missing_tasks:
            total = 0
            for _ in range(args.missing_tasks):
                result = await asyncio.to_thread(run_task, args.fed, address, 2, False,
                                                 "nobody-holds.csv", 1)
                total += result["log_rows"]
            rows.append((f"{args.missing_tasks} tasks naming a file nobody holds: log rows",
                         f"{total}"))
    finally:
        await sim.stop()
        daemon.stop()


async def serve(args: argparse.Namespace) -> None:
    """Connects the workers to --coordinator and keeps them until --seconds pass or SIGINT."""
    sim = Simulation(args.fed, args.workers, args.shards)
    print(f"provisioned in {sim.provision_seconds:.1f} s, kits loaded in "
          f"{sim.load_seconds:.1f} s", flush=True)
    sim.start(args.coordinator, args.concurrency)
    try:
        took = await sim.wait_connected(args.timeout)
        print(f"{len(sim.workers):,} simulated workers connected in {took:.1f} s", flush=True)
        if args.seconds:
            await asyncio.sleep(args.seconds)
        else:
            await asyncio.Event().wait()
    finally:
        await sim.stop()
        print(f"answered {sum(w.answered for w in sim.workers):,} assignments", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--fed", type=Path, required=True,
                        help="the federation's folder (made if missing; kits added as needed)")
    parser.add_argument("--shards", type=int, default=10,
                        help="worker i also offers shard-{i %% shards}.csv")
    parser.add_argument("--coordinator", help="HOST:PORT of a running coordinator of --fed")
    parser.add_argument("--seconds", type=float, default=0,
                        help="with --coordinator: stay connected this long (0: until SIGINT)")
    parser.add_argument("--concurrency", type=int, default=100,
                        help="registrations in flight at once")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds for every worker to connect")
    parser.add_argument("--measure", type=float, default=0,
                        help="start a coordinator, and measure it idle for this many seconds")
    parser.add_argument("--settle", type=float, default=5,
                        help="seconds to wait after all connected, before measuring")
    parser.add_argument("--task", type=int, nargs="*", default=[],
                        help="with --measure: plain tasks over this many workers each")
    parser.add_argument("--secure-task", type=int, nargs="*", default=[],
                        help="with --measure: secure tasks over this many workers each")
    parser.add_argument("--task-timeout", type=float, default=120,
                        help="with --measure: the tasks' wait and connection timeouts (s): a "
                        "secure round's workers all compute in this one process")
    parser.add_argument("--missing-tasks", type=int, default=0,
                        help="with --measure: tasks naming a file no worker holds")
    parser.add_argument("--heartbeat-interval", type=float, default=90.0,
                        help="with --measure: the coordinator's (default: its own default)")
    parser.add_argument("--heartbeat-timeout", type=float, default=270.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.measure:
        asyncio.run(measure(args))
    elif args.coordinator:
        asyncio.run(serve(args))
    else:
        parser.error("give --coordinator HOST:PORT, or --measure SECONDS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
