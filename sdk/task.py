"""Task authoring: what a user subclasses, and the built task that `create_task` ships."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from sdk import dataset, pandas
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan
from sdk.privacy import DifferentialPrivacy, PrivacyRefused
from sdk.privacy.analytics import PrivacyPlan
from sdk.proto import task_pb2
from sdk.secagg.graph import PLUS_ABOVE
from sdk.secagg.rule import DEFAULT_FRACTION, check_fraction

FORMAT_VERSION = 1


class TaskError(ValueError):
    """A task that cannot be built: the message says what to change."""


@dataclass(frozen=True)
class BuiltTask:
    """A validated task as data, ready for `Client.create_task`.

    A learning task also carries its initial global weights, which travel beside the spec.
    """

    spec: task_pb2.TaskSpec
    weights: dict[str, Any] = field(default_factory=dict)  # name -> torch.Tensor

    @property
    def name(self) -> str:
        return self.spec.name

    def serialize(self) -> bytes:
        return self.spec.SerializeToString()


def check_rules(name: str, min_clients: int, max_clients: int, wait_timeout: float,
                connection_timeout: float) -> task_pb2.RoundRules:
    """The four round rules, or TaskError naming the one that is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise TaskError("a task needs a non-empty name")
    if not isinstance(min_clients, int) or min_clients < 2:
        raise TaskError(f"min_clients must be an integer of at least 2, not {min_clients!r}: "
                        "with one client its data would be the result")
    if not isinstance(max_clients, int) or max_clients < min_clients:
        raise TaskError(f"max_clients ({max_clients!r}) must be an integer >= min_clients ({min_clients})")
    for label, value in (("wait_timeout", wait_timeout), ("connection_timeout", connection_timeout)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise TaskError(f"{label} must be a positive number of seconds, not {value!r}")
    return task_pb2.RoundRules(min_clients=min_clients, max_clients=max_clients,
                               wait_timeout=float(wait_timeout),
                               connection_timeout=float(connection_timeout))


ANALYTICS_PRECISION = 9  # decimal digits: sums of values up to ~10^19 keep 1e-9 absolute
LEARNING_PRECISION = 6  # decimal digits: |weight| * samples * max_clients below ~9.2e12


def check_secure(secure_aggregation: bool, precision: int | None, default: int,
                 secagg_plus_above: int, secagg_threshold: float) -> dict[str, Any]:
    """The TaskSpec fields of secure aggregation, or TaskError."""
    try:
        secagg_threshold = check_fraction(secagg_threshold)
    except ValueError as error:
        raise TaskError(str(error)) from None
    if (isinstance(secagg_plus_above, bool) or not isinstance(secagg_plus_above, int)
            or secagg_plus_above < 0):
        raise TaskError(f"secagg_plus_above is the round size above which SecAgg+ is used (0: "
                        f"never), an integer of at least 0, not {secagg_plus_above!r}")
    if not isinstance(secure_aggregation, bool):
        raise TaskError(f"secure_aggregation must be True or False, not {secure_aggregation!r}")
    precision = default if precision is None else precision
    if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 15:
        raise TaskError(f"precision is the decimal digits kept, an integer from 0 to 15, "
                        f"not {precision!r}")
    return {"secure_aggregation": secure_aggregation, "precision": precision,
            "secagg_plus_above": secagg_plus_above, "secagg_threshold": secagg_threshold}


class HorizontalAnalytics:
    """Statistics over every holder's rows, as if stacked; only aggregates leave a holder.

    Subclasses implement `dataset()` and `execute(**frames)` with `sdk.pandas`. The four
    rules of a round: at least `min_clients` (2 or more) and at most `max_clients` eligible
    workers (those connected that hold every dataset named) take part; a compute phase may
    take `wait_timeout` seconds at most, every other phase `connection_timeout`. With
    `secure_aggregation` (the default) the coordinator learns only the sum of the holders'
    aggregates, kept to `precision` decimal digits (default 9; integers stay exact); rounds
    of more than `secagg_plus_above` workers (default 32) use SecAgg+, each worker masking
    with about 2 log2 n of them (docs/secure-aggregation.md). `secagg_threshold` f (0.5 <= f
    < 1, default 0.5) sets the shares that rebuild a worker's masks, t = floor(f x n) + 1 of
    the n selected (of a SecAgg+ neighbourhood): a higher f needs 2t - n colluding workers,
    not 1 or 2, for a coordinator lying about who dropped to unmask one input, and tolerates
    only n - t dropouts. With
    `privacy` (a `sdk.privacy.DifferentialPrivacy`) every number released gets noise from the
    holders, calibrated to the bounds the task declares (see docs/pandas.md).
    """

    def __init__(self, name: str, min_clients: int = 2, max_clients: int = 2,
                 wait_timeout: float = 60, connection_timeout: float = 60,
                 secure_aggregation: bool = True, precision: int | None = None,
                 privacy: DifferentialPrivacy | None = None,
                 secagg_plus_above: int = PLUS_ABOVE,
                 secagg_threshold: float = DEFAULT_FRACTION) -> None:
        self.name = name
        self.min_clients = min_clients
        self.secagg_plus_above = secagg_plus_above
        self.secagg_threshold = secagg_threshold
        self.max_clients = max_clients
        self.wait_timeout = wait_timeout
        self.connection_timeout = connection_timeout
        self.secure_aggregation = secure_aggregation
        self.precision = precision
        self.privacy = privacy

    def dataset(self) -> dict[str, dataset.DataFrame]:
        """Implement: `{argument name: dataset.DataFrame(name)}`, a name of each worker's
        data dir (or of its sources file) per argument of `execute`."""
        raise NotImplementedError("implement dataset(): {argument name: dataset.DataFrame(file)}")

    def execute(self, **frames: pandas.DataFrame) -> Any:
        """Implement: the statistics, written with the lazy `sdk.pandas` frames `dataset()`
        names as if on all holders' rows stacked; return a value, or a tuple, list or dict of
        them. It runs once, at `build()`, recording what to compute (docs/pandas.md)."""
        raise NotImplementedError("implement execute(): the statistics to compute")

    def build(self) -> BuiltTask:
        """Validates the task and records `execute` as a graph of operations."""
        rules = check_rules(self.name, self.min_clients, self.max_clients, self.wait_timeout,
                            self.connection_timeout)
        secure = check_secure(self.secure_aggregation, self.precision, ANALYTICS_PRECISION,
                              self.secagg_plus_above, self.secagg_threshold)
        datasets = self.dataset()
        if not isinstance(datasets, dict) or not datasets:
            raise TaskError("dataset() must return a non-empty dict of {argument: dataset.DataFrame}")
        parameters = list(inspect.signature(self.execute).parameters)
        if sorted(parameters) != sorted(datasets):
            raise TaskError(f"execute() takes {parameters} but dataset() names {list(datasets)}: "
                            "they must match")
        graph = Graph()
        frames = {}
        for argument, data in datasets.items():
            if not isinstance(data, dataset.DataFrame):
                raise TaskError(f"dataset {argument!r} must be a dataset.DataFrame, not {type(data).__name__}")
            frames[argument] = pandas.DataFrame(graph, graph.add("source", argument=argument), True)
        output = _record_output(graph, self.execute(**frames))
        try:
            plan = Plan(graph, output)
        except ValueError as error:
            raise TaskError(str(error)) from None
        privacy = _check_privacy(self.privacy, plan, secure["precision"])
        return BuiltTask(task_pb2.TaskSpec(
            format_version=FORMAT_VERSION,
            name=self.name,
            kind=task_pb2.TASK_KIND_ANALYTICS,
            rules=rules,
            datasets=[task_pb2.DatasetRef(argument=a, file=d.name) for a, d in datasets.items()],
            analytics=graph.to_proto(output),
            privacy=privacy,
            **secure,
        ))


def _check_privacy(privacy: Any, plan: Plan,
                   precision: int) -> task_pb2.DifferentialPrivacy | None:
    """The spec's privacy, once a PrivacyPlan of the task shows every release has a bound;
    TaskError saying what to change otherwise (which column needs clip, say)."""
    if privacy is None:
        return None
    if not isinstance(privacy, DifferentialPrivacy):
        raise TaskError(f"privacy must be a sdk.privacy.DifferentialPrivacy, not "
                        f"{type(privacy).__name__}")
    try:
        PrivacyPlan(plan, privacy, precision)
    except PrivacyRefused as error:
        raise TaskError(str(error)) from None
    return privacy.to_proto()


def _record_output(graph: Graph, value: Any) -> Any:
    """The output nest of node ids for what `execute` returned."""
    if isinstance(value, pandas._Lazy):
        if value._rows:
            raise TaskError("execute() must return aggregates (sum, mean, count...), "
                            "not row-level data: rows never leave a holder")
        return value._node
    if isinstance(value, pandas.GroupBy):
        raise TaskError("execute() returned a groupby itself: reduce it, e.g. "
                        "d.groupby('city').wage.mean()")
    if isinstance(value, (tuple, list)):
        return type(value)(_record_output(graph, v) for v in value)
    if isinstance(value, dict):
        return {k: _record_output(graph, v) for k, v in value.items()}
    return graph.add("const", value=value)


@dataclass(frozen=True)
class FedAvg:
    """Federated averaging: each round, selected workers train from the global weights and the
    coordinator averages what they send back, weighted by their training samples.

    Each round selects at least `min_clients` (2 or more) and at most `max_clients` of the
    workers that hold the dataset; each trains `merge_epoch` epochs (1 if neither is given) or
    `merge_iteration` batches, cycling its data, within `wait_timeout` seconds; every other
    phase of a round has `connection_timeout`.

    With `clip_norm` C and `noise_multiplier` z (both or neither) it is DP-FedAvg: each worker's
    daemon clips its update (trained weights minus the global ones) to L2 norm C and adds its
    share of noise of standard deviation z * C; each worker weighs 1 and sends no metrics.

    Under secure aggregation, rounds of more than `secagg_plus_above` selected workers use
    SecAgg+ (each masks with about 2 log2 n of them, docs/secure-aggregation.md);
    `secagg_threshold` f (0.5 <= f < 1, default 0.5) sets the secure-aggregation threshold, t =
    floor(f x n) + 1 (at least min_clients) of the n selected or of a SecAgg+ neighbourhood: a
    higher f raises the colluders a lying coordinator needs (2t - n) and lowers the dropouts a
    round survives (n - t).
    """

    min_clients: int = 2
    max_clients: int = 2
    merge_epoch: int | None = None
    merge_iteration: int | None = None
    wait_timeout: float = 60
    connection_timeout: float = 60
    clip_norm: float | None = None
    noise_multiplier: float | None = None
    secagg_plus_above: int = PLUS_ABOVE
    secagg_threshold: float = DEFAULT_FRACTION

    def differential_privacy(self) -> tuple[float, float] | None:
        """(clip_norm, noise_multiplier), or None without DP; TaskError if they are wrong."""
        from sdk.privacy.fedavg import check_parameters

        try:
            check_parameters(self.clip_norm, self.noise_multiplier)
        except PrivacyRefused as error:
            raise TaskError(str(error)) from None
        if self.clip_norm is None:
            return None
        return float(self.clip_norm), float(self.noise_multiplier)

    def merge(self) -> tuple[int, int]:
        """(epochs, iterations) per round: exactly one of them is non-zero."""
        if self.merge_epoch is not None and self.merge_iteration is not None:
            raise TaskError("give FedAvg merge_epoch or merge_iteration, not both")
        if self.merge_iteration is not None:
            if not isinstance(self.merge_iteration, int) or self.merge_iteration < 1:
                raise TaskError(f"merge_iteration must be a positive integer, not {self.merge_iteration!r}")
            return 0, self.merge_iteration
        epochs = 1 if self.merge_epoch is None else self.merge_epoch
        if not isinstance(epochs, int) or epochs < 1:
            raise TaskError(f"merge_epoch must be a positive integer, not {epochs!r}")
        return epochs, 0


class HorizontalLearning:
    """A PyTorch model trained across every holder's data with FedAvg; the result is the final
    global `state_dict()`.

    Subclasses implement `dataset()`, `make_train_dataloader(ds)`, `make_validate_dataloader(ds)`,
    `train(dataloader)`, `validate(dataloader) -> dict[str, float]` and `state_dict()`. On a
    worker, `self.device` is the device the engine picked for the round ("cpu" or "cuda:N").

    The task runs `max_rounds` rounds under `strategy` (a `FedAvg`: its rules and how long each
    worker trains). Every `validate_interval` rounds each worker validates on its held-out
    `validate_frac` of its rows (the same rows every round, never trained on), and the
    coordinator logs the metrics averaged by validation samples.

    With `secure_aggregation` (the default) the coordinator learns only the sum of the workers'
    weights times their samples (and of their sample counts and metrics), in fixed point with
    `precision` decimal digits (default 6): the average is off by at most
    workers * 0.5 * 10^-precision / total samples, and |weight| * samples * 10^precision *
    max_clients must stay below 2^63. With `update_bound` B, a bound on |trained weight - global
    weight| * training samples for every value of every round, each worker sends its update
    in 32-bit words instead (half the bytes) where B * 10^precision * max_clients < 2^31; a
    worker refuses a round whose update cannot fit, never sending a sum that would wrap.

    With DP-FedAvg (FedAvg's clip_norm and noise_multiplier) the task's epsilon is what its
    max_rounds rounds cost by the accountant, reported at `privacy`'s delta (default 1e-6);
    `privacy`'s epsilon is a ceiling that build() refuses to exceed.
    """

    device: str = "cpu"

    def __init__(self, name: str, max_rounds: int, validate_interval: int = 1,
                 validate_frac: float = 0.2, strategy: FedAvg | None = None,
                 secure_aggregation: bool = True, precision: int | None = None,
                 privacy: DifferentialPrivacy | None = None,
                 update_bound: float | None = None) -> None:
        self.name = name
        self.max_rounds = max_rounds
        self.validate_interval = validate_interval
        self.validate_frac = validate_frac
        self.strategy = strategy or FedAvg()
        self.secure_aggregation = secure_aggregation
        self.precision = precision
        self.privacy = privacy
        self.update_bound = update_bound

    def dataset(self) -> dataset.Dataset:
        """Implement: `dataset.Dataset(name)`, a file of each worker's data dir (`.npz`, `.pt`
        or `.csv`; see the README's "Training a model")."""
        raise NotImplementedError("implement dataset(): return dataset.Dataset(file name)")

    def make_train_dataloader(self, ds: Any) -> Any:
        """Implement: a `DataLoader` over `ds`, the worker's training rows (a torch
        `Dataset`)."""
        raise NotImplementedError("implement make_train_dataloader(ds): a DataLoader over ds")

    def make_validate_dataloader(self, ds: Any) -> Any:
        """Implement: a `DataLoader` over `ds`, the worker's held-out rows."""
        raise NotImplementedError("implement make_validate_dataloader(ds): a DataLoader over ds")

    def train(self, dataloader: Any) -> None:
        """Implement: one pass over `dataloader` on `self.device`, updating the tensors that
        `state_dict()` returns. It is called `merge_epoch` times a round, or once with a loader
        of `merge_iteration` batches."""
        raise NotImplementedError("implement train(dataloader): one pass of local training")

    def validate(self, dataloader: Any) -> dict[str, float]:
        """Implement: `{metric name: value}` over the held-out rows, such as `{"mse": 0.3}`."""
        raise NotImplementedError("implement validate(dataloader): {metric name: value}")

    def state_dict(self) -> dict[str, Any]:
        """Implement: the model's weights, `{name: torch.Tensor}`; the round's global weights
        are copied into these tensors before `train`, and the first call's are the initial
        ones."""
        raise NotImplementedError("implement state_dict(): the model's weights")

    def build(self) -> BuiltTask:
        """Validates the task; packs its code (pickled, without weights) and initial weights."""
        strategy = self.strategy
        if not isinstance(strategy, FedAvg):
            raise TaskError(f"strategy must be a FedAvg, not {type(strategy).__name__}")
        rules = check_rules(self.name, strategy.min_clients, strategy.max_clients,
                            strategy.wait_timeout, strategy.connection_timeout)
        epochs, iterations = strategy.merge()
        secure = check_secure(self.secure_aggregation, self.precision, LEARNING_PRECISION,
                              strategy.secagg_plus_above, strategy.secagg_threshold)
        if not isinstance(self.max_rounds, int) or self.max_rounds < 1:
            raise TaskError(f"max_rounds must be a positive integer, not {self.max_rounds!r}")
        if not isinstance(self.validate_interval, int) or self.validate_interval < 1:
            raise TaskError(f"validate_interval must be a positive integer, not {self.validate_interval!r}")
        if not isinstance(self.validate_frac, (int, float)) or not 0 <= self.validate_frac < 1:
            raise TaskError(f"validate_frac must be in [0, 1), not {self.validate_frac!r}")
        data = self.dataset()
        if not isinstance(data, dataset.Dataset):
            raise TaskError(f"dataset() must return a dataset.Dataset, not {type(data).__name__}")
        from sdk import tensors  # torch: only learning tasks need it

        state = self.state_dict()
        if not isinstance(state, dict) or not state:
            raise TaskError("state_dict() must return a non-empty dict of tensors")
        try:
            infos = tensors.manifest(state)
            code = tensors.dumps_without_weights(self, state)
        except ValueError as error:
            raise TaskError(str(error)) from None
        spec = task_pb2.TaskSpec(
            format_version=FORMAT_VERSION,
            name=self.name,
            kind=task_pb2.TASK_KIND_LEARNING,
            rules=rules,
            datasets=[task_pb2.DatasetRef(argument="dataset", file=data.name)],
            learning=task_pb2.LearningSpec(
                task=code, max_rounds=self.max_rounds,
                validate_interval=self.validate_interval,
                validate_frac=float(self.validate_frac), merge_epoch=epochs,
                merge_iteration=iterations, weights=infos,
                update_bound=self._update_bound(strategy),
            ),
            **secure,
        )
        self._add_privacy(spec, strategy.differential_privacy())
        return BuiltTask(
            spec, {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()})

    def _update_bound(self, strategy: FedAvg) -> float:
        """The update_bound for the spec (0: none); TaskError if it is malformed."""
        bound = self.update_bound
        if bound is None:
            return 0.0
        if (isinstance(bound, bool) or not isinstance(bound, (int, float))
                or not 0 < bound < math.inf):
            raise TaskError(f"update_bound must be a positive number, not {bound!r}")
        if strategy.clip_norm is not None:
            raise TaskError("update_bound is for FedAvg without DP-FedAvg, whose noised "
                            "update travels in 64-bit words; leave it out")
        return float(bound)

    def _add_privacy(self, spec: task_pb2.TaskSpec, dp: tuple[float, float] | None) -> None:
        """DP-FedAvg's fields on `spec`, with the epsilon its rounds cost; TaskError if the
        task asks for privacy without DP-FedAvg, or costs more than the epsilon it states."""
        if self.privacy is not None and not isinstance(self.privacy, DifferentialPrivacy):
            raise TaskError(f"privacy must be a DifferentialPrivacy, not "
                            f"{type(self.privacy).__name__}")
        if dp is None:
            if self.privacy is not None:
                raise TaskError("privacy needs DP-FedAvg: give the strategy clip_norm and "
                                "noise_multiplier, e.g. FedAvg(..., clip_norm=1.0, "
                                "noise_multiplier=1.0)")
            return
        from sdk.privacy.fedavg import DEFAULT_DELTA, DPFedAvg
        from sdk.weights import float_values

        spec.learning.clip_norm, spec.learning.noise_multiplier = dp
        delta = self.privacy.delta if self.privacy is not None else DEFAULT_DELTA
        fedavg = DPFedAvg(*dp, spec.precision, float_values(list(spec.learning.weights)), delta)
        spent = fedavg.epsilon(self.max_rounds)
        if self.privacy is not None and spent > self.privacy.epsilon:
            raise TaskError(
                f"{self.max_rounds} rounds of DP-FedAvg with noise_multiplier {dp[1]:g} cost "
                f"epsilon {spent:.4g} at delta {delta:g}, more than the {self.privacy.epsilon:g} "
                f"asked for: raise noise_multiplier to at least "
                f"{fedavg.noise_multiplier_for(self.privacy.epsilon, self.max_rounds):.4g}, or "
                "lower max_rounds")
        spec.privacy.CopyFrom(DifferentialPrivacy(spent, delta).to_proto())
