"""The worker daemon: registers with the coordinator, keeps the live channel, does assignments.

It reconnects on its own, with backoff, whenever the coordinator goes away or restarts, and
treats a coordinator that stays silent past the heartbeat timeout as gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import grpc

from sdk import values
from sdk.analytics.plan import PrivacyError
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2
from sdk.secagg import SecAggError
from sdk.wire import CHANNEL_OPTIONS, normalize_address, split_chunks
from worker.analytics import AnalyticsJob
from worker.datasets import DataDir, DatasetError
from worker.engine import (
    EngineLimits,
    EngineSession,
    NvmlInventory,
    TaskError,
    add_engine_arguments,
    limits_from_args,
)
from worker.learning_job import LearningJob
from worker.secure import SecureRounds

log = logging.getLogger("deltaflow.worker")

VERSION = "0.1.0"
RESCAN_SECONDS = 2.0  # how often the data dir is scanned for new or removed files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", default="127.0.0.1:6700",
                        help="the coordinator's HOST:PORT (default %(default)s)")
    parser.add_argument("--name", required=True, help="this worker's name, unique among workers")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the folder whose files this worker offers as datasets")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where learning tasks keep weights and logs (default: a folder "
                             "under the system's temporary dir)")
    parser.add_argument("--min-rows", type=int, default=3,
                        help="refuse to send any aggregate of fewer rows than this (a group, or "
                             "what a filter kept), as it would come close to single rows; 1 "
                             "turns the check off (default %(default)s)")
    parser.add_argument("--max-backoff", type=float, default=2.0,
                        help="longest wait between reconnection attempts, seconds (default %(default)s)")
    add_engine_arguments(parser)


async def serve(args: argparse.Namespace) -> None:
    if not args.data_dir.is_dir():
        raise SystemExit(f"--data-dir {args.data_dir} is not a folder")
    try:
        address = normalize_address(args.coordinator)
    except ValueError as error:
        raise SystemExit(f"--coordinator: {error}") from None
    try:
        limits = limits_from_args(args)
    except (OSError, ValueError) as error:
        raise SystemExit(f"engine settings: {error}") from None
    work_dir = args.work_dir or Path(tempfile.gettempdir()) / f"deltaflow-worker-{args.name}"
    worker = Worker(address, args.name, DataDir(args.data_dir),
                    args.max_backoff, work_dir, limits, args.min_rows)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"deltaflow worker {args.name} serving {worker.data_dir.root}", flush=True)
    await worker.run(stop)


Job = AnalyticsJob | LearningJob


class Worker:
    def __init__(self, address: str, name: str, data_dir: DataDir, max_backoff: float,
                 work_dir: Path, limits: EngineLimits, min_rows: int) -> None:
        self.address = address
        self.name = name
        self.data_dir = data_dir
        self.max_backoff = max_backoff
        self.min_rows = min_rows
        inventory = NvmlInventory()
        self.engine = EngineSession(work_dir, limits, inventory, name="engine")
        gpus = inventory.devices()
        log.info("engine: up to %d task processes; GPUs: %s", limits.max_tasks,
                 ", ".join(f"cuda:{g.index} {g.name}" for g in gpus) or "none, training on cpu")
        self._jobs: dict[int, asyncio.Task[Job]] = {}
        self.secure = SecureRounds()
        self._coordinator_id = ""  # the coordinator instance the jobs belong to
        self._background: set[asyncio.Task[None]] = set()

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

    async def _connect_once(self) -> bool:
        """One registration and channel, until it ends; True if registration succeeded."""
        async with grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
            stub = services_pb2_grpc.WorkerServiceStub(channel)
            datasets = await asyncio.to_thread(self.data_dir.names)
            reply = await stub.Register(pb.RegisterRequest(
                name=self.name, datasets=datasets, version=VERSION,
                coordinator_id=self._coordinator_id, held_tasks=list(self._jobs),
            ), timeout=5)
            self._coordinator_id = reply.coordinator_id
            for task_id in reply.release_tasks:
                self._release(task_id)
            log.info("registered with %s as %s, offering %d dataset(s)", self.address, self.name,
                     len(datasets))
            await self._channel(channel, stub, reply, datasets)
            return True

    async def _channel(self, channel: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                       reply: pb.RegisterResponse, datasets: list[str]) -> None:
        interval = reply.heartbeat_interval or 1.0
        silence_limit = max(4 * interval, 3.0)
        outgoing: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
        outgoing.put_nowait(pb.WorkerMessage(session_id=reply.session_id))

        async def requests():
            while True:
                yield await outgoing.get()

        call = stub.Connect(requests())
        beats = asyncio.create_task(self._heartbeats(outgoing, interval, datasets))
        handlers: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(call.read(), silence_limit)
                except asyncio.TimeoutError:
                    log.warning("coordinator silent for %.0f s; reconnecting", silence_limit)
                    return
                if message is grpc.aio.EOF:
                    log.warning("coordinator closed the channel")
                    return
                if message.HasField("assignment"):
                    handler = asyncio.create_task(
                        self._handle(channel, stub, reply.session_id, message.assignment))
                    handlers.add(handler)
                    handler.add_done_callback(handlers.discard)
                elif message.HasField("release_task_id"):
                    self._release(message.release_task_id)
        finally:
            beats.cancel()
            call.cancel()
            for handler in handlers:
                handler.cancel()

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
        """Tells the coordinator when the data dir's files change (heartbeats never wait on it)."""
        while True:
            await asyncio.sleep(RESCAN_SECONDS)
            current = await asyncio.to_thread(self.data_dir.names)
            if current != datasets:
                datasets = current
                log.info("data dir changed: now offering %d dataset(s)", len(datasets))
                outgoing.put_nowait(pb.WorkerMessage(datasets=pb.DatasetList(names=datasets)))

    async def _handle(self, channel: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                      session_id: str, assignment: pb.Assignment) -> None:
        task_id = assignment.task_id
        started = time.perf_counter()
        data, error = b"", ""
        try:
            job = await self._job(channel, stub, session_id, task_id)
            phase, secagg = assignment.phase, assignment.HasField("secagg")
            if phase in ("compute", "train") and job.secure and not secagg:
                raise PrivacyError(f"task {task_id} asks for secure aggregation, and the "
                                   f"coordinator asked for its {phase} in the clear: refused")
            if phase == "join":
                log.info("task %d: joined (%s)", task_id, job.describe())
            elif phase == "compute" and isinstance(job, AnalyticsJob):
                inputs = values.decode(assignment.inputs)
                if secagg:
                    parts = await asyncio.to_thread(job.parts, assignment.stage, inputs)
                    data = self.secure.open(assignment, job.min_clients, parts)
                else:
                    data = await asyncio.to_thread(job.compute, assignment.stage, inputs)
                log.info("task %d: step %d computed in %.3f s", task_id, assignment.stage + 1,
                         time.perf_counter() - started)
            elif phase == "secagg_keys":
                data = self.secure.open(assignment, job.min_clients)
            elif phase in ("secagg_share", "secagg_check", "secagg_unmask"):
                data = self.secure.answer(assignment)
            elif phase == "secagg_masked" and isinstance(job, AnalyticsJob):
                data = await asyncio.to_thread(self.secure.masked_parts, assignment,
                                               job.precision, job.max_clients)
                log.info("task %d: step %d sent under masks", task_id, assignment.stage + 1)
            elif phase == "train" and isinstance(job, LearningJob):
                round_input = values.decode(assignment.inputs)
                seeds = self.secure.mask_seeds(assignment) if secagg else None
                accepted = await job.train(channel, session_id, assignment.exchange_id,
                                           assignment.round, bool(round_input["validate"]), seeds)
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
        except (DatasetError, TaskError, PrivacyError, SecAggError) as failure:
            error = f"worker {self.name}: {failure}"
        except grpc.aio.AioRpcError:
            raise
        except Exception:  # noqa: BLE001 - the coordinator and the user learn what went wrong
            error = f"worker {self.name}: " + traceback.format_exc()
        if error:
            log.warning("task %d: %s failed: %s", task_id, assignment.phase, error)

        def upload() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(
                session_id=session_id, exchange_id=assignment.exchange_id, error=error))
            for chunk in split_chunks(data):
                yield pb.UploadRequest(chunk=chunk)

        await stub.Upload(upload())

    async def _job(self, channel: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                   session_id: str, task_id: int) -> Job:
        """The task's job, fetched and loaded once however many phases ask for it."""
        if task_id not in self._jobs or self._jobs[task_id].cancelled():
            self._jobs[task_id] = asyncio.create_task(
                self._load(channel, stub, session_id, task_id))
        job = self._jobs[task_id]
        try:
            return await asyncio.shield(job)
        except Exception:
            self._jobs.pop(task_id, None)
            raise

    async def _load(self, channel: grpc.aio.Channel, stub: services_pb2_grpc.WorkerServiceStub,
                    session_id: str, task_id: int) -> Job:
        chunks = [c.chunk async for c in stub.FetchTask(
            pb.FetchTaskRequest(session_id=session_id, task_id=task_id))]
        spec = task_pb2.TaskSpec()
        spec.ParseFromString(b"".join(chunks))
        if spec.kind != task_pb2.TASK_KIND_LEARNING:
            return await asyncio.to_thread(AnalyticsJob, spec, self.data_dir, self.min_rows)
        data_path = self.data_dir.resolve(spec.datasets[0].file)
        job = LearningJob(task_id, spec, data_path, Path(self.engine.workdir))
        await job.open(self.engine, channel, session_id, expected_weights_sha256=None)
        return job

    def _release(self, task_id: int) -> None:
        """Drops what is kept for a task that ended or left this worker out; a learning job's
        engine task ends once it has loaded (a load cannot be interrupted halfway)."""
        self.secure.release(task_id)
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

        closing = asyncio.create_task(close())
        self._background.add(closing)
        closing.add_done_callback(self._background.discard)
