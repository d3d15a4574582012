"""Datasets a task names: files under each worker's data dir, or the logical names of sources
(a database's table, a file) that each holder maps in its sources file."""

from __future__ import annotations

from pathlib import PurePosixPath

# A table file's suffix, and its separator (None: Parquet, which has none).
TABULAR_SUFFIXES: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".parquet": None}
TRAINING_SUFFIXES = (".npz", ".pt", ".csv")


MAX_NAME_BYTES = 255  # the longest dataset name a worker offers or accepts


def check_relative_name(name: str) -> str:
    """The dataset name, normalised, or ValueError if it could leave a worker's data dir."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a dataset needs a file name, relative to each worker's data dir")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES or not name.isprintable():
        raise ValueError(f"a dataset name is printable text of at most {MAX_NAME_BYTES} bytes, "
                         f"not {name[:40]!r}")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or name.startswith("~"):
        raise ValueError(
            f"dataset {name!r} escapes the worker's data dir: name a file relative to it, "
            "without '..' or a leading '/'"
        )
    return str(path)


class DataFrame:
    """A table on each worker: a .csv, .tsv or .parquet file of its data dir, or a name without
    a suffix that each holder's sources file maps to a database's table or query, or a file."""

    def __init__(self, name: str) -> None:
        self.name = check_relative_name(name)
        suffix = PurePosixPath(self.name).suffix.lower()
        if suffix and suffix not in TABULAR_SUFFIXES:
            raise ValueError(
                f"dataset {name!r}: a DataFrame is read from a {', '.join(TABULAR_SUFFIXES)} "
                f"file, or from a source a holder names (a name without a suffix), not {suffix!r}"
            )

    def __repr__(self) -> str:
        return f"dataset.DataFrame({self.name!r})"


class Dataset:
    """Training data in each worker's data dir, loaded there as a torch Dataset of pairs.

    `.npz` with arrays `x` and `y` (or `arr_0` and `arr_1`); `.pt` holding a saved Dataset, a
    tuple of tensors or a dict with `x` and `y`; `.csv` whose last column is the target.
    """

    def __init__(self, dataset: str) -> None:
        self.name = check_relative_name(dataset)
        suffix = PurePosixPath(self.name).suffix.lower()
        if suffix not in TRAINING_SUFFIXES:
            raise ValueError(f"dataset {dataset!r}: a Dataset is read from a "
                             f"{', '.join(TRAINING_SUFFIXES)} file, not {suffix or 'a file without a suffix'!r}")

    def __repr__(self) -> str:
        return f"dataset.Dataset({self.name!r})"
