"""A CSV file parsed in blocks of lines on several threads gives the rows pandas' own chunked
reader gives: every value, dtype, row number and error, whatever the quotes, line ends, blank
lines, text, missing values and ragged rows; where blocks cannot go on, pandas' reader reads the
file again and gives the rows not given yet."""

from __future__ import annotations

import logging
import os
from io import BufferedReader
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.csv_blocks import csv_chunks
from worker.datasets import DataDir, DatasetError
from worker.sources import Catalog

NUMBER = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(-1e6, 1e6).map(repr),
                   st.sampled_from(["", "nan", "1e308", "-0.0", "inf"]))
PLAIN = st.text("abc xyzé", min_size=1, max_size=6).map(lambda t: "t" + t)
QUOTED = st.sampled_from(['"quoted, with a comma"', '"two\nlines"', '"a ""quote"""', 't5"'])


@st.composite
def files(draw: Any) -> tuple[bytes, list[str] | None, dict[str, str]]:
    """A CSV file's bytes, the columns to read and the text ones' dtype: a header (maybe
    quoted), rows of numbers and text (from some row on maybe quoted, a quote inside a field, a
    newline inside quotes), blank lines, rows with a field too many or too few, LF or CRLF line
    ends, a last line with or without its end."""
    kinds = draw(st.lists(st.sampled_from(["number", "text"]), min_size=1, max_size=4))
    names = [f'"c{i}"' if draw(st.booleans()) else f"c{i}" for i in range(len(kinds))]
    end = draw(st.sampled_from(["\n", "\r\n"]))
    quotes_from = draw(st.integers(0, 60))
    lines = [",".join(names)]
    for row in range(draw(st.integers(0, 40))):
        line = ",".join(draw(NUMBER) if kind == "number" else
                        draw(st.one_of(PLAIN, QUOTED) if row >= quotes_from else PLAIN)
                        for kind in kinds)
        shape = draw(st.integers(0, 19))
        lines.append("" if shape == 0 else " " if shape == 1 else line + ",7" if shape == 2
                     else line.rsplit(",", 1)[0] if shape == 3 else line)
    text = end.join(lines) + (end if draw(st.booleans()) else "")
    columns = draw(st.sampled_from([None, ["c0"], ["c1", "c0"]]))
    usecols = [c for c in columns or [] if int(c[1]) < len(kinds)] or None
    texts = {f"c{i}": "str" for i, kind in enumerate(kinds) if kind == "text"}
    return text.encode(), usecols, {c: t for c, t in texts.items() if c in (usecols or texts)}


def pandas_chunks(path: Path, options: dict[str, Any], rows: int) -> list[pd.DataFrame]:
    with pd.read_csv(path, chunksize=rows, **options) as reader:
        return list(reader)


def outcome(read: Any, nonempty: bool = False) -> Any:
    """The rows `read` gives, or its error's type; `nonempty`: asserts it gives no empty chunk
    (pandas' own gives one for a file without rows)."""
    try:
        chunks = list(read())
    except (ValueError, pd.errors.ParserError) as error:
        return type(error).__name__
    assert not nonempty or all(len(chunk) for chunk in chunks)
    chunks = [chunk for chunk in chunks if len(chunk)]
    return pd.concat(chunks) if chunks else None


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(drawn=files(), rows=st.integers(1, 9), threads=st.integers(1, 3))
def test_blocks_give_what_pandas_chunked_reader_gives(tmp_path, drawn, rows, threads):
    data, usecols, dtype = drawn
    path = tmp_path / "d.csv"
    path.write_bytes(data)
    options = {"sep": ",", "usecols": usecols, "dtype": dtype}
    ours = outcome(lambda: csv_chunks(path, options, rows, threads), nonempty=True)
    theirs = outcome(lambda: pandas_chunks(path, options, rows))
    if isinstance(theirs, pd.DataFrame) and isinstance(ours, pd.DataFrame):
        pd.testing.assert_frame_equal(ours, theirs)
    else:
        assert type(ours) is type(theirs) and (ours is None or ours == theirs)


