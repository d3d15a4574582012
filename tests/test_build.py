"""build(): what a user gets wrong is refused with words that say how to fix it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from sdk import dataset
from sdk.pandas import UnsupportedOperation
from sdk.task import TaskError
from tasks import Rows, WageAvg


@pytest.mark.parametrize("kwargs,message", [
    ({"min_clients": 1}, "min_clients must be an integer of at least 2"),
    ({"min_clients": 3, "max_clients": 2}, r"max_clients \(2\) must be an integer >= min_clients"),
    ({"wait_timeout": 0}, "wait_timeout must be a positive number"),
    ({"connection_timeout": -1}, "connection_timeout must be a positive number"),
])
def test_bad_rules_are_refused(kwargs, message):
    with pytest.raises(TaskError, match=message):
        WageAvg(**kwargs).build()


def test_an_empty_name_is_refused():
    task = WageAvg()
    task.name = " "
    with pytest.raises(TaskError, match="non-empty name"):
        task.build()


@pytest.mark.parametrize("name", ["../wages.csv", "/etc/passwd", "a/../../b.csv", "~/x.csv"])
def test_dataset_names_that_escape_the_data_dir_are_refused(name):
    with pytest.raises(ValueError, match="escapes the worker's data dir"):
        dataset.DataFrame(name)


def test_a_dataset_must_be_a_table_file():
    with pytest.raises(ValueError, match="read from a .csv, .tsv, .parquet file"):
        dataset.DataFrame("wages.xlsx")
    assert dataset.DataFrame("wages.parquet").name == "wages.parquet"
    assert dataset.DataFrame("visits").name == "visits"  # a source a holder names


@pytest.mark.parametrize("body,message", [
    (lambda d: d, "must return aggregates"),
    (lambda d: d.age + 1, "must return aggregates"),
    (lambda d: d.age.mode(), "mode is not supported in a federated task"),
    (lambda d: d.head(), "head is not supported"),
    (lambda d: list(d.age), "iteration is not supported"),
    (lambda d: d.age.sum() if d.age.mean() > 3 else 0, "truth testing"),
    (lambda d: d.age["row-7"], "selecting rows by label"),
    (lambda d: d.groupby("city"), "returned a groupby itself"),
])
def test_what_cannot_be_federated_is_refused_at_build(body, message):
    with pytest.raises((TaskError, UnsupportedOperation), match=message):
        Rows(body).build()


def test_execute_arguments_must_match_the_datasets():
    class Mismatch(Rows):
        def execute(self, other):
            return other.mean()

    with pytest.raises(TaskError, match="they must match"):
        Mismatch(None).build()


@pytest.mark.parametrize("fraction", [0.4, 0.0, 1, 1.0, 1.5, float("nan"), True, "0.6", None])
def test_a_secagg_threshold_outside_a_majority_to_all_is_refused(fraction):
    from learning_tasks import Regression  # torch: only this test needs it

    analytics, learning = WageAvg(), Regression()
    analytics.secagg_threshold = fraction
    learning.strategy = dataclasses.replace(learning.strategy, secagg_threshold=fraction)
    for task in (analytics, learning):
        with pytest.raises(TaskError, match=r"secagg_threshold is the fraction f .* a number "
                           rf"with 0.5 <= f < 1 .*not {re.escape(repr(fraction))}"):
            task.build()


def test_the_secagg_threshold_travels_in_the_signed_spec():
    assert WageAvg().build().spec.secagg_threshold == 0.5
    task = WageAvg()
    task.secagg_threshold = 2 / 3
    assert task.build().spec.secagg_threshold == 2 / 3
