"""What leaves a worker: no aggregate of fewer than min_rows of its rows (such sets count as
empty, so no answer tells them from none), no parts over rows the coordinator chose, and errors
composed from the graph that never carry a row's value."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cluster import log_text
from tasks import Rows

from sdk import dataset, values
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan, PrivacyError, worker_parts
from sdk.task import HorizontalAnalytics

MIN_ROWS = 3


def plan_of(body: Callable[[Any], Any]) -> Plan:
    return Plan(*Graph.from_proto(Rows(body).build().spec.analytics))


def parts_bytes(body: Callable[[Any], Any], frame: pd.DataFrame) -> bytes:
    """A worker's parts of the first step at MIN_ROWS, as they would be sent (less node ids)."""
    parts = worker_parts(plan_of(body), 0, {"d": frame}, {}, MIN_ROWS)
    return values.encode(list(parts.values())).SerializeToString()


PEOPLE = pd.DataFrame({"id": range(1, 10), "city": ["Lyon", "Nice", "Brest"] * 3,
                       "hiv": [0, 1, 0, 0, 0, 1, 0, 0, 0], "cost": np.arange(9) * 10.5})


@pytest.mark.parametrize("reduce", [
    lambda s: s.cost.sum(), lambda s: s[["cost", "hiv"]].mean(), lambda s: s.count(),
    lambda s: s.cost.var(), lambda s: s.cost.astype("int64").sum(),
    lambda s: s.groupby("city").cost.sum(), lambda s: s.groupby("city").size(),
    lambda s: s.groupby("city")[["cost", "hiv"]].mean(),
])
def test_a_filter_keeping_one_row_sends_what_one_keeping_none_sends(reduce):
    """The `(id == 2) & (hiv == 1)` attack: the answer must not tell one row from none."""
    one = parts_bytes(lambda d: reduce(d[(d.id == 2) & (d.hiv == 1)]), PEOPLE)
    none = parts_bytes(lambda d: reduce(d[(d.id == 3) & (d.hiv == 1)]), PEOPLE)
    assert one == none
    assert parts_bytes(lambda d: reduce(d[d.id <= 2]), PEOPLE) == none  # 2 rows < MIN_ROWS
    assert parts_bytes(lambda d: reduce(d[d.city == "Lyon"]), PEOPLE) != none  # 3 rows are kept


def test_a_group_or_cell_of_too_few_rows_is_dropped_alone():
    frame = pd.DataFrame({"city": ["Lyon"] * 3 + ["Nice"] * 4 + ["Brest"],
                          "x": [1, 2, 3, 4, 5, 6, 7, 8],
                          "y": [1.5, np.nan, np.nan, 2.0, 2.0, 2.0, np.nan, 9.0]})
    parts = worker_parts(plan_of(lambda d: d.groupby("city").mean()), 0, {"d": frame}, {},
                         MIN_ROWS)
    (named,) = parts.values()
    assert list(named["count"].index) == ["Lyon", "Nice"]  # Brest's one row is not summed
    assert named["count"].to_dict() == {"x": {"Lyon": 3, "Nice": 4}, "y": {"Lyon": 0, "Nice": 3}}
    assert named["sum"].to_dict() == {"x": {"Lyon": 6, "Nice": 22}, "y": {"Lyon": 0.0, "Nice": 6.0}}
    whole = worker_parts(plan_of(lambda d: (d.y[d.x < 3].sum(), d.y[d.x > 3].sum())), 0,
                         {"d": frame.assign(y=[np.nan] * 7 + [5.0])}, {}, MIN_ROWS)
    assert [named["sum"] for named in whole.values()] == [0.0, 0.0]  # 1 value of 5 rows: none


def test_a_holder_of_too_few_rows_counts_as_empty():
    assert parts_bytes(lambda d: d.cost.sum(), PEOPLE.head(2)) == \
        parts_bytes(lambda d: d.cost.sum(), PEOPLE.head(0))


def test_a_cast_after_a_one_row_filter_runs_on_no_rows():
    """The `p.city[p.id == 57].astype("int64")` attack: the cast must not see the row."""
    assert parts_bytes(lambda d: d.city[d.id == 5].astype("int64").sum(), PEOPLE) == \
        parts_bytes(lambda d: d.city[d.id == 50].astype("int64").sum(), PEOPLE)
    with pytest.raises(EvaluationError,
                       match=r"^astype\(int64\) on column city \(\w+\): it holds text that is "
                             r"not a number$"):
        parts_bytes(lambda d: d.city[d.id <= 3].astype("int64").sum(), PEOPLE)


