"""The worker daemon: registers with the coordinator, keeps the live channel, does assignments.

It reconnects on its own, with backoff, whenever the coordinator goes away or restarts, and
treats a coordinator that stays silent past the heartbeat timeout as gone. With a kit it speaks
mutual TLS as its certificate's name, and trusts the coordinator with nothing: before it loads
any task it checks the task's signature against the federation's CA and the revocation list
the coordinator hands it (which the CA signs), and it keeps the rerun rule itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from sdk import values
from sdk.analytics.errors import EvaluationError
from sdk.analytics.plan import PrivacyError
from sdk.prometheus import add_metrics_argument
from sdk.privacy import PrivacyRefused, asks_for_privacy
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2
from sdk.secagg import Rule, SecAggError
from sdk.secagg.fixedpoint import FixedPointOverflow
from sdk.trust import ANONYMOUS, Identity, Kit, TrustError, Verifier
from sdk.wire import CHANNEL_OPTIONS, is_loopback, normalize_address, split_chunks
from sdk.privacy.accounting import Cost, describe
from worker.analytics import AnalyticsJob
from worker import metrics
from worker.budget import BudgetExceeded, PrivacyLedger
from worker.contributions import ContributionLedger, RerunRefused
from worker.datasets import DataDir, DatasetError
from worker.engine import (
    EngineLimits,
    EngineSession,
    NvmlInventory,
    TaskError,
    add_engine_arguments,
    limits_from_args,
)
from worker.learning_job import LearningJob, WeightsMismatch, warm_engine
from worker.policy import TEMPLATE, PolicyError, PolicyFile, PolicyRefusal
from worker.secure import Contribution, SecureRounds
from worker.sources import DEFAULT_CHUNK_ROWS, Catalog, SourcesError, read_sources

log = logging.getLogger("deltaflow.worker")

VERSION = "0.1.0"
RESCAN_SECONDS = 2.0  # how often the data dir and the policy are looked at for changes
LEARNING_ERROR_CHARS = 2000  # the most of a learning task's error the task log gets


class TaskRefused(Exception):
    """This worker will not run the task; the message says why, in words for the task's log,
    and `reason` which rule, in one word for the metrics (policy, signature, rerun, weights)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kit", type=Path, default=None,
                        help="this worker's kit from `deltaflow provision` (DIR/workers/NAME): "
                             "its name, its certificate, and the coordinator's address")
    parser.add_argument("--insecure", action="store_true",
                        help="no kit, no TLS, tasks unsigned: a coordinator on loopback only, "
                             "for development")
    parser.add_argument("--coordinator", default=None,
                        help="the coordinator's HOST:PORT (default: the kit's, or "
                             "127.0.0.1:6700 with --insecure)")
    parser.add_argument("--name", default=None,
                        help="this worker's name with --insecure (with a kit, the kit's)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the folder whose files this worker offers as datasets")
    parser.add_argument("--policy", type=Path, default=None,
                        help="the site policy (TOML): who may run analytics and send learning "
                             "code here, min_rows, the files offered; required with a kit, "
                             "re-read when it changes")
    parser.add_argument("--sources", type=Path, default=None,
                        help="a sources file (TOML): logical dataset names mapped to tables or "
                             "queries of SQL databases, or to files of the data dir (see "
                             "docs/sources.md)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                        help="rows read at a time from a table (default %(default)s): a "
                             "worker's memory grows with it, not with the table")
    parser.add_argument("--write-policy", type=Path, default=None, metavar="FILE",
                        help="write a policy template, every key commented, to FILE and exit")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where learning tasks keep weights and logs (default: a folder "
                             "under the system's temporary dir)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="a persistent folder for what must outlive restarts: the privacy "
                             "ledger (required when the policy has a [privacy] table) and the "
                             "rerun rule's record (else kept in the work dir)")
    parser.add_argument("--min-rows", type=int, default=None,
                        help="the policy's [analytics] min_rows where the file sets none (where "
                             "both do, the larger wins; default 3): smaller sets of rows (a "
                             "group, what a filter kept) count as empty")
    parser.add_argument("--max-backoff", type=float, default=2.0,
                        help="longest wait between reconnection attempts, seconds "
                             "(default %(default)s)")
    add_metrics_argument(parser)
    add_engine_arguments(parser)


