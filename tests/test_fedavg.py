"""FedAvg arithmetic and the weights codec, in process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coordinator.contributions import Contribution
from coordinator.fedavg import WeightedSum
from coordinator.learning import samples_of
from sdk import tensors, weights
from sdk.wire import CHUNK_SIZE


def state(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "f32": torch.randn(3, 4, generator=generator),
        "f16": torch.randn(5, generator=generator).half(),
        "bf16": torch.randn(2, 3, generator=generator).bfloat16(),
        "f64": torch.randn(7, generator=generator, dtype=torch.float64),
        "steps": torch.tensor(seed * 3 + 1),  # 0-dim int64, like num_batches_tracked
        "i32": torch.randint(-50, 50, (4,), generator=generator, dtype=torch.int32),
        "mask": torch.rand(6, generator=generator) > 0.5,
        "empty": torch.zeros(0, 3),
    }


def test_codec_keeps_keys_order_dtypes_shapes_and_values(tmp_path):
    original = state(1)
    infos = tensors.manifest(original)
    assert weights.total_bytes(infos) == sum(t.numel() * t.element_size() for t in original.values())
    reader = tensors.StateDictReader(infos)
    for chunk in tensors.iter_chunks(original, chunk_size=8):
        reader.write(chunk)
    decoded = reader.result()
    assert list(decoded) == list(original)
    for name, tensor in original.items():
        assert decoded[name].dtype == tensor.dtype and decoded[name].shape == tensor.shape
        assert torch.equal(decoded[name], tensor)
    tensors.write_file(tmp_path / "w", original)
    assert all(torch.equal(a, b) for a, b in
               zip(tensors.read_file(tmp_path / "w", infos).values(), original.values()))


def test_codec_refuses_what_does_not_fit_the_manifest():
    infos = tensors.manifest({"a": torch.zeros(2)})
    reader = tensors.StateDictReader(infos)
    with pytest.raises(ValueError, match="more bytes"):
        reader.write(b"\0" * 9)
    short = tensors.StateDictReader(infos)
    short.write(b"\0" * 4)
    with pytest.raises(ValueError, match="ended before"):
        short.result()
    with pytest.raises(ValueError, match="dtype torch.complex64, which cannot travel"):
        tensors.manifest({"c": torch.zeros(2, dtype=torch.complex64)})


def upload(total, one, samples, chunk_size=CHUNK_SIZE):
    """Folds `one` into `total` as the coordinator folds a worker's upload: chunk by chunk."""
    contribution = Contribution(total, weights.total_bytes(tensors.manifest(one)), samples_of)
    contribution.begin({"samples": samples})
    data = b"".join(tensors.iter_chunks(one))
    for start in range(0, len(data), chunk_size):
        contribution.write(data[start:start + chunk_size])
    return contribution


def plain_average(folder, states, samples, chunk_size=CHUNK_SIZE):
    """FedAvg of `states` weighted by `samples`, folded as the coordinator folds uploads."""
    infos = tensors.manifest(states[0])
    total = WeightedSum(infos)
    for one, count in zip(states, samples):
        upload(total, one, count, chunk_size).finish()
    total.write_average(folder / "avg")
    return tensors.read_file(folder / "avg", infos)


@pytest.mark.parametrize("chunk_size", [CHUNK_SIZE, 1, 3, 7])
def test_weighted_average_per_dtype(tmp_path, chunk_size):
    """Whatever the chunks (values split between them too), the average is FedAvg's."""
    states = [state(seed) for seed in range(3)]
    samples = [10, 30, 5]
    average = plain_average(tmp_path, states, samples, chunk_size)
    n = sum(samples)
    for name in states[0]:
        stacked = torch.stack([s[name].double() * c for s, c in zip(states, samples)]).sum(0)
        dtype = states[0][name].dtype
        assert average[name].dtype == dtype and average[name].shape == states[0][name].shape
        if dtype.is_floating_point:
            torch.testing.assert_close(average[name], (stacked / n).to(dtype))
        elif dtype == torch.bool:
            assert torch.equal(average[name], stacked / n >= 0.5)
        else:
            assert torch.equal(average[name], torch.floor(stacked / n + 0.5).to(dtype))
    assert int(average["steps"]) == round((1 * 10 + 4 * 30 + 7 * 5) / 45)


