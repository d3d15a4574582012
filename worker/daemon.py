"""The worker daemon: registers with the coordinator, keeps the live channel, does assignments.

It reconnects on its own, with backoff, whenever the coordinator goes away or restarts, and
treats a coordinator that stays silent past the heartbeat timeout as gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
import traceback
from pathlib import Path

import grpc

from sdk import values
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2
from sdk.wire import CHANNEL_OPTIONS, normalize_address, split_chunks
from worker.analytics import AnalyticsJob
from worker.datasets import DataDir, DatasetError

log = logging.getLogger("deltaflow.worker")

VERSION = "0.1.0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", default="127.0.0.1:6700",
                        help="the coordinator's HOST:PORT (default %(default)s)")
    parser.add_argument("--name", required=True, help="this worker's name, unique among workers")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the folder whose files this worker offers as datasets")
    parser.add_argument("--max-backoff", type=float, default=2.0,
                        help="longest wait between reconnection attempts, seconds (default %(default)s)")


async def serve(args: argparse.Namespace) -> None:
    if not args.data_dir.is_dir():
        raise SystemExit(f"--data-dir {args.data_dir} is not a folder")
    worker = Worker(normalize_address(args.coordinator), args.name, DataDir(args.data_dir),
                    args.max_backoff)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"deltaflow worker {args.name} serving {worker.data_dir.root}", flush=True)
    await worker.run(stop)


class Worker:
    def __init__(self, address: str, name: str, data_dir: DataDir, max_backoff: float) -> None:
        self.address = address
        self.name = name
        self.data_dir = data_dir
        self.max_backoff = max_backoff
        self._jobs: dict[int, asyncio.Task[AnalyticsJob]] = {}

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
        log.info("worker %s stopped", self.name)

    async def _connect_once(self) -> bool:
        """One registration and channel, until it ends; True if registration succeeded."""
        async with grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
            stub = services_pb2_grpc.WorkerServiceStub(channel)
            datasets = self.data_dir.names()
            reply = await stub.Register(
                pb.RegisterRequest(name=self.name, datasets=datasets, version=VERSION), timeout=5
            )
            log.info("registered with %s as %s, offering %d dataset(s)", self.address, self.name,
                     len(datasets))
            await self._channel(stub, reply, datasets)
            return True

    async def _channel(self, stub: services_pb2_grpc.WorkerServiceStub,
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
                        self._handle(stub, reply.session_id, message.assignment))
                    handlers.add(handler)
                    handler.add_done_callback(handlers.discard)
                elif message.HasField("release_task_id"):
                    self._jobs.pop(message.release_task_id, None)
        finally:
            beats.cancel()
            call.cancel()
            for handler in handlers:
                handler.cancel()

    async def _heartbeats(self, outgoing: asyncio.Queue[pb.WorkerMessage], interval: float,
                          datasets: list[str]) -> None:
        while True:
            await asyncio.sleep(interval)
            outgoing.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(time=time.time())))
            current = await asyncio.to_thread(self.data_dir.names)
            if current != datasets:
                datasets = current
                log.info("data dir changed: now offering %d dataset(s)", len(datasets))
                outgoing.put_nowait(pb.WorkerMessage(datasets=pb.DatasetList(names=datasets)))

    async def _handle(self, stub: services_pb2_grpc.WorkerServiceStub, session_id: str,
                      assignment: pb.Assignment) -> None:
        task_id = assignment.task_id
        started = time.perf_counter()
        data, error = b"", ""
        try:
            if assignment.phase == "join":
                job = await self._job(stub, session_id, task_id)
                log.info("task %d: joined (%s)", task_id, job.describe())
            elif assignment.phase == "compute":
                job = await self._job(stub, session_id, task_id)
                inputs = values.decode(assignment.inputs)
                data = await asyncio.to_thread(job.compute, assignment.stage, inputs)
                log.info("task %d: step %d computed in %.3f s", task_id, assignment.stage + 1,
                         time.perf_counter() - started)
            else:
                raise ValueError(f"unknown phase {assignment.phase!r}")
        except DatasetError as failure:
            error = str(failure)
        except grpc.aio.AioRpcError:
            raise
        except Exception:  # noqa: BLE001 - the coordinator and the user learn what went wrong
            error = f"worker {self.name}: " + traceback.format_exc()
        if error:
            log.warning("task %d: %s failed: %s", task_id, assignment.phase, error)

        def upload():
            yield pb.UploadRequest(header=pb.UploadHeader(
                session_id=session_id, exchange_id=assignment.exchange_id, error=error))
            for chunk in split_chunks(data):
                yield pb.UploadRequest(chunk=chunk)

        await stub.Upload(upload())

    async def _job(self, stub: services_pb2_grpc.WorkerServiceStub, session_id: str,
                   task_id: int) -> AnalyticsJob:
        """The task's job, fetched and loaded once however many phases ask for it."""
        if task_id not in self._jobs or self._jobs[task_id].cancelled():
            self._jobs[task_id] = asyncio.create_task(self._load(stub, session_id, task_id))
        job = self._jobs[task_id]
        try:
            return await asyncio.shield(job)
        except Exception:
            self._jobs.pop(task_id, None)
            raise

    async def _load(self, stub: services_pb2_grpc.WorkerServiceStub, session_id: str,
                    task_id: int) -> AnalyticsJob:
        chunks = [c.chunk async for c in stub.FetchTask(
            pb.FetchTaskRequest(session_id=session_id, task_id=task_id))]
        spec = task_pb2.TaskSpec()
        spec.ParseFromString(b"".join(chunks))
        return await asyncio.to_thread(AnalyticsJob, spec, self.data_dir)