def _identity(args: argparse.Namespace) -> tuple[Kit | None, str, str]:
    """(kit or None with --insecure, name, coordinator address); SystemExit saying what to fix."""
    if (args.kit is None) == (not args.insecure):
        raise SystemExit("give --kit DIR (a worker kit made by `deltaflow provision`), or "
                         "--insecure --name NAME for a development coordinator on loopback")
    kit = None
    if args.kit is not None:
        try:
            kit = Kit.load(args.kit, roles={"worker"})
        except TrustError as error:
            raise SystemExit(f"--kit: {error}") from None
        if args.name not in (None, kit.name):
            raise SystemExit(f"--name {args.name}: this worker is {kit.name}, as its kit says")
    elif not args.name:
        raise SystemExit("--insecure needs --name NAME")
    try:
        address = normalize_address(args.coordinator or (kit.coordinator if kit else
                                                          "127.0.0.1:6700"))
    except ValueError as error:
        raise SystemExit(f"--coordinator: {error}") from None
    if kit is None and not is_loopback(address):
        raise SystemExit(f"--insecure speaks plaintext to a loopback coordinator only, not "
                         f"{address}: give the worker its kit")
    return kit, kit.name if kit else args.name, address


def _write_policy(path: Path) -> None:
    if path.exists():
        raise SystemExit(f"--write-policy: {path} exists; it is left as it is")
    path.write_text(TEMPLATE)
    print(f"wrote a policy template to {path}: edit it, then start the worker with "
          f"--policy {path}")


def _policy(args: argparse.Namespace, kit: Kit | None) -> PolicyFile:
    if args.policy is None and kit is not None:
        raise SystemExit("a worker with a kit needs --policy FILE, which decides who may run "
                         "what on this holder's data: `deltaflow worker --write-policy "
                         "policy.toml` writes a template to edit")
    try:
        return PolicyFile(args.policy)
    except OSError as error:
        raise SystemExit(f"--policy: {error}") from None
    except PolicyError as error:
        raise SystemExit(f"--policy {args.policy}: {error}") from None


async def serve(args: argparse.Namespace) -> None:
    """Serves until SIGINT or SIGTERM (one that comes while it starts stops it once started)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    os.umask(0o077)  # what the daemon writes is its own: a --task-user reads none of it
    if args.write_policy is not None:
        _write_policy(args.write_policy)
        return
    kit, name, address = _identity(args)
    if args.data_dir is None or not args.data_dir.is_dir():
        raise SystemExit(f"--data-dir {args.data_dir} is not a folder" if args.data_dir
                         else "give --data-dir DIR, the folder of files this worker offers")
    policy = _policy(args, kit)
    if args.chunk_rows < 1:
        raise SystemExit("--chunk-rows must be at least 1")
    try:
        sources = read_sources(args.sources) if args.sources is not None else {}
    except SourcesError as error:
        raise SystemExit(f"--sources {error}") from None
    try:
        limits = limits_from_args(args)
    except (OSError, ValueError) as error:
        raise SystemExit(f"engine settings: {error}") from None
    if kit is None:
        log.warning("--insecure: no TLS, and tasks are run unsigned")
    if policy.current.privacy is not None and args.state_dir is None:
        raise SystemExit("the policy has a [privacy] table: give --state-dir DIR, a persistent "
                         "folder where this worker keeps its privacy ledger")
    work_dir = args.work_dir or Path(tempfile.gettempdir()) / f"deltaflow-worker-{name}"
    worker = Worker(address, name, Catalog(DataDir(args.data_dir), sources), args.max_backoff,
                    work_dir, limits, policy, args.min_rows, kit, args.chunk_rows, args.state_dir)
    if args.metrics_listen is not None:
        print(f"deltaflow worker metrics at {metrics.serve(args.metrics_listen, worker.engine)}",
              flush=True)
    print(f"deltaflow worker {name} serving {worker.data_dir.root}", flush=True)
    await worker.run(stop)


Job = AnalyticsJob | LearningJob


def _noise_note(job: AnalyticsJob, stage: int, how: str) -> str:
    """The task log's line on the noise this worker added to a step ("" without DP)."""
    return "" if job.privacy is None else f"step {stage + 1}: added {how}"


