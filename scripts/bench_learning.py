"""FedAvg round time against a bare gRPC transfer of the same bytes, and coordinator memory.

For models of 1M, 25M and 100M float32 parameters with trivial training, over local workers:
- the time a round takes (median over rounds 2.., from the task's log),
- the time a bare gRPC stream takes to move what a round moves (every worker downloads the
  model, then every worker uploads it) between separate processes on this machine: raw bytes
  read from a buffer in memory and written into one, in chunks of the same size, nothing else,
- the coordinator's peak RSS (VmHWM) with 3 and with 8 workers.

`--mode plain` (the default here) runs FedAvg without secure aggregation, the transfer the bare
stream is compared with; `--mode secure` runs it as tasks do by default, where each worker
uploads a masked vector of 8-byte words (twice a float32 model) after the key exchange.

Usage: python scripts/bench_learning.py [--sizes 1,25,100] [--workers 3,8] [--rounds 3]
                                        [--mode plain|secure|both]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch

from deltaflow.localcluster import LocalCluster
from sdk import dataset
from sdk.client import Client
from sdk.task import FedAvg, HorizontalLearning
from sdk.wire import CHUNK_SIZE
from sdk.wire import CHANNEL_OPTIONS, SERVER_OPTIONS

MIB = 2**20


class Trivial(HorizontalLearning):
    """One big parameter; training nudges it, so every round moves real, changing bytes."""

    def __init__(self, parameters: int, rounds: int, workers: int, secure: bool) -> None:
        super().__init__(name=f"bench-{parameters}", max_rounds=rounds, validate_frac=0,
                         strategy=FedAvg(min_clients=workers, max_clients=workers,
                                         wait_timeout=600, connection_timeout=120),
                         secure_aggregation=secure)
        self.weights = torch.zeros(parameters)

    def dataset(self):
        return dataset.Dataset("bench.npz")

    def make_train_dataloader(self, ds):
        return [ds[0]]

    def make_validate_dataloader(self, ds):
        return []

    def train(self, dataloader):
        self.weights.add_(1.0)

    def validate(self, dataloader):
        return {}

    def state_dict(self):
        return {"weights": self.weights}


def run_task(parameters: int, workers: int, rounds: int, secure: bool) -> tuple[float, float]:
    """(median round seconds, coordinator peak RSS in MiB) for one task over `workers`."""
    with tempfile.TemporaryDirectory() as folder, LocalCluster(Path(folder)) as cluster:
        address = cluster.start_coordinator()
        for i in range(workers):
            np.savez(cluster.data_dir(f"w{i}") / "bench.npz", x=np.zeros((1, 1)), y=np.zeros(1))
            cluster.start_worker(f"w{i}", wait=False)
        for i in range(workers):
            cluster.wait_connected(f"w{i}")
        client = Client(address, timeout=600)
        task_id = client.create_task(Trivial(parameters, rounds, workers, secure).build())
        if not client.wait(task_id):
            raise SystemExit(f"task failed: {client.get_task(task_id).error}")
        result = client.get_result(task_id)["weights"]
        assert float(result[0]) == rounds, "every round must have trained once"
        marks = [e.time for e in client.logs(task_id)
                 if "loaded the task" in e.message or e.message.startswith("round ")
                 and "/" in e.message.split()[1]]
        rss = _peak_rss_mib(cluster.coordinator.process.pid)
    rounds_seconds = [b - a for a, b in zip(marks, marks[1:])]
    return statistics.median(rounds_seconds[1:] or rounds_seconds), rss


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


# The bare transfer: a grpc.aio server and one client process per worker, raw bytes. ------------

def _bare_server(port_queue: multiprocessing.Queue, size: int) -> None:
    import asyncio

    model = memoryview(bytearray(size))

    async def download(request, context):
        for start in range(0, size, CHUNK_SIZE):
            yield bytes(model[start:start + CHUNK_SIZE])

    async def upload(request_iterator, context):
        received = 0
        async for chunk in request_iterator:
            model[received:received + len(chunk)] = chunk
            received += len(chunk)
        return received.to_bytes(8, "little")

    async def serve():
        server = grpc.aio.server(options=SERVER_OPTIONS)
        handlers = {
            "Download": grpc.unary_stream_rpc_method_handler(download),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Bare", handlers)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_queue.put(port)
        await server.wait_for_termination()

    asyncio.run(serve())


def _bare_client(port: int, size: int, start, downloaded, uploaded) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        download = channel.unary_stream("/bench.Bare/Download")
        upload = channel.stream_unary("/bench.Bare/Upload")
        model = memoryview(bytearray(size))
        start.wait()
        received = 0
        for chunk in download(b""):
            model[received:received + len(chunk)] = chunk
            received += len(chunk)
        assert received == size
        downloaded.wait()
        sent = upload(bytes(model[s:s + CHUNK_SIZE]) for s in range(0, size, CHUNK_SIZE))
        assert int.from_bytes(sent, "little") == size
        uploaded.wait()


def bare_transfer(size: int, workers: int) -> float:
    """Seconds for `workers` concurrent downloads of `size` bytes, then as many uploads."""
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    server = context.Process(target=_bare_server, args=(ports, size), daemon=True)
    server.start()
    port = ports.get(timeout=60)
    start, downloaded, uploaded = (context.Barrier(workers + 1) for _ in range(3))
    clients = [context.Process(target=_bare_client,
                               args=(port, size, start, downloaded, uploaded))
               for _ in range(workers)]
    for client in clients:
        client.start()
    start.wait()
    began = time.perf_counter()
    downloaded.wait()
    uploaded.wait()
    elapsed = time.perf_counter() - began
    for client in clients:
        client.join()
    server.kill()
    if any(c.exitcode for c in clients):
        raise SystemExit("a bare transfer client failed")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,25,100", help="millions of parameters")
    parser.add_argument("--workers", default="3,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=("plain", "secure", "both"), default="plain")
    args = parser.parse_args()
    sizes = [int(float(s) * 1_000_000) for s in args.sizes.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    modes = {"plain": [False], "secure": [True], "both": [False, True]}[args.mode]
    print("| params | model MiB | workers | mode | round s | bare s | ratio | coord. peak RSS MiB "
          "| RSS target MiB |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for parameters in sizes:
        model_mib = parameters * 4 / MIB
        for workers in worker_counts:
            bare = bare_transfer(parameters * 4, workers)
            for secure in modes:
                round_seconds, rss = run_task(parameters, workers, args.rounds, secure)
                print(f"| {parameters / 1e6:g}M | {model_mib:.0f} | {workers} "
                      f"| {'secure' if secure else 'plain'} | {round_seconds:.2f} | {bare:.2f} "
                      f"| {round_seconds / bare:.2f} | {rss:.0f} | {2 * model_mib + 300:.0f} |",
                      flush=True)


if __name__ == "__main__":
    sys.exit(main())
