"""A worker that speaks the protocol by hand, for tests of what the real daemon would never do:
go silent at a chosen phase, break off an upload, send malformed messages."""

from __future__ import annotations

import queue
import threading

import grpc

from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc
from sdk.wire import CHANNEL_OPTIONS, split_chunks


class HandWorker(threading.Thread):
    """Registers as `name` holding `datasets`, heartbeats, and answers each assignment with
    what `answer` returns (None: no answer at all), until `answer` sets `self.done`."""

    def __init__(self, address: str, name: str, datasets: list[str]) -> None:
        super().__init__(daemon=True)
        self.address, self.name, self.datasets = address, name, datasets
        self.done = threading.Event()
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = services_pb2_grpc.WorkerServiceStub(self.channel)
        self.session = ""

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        raise NotImplementedError

    def header(self, assignment: pb.Assignment) -> pb.UploadHeader:
        return pb.UploadHeader(session_id=self.session, exchange_id=assignment.exchange_id)

    def run(self) -> None:
        self.session = self.stub.Register(
            pb.RegisterRequest(name=self.name, datasets=self.datasets)).session_id
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
                if self.done.is_set():
                    break
        except grpc.RpcError:
            pass  # the coordinator stopped, or the test closed the channel
        finally:
            self.done.set()
            outgoing.put(None)
            self.channel.close()