@dataclass(frozen=True)
class Admission:
    """What this worker knows of a task it admitted: the rerun rule's key (the signature's
    nonce, or the spec's digest), who signed it, and the data sources it reads (the ledger's
    key of each -> the name the task gave it)."""

    key: bytes
    signer: str
    sources: dict[str, str]
    delta: float  # the delta the task states its privacy at (0 without DP)
    dp_learning: bool = False  # DP-FedAvg: its code's errors stay on this holder


class Worker:
    def __init__(self, address: str, name: str, catalog: Catalog, max_backoff: float,
                 work_dir: Path, limits: EngineLimits, policy: PolicyFile,
                 min_rows: int | None, kit: Kit | None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, state_dir: Path | None = None) -> None:
        self.address = address
        self.name = name
        self.kit = kit
        self.verifier = Verifier(kit.ca_pem) if kit is not None else None
        self.catalog = catalog
        self.data_dir = catalog.data_dir
        self.chunk_rows = chunk_rows
        self.max_backoff = max_backoff
        self.policy = policy
        self._min_rows_flag = min_rows  # --min-rows: the policy's min_rows where it sets none
        inventory = NvmlInventory()
        self.engine = EngineSession(work_dir, limits, inventory, name="engine")
        if limits.warm_start and policy.current.learning_users:
            warm_engine()  # a learning task's process then starts with nothing to import
        gpus = inventory.devices()
        log.info("engine: up to %d task processes; GPUs: %s", limits.max_tasks,
                 ", ".join(f"cuda:{g.index} {g.name}" for g in gpus) or "none, training on cpu")
        self._jobs: dict[int, asyncio.Task[Job]] = {}
        self.outcomes = metrics.TaskOutcomes()
        kept = state_dir or work_dir
        self.secure = SecureRounds(ContributionLedger(kept / "contributions.sqlite3"), kit,
                                   self.verifier)
        self.ledger = PrivacyLedger(state_dir / "privacy.sqlite3") if state_dir else None
        self._admissions: dict[int, Admission] = {}
        self._crl_file = work_dir / "revoked.crl"  # the newest revocation list seen
        if self.verifier is not None and self._crl_file.exists():
            self._take_crl(self._crl_file.read_bytes(), keep=False)
        self._coordinator_id = ""  # the coordinator instance the jobs belong to
        self._closing: dict[int, asyncio.Task[None]] = {}  # released jobs, by task, closing

    async def run(self, stop: asyncio.Event) -> None:
        """Serves until `stop` is set, reconnecting whenever the connection is lost."""
        delay = 0.1
        while not stop.is_set():
            connection = asyncio.create_task(self._connect_once())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                connection.cancel()
                await asyncio.gather(connection, return_exceptions=True)
                break
            stopping.cancel()
            try:
                registered = connection.result()
            except grpc.aio.AioRpcError as error:
                registered = False
                if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                    # Another daemon with this identity is connected: wait, quietly.
                    log.debug("coordinator %s: %s", self.address, error.details())
                    delay = self.max_backoff
                else:
                    log.warning("coordinator %s: %s: %s", self.address, error.code().name,
                                error.details())
            if registered:
                delay = 0.1
            else:
                delay = min(delay * 2, self.max_backoff)
            log.info("reconnecting to %s in %.1f s", self.address, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        for job in self._jobs.values():
            job.cancel()
        self.engine.close()
        log.info("worker %s stopped", self.name)

    def _open_channel(self, own_connection: bool = False) -> grpc.aio.Channel:
        """A channel to the coordinator; with `own_connection`, over a TCP connection that no
        other channel shares."""
        options = [*CHANNEL_OPTIONS, *([("grpc.use_local_subchannel_pool", 1)]
                                       if own_connection else [])]
        if self.kit is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, self.kit.channel_credentials(),
                                       options=options)

    async def _connect_once(self) -> bool:
        """One registration and channel, until it ends; True if registration succeeded."""
        # Weights move on a connection of their own: queued behind a model's gigabytes on the
        # live channel's, heartbeats arrive seconds late and either side drops the other.
        async with self._open_channel() as channel, self._open_channel(True) as weights:
            stub = services_pb2_grpc.WorkerServiceStub(channel)
            datasets = await asyncio.to_thread(self._offered)
            reply = await stub.Register(pb.RegisterRequest(
                name=self.name, datasets=datasets, version=VERSION,
                coordinator_id=self._coordinator_id, held_tasks=list(self._jobs),
            ), timeout=5)
            self._coordinator_id = reply.coordinator_id
            self._take_crl(reply.crl)
            for task_id in reply.release_tasks:
                self._release(task_id)
            log.info("registered with %s as %s, offering %d dataset(s)", self.address, self.name,
                     len(datasets))
            await self._channel(weights, stub, reply, datasets)
            return True

    async def _channel(self, weights: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                       reply: pb.RegisterResponse, datasets: list[str]) -> None:
        """The live channel of `stub`, until it ends; assignments move weights on `weights`."""
        interval = reply.heartbeat_interval or 1.0
        silence_limit = max(4 * interval, 3.0)
        outgoing: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
        outgoing.put_nowait(pb.WorkerMessage(session_id=reply.session_id))

        async def write() -> None:
            # Written from a task of ours, not pulled by gRPC from a generator: a generator
            # that gRPC closes while it waits on the queue logs errors as the channel dies.
            try:
                while True:
                    await call.write(await outgoing.get())
            except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                pass  # the call ended; the reader sees why

        call = stub.Connect()
        writer = asyncio.create_task(write())
        beats = asyncio.create_task(self._heartbeats(outgoing, interval, datasets))
        handlers: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:  # asyncio.timeout: 3.11's wait_for loses a cancellation (a stop) that
                    async with asyncio.timeout(silence_limit):  # comes as a message does
                        message = await call.read()
                except TimeoutError:
                    log.warning("coordinator silent for %.0f s; reconnecting", silence_limit)
                    return
                if message is grpc.aio.EOF:
                    log.warning("coordinator closed the channel")
                    return
                if message.HasField("assignment"):
                    handler = asyncio.create_task(
                        self._handle(weights, stub, reply.session_id, message.assignment))
                    handlers.add(handler)
                    handler.add_done_callback(handlers.discard)
                elif message.HasField("release_task_id"):
                    self._release(message.release_task_id)
                elif message.HasField("crl"):
                    self._take_crl(message.crl)
        finally:
            beats.cancel()
            writer.cancel()
            call.cancel()
            for handler in handlers:
                handler.cancel()

    def _take_crl(self, data: bytes, keep: bool = True) -> None:
        """Takes a revocation list (from the coordinator, or kept from an earlier run), if the
        CA signed it and it is not older than the one held: an old list could un-revoke
        someone. The newest is kept in the work dir, so a restart does not forget it."""
        if self.verifier is None or not data:
            return
        try:
            taken = self.verifier.set_crl(data)
        except TrustError as error:
            log.warning("refused a revocation list: %s", error)
            return
        if not taken:
            return
        log.info("revocation list updated (next update %s)", time.strftime(
            "%Y-%m-%d %H:%M", time.gmtime(self.verifier.crl_next_update or 0)))
        if keep:
            partial = self._crl_file.with_suffix(".partial")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(self.verifier.crl_der or b"")
            partial.replace(self._crl_file)

    async def _heartbeats(self, outgoing: asyncio.Queue[pb.WorkerMessage], interval: float,
                          datasets: list[str]) -> None:
        scan = asyncio.create_task(self._rescan(outgoing, datasets))
        try:
            while True:
                await asyncio.sleep(interval)
                outgoing.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(time=time.time())))
        finally:
            scan.cancel()

    async def _rescan(self, outgoing: asyncio.Queue[pb.WorkerMessage], datasets: list[str]) -> None:
        """Re-reads the policy if it changed, and tells the coordinator when the files offered
        change (heartbeats never wait on it)."""
        while True:
            await asyncio.sleep(RESCAN_SECONDS)
            await asyncio.to_thread(self.policy.reload_if_changed)
            current = await asyncio.to_thread(self._offered)
            if current != datasets:
                datasets = current
                log.info("data dir changed: now offering %d dataset(s)", len(datasets))
                outgoing.put_nowait(pb.WorkerMessage(datasets=pb.DatasetList(names=datasets)))

    async def _handle(self, channel: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                      session_id: str, assignment: pb.Assignment) -> None:
        task_id = assignment.task_id
        started = time.perf_counter()
        data, error, note = b"", "", ""
        job: Job | None = None
        self.outcomes.answered(task_id)
        try:
            job = await self._job(channel, stub, session_id, task_id, assignment.round)
            phase, secagg = assignment.phase, assignment.HasField("secagg")
            if phase in ("compute", "train") and job.secure and not secagg:
                raise PrivacyError(f"task {task_id} asks for secure aggregation, and the "
                                   f"coordinator asked for its {phase} in the clear: refused")
            if phase == "join":
                log.info("task %d: joined (%s)", task_id, job.describe())
                note = self._budget_note(task_id, job)
            elif phase == "compute" and isinstance(job, AnalyticsJob):
                self._spend(task_id, f"step {assignment.stage + 1}",
                            job.privacy_cost(assignment.stage))
                inputs = values.decode(assignment.inputs)
                if secagg:
                    parts = await asyncio.to_thread(job.parts, assignment.stage, inputs)
                    data = self.secure.open(assignment, self._contribution(assignment, job),
                                            parts)
                else:
                    data = await asyncio.to_thread(job.compute, assignment.stage, inputs)
                    note = _noise_note(job, assignment.stage, "all of the noise to its own parts")
                metrics.STEPS.inc()
                log.info("task %d: step %d computed in %.3f s", task_id, assignment.stage + 1,
                         time.perf_counter() - started)
            elif phase == "secagg_keys":
                data = self.secure.open(assignment, self._contribution(assignment, job))
            elif phase in ("secagg_ring", "secagg_share", "secagg_check", "secagg_unmask"):
                data = self.secure.answer(assignment)
            elif phase == "secagg_masked" and isinstance(job, AnalyticsJob):
                data = await asyncio.to_thread(self.secure.masked_parts, assignment,
                                               job.precision, job.max_clients, job.noise)
                note = _noise_note(job, assignment.stage, "its share of the noise before masking")
                metrics.STEPS.inc()
                log.info("task %d: step %d sent under masks", task_id, assignment.stage + 1)
            elif phase == "train" and isinstance(job, LearningJob):
                self._spend(task_id, f"round {assignment.round}",
                            job.privacy_cost(assignment.round))
                round_input = values.decode(assignment.inputs)
                seeds = self.secure.mask_seeds(assignment) if secagg else None
                accepted = await job.train(channel, session_id, assignment.exchange_id,
                                           assignment.round, bool(round_input["validate"]), seeds,
                                           self.secure.selected(assignment) if secagg else None)
                metrics.ROUNDS.inc()
                log.info("task %d: round %d trained on %s and sent%s in %.3f s%s", task_id,
                         assignment.round, job.handle.device, " under masks" if secagg else "",
                         time.perf_counter() - started,
                         "" if accepted else " (too late: not accepted)")
                return
            elif phase == "resend" and isinstance(job, LearningJob):
                accepted = await job.resend(channel, session_id, assignment.exchange_id,
                                            assignment.round)
                log.info("task %d: round %d sent again, as the coordinator asked%s", task_id,
                         assignment.round, "" if accepted else " (not accepted)")
                return
            else:
                raise ValueError(f"task {task_id} has no phase {phase!r}")
        except TaskRefused as refusal:
            metrics.REFUSALS.labels(refusal.reason).inc()
            self.outcomes.answered(task_id, "refused")
            error = f"worker {self.name} refused task {task_id}: {refusal}"
        except TaskError as failure:
            log.warning("task %d: the task's own code failed in %s:\n%s", task_id,
                        assignment.phase, failure)  # whole, for this holder only
            error = f"worker {self.name}: {self._learning_error(failure)}"
        except (DatasetError, PrivacyError, SecAggError, EvaluationError) as failure:
            error = f"worker {self.name}: {failure}"
        except grpc.aio.AioRpcError as failure:  # a download from the coordinator failed
            error = f"worker {self.name}: {failure.code().name}: {failure.details()}"
        except Exception as failure:  # the traceback stays here; the coordinator learns why
            log.warning("task %d: %s failed", task_id, assignment.phase, exc_info=True)
            if isinstance(job, LearningJob):  # deltaflow's own code: its message says why
                error = f"worker {self.name}: {type(failure).__name__}: {failure}"
            elif isinstance(failure, FixedPointOverflow):
                error = f"worker {self.name}: {failure}"
            else:  # analytics, or a task not loaded: a library's message may quote a row
                error = (f"worker {self.name}: its {assignment.phase} failed; the worker's own "
                         "log says why")
        if error:
            metrics.FAILURES.labels(assignment.phase).inc()
            self.outcomes.answered(task_id, "failed")
            log.warning("task %d: %s failed: %s", task_id, assignment.phase, error)

        def upload() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(
                session_id=session_id, exchange_id=assignment.exchange_id, error=error,
                note="" if error else note))
            for chunk in split_chunks(data):
                yield pb.UploadRequest(chunk=chunk)

        try:
            await stub.Upload(upload())
        except grpc.aio.AioRpcError as failure:  # the coordinator is gone: it asks again
            log.warning("task %d: could not send the answer to %s: %s: %s", task_id,
                        assignment.phase, failure.code().name, failure.details())

    async def _job(self, channel: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                   session_id: str, task_id: int, round_number: int) -> Job:
        """The task's job, fetched and loaded once however many phases ask for it, by the
        first of them, of round `round_number`."""
        if task_id not in self._jobs or self._jobs[task_id].cancelled():
            self._jobs[task_id] = asyncio.create_task(
                self._load(channel, stub, session_id, task_id, round_number))
        job = self._jobs[task_id]
        try:
            return await asyncio.shield(job)
        except Exception:
            self._jobs.pop(task_id, None)
            raise

    def _contribution(self, assignment: pb.Assignment, job: Job) -> Contribution:
        """What input of which task a round carries, for the rerun rule: an analytics step
        whatever the coordinator calls its round, a learning round by its number (which only
        goes forward, up to the signed max_rounds)."""
        key = self._admissions[assignment.task_id].key
        if isinstance(job, LearningJob):
            try:
                self.secure.ledger.advance(key.hex(), assignment.round, job.max_rounds)
            except RerunRefused as error:
                raise TaskRefused(str(error), "rerun") from None
            return Contribution(key, f"round {assignment.round}", job.secagg)
        return Contribution(key, f"step {assignment.stage + 1}", job.secagg)

    async def _load(self, channel: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                    session_id: str, task_id: int, round_number: int) -> Job:
        if task_id in self._closing:  # released, and asked for again (a resumed task)
            await asyncio.shield(self._closing[task_id])
        signature = None
        chunks = []
        async for message in stub.FetchTask(pb.FetchTaskRequest(session_id=session_id,
                                                                task_id=task_id)):
            if message.HasField("signature"):
                signature = message.signature
            chunks.append(message.chunk)
        data = b"".join(chunks)
        signer, claims = self._check_signature(task_id, signature, data)
        spec = task_pb2.TaskSpec()
        spec.ParseFromString(data)
        try:
            Rule.of(spec)  # the signed threshold, which its jobs' rounds run at
        except ValueError as error:
            raise TaskRefused(str(error), "threshold") from None
        try:
            self.policy.current.check(spec, signer)
        except PolicyRefusal as refusal:
            raise TaskRefused(str(refusal), "policy") from None
        sources = {self.catalog.key(ref.file): ref.file for ref in spec.datasets}
        self._admissions[task_id] = Admission(claims.nonce if claims else hashlib.sha256(
            data + task_id.to_bytes(8, "big")).digest(), signer.name, sources,
            spec.privacy.delta, spec.kind == task_pb2.TASK_KIND_LEARNING
            and asks_for_privacy(spec))
        if spec.kind != task_pb2.TASK_KIND_LEARNING:
            job: Job = await asyncio.to_thread(AnalyticsJob, spec, self.catalog, self.min_rows,
                                               self.chunk_rows,
                                               self.policy.current.max_order_probes)
            self._check_budget(task_id, spec, job.total_privacy_cost())
            metrics.TASKS.labels("analytics").inc()
            return job
        try:
            job = LearningJob(task_id, spec, self.data_dir.resolve(spec.datasets[0].file),
                              Path(self.engine.workdir))
        except PrivacyRefused as error:
            raise TaskRefused(str(error), "policy") from None
        self._check_budget(task_id, spec, job.total_privacy_cost())
        # The global weights are the initial ones, which the submitter signed, in round 1; in
        # a later round (a task resumed after a coordinator restart) they are the checkpoint of
        # the round before, the coordinator's average, trusted as in every round after the first.
        # Those weights train no earlier round (LearningJob.train refuses it).
        if not 1 <= round_number <= job.max_rounds:
            raise TaskRefused(f"round {round_number} is not one of the task's rounds (its "
                              f"submitter signed max_rounds={job.max_rounds})", "rerun")
        signed = claims.weights_sha256 if claims and round_number == 1 else None
        warm_engine()  # where it is cold, its imports go on while the weights download
        try:
            await job.open(self.engine, channel, session_id, expected_weights_sha256=signed,
                           first_round=round_number)
        except WeightsMismatch as error:
            raise TaskRefused(str(error), "weights") from None
        metrics.TASKS.labels("learning").inc()
        return job

    def _check_budget(self, task_id: int, spec: task_pb2.TaskSpec, cost: Cost | None) -> None:
        """TaskRefused, before anything is computed, if the task's whole cost would go past a
        budget of this site's policy."""
        budgets = self.policy.current.privacy
        if budgets is None or not asks_for_privacy(spec):
            return
        if self.ledger is None:
            raise TaskRefused("its policy keeps privacy budgets ([privacy]) and the worker has "
                              "no --state-dir to keep them in", "budget")
        admission = self._admissions[task_id]
        try:
            self.ledger.check(admission.signer, admission.sources, cost or Cost(0.0), budgets,
                              admission.key.hex())
        except BudgetExceeded as error:
            raise TaskRefused(str(error), "budget") from None

    def _spend(self, task_id: int, step: str, cost: Cost | None) -> None:
        """Records a release of noise before it is computed, checked against the budgets:
        paid whether or not the round succeeds, and again if the step is asked for again."""
        if cost is None or self.ledger is None:
            return
        admission = self._admissions[task_id]
        try:
            self.ledger.spend(admission.signer, admission.sources, admission.key.hex(), step,
                              cost, self.policy.current.privacy)
        except BudgetExceeded as error:
            raise TaskRefused(str(error), "budget") from None

    def _budget_note(self, task_id: int, job: Job) -> str:
        """The task log's line of what the task spends here and what its owner has left."""
        cost, budgets = job.total_privacy_cost(), self.policy.current.privacy
        if cost is None:
            return ""
        admission = self._admissions[task_id]
        note = f"differential privacy: the task spends {describe(cost, admission.delta)} here"
        if budgets is not None and self.ledger is not None:
            left = ", ".join(
                f"{self.ledger.remaining(admission.signer, key, budgets):.3g} on {name!r}"
                for key, name in admission.sources.items())
            note += (f"; {admission.signer} has epsilon {left} left of this site's "
                     f"epsilon_per_user={budgets.epsilon_per_user:g} (delta "
                     f"{budgets.delta_per_user:g})")
        return note

    def _check_signature(self, task_id: int, signature: task_pb2.TaskSignature | None,
                         spec_bytes: bytes) -> tuple[Identity, task_pb2.TaskClaims | None]:
        """The task's signer and signed claims, checked before anything of the task is
        loaded: signed by a user of this federation whose certificate is not revoked (by a
        revocation list that is not stale), over these very bytes, and not expired.
        TaskRefused otherwise. Without identities (--insecure) a task needs no signature, and
        its signer is anonymous."""
        if self.verifier is None:
            return ANONYMOUS, None
        if signature is None:
            raise TaskRefused("it is not signed by its submitter", "signature")
        try:
            self.verifier.check_crl_fresh()
            signer, claims = self.verifier.verify_task(signature, spec_bytes)
        except TrustError as error:
            raise TaskRefused(str(error), "signature") from None
        log.info("task %d: signed by %s, checked", task_id, signer.name)
        return signer, claims

    def _learning_error(self, failure: TaskError) -> str:
        """What the task's log gets of an error in the submitter's own code: at most its first
        LEARNING_ERROR_CHARS characters, or only the exception's type where the policy says
        `share_errors = false`, or nothing of it under DP-FedAvg (the submitter's code could
        put rows in its message, or in its exception's name). The whole of it stays in this
        worker's log."""
        text = str(failure)
        admission = self._admissions.get(failure.task_id)
        if admission is not None and admission.dp_learning:
            return (f"task {failure.task_id} failed in {failure.stage}: the task's code raised "
                    "an error; under differential privacy nothing of it leaves this holder "
                    "(its own log has it)")
        if not self.policy.current.share_errors:
            last = failure.message.strip().splitlines()[-1:] or [""]
            kind = last[0].split(":", 1)[0].strip() or "an error"
            return (f"task {failure.task_id} failed in {failure.stage}: {kind} (this holder's "
                    "policy shares no more of it: [learning] share_errors)")
        if len(text) > LEARNING_ERROR_CHARS:
            text = text[:LEARNING_ERROR_CHARS] + " ... (cut short)"
        return text

    @property
    def min_rows(self) -> int:
        return self.policy.current.effective_min_rows(self._min_rows_flag)

    def _offered(self) -> list[str]:
        """The data dir's files and the sources file's names that the policy offers."""
        return [name for name in self.catalog.names() if self.policy.current.offers(name)]

    def _release(self, task_id: int) -> None:
        """Drops what is kept for a task that ended or left this worker out; a learning job's
        engine task ends once it has loaded (a load cannot be interrupted halfway)."""
        self.secure.release(task_id)
        self._admissions.pop(task_id, None)
        self.outcomes.released(task_id)
        job = self._jobs.pop(task_id, None)
        if job is None:
            return

        async def close() -> None:
            try:
                loaded = await job
            except Exception:  # noqa: BLE001 - a load that failed left nothing to close
                return
            if isinstance(loaded, LearningJob):
                await loaded.close()
                log.info("task %d: released its engine task", task_id)

        def closed(done: asyncio.Task[None]) -> None:
            if self._closing.get(task_id) is done:
                del self._closing[task_id]

        self._closing[task_id] = asyncio.create_task(close())
        self._closing[task_id].add_done_callback(closed)
