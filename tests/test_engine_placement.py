"""The engine's pure parts: device choice, limits and their flags, the NVML reader."""

import argparse
import types

import pytest

from worker.engine import (EngineLimits, GpuInfo, NvmlInventory, PlacementError,
                           add_engine_arguments, choose_device, limits_from_args, parse_size)

GiB = 1024**3
NO_HEADROOM = EngineLimits(gpu_headroom=0, gpu_headroom_fraction=0)


def gpu(index, free, total=16, util=0.0, used_by_pid=None):
    return GpuInfo(index, f"Fake {index}", int(free * GiB), int(total * GiB), util,
                   used_by_pid or {})


def test_no_gpu_means_cpu():
    assert choose_device(4 * GiB, [], {}, NO_HEADROOM) == "cpu"


def test_picks_the_gpu_with_most_room():
    gpus = [gpu(0, 6), gpu(1, 10), gpu(2, 8)]
    assert choose_device(4 * GiB, gpus, {}, NO_HEADROOM) == "cuda:1"
    # memory promised to tasks NVML does not show yet counts as used
    assert choose_device(4 * GiB, gpus, {1: 5 * GiB}, NO_HEADROOM) == "cuda:2"


def test_waits_when_nothing_fits_now():
    assert choose_device(8 * GiB, [gpu(0, 6), gpu(1, 7)], {}, NO_HEADROOM) is None


def test_never_fits_raises():
    with pytest.raises(PlacementError, match="largest GPU"):
        choose_device(20 * GiB, [gpu(0, 16), gpu(1, 16)], {}, NO_HEADROOM)


def test_headroom_bytes_and_fraction():
    gpus = [gpu(0, 5, total=40)]
    assert choose_device(4 * GiB, gpus, {}, EngineLimits(gpu_headroom=GiB,
                                                         gpu_headroom_fraction=0)) == "cuda:0"
    assert choose_device(4 * GiB, gpus, {}, EngineLimits(gpu_headroom=2 * GiB,
                                                         gpu_headroom_fraction=0)) is None
    # 10% of 40 GiB is kept free: 5 - 4 leaves too little
    assert choose_device(2 * GiB, gpus, {}, EngineLimits(gpu_headroom=0,
                                                         gpu_headroom_fraction=0.1)) is None
    with pytest.raises(PlacementError):
        choose_device(39 * GiB, gpus, {}, EngineLimits(gpu_headroom=2 * GiB))


def test_utilization_limit():
    gpus = [gpu(0, 12, util=95), gpu(1, 8, util=10)]
    limits = EngineLimits(gpu_headroom=0, gpu_headroom_fraction=0, max_gpu_utilization=90)
    assert choose_device(4 * GiB, gpus, {}, limits) == "cuda:1"
    assert choose_device(4 * GiB, gpus, {}, NO_HEADROOM) == "cuda:0"


def test_pinning():
    gpus = [gpu(0, 12), gpu(1, 8)]
    assert choose_device(4 * GiB, gpus, {}, NO_HEADROOM, pinned="cuda:1") == "cuda:1"
    assert choose_device(4 * GiB, gpus, {}, NO_HEADROOM, pinned="cpu") == "cpu"
    assert choose_device(4 * GiB, gpus, {1: 6 * GiB}, NO_HEADROOM, pinned="cuda:1") is None
    with pytest.raises(PlacementError, match="cuda:7"):
        choose_device(4 * GiB, gpus, {}, NO_HEADROOM, pinned="cuda:7")


def test_allowed_gpus():
    gpus = [gpu(0, 12), gpu(1, 8)]
    limits = EngineLimits(gpu_headroom=0, gpu_headroom_fraction=0, allowed_gpus=[1])
    assert choose_device(4 * GiB, gpus, {}, limits) == "cuda:1"
    with pytest.raises(PlacementError, match="not an allowed GPU"):
        choose_device(4 * GiB, gpus, {}, limits, pinned="cuda:0")
    assert choose_device(4 * GiB, gpus, {}, EngineLimits(allowed_gpus=[])) == "cpu"


def test_retry_prefers_untried_then_preferred():
    gpus = [gpu(0, 12), gpu(1, 8)]
    assert choose_device(4 * GiB, gpus, {}, NO_HEADROOM, tried=["cuda:0"]) == "cuda:1"
    assert choose_device(4 * GiB, gpus, {}, NO_HEADROOM, tried=["cuda:0", "cuda:1"]) == "cuda:0"
    assert choose_device(4 * GiB, gpus, {}, NO_HEADROOM, preferred="cuda:1") == "cuda:1"
    # a preferred device that does not fit is passed over
    assert choose_device(10 * GiB, gpus, {}, NO_HEADROOM, preferred="cuda:1") == "cuda:0"


