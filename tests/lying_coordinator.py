"""A coordinator served by the test itself, to drive a real worker daemon through what an
honest coordinator never does: ask for a secure task's parts in the clear, hand it a task whose
bytes or signature were changed, replay an expired one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from sdk import values
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2
from sdk.trust import Kit
from sdk.wire import SERVER_OPTIONS, split_chunks


class LyingCoordinator(services_pb2_grpc.WorkerServiceServicer):
    """Registers one worker, hands it task 1 (`spec_bytes`, with `signature` if given) and
    `weights`, asks it for `phase`, and keeps the error of its answer in `error`."""

    def __init__(self, spec_bytes: bytes, signature: task_pb2.TaskSignature | None = None,
                 phase: str = "compute", weights: bytes = b"", crl: bytes = b"",
                 round_number: int = 1) -> None:
        self.spec_bytes, self.signature, self.phase = spec_bytes, signature, phase
        self.round_number = round_number
        self.weights, self.crl = weights, crl
        self.answered = threading.Event()
        self.error = ""

    def Register(self, request, context):
        return pb.RegisterResponse(session_id="s", heartbeat_interval=0.5, coordinator_id="c",
                                   crl=self.crl)

    def Connect(self, request_iterator, context):
        next(request_iterator)
        yield pb.CoordinatorMessage(assignment=pb.Assignment(
            exchange_id=1, task_id=1, round=self.round_number, phase=self.phase, stage=0, timeout=30,
            inputs=values.encode({})))
        while not self.answered.wait(0.5):
            yield pb.CoordinatorMessage(heartbeat=pb.Heartbeat())

    def FetchTask(self, request, context):
        for index, chunk in enumerate(split_chunks(self.spec_bytes)):
            if index == 0 and self.signature is not None:
                yield pb.TaskChunk(chunk=chunk, signature=self.signature)
            else:
                yield pb.TaskChunk(chunk=chunk)

    def FetchWeights(self, request, context):
        for chunk in split_chunks(self.weights):
            yield pb.DataChunk(chunk=chunk)

    def Upload(self, request_iterator, context):
        self.error = next(request_iterator).header.error
        self.answered.set()
        return pb.UploadResponse(accepted=True)


def serve(liar: LyingCoordinator, cluster) -> grpc.Server:
    """Serves `liar` on a free loopback port, with the cluster's coordinator kit where it has
    one (so the worker takes it for its coordinator), and points the cluster's workers at it."""
    server = grpc.server(ThreadPoolExecutor(4), options=SERVER_OPTIONS)
    services_pb2_grpc.add_WorkerServiceServicer_to_server(liar, server)
    if cluster.federation is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        kit = Kit.load(cluster.federation / "coordinator")
        port = server.add_secure_port("127.0.0.1:0", kit.server_credentials())
    server.start()
    cluster.address = f"127.0.0.1:{port}"
    return server