def test_a_short_or_long_upload_is_refused_and_taints_the_sum():
    infos = tensors.manifest({"a": torch.zeros(4)})
    total = WeightedSum(infos)
    short = Contribution(total, 16, samples_of)
    short.begin({"samples": 3})
    short.write(b"\0" * 10)
    with pytest.raises(ValueError, match="it sent 10 bytes where 16 were expected"):
        short.finish()
    long = Contribution(total, 16, samples_of)
    long.begin({"samples": 3})
    with pytest.raises(ValueError, match="more than the 16 bytes expected"):
        long.write(b"\0" * 17)
    assert not total.tainted  # nothing of either is in the sum yet...
    short.discard()
    assert total.tainted  # ...until the short one's 8 whole bytes are


def test_a_broken_upload_leaves_no_trace_once_the_others_are_collected_again(tmp_path):
    """A worker that drops mid-upload taints the sum; restarted and folded again from the
    complete uploads, the average is exactly the one of those alone, and the broken upload's
    stream can add nothing more."""
    states, samples = [state(seed) for seed in range(3)], [10, 30, 5]
    infos = tensors.manifest(states[0])
    total = WeightedSum(infos)
    broken = Contribution(total, weights.total_bytes(infos), samples_of)
    broken.begin({"samples": 1000})
    broken.write(b"\x7f" * 64)  # huge values, half of its upload
    whole = [upload(total, one, count) for one, count in zip(states[:2], samples[:2])]
    for contribution in whole:
        contribution.finish()
    broken.discard()
    assert total.tainted
    total.restart()
    assert not total.tainted and total.samples == 0
    with pytest.raises(ValueError, match="no longer takes this upload"):
        broken.write(b"\x7f" * 8)
    whole[0].discard()  # an upload of before the restart cannot taint the new sum
    assert not total.tainted
    for one, count in zip(states[:2], samples[:2]):
        upload(total, one, count).finish()
    total.write_average(tmp_path / "again")
    again = tensors.read_file(tmp_path / "again", infos)
    expected = plain_average(tmp_path, states[:2], samples[:2])
    assert all(torch.equal(again[name], expected[name]) for name in expected)


def test_an_upload_refused_at_its_meta_adds_nothing():
    total = WeightedSum(tensors.manifest({"a": torch.zeros(4)}))
    contribution = Contribution(total, 16, samples_of)
    with pytest.raises(ValueError, match="it reported 0 training samples"):
        contribution.begin({"samples": 0})
    contribution.discard()
    assert not total.tainted


def test_a_state_dict_of_copies_is_refused_at_build():
    from learning_tasks import Regression
    from sdk.task import TaskError

    class Copies(Regression):
        def state_dict(self):
            return {k: v.clone() for k, v in self.model.state_dict().items()}

    with pytest.raises(TaskError, match="state_dict\\(\\) returns tensors the task does not hold"):
        Copies().build()


def test_mixed_dtypes_with_large_half_tensors_fold(tmp_path):
    """Scratch buffers fit every dtype that shares an accumulator, whatever the set order."""
    big = {"f32": torch.ones(10), "f16": torch.ones(5_000_000, dtype=torch.float16),
           "bool": torch.ones(3_000_000, dtype=torch.bool), "i64": torch.ones(3, dtype=torch.int64)}
    infos = tensors.manifest(big)
    total = WeightedSum(infos)
    upload(total, big, 2).finish()
    total.write_average(tmp_path / "avg")
    average = tensors.read_file(tmp_path / "avg", infos)
    assert all(torch.equal(average[k], big[k]) for k in big)