@pytest.mark.parametrize("text, size", [
    ("512", 512), ("1KiB", 1024), ("2 GiB", 2 * GiB), ("1.5GB", 1_500_000_000),
    ("3g", 3 * GiB), (7, 7), (None, None)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "5 parsecs", "-3"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def parse(argv):
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return limits_from_args(parser.parse_args(argv))


def test_limits_from_flags_and_toml(tmp_path):
    assert parse([]) == EngineLimits()
    config = tmp_path / "worker.toml"
    config.write_text('[engine]\nmax-tasks = 6\nallowed_gpus = [0, 2]\n'
                      'default_cuda_memory = "3GiB"\noom_retries = 5\nwarm_start = false\n')
    from_file = parse(["--engine-config", str(config)])
    assert (from_file.max_tasks, from_file.allowed_gpus, from_file.default_cuda_memory,
            from_file.oom_retries, from_file.warm_start) == (6, (0, 2), 3 * GiB, 5, False)
    # flags win over the file
    both = parse(["--engine-config", str(config), "--max-tasks", "3", "--gpus", "1",
                  "--gpu-headroom", "1GiB", "--max-gpu-utilization", "80", "--warm-start", "yes"])
    assert (both.max_tasks, both.allowed_gpus, both.gpu_headroom, both.max_gpu_utilization,
            both.oom_retries, both.warm_start) == (3, (1,), GiB, 80.0, 5, True)


def test_toml_unknown_key_and_bad_values(tmp_path):
    config = tmp_path / "worker.toml"
    config.write_text("[engine]\nmax_taskz = 6\n")
    with pytest.raises(ValueError, match="max_taskz"):
        parse(["--engine-config", str(config)])
    with pytest.raises(ValueError):
        parse(["--max-tasks", "0"])
    with pytest.raises(SystemExit):  # argparse: expected yes or no
        parse(["--warm-start", "maybe"])


def fake_pynvml(monkeypatch, count, fail_init=False):
    class NVMLError(Exception):
        pass

    def init():
        if fail_init:
            init_error()

    def init_error():
        raise NVMLError("NVML error")

    uuids = {f"GPU-{i}": i for i in range(count)}

    memory = types.SimpleNamespace(free=6 * GiB, total=16 * GiB, used=10 * GiB)
    module = types.SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=init, nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i if i < count else init_error(),
        nvmlDeviceGetHandleByUUID=lambda uuid: uuids[uuid] if uuid in uuids else init_error(),
        nvmlDeviceGetMemoryInfo=lambda h: memory,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=30 + h),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            types.SimpleNamespace(pid=100 + h, usedGpuMemory=GiB)],
        nvmlDeviceGetName=lambda h: b"Fake H100")
    monkeypatch.setitem(__import__("sys").modules, "pynvml", module)


def test_nvml_inventory_reads_pynvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_pynvml(monkeypatch, count=2)
    devices = NvmlInventory().devices()
    assert devices == [
        GpuInfo(0, "Fake H100", 6 * GiB, 16 * GiB, 30.0, {100: GiB}),
        GpuInfo(1, "Fake H100", 6 * GiB, 16 * GiB, 31.0, {101: GiB}),
    ]


def test_nvml_missing_means_no_gpus(monkeypatch):
    fake_pynvml(monkeypatch, count=2, fail_init=True)
    assert NvmlInventory().devices() == []


def test_nvml_inventory_follows_cuda_visible_devices(monkeypatch):
    fake_pynvml(monkeypatch, count=4)
    # CUDA numbers the visible GPUs 0, 1, ... and ignores everything after an unknown entry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-0,9,1")
    devices = NvmlInventory().devices()
    assert [(d.index, d.utilization_pct) for d in devices] == [(0, 32.0), (1, 30.0)]


def test_a_gpu_nvml_cannot_read_is_left_out_and_the_others_stay(monkeypatch, caplog):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_pynvml(monkeypatch, count=3)
    pynvml = __import__("sys").modules["pynvml"]
    healthy = pynvml.nvmlDeviceGetMemoryInfo

    def memory(handle):
        if handle == 1:
            raise pynvml.NVMLError("GPU is lost")
        return healthy(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory)
    with caplog.at_level("WARNING", logger="deltaflow.engine"):
        devices = NvmlInventory().devices()
    assert [d.index for d in devices] == [0, 2]
    assert "NVML cannot read cuda:1 (GPU is lost)" in caplog.text
