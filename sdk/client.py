"""The user's handle on a coordinator: create tasks, follow their logs, fetch their results."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import grpc

from sdk import values
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, values_pb2
from sdk.task import BuiltTask
from sdk.wire import (CHANNEL_OPTIONS, TENSORS_FORMAT, VALUE_FORMAT, normalize_address,
                      split_chunks)

RECONNECT_SECONDS = 30.0  # how long trace/wait keep trying while the coordinator restarts


class ClientError(Exception):
    """A call the coordinator refused or could not answer; the message says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Client:
    """Talks to a coordinator at "HOST:PORT" (or "http://HOST:PORT")."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = normalize_address(address)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self._tasks = services_pb2_grpc.TaskServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_task(self, task: BuiltTask) -> int:
        """Submits a built task; its id."""
        if not isinstance(task, BuiltTask):
            raise TypeError(f"create_task takes what task.build() returns, not {type(task).__name__}")
        # No deadline: the time a model takes to upload grows with its size.
        return self._call(self._tasks.CreateTask, _create_requests(task), deadline=False).task_id

    def get_task(self, task_id: int) -> pb.TaskInfo:
        return self._call(self._tasks.GetTask, pb.GetTaskRequest(task_id=task_id))

    def list_tasks(self, limit: int = 100) -> list[pb.TaskInfo]:
        return list(self._call(self._tasks.ListTasks, pb.ListTasksRequest(limit=limit)).tasks)

    def cancel_task(self, task_id: int) -> pb.TaskInfo:
        return self._call(self._tasks.CancelTask, pb.CancelTaskRequest(task_id=task_id))

    def logs(self, task_id: int, offset: int = 0) -> list[pb.LogEntry]:
        """The task's log so far, from `offset` on, without waiting for more."""
        request = pb.StreamLogsRequest(task_id=task_id, offset=offset)
        return list(self._call_stream(self._tasks.StreamLogs, request))

    def trace(self, task_id: int, out: TextIO | None = None) -> bool:
        """Prints the task's log until it ends; True if it finished well."""
        stream = out or sys.stdout

        def show(entry: pb.LogEntry) -> None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.time))
            print(f"{stamp}  {entry.message}", file=stream, flush=True)

        return self._follow(task_id, show)

    def wait(self, task_id: int) -> bool:
        """Waits until the task ends; True if it finished well."""
        return self._follow(task_id, lambda entry: None)

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

    def _follow(self, task_id: int, show: Callable[[pb.LogEntry], None]) -> bool:
        """Streams the log from where it got to, riding out a coordinator restart."""
        offset = 0
        give_up = None
        while True:
            try:
                for entry in self._tasks.StreamLogs(
                        pb.StreamLogsRequest(task_id=task_id, offset=offset, follow=True)):
                    show(entry)
                    offset = entry.offset + 1
                    give_up = None
                info = self._tasks.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=self.timeout)
                if info.state not in (pb.TASK_STATE_PENDING, pb.TASK_STATE_RUNNING):
                    return info.state == pb.TASK_STATE_FINISHED
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise _client_error(error, self.address) from None
                give_up = give_up or time.monotonic() + RECONNECT_SECONDS
                if time.monotonic() > give_up:
                    raise _client_error(error, self.address) from None
                time.sleep(0.5)

    def _call(self, method: Any, request: Any, deadline: bool = True) -> Any:
        """Calls the coordinator; within `self.timeout` unless `deadline` is off (for calls
        whose time grows with what they carry)."""
        try:
            return method(request, timeout=self.timeout if deadline else None)
        except grpc.RpcError as error:
            raise _client_error(error, self.address) from None

    def _call_stream(self, method: Any, request: Any, deadline: bool = True) -> Iterator[Any]:
        try:
            yield from method(request, timeout=self.timeout if deadline else None)
        except grpc.RpcError as error:
            raise _client_error(error, self.address) from None


def _create_requests(task: BuiltTask) -> Iterator[pb.CreateTaskRequest]:
    """The spec in chunks, then a learning task's initial weights in chunks."""
    for chunk in split_chunks(task.serialize()):
        yield pb.CreateTaskRequest(chunk=chunk)
    if task.weights:
        from sdk.tensors import iter_chunks  # torch: only learning tasks have weights

        for chunk in iter_chunks(task.weights):
            yield pb.CreateTaskRequest(weights_chunk=bytes(chunk))


def _client_error(error: grpc.RpcError, address: str) -> ClientError:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        message = (f"cannot reach the coordinator at {address} ({error.details()}); "
                   "is `deltaflow coordinator` running there?")
    else:
        message = f"{code.name}: {error.details()}"
    return ClientError(code, message)
