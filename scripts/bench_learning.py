"""A FedAvg task's whole time against a bare gRPC transfer of the same bytes, and coordinator
memory.

For models of 1M, 25M and 100M float32 parameters with trivial training, over local workers,
each task timed from `create_task` on (the client's clock, beside the task log's times):
- start: from `create_task` to the start of round 1 (the workers have downloaded the task and
  its weights and loaded them),
- round 1, and the median of rounds 2.. (each from the task's log),
- task: from `create_task` until the task has ended (its result is ready),
- bare: the time a bare gRPC stream takes to move what a round moves (every worker downloads
  the model, then every worker uploads it) between separate processes on this machine: raw
  bytes read from a buffer in memory and written into one, in chunks of the same size, nothing
  else; measured in the same run, just before each task,
- target: 1.3 x rounds x bare + 1 s, what the whole task should take at most,
- the coordinator's peak RSS (VmHWM), and the CPU seconds each side spent per GB moved.

Each configuration runs on fresh daemons: first one task right after they connected (the
`first task` column: what a user who starts the daemons and submits at once sees), then
`--repeats` tasks, whose medians fill the other columns. Every table says its repeats.

`--mode plain` (the default here) runs FedAvg without secure aggregation, the transfer the bare
stream is compared with; `--mode secure` runs it as tasks do by default, where each worker
uploads a masked vector of 8-byte words (twice a float32 model) after the key exchange.
`--tls on` (the default) runs every wire, the bare stream's too, over mutual TLS with a
throw-away federation's kits, `off` in plaintext (--insecure), `both` one after the other; the
CPU columns are the seconds each side spent over the whole task per GB that crossed the wire
(the client's upload of the task, every round's downloads and uploads).

Usage: python scripts/bench_learning.py [--sizes 1,25,100] [--workers 3,8] [--rounds 5]
                                        [--repeats 3] [--mode plain|secure|both]
                                        [--tls on|off|both]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import grpc
import numpy as np
import psutil
import torch

from deltaflow.localcluster import LocalCluster
from sdk import dataset
from sdk.task import FedAvg, HorizontalLearning
from sdk.trust import Kit
from sdk.trust.provision import create_federation
from sdk.wire import CHANNEL_OPTIONS, CHUNK_SIZE, SERVER_OPTIONS

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


class Timing(NamedTuple):
    """One task's times in seconds (see the module's docstring), and what it cost."""

    start: float
    round1: float
    later: float  # median of rounds 2..
    task: float
    bare: float
    rss_mib: float
    coordinator_cpu: float  # seconds per GB moved
    workers_cpu: float


def start_daemons(cluster: LocalCluster, workers: int) -> None:
    """A coordinator and `workers` workers holding bench.npz, all connected."""
    cluster.start_coordinator()
    for i in range(workers):
        np.savez(cluster.data_dir(f"w{i}") / "bench.npz", x=np.zeros((1, 1)), y=np.zeros(1))
        cluster.start_worker(f"w{i}", wait=False)
    for i in range(workers):
        cluster.wait_connected(f"w{i}")


def run_task(cluster: LocalCluster, parameters: int, rounds: int, secure: bool,
             bare: float) -> Timing:
    """One task on `cluster`'s workers, timed."""
    workers = len(cluster.workers)
    client = cluster.client(timeout=600)
    sides = [[psutil.Process(cluster.coordinator.process.pid)],
             [psutil.Process(d.process.pid) for d in cluster.workers.values()]]
    task = Trivial(parameters, rounds, workers, secure).build()
    before = [_cpu_seconds(side) for side in sides]
    created = time.time()
    task_id = client.create_task(task)
    if not client.wait(task_id):
        raise SystemExit(f"task failed: {client.get_task(task_id).error}")
    ended = time.time()
    coordinator_cpu, workers_cpu = (_cpu_seconds(side) - b for side, b in zip(sides, before))
    result = client.get_result(task_id)["weights"]
    assert float(result[0]) == rounds, "every round must have trained once"
    marks = [e.time for e in client.logs(task_id)
             if "loaded the task" in e.message or e.message.startswith("round ")
             and "/" in e.message.split()[1]]
    assert len(marks) == rounds + 1, "the log has the start and the end of every round"
    rounds_seconds = [b - a for a, b in itertools.pairwise(marks)]
    upload = parameters * (8 if secure else 4)
    moved_gb = (parameters * 4 * (1 + workers * rounds) + upload * workers * rounds) / 1e9
    return Timing(marks[0] - created, rounds_seconds[0],
                  statistics.median(rounds_seconds[1:] or rounds_seconds), ended - created, bare,
                  _peak_rss_mib(cluster.coordinator.process.pid), coordinator_cpu / moved_gb,
                  workers_cpu / moved_gb)


