"""The user's handle on a coordinator: create tasks, follow their logs, fetch their results."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc

from sdk import values
from sdk.config import config_path, load_config
from sdk.progress import ProgressLine
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2, values_pb2
from sdk.task import BuiltTask
from sdk.trust import USER_ROLES, Kit, TrustError, sign_task
from sdk.wire import (CHANNEL_OPTIONS, TENSORS_FORMAT, VALUE_FORMAT, is_loopback,
                      normalize_address, split_chunks)

RECONNECT_SECONDS = 30.0  # how long trace/wait keep trying while the coordinator restarts
TASK_EXPIRY_SECONDS = 3600.0  # a signed task must be joined by its workers within this


class ClientError(Exception):
    """A call the coordinator refused or could not answer; the message says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Client:
    """Talks to a coordinator as a user.

    With a user's kit (`kit=` or the DELTAFLOW_KIT environment variable) it speaks mutual TLS
    as that user, to the kit's coordinator unless `address` says otherwise, and signs every
    task it creates. Without one it speaks plaintext, to a loopback address only (a coordinator
    started with --insecure). `address` is "HOST:PORT" (or "http://HOST:PORT"), else the
    DELTAFLOW_COORDINATOR environment variable. Last come the keys `kit` and `coordinator` of
    the user's settings file (`sdk.config`: ~/.config/deltaflow/config.toml), whose address
    goes before the kit's.
    """

    def __init__(self, address: str | None = None, kit: str | os.PathLike | None = None,
                 timeout: float = 30.0) -> None:
        settings = {}
        if not (kit or os.environ.get("DELTAFLOW_KIT")) or not (
                address or os.environ.get("DELTAFLOW_COORDINATOR")):
            settings = load_config()
        kit = kit or os.environ.get("DELTAFLOW_KIT") or settings.get("kit")
        self.kit = _user_kit(Path(kit)) if kit else None
        address = address or os.environ.get("DELTAFLOW_COORDINATOR") or settings.get(
            "coordinator") or (self.kit.coordinator if self.kit else None)
        if not address:
            raise ValueError("no coordinator address: pass Client(address) or a kit, set "
                             f"DELTAFLOW_COORDINATOR, or write coordinator = \"HOST:PORT\" in "
                             f"{config_path()}")
        self.address = normalize_address(address)
        self.timeout = timeout
        if self.kit is not None:
            self._channel = grpc.secure_channel(self.address, self.kit.channel_credentials(),
                                                options=CHANNEL_OPTIONS)
        else:
            if address.strip().lower().startswith("https://"):
                raise ValueError(f"{address} asks for TLS, which needs a user kit: pass "
                                 "Client(kit=DIR) or set DELTAFLOW_KIT")
            if not is_loopback(self.address):
                raise ValueError(f"without a kit the client speaks plaintext, to a loopback "
                                 f"address only, not {self.address}: pass Client(kit=DIR) or "
                                 "set DELTAFLOW_KIT to a user kit from `deltaflow provision`")
            self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self._tasks = services_pb2_grpc.TaskServiceStub(self._channel)

    def close(self) -> None:
        """Closes the connection; `with Client(...) as client:` does it on leaving."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_task(self, task: BuiltTask) -> int:
        """Submits a built task; its id."""
        if not isinstance(task, BuiltTask):
            raise TypeError(f"create_task takes what task.build() returns, not {type(task).__name__}")
        signature = None
        if self.kit is not None:
            signature = sign_task(self.kit, task.serialize(), _weights_sha256(task),
                                  TASK_EXPIRY_SECONDS)
        # No deadline: the time a model takes to upload grows with its size.
        return self._call(self._tasks.CreateTask, _create_requests(task, signature),
                          deadline=False).task_id

    def get_task(self, task_id: int) -> pb.TaskInfo:
        """The task's state, owner, rules, datasets, workers, times and error, as the
        coordinator knows them now (the `TaskInfo` message)."""
        return self._call(self._tasks.GetTask, pb.GetTaskRequest(task_id=task_id))

    def list_tasks(self, limit: int = 100) -> list[pb.TaskInfo]:
        """The newest `limit` tasks the caller may see, newest first, page after page (the
        coordinator cuts a page by size too)."""
        tasks: list[pb.TaskInfo] = []
        while len(tasks) < limit:
            request = pb.ListTasksRequest(limit=limit - len(tasks),
                                          before_task_id=tasks[-1].task_id if tasks else 0)
            page = self._call(self._tasks.ListTasks, request).tasks
            if not page:
                break
            tasks.extend(page)
        return tasks

    def cancel_task(self, task_id: int) -> pb.TaskInfo:
        """Cancels a pending or running task (an analyst's own, or any for an admin); the task
        as it is then. Refused (`FAILED_PRECONDITION`) once it has ended."""
        return self._call(self._tasks.CancelTask, pb.CancelTaskRequest(task_id=task_id))

    def list_audit(self, limit: int = 100, before_id: int = 0) -> list[pb.AuditEntry]:
        """The coordinator's audit log, newest first (admins only)."""
        request = pb.ListAuditRequest(limit=limit, before_id=before_id)
        return list(self._call(self._tasks.ListAudit, request).entries)

    def list_workers(self) -> list[pb.WorkerInfo]:
        """The workers connected now, by name; admins also see when each connected and the
        tasks it runs."""
        return list(self._call(self._tasks.ListWorkers, pb.ListWorkersRequest()).workers)

    def logs(self, task_id: int, offset: int = 0) -> list[pb.LogEntry]:
        """The task's log so far, from `offset` on, without waiting for more."""
        request = pb.StreamLogsRequest(task_id=task_id, offset=offset)
        return list(self._call_stream(self._tasks.StreamLogs, request))

    def trace(self, task_id: int, out: TextIO | None = None, offset: int = 0) -> bool:
        """Prints the task's log from `offset` until it ends; True if it finished well.

        On a terminal a learning task's progress (round, metrics, time left) is redrawn in
        place below the log lines."""
        stream = out or sys.stdout
        if not stream.isatty():
            return self.follow(task_id, lambda entry: print(log_line(entry), file=stream,
                                                            flush=True), offset)
        progress = ProgressLine(stream)
        try:
            return self.follow(task_id, lambda entry: progress.show(
                log_line(entry), entry.time, entry.message), offset)
        finally:
            progress.close()

    def wait(self, task_id: int) -> bool:
        """Waits until the task ends; True if it finished well."""
        return self.follow(task_id, lambda entry: None)

    def get_result(self, task_id: int) -> Any:
        """The result of a finished task: pandas/Python values for analytics, the global
        weights (`Dict[str, torch.Tensor]`) for learning."""
        chunks = self._call_stream(self._tasks.GetResult, pb.GetResultRequest(task_id=task_id),
                                   deadline=False)  # a model's weights take their time
        first = next(chunks)
        if first.format == TENSORS_FORMAT:
            from sdk.tensors import StateDictReader  # torch: only learning results need it

            reader = StateDictReader(list(first.tensors))
            reader.write(first.chunk)
            for chunk in chunks:
                reader.write(chunk.chunk)
            return reader.result()
        if first.format != VALUE_FORMAT:
            raise ClientError(grpc.StatusCode.UNIMPLEMENTED,
                              f"task {task_id}'s result is in format {first.format!r}, "
                              "which this SDK cannot read")
        data = first.chunk + b"".join(c.chunk for c in chunks)
        message = values_pb2.Value()
        message.ParseFromString(data)
        return values.decode(message)

    def get_metrics(self, task_id: int) -> list[dict[str, float]]:
        """A learning task's validation metrics: one dict per round that validated, with its
        `round` and the number of `workers` whose metrics were averaged."""
        reply = self._call(self._tasks.GetMetrics, pb.GetMetricsRequest(task_id=task_id))
        return [{"round": r.round, "workers": r.workers, **dict(r.metrics)} for r in reply.rounds]

    def follow(self, task_id: int, show: Callable[[pb.LogEntry], None], offset: int = 0) -> bool:
        """Hands each log entry from `offset` on to `show` until the task ends, riding out a
        coordinator restart, and a coordinator that closed the stream because `show` fell
        behind (it goes on from the next entry); True if it finished well. Ctrl-C stops
        following (the task runs on, as one line on stderr says) and raises KeyboardInterrupt."""
        give_up = None
        stream = None
        try:
            while True:
                start = offset
                try:
                    stream = self._tasks.StreamLogs(
                        pb.StreamLogsRequest(task_id=task_id, offset=offset, follow=True))
                    for entry in stream:
                        show(entry)
                        offset = entry.offset + 1
                        give_up = None
                    info = self._tasks.GetTask(pb.GetTaskRequest(task_id=task_id),
                                               timeout=self.timeout)
                    if info.state not in (pb.TASK_STATE_PENDING, pb.TASK_STATE_RUNNING):
                        return info.state == pb.TASK_STATE_FINISHED
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and offset > start:
                        continue  # it fell behind the log and was cut off after some entries
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise self._error(error) from None
                    give_up = give_up or time.monotonic() + RECONNECT_SECONDS
                    if time.monotonic() > give_up:
                        raise self._error(error) from None
                    time.sleep(0.5)
        except KeyboardInterrupt:
            if stream is not None:
                stream.cancel()
            print(f"stopped following task {task_id}; it is still running", file=sys.stderr,
                  flush=True)
            raise KeyboardInterrupt from None

    def _call(self, method: Any, request: Any, deadline: bool = True) -> Any:
        """Calls the coordinator; within `self.timeout` unless `deadline` is off (for calls
        whose time grows with what they carry)."""
        try:
            return method(request, timeout=self.timeout if deadline else None)
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _call_stream(self, method: Any, request: Any, deadline: bool = True) -> Iterator[Any]:
        try:
            yield from method(request, timeout=self.timeout if deadline else None)
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _error(self, error: grpc.RpcError) -> ClientError:
        code = error.code()
        if code != grpc.StatusCode.UNAVAILABLE:
            return ClientError(code, f"{code.name}: {error.details()}")
        message = (f"cannot reach the coordinator at {self.address} ({error.details()}); "
                   "is `deltaflow coordinator` running there?")
        if self.kit is None:
            message += (" If it was started with a kit, it speaks TLS only: use a user kit "
                        "(Client(kit=DIR) or DELTAFLOW_KIT)")
        else:
            message += (f" If it was started with --insecure, it speaks plaintext: drop the "
                        f"kit. Otherwise check that {self.address} is a name in the "
                        "coordinator's certificate and that your kit is of its federation")
        return ClientError(code, message)


def log_line(entry: pb.LogEntry) -> str:
    """A log entry as one line: local time, two spaces, the message."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.time))
    return f"{stamp}  {entry.message}"


def _user_kit(path: Path) -> Kit:
    """The user's kit at `path`; ValueError saying what is wrong with it."""
    try:
        return Kit.load(path, roles=USER_ROLES)
    except TrustError as error:
        raise ValueError(f"kit {path}: {error}") from None


def _weights_sha256(task: BuiltTask) -> bytes:
    """SHA-256 of a learning task's initial weights as they travel; empty without weights."""
    if not task.weights:
        return b""
    from sdk.tensors import iter_chunks  # torch: only learning tasks have weights

    digest = hashlib.sha256()
    for chunk in iter_chunks(task.weights):
        digest.update(chunk)
    return digest.digest()


def _create_requests(task: BuiltTask,
                     signature: task_pb2.TaskSignature | None) -> Iterator[pb.CreateTaskRequest]:
    """The spec in chunks (the signature with the first), then a learning task's initial
    weights in chunks."""
    for index, chunk in enumerate(split_chunks(task.serialize())):
        request = pb.CreateTaskRequest(chunk=chunk)
        if index == 0 and signature is not None:
            request.signature.CopyFrom(signature)
        yield request
    if task.weights:
        from sdk.tensors import iter_chunks  # torch: only learning tasks have weights

        for chunk in iter_chunks(task.weights):
            yield pb.CreateTaskRequest(weights_chunk=bytes(chunk))
