"""Where a worker's datasets come from: the files of its data dir (CSV, TSV, Parquet) under their
own names, and the logical names of its sources file (`deltaflow worker --sources FILE`), each a
table or query of a SQL database or a file of the data dir.

Every table is read in chunks of rows, with only the columns a task uses, so a worker's memory is
bounded by the chunk and not by the table. A database's password comes from the environment
variable the sources file names, and appears in no log, error or message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from sdk.dataset import TABULAR_SUFFIXES, check_relative_name
from worker.csv_blocks import csv_chunks
from worker.datasets import DataDir, DatasetError

log = logging.getLogger("deltaflow.worker")

DEFAULT_CHUNK_ROWS = 65_536
SNIFF_ROWS = 10_000  # the rows of a CSV file that tell which of its columns hold text


class SourcesError(ValueError):
    """A sources file that cannot be used: the message names the key and says why."""


class Table:
    """One dataset as this worker holds it: its columns, and its rows in chunks."""

    name: str

    def columns(self) -> list[str]:
        raise NotImplementedError

    def chunks(self, columns: list[str] | None, rows: int) -> Iterator[pd.DataFrame]:
        """The table's rows, `rows` at a time (a CSV file's about `rows`; the last chunk may be
        shorter; a table without rows gives one empty chunk), with only `columns` (None: all)
        of those it has."""
        raise NotImplementedError

    def key(self) -> str:
        """What the privacy ledger keys this data by: the same data under any name."""
        raise NotImplementedError

    def _present(self, columns: list[str] | None) -> list[str] | None:
        """`columns` that the table has, in the table's order; None for all of them. A column it
        lacks is left for the task's own selection to refuse, in the words it always uses."""
        if columns is None:
            return None
        wanted = set(columns)
        return [c for c in self.columns() if c in wanted]


class FileTable(Table):
    """A .csv, .tsv or .parquet file of the data dir."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        suffix = path.suffix.lower()
        if suffix not in TABULAR_SUFFIXES:
            raise DatasetError(f"dataset {name!r} is not a {', '.join(TABULAR_SUFFIXES)} file")
        self.separator = TABULAR_SUFFIXES[suffix]
        self.parquet = self.separator is None

    def columns(self) -> list[str]:
        with self._reading():
            if self.parquet:
                import pyarrow.parquet as pq
                return list(pq.ParquetFile(self.path).schema_arrow.names)
            return list(pd.read_csv(self.path, sep=self.separator, nrows=0).columns)

    def chunks(self, columns: list[str] | None, rows: int) -> Iterator[pd.DataFrame]:
        usecols = self._present(columns)
        with self._reading():
            if self.parquet:
                yield from self._parquet_chunks(usecols, rows)
                return
            # Text columns stay text in a chunk where every value is missing, as in the whole
            # file (pandas would read such a chunk's column as floats).
            sample = pd.read_csv(self.path, sep=self.separator, usecols=usecols,
                                 nrows=SNIFF_ROWS)
            text = {c: "str" for c, dtype in sample.dtypes.items()
                    if pd.api.types.is_string_dtype(dtype) or dtype == object}
            empty = True
            for chunk in csv_chunks(self.path, {"sep": self.separator, "usecols": usecols,
                                                "dtype": text}, rows):
                empty = False
                yield chunk
            if empty:  # a header without rows gives no chunk at all
                yield sample

    def _parquet_chunks(self, columns: list[str] | None, rows: int) -> Iterator[pd.DataFrame]:
        parquet, empty = self._parquet(), True
        for batch in parquet.iter_batches(batch_size=rows, columns=columns):
            empty = False
            yield batch.to_pandas()
        if empty:
            schema = parquet.schema_arrow
            yield schema.empty_table().select(
                columns if columns is not None else schema.names).to_pandas()

    def row_groups(self) -> int:
        """How many row groups a Parquet file has."""
        with self._reading():
            return self._parquet().metadata.num_row_groups

    def batches(self, columns: list[str], rows: int, row_groups: list[int],
                threads: bool) -> Iterator[Any]:
        """A Parquet file's `columns` in `row_groups`, as Arrow record batches of `rows` rows,
        decoded on this thread alone or on Arrow's threads too."""
        with self._reading():
            yield from self._parquet().iter_batches(batch_size=rows, columns=columns,
                                                    row_groups=row_groups, use_threads=threads)

    def pandas_dtypes(self) -> pd.Series:
        """A Parquet file's columns as pandas reads them (the index, with its name) and the dtype
        of each over the whole file: an int64 column with a null is float64, and a bool column
        with one object (known from the row groups' statistics; object where they do not say)."""
        with self._reading():
            parquet = self._parquet()
            dtypes = parquet.schema_arrow.empty_table().to_pandas().dtypes
            metadata = parquet.metadata
            if metadata.num_columns != len(parquet.schema_arrow) or not dtypes.index.is_unique:
                return dtypes.map(lambda _: np.dtype(object))  # nested, or a name twice
            for j, name in enumerate(parquet.schema_arrow.names):
                if name not in dtypes.index or str(dtypes[name]) not in ("int64", "bool"):
                    continue
                statistics = [metadata.row_group(g).column(j).statistics
                              for g in range(metadata.num_row_groups)
                              if metadata.row_group(g).num_rows]
                if not all(s is not None and s.has_null_count for s in statistics):
                    dtypes[name] = np.dtype(object)  # unknown: not reduced in Arrow
                elif any(s.null_count for s in statistics):
                    dtypes[name] = np.dtype("float64" if dtypes[name] == "int64" else object)
            return dtypes

    def _parquet(self) -> Any:
        import pyarrow.parquet as pq
        return pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except DatasetError:
            raise
        except Exception as error:  # noqa: BLE001 - a reader's message may quote the file's rows
            log.warning("dataset %r cannot be read as a table: %s", self.name, error)
            raise DatasetError(f"dataset {self.name!r} cannot be read as a table "
                               f"({type(error).__name__}; the worker's log says more)") from None

    def key(self) -> str:
        return file_key(self.path)