def reads(path: Path, monkeypatch, rows: int = 10, threads: int | None = 2
          ) -> tuple[list[pd.DataFrame], list[str]]:
    """csv_chunks' chunks of `path`, and what pandas' parser read for them: blocks, the whole
    file, or a header."""
    calls: list[str] = []
    read_csv = pd.read_csv

    def recording(source, *args, **kwargs):
        calls.append("block" if isinstance(source, BufferedReader) else
                     "file" if kwargs.get("chunksize") else "header")
        return read_csv(source, *args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", recording)
    try:
        return list(csv_chunks(path, {"sep": ",", "usecols": None, "dtype": {"t": "str"}},
                               rows, threads)), calls
    finally:
        monkeypatch.undo()


def test_quoted_fields_with_newlines_are_read_in_blocks(tmp_path, monkeypatch):
    rows = [f'{i},"t{i}, with a comma"' for i in range(200)]
    rows[150] = '150,"a quoted\nnewline and ""a quote"""'
    path = tmp_path / "d.csv"
    path.write_text("n,t\n" + "\n".join(rows) + "\n")
    chunks, calls = reads(path, monkeypatch)
    pd.testing.assert_frame_equal(pd.concat(chunks), pd.read_csv(path, dtype={"t": "str"}))
    assert calls.count("block") >= 10 and "file" not in calls, calls


def test_a_quote_in_a_fields_middle_hands_the_file_to_pandas_reader(tmp_path, monkeypatch):
    """After 't5"' the count of quotes is odd, so the newline inside the next quoted field
    looks like a row's end: the block cut there fails to parse, and pandas' reader reads the
    file again, giving the rows not given yet."""
    rows = [f"{i},t{i}" for i in range(200)]
    rows[100], rows[105] = '100,t5"', '105,"a quoted\nnewline"'
    path = tmp_path / "d.csv"
    path.write_text("n,t\n" + "\n".join(rows) + "\n")
    chunks, calls = reads(path, monkeypatch)
    pd.testing.assert_frame_equal(pd.concat(chunks), pd.read_csv(path, dtype={"t": "str"}))
    assert calls.count("block") >= 5 and calls.count("file") == 1, calls


def test_a_line_of_many_blocks_or_a_header_of_two_lines_is_read_by_pandas(tmp_path):
    long = "x" * 10_000
    for text in (f"n,t\n1,a\n2,{long}\n3,c\n", '"n\nm",t\n1,a\n2,b\n', "n,t\r1,a\r2,b\r"):
        path = tmp_path / "d.csv"
        path.write_text(text, newline="")
        chunks = list(csv_chunks(path, {"sep": ",", "usecols": None, "dtype": {}}, 1, 2))
        pd.testing.assert_frame_equal(pd.concat(chunks), pd.read_csv(path))


def test_a_bad_row_fails_as_a_dataset_error_that_quotes_nothing(tmp_path, caplog):
    rows = "\n".join(f"{i},{i}" for i in range(100))
    (tmp_path / "d.csv").write_text(f"a,b\n{rows}\n7,8,secret-value,9\n")
    table = Catalog(DataDir(tmp_path)).open("d.csv")
    with caplog.at_level(logging.WARNING), pytest.raises(DatasetError) as failure:
        list(table.chunks(None, 5))
    assert "cannot be read as a table (ParserError" in str(failure.value)
    assert "secret-value" not in str(failure.value)


def test_a_block_holds_about_rows_rows_whatever_the_first_lines_length(tmp_path):
    """A first row of 70 KB and 200,000 short ones: the sample's lines would make a block of
    the whole file; chunks stay near 1,000 rows, so memory follows `rows`."""
    path = tmp_path / "d.csv"
    path.write_text("a,b\n" + "x" * 70_000 + ",1\n" + "1,2\n" * 200_000)
    chunks = list(csv_chunks(path, {"sep": ",", "usecols": None, "dtype": {"a": "str"}}, 1000, 2))
    assert sum(map(len, chunks)) == 200_001 and max(map(len, chunks[1:])) <= 2000


def test_rows_appended_while_a_file_is_read_are_not_read(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(100)))
    expected = pd.read_csv(path)
    chunks = csv_chunks(path, {"sep": ",", "usecols": None, "dtype": {}}, 10, 1)
    first = next(chunks)
    with open(path, "a") as file:
        file.write("7,")  # a half-written row, and more
    pd.testing.assert_frame_equal(pd.concat([first, *chunks]), expected)


