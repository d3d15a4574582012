"""A worker that speaks the protocol by hand, for tests of what the real daemon would never do:
go silent at a chosen phase, break off an upload, send malformed messages."""

from __future__ import annotations

import queue
import threading

import grpc

from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2
from sdk.secagg import Rule
from sdk.trust import Kit, Verifier
from sdk.wire import split_chunks
from worker.contributions import ContributionLedger
from worker.secure import Contribution, SecureRounds


class HandWorker(threading.Thread):
    """Registers as `name` holding `datasets` (with the cluster's kit for `name`, as a real
    worker of the federation), heartbeats, and answers each assignment with what `answer`
    returns (None: no answer at all), until `answer` sets `self.done`. `self.secure` runs its
    side of secure aggregation, as the daemon's."""

    def __init__(self, cluster, name: str, datasets: list[str], held_tasks: list[int] = (),
                 coordinator_id: str = "") -> None:
        super().__init__(daemon=True)
        self.name, self.datasets = name, datasets
        # What it says it holds when it registers, as a worker back from a broken connection.
        self.held_tasks, self.coordinator_id = list(held_tasks), coordinator_id
        self.release_tasks: list[int] = []  # what registration released of held_tasks
        self.heartbeats = 0  # received from the coordinator
        self.done = threading.Event()
        self.channel = cluster.channel(name)
        self.stub = services_pb2_grpc.WorkerServiceStub(self.channel)
        self.session = ""
        kit = Kit.load(cluster.kit(name)) if cluster.federation is not None else None
        self.verifier = Verifier(kit.ca_pem) if kit is not None else None
        self.secure = SecureRounds(ContributionLedger(cluster.root / f"hand-{name}.sqlite3"),
                                   kit, self.verifier)

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        raise NotImplementedError

    def released(self, task_id: int) -> None:
        """The coordinator released it from the task (it was dropped, or the task ended)."""

    def report_error(self, assignment: pb.Assignment, error: str) -> None:
        """Answers the assignment with an error, as a worker whose computation failed."""
        header = self.header(assignment)
        header.error = error
        self.stub.Upload(iter([pb.UploadRequest(header=header)]))

    def header(self, assignment: pb.Assignment) -> pb.UploadHeader:
        return pb.UploadHeader(session_id=self.session, exchange_id=assignment.exchange_id)

    def fetch_task(self, task_id: int) -> tuple[task_pb2.TaskSpec, task_pb2.TaskClaims]:
        """The task's spec and its signed claims, as a worker downloads them."""
        messages = list(self.stub.FetchTask(pb.FetchTaskRequest(session_id=self.session,
                                                                task_id=task_id)))
        data = b"".join(m.chunk for m in messages)
        claims = task_pb2.TaskClaims.FromString(messages[0].signature.claims)
        return task_pb2.TaskSpec.FromString(data), claims

    def contribution(self, assignment: pb.Assignment, step: str) -> Contribution:
        """What the rerun rule keys this round's input by, and the signed task's threshold
        rule, as the daemon takes them."""
        spec, claims = self.fetch_task(assignment.task_id)
        return Contribution(claims.nonce or assignment.task_id.to_bytes(8, "big"), step,
                            Rule.of(spec))

    def run(self) -> None:
        reply = self.stub.Register(pb.RegisterRequest(
            name=self.name, datasets=self.datasets, held_tasks=self.held_tasks,
            coordinator_id=self.coordinator_id))
        self.session, self.coordinator_id = reply.session_id, reply.coordinator_id
        self.release_tasks = list(reply.release_tasks)
        if self.verifier is not None and reply.crl:
            self.verifier.set_crl(reply.crl)
        outgoing: queue.Queue = queue.Queue()
        outgoing.put(pb.WorkerMessage(session_id=self.session))

        def beat() -> None:
            while not self.done.wait(0.5):
                outgoing.put(pb.WorkerMessage(heartbeat=pb.Heartbeat()))

        threading.Thread(target=beat, daemon=True).start()
        try:
            for message in self.stub.Connect(iter(outgoing.get, None)):
                if message.HasField("assignment"):
                    data = self.answer(message.assignment)
                    if data is not None:
                        requests = [pb.UploadRequest(header=self.header(message.assignment))]
                        requests += [pb.UploadRequest(chunk=c) for c in split_chunks(data)]
                        self.stub.Upload(iter(requests))
                elif message.HasField("release_task_id"):
                    self.released(message.release_task_id)
                elif message.HasField("heartbeat"):
                    self.heartbeats += 1
                if self.done.is_set():
                    break
        except grpc.RpcError:
            pass  # the coordinator stopped, or the test closed the channel
        finally:
            self.done.set()
            outgoing.put(None)
            self.channel.close()