def test_inputs_for_nodes_a_step_does_not_need_are_refused():
    """A coordinator that sends a row mask as an 'input' would pick the rows summed."""
    plan = plan_of(lambda d: d[d.age > 0].wage.sum())
    frame = pd.DataFrame({"age": [30, 40, 50], "wage": [10.0, 20.0, 30.0]})
    mask_node = next(n.id for n in plan.graph.nodes if n.op == "binary")
    with pytest.raises(PrivacyError, match=f"values for nodes \\[{mask_node}\\]"):
        worker_parts(plan, 0, {"d": frame}, {mask_node: pd.Series([False, True, False])})
    parts = worker_parts(plan, 0, {"d": frame}, {}, min_rows=3)
    assert next(iter(parts.values()))["sum"] == 60.0
    parts = worker_parts(plan, 0, {"d": frame}, {}, min_rows=4)
    assert next(iter(parts.values()))["sum"] == 0.0


# Every value of every row is a marker: a string or number that may appear nowhere it leaves.
def marked(holder: int, rows: int = 6) -> pd.DataFrame:
    ids = [7331000 + 100 * holder + i for i in range(rows)]
    return pd.DataFrame({
        "id": ids,
        "name": [f"MARK_{i:x}" for i in ids],
        "cost": [987654.321 + 1000.125 * (100 * holder + i) for i in range(rows)],
        "digits": [f"{i}5" for i in ids],  # text that casts to numbers
        "rare": [np.nan] * (rows - 1) + [424242.4242 + holder],
        "zero": [0] * rows,
    })


HOLDERS = [marked(h) for h in range(3)]
ONE_ROW = 987654.0 + 1000.125 * 204.5  # the costs of the last holder's last row only exceed it


def marker_texts(frames: list[pd.DataFrame]) -> set[str]:
    """Every way a marker could be written: as text, its repr, e- and g-formats, digits."""
    texts = set()
    for frame in frames:
        for column in frame.columns:
            for value in frame[column].dropna():
                if column == "zero":
                    continue
                if isinstance(value, str):
                    texts |= {value, value.removeprefix("MARK_")}
                else:
                    number = float(value)
                    texts |= {str(value), repr(value), f"{number:e}", f"{number:.8e}",
                              f"{number:g}", repr(number), repr(number).replace(".", "")[:7]}
    return texts


def marker_bytes(frames: list[pd.DataFrame]) -> set[bytes]:
    """The markers as text, and numbers as the 8 bytes a codec would write."""
    found = {text.encode() for text in marker_texts(frames)}
    for frame in frames:
        for column in ("id", "cost", "rare"):
            for value in frame[column].dropna():
                found.add(struct.pack("<d", float(value)))
                if column == "id":
                    found.add(struct.pack("<q", int(value)))
    return found


def leaks(text: str, frames: list[pd.DataFrame] = HOLDERS) -> list[str]:
    return sorted(m for m in marker_texts(frames) if m in text)


def labels_and_values(parts: Any) -> list[Any]:
    """Every label and value in a worker's parts."""
    found = []
    for named in parts.values():
        for part in named.values():
            if isinstance(part, pd.DataFrame):
                found += [*part.index, *part.columns, *part.to_numpy().ravel()]
            elif isinstance(part, pd.Series):
                found += [*part.index, *part.to_numpy()]
            else:
                found.append(part)
    return found