def median_timing(timings: list[Timing]) -> Timing:
    """Each field's median over `timings`."""
    return Timing(*(statistics.median(values) for values in zip(*timings)))


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU seconds of `processes` and their children so far (the engine tasks included)."""
    total = 0.0
    for process in processes:
        for member in [process, *process.children(recursive=True)]:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


# The bare transfer: a grpc.aio server and one client process per worker, raw bytes. ------------

def _bare_server(port_queue: multiprocessing.Queue, size: int, kit: str | None) -> None:
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
        if kit is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", Kit.load(kit).server_credentials())
        await server.start()
        port_queue.put(port)
        await server.wait_for_termination()

    asyncio.run(serve())


def _bare_client(port: int, size: int, kit: str | None, start, downloaded, uploaded) -> None:
    address = f"127.0.0.1:{port}"
    channel = (grpc.insecure_channel(address, options=CHANNEL_OPTIONS) if kit is None else
               grpc.secure_channel(address, Kit.load(kit).channel_credentials(),
                                   options=CHANNEL_OPTIONS))
    with channel:
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


def bare_transfer(size: int, workers: int, federation: Path | None) -> float:
    """Seconds for `workers` concurrent downloads of `size` bytes, then as many uploads (over
    mutual TLS with `federation`'s kits, where given)."""
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    server_kit = str(federation / "coordinator") if federation else None
    client_kit = str(federation / "workers" / "w0") if federation else None
    server = context.Process(target=_bare_server, args=(ports, size, server_kit), daemon=True)
    server.start()
    port = ports.get(timeout=60)
    start, downloaded, uploaded = (context.Barrier(workers + 1) for _ in range(3))
    clients = [context.Process(target=_bare_client,
                               args=(port, size, client_kit, start, downloaded, uploaded))
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3,
                        help="tasks per configuration after the first (medians)")
    parser.add_argument("--mode", choices=("plain", "secure", "both"), default="plain")
    parser.add_argument("--tls", choices=("on", "off", "both"), default="on")
    args = parser.parse_args()
    sizes = [int(float(s) * 1_000_000) for s in args.sizes.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    modes = {"plain": [False], "secure": [True], "both": [False, True]}[args.mode]
    wires = {"on": [True], "off": [False], "both": [False, True]}[args.tls]
    print(f"{args.rounds} rounds a task; medians of {args.repeats} tasks per row on the same "
          "daemons, after a first task right after they started; load average before: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    times, costs = [], []
    with tempfile.TemporaryDirectory() as folder:
        federation = Path(folder) / "fed"
        create_federation(federation, ["127.0.0.1:6700"], ["w0"], [])
        for parameters in sizes:
            model_mib = parameters * 4 / MIB
            for workers in worker_counts:
                for tls in wires:
                    for secure in modes:
                        kit = federation if tls else None
                        with tempfile.TemporaryDirectory() as daemons, \
                                LocalCluster(Path(daemons), secure=tls,
                                             warm_start=True) as cluster:
                            start_daemons(cluster, workers)
                            first = run_task(cluster, parameters, args.rounds, secure,
                                             bare_transfer(parameters * 4, workers, kit))
                            row = median_timing([
                                run_task(cluster, parameters, args.rounds, secure,
                                         bare_transfer(parameters * 4, workers, kit))
                                for _ in range(args.repeats)])
                        target = 1.3 * args.rounds * row.bare + 1
                        head = (f"| {parameters / 1e6:g}M | {workers} | "
                                f"{'secure' if secure else 'plain'} | "
                                f"{'mTLS' if tls else 'plaintext'} ")
                        times.append(
                            f"{head}| {row.bare:.2f} | {row.start:.2f} | {row.round1:.2f} "
                            f"| {row.later:.2f} | {row.later / row.bare:.2f} | {row.task:.2f} "
                            f"| {target:.2f} | {row.task / target:.2f} | {first.start:.2f} "
                            f"| {first.task:.2f} |")
                        costs.append(
                            f"{head}| {model_mib:.0f} | {row.coordinator_cpu:.2f} "
                            f"| {row.workers_cpu:.2f} | {row.rss_mib:.0f} "
                            f"| {2 * model_mib + 300:.0f} |")
                        print(times[-1], costs[-1], sep="\n", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\nTimes in seconds, medians of {args.repeats} tasks of {args.rounds} rounds "
          "(first task: one run, right after the daemons started); target = 1.3 x rounds x "
          "bare + 1\n")
    print("| params | workers | mode | wire | bare s | start s | round 1 s | round 2.. s "
          "| round / bare | task s | target s | task / target | first task: start s "
          "| first task s |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(times))
    print(f"\nCosts, medians of {args.repeats} tasks (CPU seconds per GB that crossed the "
          "wire over the whole task)\n")
    print("| params | workers | mode | wire | model MiB | coord. CPU s/GB | workers CPU s/GB "
          "| coord. peak RSS MiB | RSS target MiB |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(costs))


if __name__ == "__main__":
    sys.exit(main())