@pytest.mark.parametrize("bits, precision", [(64, 6), (32, 5)])
def test_secure_vectors_average_to_fedavg_within_the_fixed_point_quantisation(
        tmp_path, bits, precision):
    """Under secure aggregation each worker sends weights x samples (in 32-bit words, its
    update from the global weights x samples), its sample counts and metrics in fixed point;
    the average of the summed vectors is FedAvg's, integers and bools exactly, floats within
    workers * 0.5 * 10^-precision / samples (plus their dtype's rounding)."""
    from coordinator.fedavg import secure_tail, write_secure_average
    from sdk.secagg.fixedpoint import WORDS
    from worker.learning_job import masked_input

    states, samples = [state(seed) for seed in range(3)], [10, 30, 5]
    metrics = [{"mse": 0.5, "acc": 0.9}, {"mse": 0.25, "acc": 0.8}, {"mse": 1.0, "acc": 0.7}]
    infos = tensors.manifest(states[0])
    tensors.write_file(tmp_path / "global", state(7))
    global_raw = memoryview((tmp_path / "global").read_bytes())
    length = weights.secure_length(infos, bits)
    total = sum(masked_input(memoryview(b"".join(tensors.iter_chunks(s))), infos, n, 2 * n, m,
                             precision, 3, np.zeros(length, dtype=WORDS[bits]), global_raw)
                for s, n, m in zip(states, samples, metrics))
    tail = secure_tail(total, precision)
    assert round(tail[0]) == 45 and round(tail[1]) == 90
    assert tail[2] / tail[1] == pytest.approx((0.9 * 20 + 0.8 * 60 + 0.7 * 10) / 90)  # acc
    assert tail[3] / tail[1] == pytest.approx((0.5 * 20 + 0.25 * 60 + 1.0 * 10) / 90)  # mse
    write_secure_average(tmp_path / "secure", infos, total, 45, precision, tmp_path / "global")
    secure = tensors.read_file(tmp_path / "secure", infos)
    expected = plain_average(tmp_path, states, samples)
    bound = 3 * 0.5 * 10**-precision / 45
    for name, tensor in expected.items():
        assert secure[name].dtype == tensor.dtype and secure[name].shape == tensor.shape
        if tensor.dtype.is_floating_point and tensor.numel():
            resolution = torch.finfo(tensor.dtype).eps * tensor.double().abs().max().item()
            torch.testing.assert_close(secure[name].double(), tensor.double(), rtol=0,
                                       atol=bound + 2 * resolution)
        else:
            assert torch.equal(secure[name], tensor), name


def test_one_stream_alone_brings_an_exchanges_answer():
    """A second upload stream for the same exchange gets no receiver: it could otherwise
    finish the same contribution twice, or taint a sum that holds a whole upload."""
    import asyncio

    from coordinator.registry import WorkerRegistry

    async def claims() -> tuple[object, object, object]:
        registry = WorkerRegistry(heartbeat_interval=1, heartbeat_timeout=5)
        worker = registry.register("w", [])
        total = WeightedSum(tensors.manifest({"a": torch.zeros(4)}))
        receiver = Contribution(total, 16, samples_of)
        exchange_id, _ = registry.expect(worker, receiver)
        return receiver, registry.claim(worker.session_id, exchange_id), \
            registry.claim(worker.session_id, exchange_id)

    receiver, first, second = asyncio.run(claims())
    assert first is receiver and second is None


def test_a_contribution_finishes_once():
    total = WeightedSum(tensors.manifest({"a": torch.zeros(4)}))
    contribution = upload(total, {"a": torch.ones(4)}, 3)
    contribution.finish()
    with pytest.raises(ValueError, match="no longer takes this upload"):
        contribution.finish()
    assert total.samples == 3 and not total.tainted


def test_update_bound_picks_32_bit_words_only_where_every_sum_fits():
    """32-bit words where update_bound * 10^precision * max_clients < 2^31, else 64; never
    under DP-FedAvg (its noised values are not bounded); malformed bounds are refused."""
    from learning_tasks import Regression

    from sdk.task import FedAvg, TaskError

    def bits(bound, precision=6, max_clients=3, **dp):
        task = Regression(max_clients=max_clients)
        task.update_bound, task.precision = bound, precision
        task.strategy = FedAvg(min_clients=2, max_clients=max_clients, **dp)
        return weights.secure_bits(task.build().spec)

    assert bits(None) == 64 and bits(700.0) == 32 and bits(716.0) == 64  # 2^31 / 3e6 = 715.8
    assert bits(716.0, precision=5) == 32
    assert bits(100.0, max_clients=21) == 32 and bits(100.0, max_clients=22) == 64
    for wrong in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(TaskError, match="update_bound must be a positive number"):
            bits(wrong)
    with pytest.raises(TaskError, match="update_bound is for FedAvg without DP-FedAvg"):
        bits(1.0, clip_norm=1.0, noise_multiplier=1.0)