def file_key(path: Path) -> str:
    """The privacy ledger's key of a file: the file itself, whatever name or link reaches it."""
    stat = os.stat(path)
    return f"file:{stat.st_dev}:{stat.st_ino}"


@dataclass(frozen=True)
class SqlSpec:
    """A table or query of a SQL database, as the sources file names it."""

    url: str  # a SQLAlchemy URL without the password
    password_env: str | None
    table: str | None
    schema: str | None
    query: str | None


class SqlTable(Table):
    """A table or query of a SQL database, read through SQLAlchemy in read-only transactions."""

    def __init__(self, name: str, spec: SqlSpec) -> None:
        self.name = name
        self.spec = spec
        self._engine: Any = None
        self._password = os.environ.get(spec.password_env, "") if spec.password_env else ""

    @property
    def engine(self) -> Any:
        """The database's engine: no pool (a task's connection closes with it), read-only."""
        if self._engine is None:
            import sqlalchemy as sa
            url = sa.engine.make_url(self.spec.url)
            if self.spec.password_env:
                url = url.set(password=self._password)
            connect_args = {}
            if url.get_backend_name() == "postgresql":
                connect_args["options"] = "-c default_transaction_read_only=on"
            self._engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                            connect_args=connect_args)
            if url.get_backend_name() == "sqlite":
                sa.event.listen(self._engine, "connect", _sqlite_query_only)
        return self._engine

    @property
    def dialect(self) -> str:
        import sqlalchemy as sa
        return sa.engine.make_url(self.spec.url).get_backend_name()

    def selectable(self, connection: Any) -> Any:
        """The table (reflected: its columns and their types) or the query, as a FROM clause."""
        import sqlalchemy as sa
        if self.spec.table is not None:
            return sa.Table(self.spec.table, sa.MetaData(), schema=self.spec.schema,
                            autoload_with=connection)
        probe = sa.select(sa.text("*")).select_from(
            sa.text(f"({self.spec.query}) AS deltaflow_probe")).where(sa.false())
        names = list(connection.execute(probe).keys())
        return sa.text(self.spec.query).columns(*map(sa.column, names)).subquery("deltaflow_q")

    def columns(self) -> list[str]:
        with self.connect() as connection:
            return [c.name for c in self.selectable(connection).columns]

    def chunks(self, columns: list[str] | None, rows: int) -> Iterator[pd.DataFrame]:
        import sqlalchemy as sa
        with self.connect() as connection:
            source = self.selectable(connection)
            wanted = set(columns) if columns is not None else None
            picked = [c for c in source.columns if wanted is None or c.name in wanted]
            result = connection.execution_options(yield_per=rows).execute(sa.select(*picked))
            empty = True
            for part in result.partitions():
                empty = False
                yield to_frame(part, picked)
            if empty:
                yield to_frame([], picked)

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A read-only connection; a database's error becomes a DatasetError that names the
        source and the kind of failure (the database's own message, which may quote values,
        goes to this worker's log, without the password)."""
        import sqlalchemy as sa
        try:
            connection = self.engine.connect()
        except sa.exc.SQLAlchemyError as error:
            raise self._failure("cannot connect to its database", error) from None
        try:
            with connection:
                yield connection
        except sa.exc.SQLAlchemyError as error:
            raise self._failure("its database refused a query", error) from None

    def _failure(self, what: str, error: Exception) -> DatasetError:
        log.warning("source %r: %s: %s", self.name, what, self.scrub(str(error)))
        return DatasetError(f"source {self.name!r}: {what} ({type(error).__name__}; the "
                            "worker's log says more)")

    def scrub(self, text: str) -> str:
        """`text` without the password, should a driver ever quote it."""
        return text.replace(self._password, "***") if self._password else text

    def key(self) -> str:
        return sql_source_key(self.spec)


def sql_source_key(spec: SqlSpec) -> str:
    """The privacy ledger's key of a SQL source: its database (the URL, which holds no password)
    and its table, or a digest of its query with whitespace folded."""
    import sqlalchemy as sa
    database = sa.engine.make_url(spec.url).set(password=None).render_as_string()
    if spec.table is not None:
        return f"sql:{database}:table:{spec.schema + '.' if spec.schema else ''}{spec.table}"
    digest = hashlib.sha256(" ".join((spec.query or "").split()).encode()).hexdigest()
    return f"sql:{database}:query:{digest}"


def to_frame(rows: Any, columns: list[Any]) -> pd.DataFrame:
    """Rows of a database as pandas reads them: numbers as int64 (float64 where one is missing)
    or float64, decimals as floats, whatever the chunk holds."""
    import sqlalchemy as sa
    frame = pd.DataFrame.from_records(list(rows), columns=[c.name for c in columns],
                                      coerce_float=True)
    for column in columns:
        if isinstance(column.type, (sa.Integer, sa.Numeric)) and frame[column.name].dtype == object:
            frame[column.name] = frame[column.name].astype("float64")  # every value missing
    return frame


def _sqlite_query_only(connection: Any, _: Any) -> None:
    connection.execute("PRAGMA query_only = ON")


class Catalog:
    """What a worker offers: its data dir's files under their own names, and the sources file's
    logical names (which win over a file of the same name)."""

    def __init__(self, data_dir: DataDir, sources: dict[str, SqlSpec | str] | None = None) -> None:
        self.data_dir = data_dir
        self.sources = sources or {}

    def names(self) -> list[str]:
        return sorted(set(self.data_dir.names()) | set(self.sources))

    def key(self, name: str) -> str:
        """The privacy ledger's key of the data a dataset name stands for, a table or not (a
        learning task's file); DatasetError if there is none."""
        source = self.sources.get(name)
        if isinstance(source, SqlSpec):
            return sql_source_key(source)
        return file_key(self.data_dir.resolve(source if source is not None else name))

    def open(self, name: str) -> Table:
        """The table a task's dataset name stands for; DatasetError if there is none."""
        source = self.sources.get(name)
        if isinstance(source, SqlSpec):
            return SqlTable(name, source)
        return FileTable(name, self.data_dir.resolve(source if source is not None else name))


_KEYS = {"url": str, "password_env": str, "table": str, "schema": str, "query": str, "path": str}


def parse_sources(text: str, environ: dict[str, str] | None = None) -> dict[str, SqlSpec | str]:
    """The sources a file's text names: each a SqlSpec or a data dir file's name. SourcesError
    names the key that is wrong, and never quotes a URL (which might hold a password)."""
    environ = os.environ if environ is None else environ
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SourcesError(f"not valid TOML: {error}") from None
    unknown = set(tables) - {"sources"}
    if unknown or not isinstance(tables.get("sources", {}), dict):
        raise SourcesError("a sources file has only [sources.NAME] tables, not "
                           f"{', '.join(f'[{t}]' for t in sorted(unknown)) or '[sources]'}")
    found: dict[str, SqlSpec | str] = {}
    for name, entry in tables.get("sources", {}).items():
        where = f"[sources.{name}]"
        try:
            check_relative_name(name)
        except ValueError as error:
            raise SourcesError(f"{where}: the name is not usable as a dataset name: {error}") \
                from None
        if not isinstance(entry, dict):
            raise SourcesError(f"{where} must be a table of keys (url, table or query, or path)")
        for key, value in entry.items():
            if key not in _KEYS:
                raise SourcesError(f"{where} has no key {key!r}; it has {', '.join(_KEYS)}")
            if not isinstance(value, str) or not value.strip():
                raise SourcesError(f"{where} {key} must be non-empty text")
        found[name] = _source(where, entry, environ)
    return found


def _source(where: str, entry: dict[str, str], environ: dict[str, str]) -> SqlSpec | str:
    if ("path" in entry) == ("url" in entry):
        raise SourcesError(f"{where} needs either path (a file of the data dir) or url (a "
                           "database), and not both")
    if "path" in entry:
        extra = sorted(set(entry) - {"path"})
        if extra:
            raise SourcesError(f"{where}: {', '.join(extra)} go with url, not with path")
        try:
            path = check_relative_name(entry["path"])
        except ValueError as error:
            raise SourcesError(f"{where} path: {error}") from None
        if PurePosixPath(path).suffix.lower() not in TABULAR_SUFFIXES:
            raise SourcesError(f"{where} path must be a {', '.join(TABULAR_SUFFIXES)} file")
        return path
    if ("table" in entry) == ("query" in entry):
        raise SourcesError(f"{where} needs either table or query with its url, and not both")
    if "schema" in entry and "table" not in entry:
        raise SourcesError(f"{where} schema goes with table, not with query")
    import sqlalchemy as sa
    try:
        url = sa.engine.make_url(entry["url"])
    except Exception:  # noqa: BLE001 - its message would quote the URL
        raise SourcesError(f"{where} url is not a SQLAlchemy URL "
                           "(dialect+driver://user@host/database)") from None
    if url.password is not None:
        raise SourcesError(f"{where} url holds a password: remove it from the URL and put it "
                           "in an environment variable named by password_env")
    try:
        url.get_dialect()
    except Exception:  # noqa: BLE001 - NoSuchModuleError, or a driver that does not import
        raise SourcesError(f"{where} url: no SQLAlchemy dialect or driver for "
                           f"{url.drivername!r} is installed") from None
    password_env = entry.get("password_env")
    if password_env is not None and password_env not in environ:
        raise SourcesError(f"{where} password_env: the environment variable {password_env} is "
                           "not set")
    return SqlSpec(entry["url"], password_env, entry.get("table"), entry.get("schema"),
                   entry.get("query"))


def read_sources(path: Path) -> dict[str, SqlSpec | str]:
    """The sources of file `path`; SourcesError naming the file and the key."""
    try:
        return parse_sources(path.read_text())
    except OSError as error:
        raise SourcesError(f"{path}: {error.strerror or error}") from None
    except SourcesError as error:
        raise SourcesError(f"{path}: {error}") from None
