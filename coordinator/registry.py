"""The workers the coordinator knows: their sessions, liveness, and answers they owe.

A worker registers (name and dataset names), then attaches its live channel. It is *connected*
while that channel is open and its heartbeats keep coming; a worker that closes the channel,
vanishes, or stops sending heartbeats (a hung process keeps its TCP connection open, and its
gRPC core still answers HTTP/2 keepalive pings) is dropped, and every answer it owed fails at
once with the reason. A registration whose channel never attaches is forgotten after the same
timeout; what a worker offers is bounded.

Liveness costs what happens, not how many workers there are: each session has one timer on the
event loop, which fires every heartbeat interval to send the session its heartbeat and drops it
once it has been silent past the timeout; nothing scans all workers. Connections that die without
a word are found by HTTP/2 keepalive (`sdk.wire`), which closes their channel. Connected workers
are indexed by the datasets they hold, so that choosing among thousands reads the index.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.limits import Limits, bound, invalid
from sdk.dataset import check_relative_name
from sdk.proto import services_pb2 as pb

log = logging.getLogger("deltaflow.coordinator")


class WorkerGone(Exception):
    """The worker can no longer answer: the message says why."""


class AlreadyConnected(Exception):
    """A worker of this name is connected and alive: a second one is refused, not swapped in."""


class Outbox:
    """The messages waiting for a session's live channel, in order; None closes it.

    Ten thousand idle sessions each hold one, so it holds nothing while empty but the future
    its reader waits on (an asyncio.Queue holds four deques and an Event: 3 KB a session)."""

    __slots__ = ("_messages", "_waiter")

    def __init__(self) -> None:
        self._messages: deque[pb.CoordinatorMessage | None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._messages) if self._messages is not None else 0

    def put(self, message: pb.CoordinatorMessage | None) -> None:
        if self._messages is None:
            self._messages = deque()
        self._messages.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def ready(self) -> asyncio.Future[None]:
        """A future done once there is a message to `take` (one reader at a time)."""
        waiter = asyncio.get_running_loop().create_future()
        if self._messages:
            waiter.set_result(None)
        else:
            self._waiter = waiter
        return waiter

    def take(self) -> pb.CoordinatorMessage | None:
        """The next message, which `ready` said is there."""
        self._waiter = None
        message = self._messages.popleft()
        if not self._messages:
            self._messages = None
        return message


@dataclass(eq=False)  # a session is itself: kept in sets, found by identity
class WorkerSession:
    name: str
    session_id: str
    datasets: frozenset[str]
    outbox: Outbox = field(default_factory=Outbox)
    last_seen: float = field(default_factory=time.monotonic)
    attached: bool = False
    connected_at: float = 0.0  # unix seconds its live channel attached
    closed_reason: str = ""
    tasks: set[int] = field(default_factory=set)  # selected for, and not dropped from
    # Tasks still running whose job it said it held when it registered (it came back while
    # they ran): their end releases it, though it may be in no round of theirs now.
    held: frozenset[int] = frozenset()
    timer: asyncio.TimerHandle | None = None  # its next heartbeat, or its expiry

    @property
    def connected(self) -> bool:
        return self.attached and not self.closed_reason

    def send(self, message: pb.CoordinatorMessage) -> None:
        if not self.closed_reason:
            self.outbox.put(message)


class Receiver(Protocol):
    """Takes in the body of one worker's answer as it streams in: `begin` with the answer's
    meta (ValueError refuses it before any byte), `write` each chunk, then `finish` gives the
    answer, or `discard` drops what was taken in."""

    def begin(self, meta: Any) -> None: ...
    def write(self, chunk: bytes) -> None: ...
    def finish(self) -> Any: ...
    def discard(self) -> None: ...


class MemoryReceiver:
    """Keeps a small answer's bytes in memory; the answer is those bytes."""

    LIMIT = 256 << 20  # bytes: parts of analytics are far smaller

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def begin(self, meta: Any) -> None:
        pass

    def write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.LIMIT:
            raise ValueError(f"its answer is larger than {self.LIMIT >> 20} MiB")
        self._chunks.append(chunk)

    def finish(self) -> bytes:
        return b"".join(self._chunks)

    def discard(self) -> None:
        self._chunks.clear()


@dataclass
class _Pending:
    worker: WorkerSession
    future: asyncio.Future[Any]
    receiver: Receiver
    on_note: Callable[[str], None] | None = None  # where a note sent with the answer goes
    claimed: bool = False  # an upload stream is bringing the answer