@pytest.mark.parametrize("ragged", [0, 50])
@pytest.mark.parametrize("usecols", [None, ["n"]])
def test_a_quoted_row_of_more_fields_is_read_as_pandas_reads_it(tmp_path, ragged, usecols):
    """The file's first row of more fields makes an index, a later one an error (or, with
    `usecols`, is read): a block starting with one is pandas' own reader's, even quoted."""
    rows = [f'{i},"t{i}, quoted"' for i in range(100)]
    rows[ragged] += ',"7"'
    path = tmp_path / "d.csv"
    path.write_text("n,t\n" + "\n".join(rows) + "\n")
    options = {"sep": ",", "usecols": usecols, "dtype": {"t": "str"} if usecols is None else {}}
    ours = outcome(lambda: csv_chunks(path, options, 1, 2), nonempty=True)
    theirs = outcome(lambda: pandas_chunks(path, options, 1))
    if isinstance(theirs, str):
        assert ours == theirs
    else:
        pd.testing.assert_frame_equal(ours, theirs)


READ = 262_144  # pandas' parser reads its source this many bytes at a time


def blank_led_quote_at(offset: int, tail: bytes) -> bytes:
    """A file whose line starting with two spaces has its quote at byte `offset`: where one
    of pandas' reads ends right before it, the quote opens a field; elsewhere it is text."""
    body = bytearray(b"a,b\n")
    while len(body) + 4 <= offset - 2 - 8:
        body += b"1,2\n"
    body += b"9" * (offset - 2 - len(body) - 3) + b",2\n"
    body += b"  " + tail + b"5,6\n" * 100
    assert body.index(b'"') == offset
    return bytes(body)


@pytest.mark.parametrize("data, rows", [
    (blank_led_quote_at(4 + READ, b'"x,1\n2,y"\n3,4\n'), 10**5),  # the block's read ends there
    (blank_led_quote_at(READ, b'"x\ny",1\n3,4\n'), 1000),  # the file's read ends there
    (b"a,b\n1,2\n\xef\xbb\xbf3,3\n4,5\n", 1),  # a BOM where a block starts: pandas skips it
    (b"a,b\n" + b"x" * READ + b"\xef\xbb\xbf" + b"x" * 40_000 + b",1\n2,3\n", 9),
], ids=["quote after blanks, block's read", "quote after blanks, file's read", "BOM at a block",
        "BOM at a read"])
@pytest.mark.parametrize("threads", [1, 2])
def test_where_pandas_reads_a_block_otherwise_than_the_file_it_reads_the_file(
        tmp_path, data, rows, threads):
    """pandas' parser drops a line's leading blanks before the end of one of its reads, and
    skips a BOM at the start of a parse: a block holding either is pandas' own reader's."""
    path = tmp_path / "d.csv"
    path.write_bytes(data)
    options = {"sep": ",", "usecols": None, "dtype": {}}
    ours = outcome(lambda: csv_chunks(path, options, rows, threads), nonempty=True)
    pd.testing.assert_frame_equal(ours, outcome(lambda: pandas_chunks(path, options, rows)))


def test_on_one_core_the_file_is_pandas_readers(tmp_path, monkeypatch):
    """Blocks cost more CPU than pandas' reader (each block's parser starts afresh): they pay
    only on two cores or more."""
    path = tmp_path / "d.csv"
    path.write_text("a,b\n" + "1,2\n" * 1000)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    chunks, calls = reads(path, pytest.MonkeyPatch(), rows=300, threads=None)
    assert [len(chunk) for chunk in chunks] == [300, 300, 300, 100] and "block" not in calls