HOSTILE: list[Callable[[Any], Any]] = [
    lambda d: d.name.astype("int64").sum(),
    lambda d: d.name.astype(float).sum(),
    lambda d: d.name.astype("datetime64[ns]").isna().sum(),
    lambda d: d.name.astype("category").astype(float).sum(),
    lambda d: (d.cost.astype(str) + "|").astype(float).sum(),
    lambda d: (d.id.astype(str) + "x").astype("int64").sum(),
    lambda d: d.assign(z=d.name.astype(float)).z.sum(),
    lambda d: d.astype({"name": "int64", "cost": "int8"}).sum(),
    lambda d: d.digits.astype("int64").sum(),
    lambda d: d[d.cost > ONE_ROW].cost.sum(),
    lambda d: d[d.cost > ONE_ROW].name.astype(float).sum(),
    lambda d: d[d.name.isin(["MARK_6fdc79"])].cost.mean(),
    lambda d: d[(d.id % 7 == 3) & (d.cost > 0)].cost.var(),
    lambda d: d.groupby("name").cost.sum(),
    lambda d: d.groupby("cost").id.sum(),
    lambda d: d.groupby("id").size(),
    lambda d: d.groupby(d.cost * 2).id.count(),
    lambda d: d.groupby(d.id % 2).name.count(),
    lambda d: d.groupby("zero").rare.mean(),
    lambda d: (d.rare.sum(), d.rare.mean(), d.rare.count()),
    lambda d: (d.id.astype("object") // d.zero.astype("object")).sum(),
    lambda d: (d.cost.astype("object") / d.zero.astype("object")).sum(),
    lambda d: (d.id ** -1).sum(),
    lambda d: d.name.isin([1, 2]).sum(),
    lambda d: d.name.between(0, 5).sum(),
    lambda d: d.name.between("MARK_", "MARK_z").sum(),
    lambda d: (d.name + 1).sum(),
    lambda d: (d.name * d.cost).sum(),
    lambda d: (d.name > 5).sum(),
    lambda d: np.log(d.name).sum(),
    lambda d: d.name.sum(),
    lambda d: d.mean(),
    lambda d: d.describe(),
    lambda d: d.name.fillna(0).clip(lower=0).sum(),
    lambda d: d.name.round(2).sum(),
    lambda d: d[["nope"]].sum(),
]


@pytest.mark.parametrize("body", HOSTILE)
def test_nothing_a_worker_sends_or_raises_holds_a_value_of_a_row(body):
    try:
        plan = plan_of(body)
    except (TypeError, ValueError):
        return  # refused at build(), on the analyst's machine: it never reaches a worker
    for frame in HOLDERS:
        try:
            parts = worker_parts(plan, 0, {"d": frame}, {}, MIN_ROWS)
        except EvaluationError as error:
            assert not leaks(str(error)) and not leaks(repr(error)), error
            continue
        found = labels_and_values(parts)
        assert not leaks(repr(parts)), parts
        for item in found:
            assert not (isinstance(item, str) and "MARK_" in item), parts
            if isinstance(item, (int, float, np.number)) and not isinstance(item, bool):
                assert not any(np.isclose(float(item), frame.select_dtypes("number")
                                          .drop(columns="zero").stack().astype(float),
                                          rtol=1e-12)), (item, parts)


# Over real daemons: three workers of marked rows, whose minimum set is the default 3 rows.
class Hostile(HorizontalAnalytics):
    def __init__(self, body: Callable[[Any], Any]):
        super().__init__(name="hostile", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30)
        self.body = body

    def dataset(self):
        return {"d": dataset.DataFrame("d.csv")}

    def execute(self, d):
        return self.body(d)


def start_marked(cluster) -> None:
    cluster.start_coordinator()
    for holder in range(3):
        cluster.start_worker(f"w{holder + 1}", {"d.csv": marked(holder)})


def test_no_marker_reaches_the_task_or_the_coordinators_files(cluster):
    start_marked(cluster)
    client = cluster.client()
    tasks = [lambda d: d.name.astype("int64").sum(),
             lambda d: (d.cost.astype(str) + "|").astype(float).sum(),
             lambda d: d[d.cost > ONE_ROW].name.astype(float).sum(),
             lambda d: (d.groupby("name").cost.sum(), d.groupby("cost").size(), d.rare.mean()),
             lambda d: (d.id.astype("object") // d.zero.astype("object")).sum()]
    outcomes = []
    for body in tasks:
        task_id = client.create_task(Hostile(body).build())
        outcomes.append(client.wait(task_id))
        text = log_text(client, task_id) + client.get_task(task_id).error
        assert "it reported an error" in text or outcomes[-1], text
        assert not leaks(text), text
    assert outcomes == [False, False, True, True, False]
    assert "astype(int64) on column name" in log_text(client, 1)
    markers = marker_bytes(HOLDERS)
    for path in (cluster.root / "state").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not [m for m in markers if m in content], path


def test_one_row_and_none_give_the_same_result_and_log(cluster):
    start_marked(cluster)
    client = cluster.client()
    answers = []
    for keep in (ONE_ROW, 1e12):  # one row on w3, then none anywhere
        task_id = client.create_task(Hostile(lambda d, keep=keep: (
            d[d.cost > keep].cost.sum(), d[d.cost > keep].id.count())).build())
        assert client.wait(task_id)
        lines = [re.sub(r"\d+(\.\d+)? ?s\b|task \d+", "#", e.message)
                 for e in client.logs(task_id)]
        answers.append((client.get_result(task_id), lines))
    assert answers[0] == answers[1]
    assert any("count as empty there" in line for line in answers[0][1])