class WorkerRegistry:
    """Sessions by name and id, connected ones by the datasets they hold, answers owed by
    exchange id, and each session's heartbeat timer."""

    def __init__(self, heartbeat_interval: float, heartbeat_timeout: float,
                 limits: Limits = Limits()) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_datasets = limits.max_worker_datasets
        self._by_name: dict[str, WorkerSession] = {}
        self._by_id: dict[str, WorkerSession] = {}
        self._connected: dict[str, WorkerSession] = {}  # attached and not dropped, by name
        self._holders: dict[str, set[WorkerSession]] = {}  # dataset -> connected holders
        self._pending: dict[int, _Pending] = {}
        self._exchange_ids = itertools.count(1)
        self._changed = asyncio.Event()

    # Sessions ---------------------------------------------------------------------------------

    def register(self, name: str, datasets: Sequence[str]) -> WorkerSession:
        """A new session for worker `name`. One that registered and never attached gives way;
        one that is connected stays, and this registration is refused (AlreadyConnected): a
        second daemon with the same identity cannot evict the first. A connection that died
        is noticed (closed channel, or no heartbeat for heartbeat_timeout), then `name` is free.
        Refused when the dataset names are too many or one is not a dataset name."""
        self._check_datasets(name, datasets)
        previous = self._by_name.get(name)
        if previous is not None and previous.connected:
            raise AlreadyConnected(f"worker {name} is already connected; a second daemon with "
                                   "its identity is refused while the first one is alive")
        if previous is not None:
            self.drop(previous, "it registered again (restarted or reconnected)")
        session = WorkerSession(name, secrets.token_hex(16), frozenset(datasets))
        self._by_name[name] = session
        self._by_id[session.session_id] = session
        self._arm(session, min(self.heartbeat_interval, self.heartbeat_timeout))
        return session

    def session(self, session_id: str) -> WorkerSession | None:
        session = self._by_id.get(session_id)
        return session if session is not None and not session.closed_reason else None

    def attach(self, session: WorkerSession) -> None:
        session.attached = True
        session.last_seen = time.monotonic()
        session.connected_at = time.time()
        self._connected[session.name] = session
        self._index(session, add=True)
        log.info("worker %s connected, holding %d datasets", session.name, len(session.datasets))
        self._notify()

    def saw(self, session: WorkerSession) -> None:
        session.last_seen = time.monotonic()

    def update_datasets(self, session: WorkerSession, datasets: Sequence[str]) -> None:
        """The worker's new list of dataset names; Refused as for `register`."""
        self._check_datasets(session.name, datasets)
        if session.connected:
            self._index(session, add=False)
        session.datasets = frozenset(datasets)
        if session.connected:
            self._index(session, add=True)
        self._notify()

    def drop(self, session: WorkerSession, reason: str) -> None:
        """Closes a session for good; everything it owed fails with `reason`."""
        if session.closed_reason:
            return
        if self._connected.get(session.name) is session:
            self._index(session, add=False)
            del self._connected[session.name]
        session.closed_reason = reason
        if session.timer is not None:
            session.timer.cancel()
        session.outbox.put(None)
        if self._by_name.get(session.name) is session:
            del self._by_name[session.name]
        self._by_id.pop(session.session_id, None)
        for exchange_id, pending in list(self._pending.items()):
            if pending.worker is session:
                del self._pending[exchange_id]
                pending.receiver.discard()
                if not pending.future.done():
                    pending.future.set_exception(WorkerGone(reason))
        if session.attached:
            log.info("worker %s dropped: %s", session.name, reason)
        self._notify()

    def _check_datasets(self, name: str, datasets: Sequence[str]) -> None:
        if len(datasets) > self.max_datasets:
            raise invalid(f"worker {name} offers {len(datasets):,} datasets, over "
                          f"{bound('--max-worker-datasets', self.max_datasets)}")
        for dataset in datasets:
            try:
                check_relative_name(dataset)
            except ValueError as error:
                raise invalid(f"worker {name} offers what is not a dataset name: {error}") \
                    from None

    def connected(self) -> list[WorkerSession]:
        return list(self._connected.values())

    def count(self) -> int:
        """How many workers are connected."""
        return len(self._connected)

    def eligible(self, files: Sequence[str]) -> list[WorkerSession]:
        """The connected workers that hold every one of `files`, read from the index: the
        holders of the file held by fewest, less those that lack another."""
        if not files:
            return self.connected()
        holders = sorted((self._holders.get(file, set()) for file in set(files)), key=len)
        return [worker for worker in holders[0] if all(worker in other for other in holders[1:])]

    def lacking(self, files: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """The connected workers that lack some of `files` (by name), and which they lack: for
        the one line a task's log gets about them."""
        lacking = {}
        for worker in self._connected.values():
            missing = tuple(file for file in files if file not in worker.datasets)
            if missing:
                lacking[worker.name] = missing
        return lacking

    def _index(self, session: WorkerSession, add: bool) -> None:
        for dataset in session.datasets:
            if add:
                self._holders.setdefault(dataset, set()).add(session)
            else:
                holders = self._holders[dataset]
                holders.discard(session)
                if not holders:
                    del self._holders[dataset]

    def involved(self, task_id: int) -> list[WorkerSession]:
        """The connected workers a task's end concerns: those selected for it and not dropped
        from it, and those that came back holding its job while it ran."""
        return [session for session in self._connected.values()
                if task_id in session.tasks or task_id in session.held]

    def broadcast(self, message: pb.CoordinatorMessage) -> None:
        """Sends `message` to every connected worker."""
        for session in self.connected():
            session.send(message)

    async def wait_for_change(self, timeout: float) -> None:
        """Returns when a worker connects, drops or changes its datasets, or after `timeout`."""
        try:  # not wait_for, which in 3.11 can lose a cancellation that comes with a change
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            pass

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # Answers ----------------------------------------------------------------------------------

    def expect(self, worker: WorkerSession,
               receiver: Receiver | None = None,
               on_note: Callable[[str], None] | None = None) -> tuple[int, asyncio.Future[Any]]:
        """A new exchange id for a request to `worker`, and the future its answer resolves.

        The answer's body goes to `receiver` (by default kept in memory as bytes), and a note
        the worker sends with it to `on_note`.
        """
        exchange_id = next(self._exchange_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if worker.closed_reason:
            future.set_exception(WorkerGone(worker.closed_reason))
        else:
            self._pending[exchange_id] = _Pending(worker, future, receiver or MemoryReceiver(),
                                                  on_note)
        return exchange_id, future

    def forget(self, exchange_id: int) -> None:
        pending = self._pending.pop(exchange_id, None)
        if pending is not None:
            pending.receiver.discard()

    def receiver(self, session_id: str, exchange_id: int) -> Receiver | None:
        """Where the answer to an exchange goes; None if nobody waits for it (any more)."""
        pending = self._pending.get(exchange_id)
        if pending is None or pending.worker.session_id != session_id or pending.future.done():
            return None
        return pending.receiver

    def claim(self, session_id: str, exchange_id: int) -> Receiver | None:
        """The receiver for the one upload stream that brings an exchange's answer; None if
        nobody waits for it, or another stream already brings it."""
        receiver = self.receiver(session_id, exchange_id)
        if receiver is None or self._pending[exchange_id].claimed:
            return None
        self._pending[exchange_id].claimed = True
        return receiver

    def note(self, session_id: str, exchange_id: int, text: str) -> None:
        """Hands a worker's note on an exchange to whoever asked for it (if anyone waits)."""
        if self.receiver(session_id, exchange_id) is not None:
            on_note = self._pending[exchange_id].on_note
            if on_note is not None:
                on_note(text)

    def answer(self, session_id: str, exchange_id: int, answer: Any, error: str) -> bool:
        """Resolves an exchange with a worker's answer, or with `error` (why the worker could
        not answer); False if nobody waits for it any more."""
        if self.receiver(session_id, exchange_id) is None:
            return False
        pending = self._pending.pop(exchange_id)
        if error:
            pending.receiver.discard()
            pending.future.set_exception(WorkerGone(error))
        else:
            pending.future.set_result(answer)
        return True

    # Heartbeats ------------------------------------------------------------------------------

    def _arm(self, session: WorkerSession, delay: float) -> None:
        session.timer = asyncio.get_running_loop().call_later(delay, self._beat, session)

    def _beat(self, session: WorkerSession) -> None:
        """A session's one timer, from its registration on: drops it once silent past the
        timeout (or never attached within it); else sends it a heartbeat if it is attached,
        and fires again after the interval, or at its expiry if that comes first."""
        silent = time.monotonic() - session.last_seen
        if silent >= self.heartbeat_timeout:
            if session.attached:
                self.drop(session, f"no heartbeat for {silent:.1f} s (hung, stopped or cut off)")
            else:
                log.info("worker %s registered but did not connect within %g s; forgotten",
                         session.name, self.heartbeat_timeout)
                self.drop(session, "it registered but did not connect")
            return
        if session.attached:
            session.send(HEARTBEAT)
        self._arm(session, min(self.heartbeat_interval, self.heartbeat_timeout - silent))


HEARTBEAT = pb.CoordinatorMessage(heartbeat=pb.Heartbeat())
