"""FedAvg arithmetic and the weights codec, in process."""

from __future__ import annotations

import pytest
import torch

from coordinator.fedavg import WeightedSum
from sdk import tensors, weights


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


def plain_average(folder, states, samples):
    """FedAvg of `states` weighted by `samples`, folded from files as the coordinator does."""
    infos = tensors.manifest(states[0])
    total = WeightedSum(infos)
    for i, (one, count) in enumerate(zip(states, samples)):
        tensors.write_file(folder / f"w{i}", one)
        total.add_file(folder / f"w{i}", count)
    total.write_average(folder / "avg")
    return tensors.read_file(folder / "avg", infos)


def test_weighted_average_per_dtype(tmp_path):
    states = [state(seed) for seed in range(3)]
    samples = [10, 30, 5]
    average = plain_average(tmp_path, states, samples)
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


def test_a_short_upload_is_refused(tmp_path):
    infos = tensors.manifest({"a": torch.zeros(4)})
    (tmp_path / "short").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="ends inside tensor 'a'"):
        WeightedSum(infos).add_file(tmp_path / "short", 3)


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
    tensors.write_file(tmp_path / "w", big)
    total = WeightedSum(infos)
    total.add_file(tmp_path / "w", 2)
    total.write_average(tmp_path / "avg")
    average = tensors.read_file(tmp_path / "avg", infos)
    assert all(torch.equal(average[k], big[k]) for k in big)


def test_secure_vectors_average_to_fedavg_within_the_fixed_point_quantisation(tmp_path):
    """Under secure aggregation each worker sends weights x samples, its sample counts and
    metrics in fixed point; the average of the summed vectors is FedAvg's, integers and bools
    exactly, floats within workers * 0.5 * 10^-precision / samples (plus their dtype's rounding)."""
    from coordinator.fedavg import per_tensor, write_average
    from sdk.secagg.fixedpoint import decode_in_place
    from worker.learning import masked_input

    precision, states, samples = 6, [state(seed) for seed in range(3)], [10, 30, 5]
    metrics = [{"mse": 0.5, "acc": 0.9}, {"mse": 0.25, "acc": 0.8}, {"mse": 1.0, "acc": 0.7}]
    infos = tensors.manifest(states[0])
    total = sum(masked_input(s, infos, n, 2 * n, m, precision, 3, [])
                for s, n, m in zip(states, samples, metrics))
    sums = decode_in_place(total, precision)
    tail = sums[-2 - weights.METRIC_SLOTS:]
    assert round(tail[0]) == 45 and round(tail[1]) == 90
    assert tail[2] / tail[1] == pytest.approx((0.9 * 20 + 0.8 * 60 + 0.7 * 10) / 90)  # acc
    assert tail[3] / tail[1] == pytest.approx((0.5 * 20 + 0.25 * 60 + 1.0 * 10) / 90)  # mse
    write_average(tmp_path / "secure", infos, per_tensor(sums, infos), 45)
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
