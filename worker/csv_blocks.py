"""A CSV file's rows parsed on several threads, in blocks of whole lines, and yielded in the
file's order: each value is parsed by pandas' own parser as `read_csv` parses the whole file, and
a large file is read on every core (pandas' parser lets go of the GIL while it tokenizes and
converts).

A newline ends a row except inside a quoted field, and only a tokenizer knows where those are
(pandas takes a quote in the middle of a field for a character), so blocks are cut at newlines
only while the rows hold no quote character. Where one comes (or a line too long to be a block),
pandas' own chunked reader reads the whole file again, from its start, and gives the rows not
given yet. So does a file whose first line alone is not its header, and a block whose first row
has other than as many fields as the header: pandas reads a row of more as an index or an error
(by where it is and `usecols`), and a row of fewer that starts a block, with `usecols`, as an
error; within a block, as in the whole file.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from io import BufferedReader, BytesIO, RawIOBase
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

MOST_THREADS = 4
SAMPLE_BYTES = 1 << 16  # the rows' first bytes, whose lines' length sizes a block
LONGEST_LINE = 64  # a line longer than this many blocks is pandas' own reader's
MOST_BLOCK_BYTES = 1 << 25
PARSER_BUFFER = 1 << 18  # what pandas' parser reads of a block at a time
QUOTE = b'"'
LINE = re.compile(rb"[^\r\n]*")  # pandas ends a line at \n, \r\n or \r


class _Handover(Exception):
    """The blocks stop here: pandas' own reader reads the file."""


def csv_chunks(path: Path, options: dict[str, Any], rows: int,
               threads: int | None = None) -> Iterator[pd.DataFrame]:
    """The data rows of the CSV file at `path`, about `rows` at a time, as
    `pd.read_csv(path, chunksize=rows, **options)` gives them (`options`: `sep`, `usecols`,
    `dtype`), parsed on `threads` threads (None: the cores, at most MOST_THREADS); no chunk
    is empty."""
    threads = threads or min(MOST_THREADS, os.cpu_count() or 1)
    given = 0
    with open(path, "rb") as file:
        names = _names(file.readline(SAMPLE_BYTES), path, options["sep"])
        if names is not None:
            blocks = _Blocks(file, names, options["sep"], rows)
            block_options = {**options, "header": None, "names": names}
            with closing(_parsed(blocks, block_options, threads)) as parsed:
                for chunk in parsed:
                    chunk.index = pd.RangeIndex(given, given + len(chunk))
                    given += len(chunk)
                    if len(chunk):
                        yield chunk
            if blocks.whole:
                return
    with pd.read_csv(path, chunksize=rows, **options) as reader:
        for chunk in reader:
            if given < len(chunk):
                yield chunk.iloc[given:]
            given = max(0, given - len(chunk))


def _parsed(blocks: _Blocks, options: dict[str, Any], threads: int) -> Iterator[pd.DataFrame]:
    """Each block parsed, in order, on `threads` threads, until the blocks end or hand over."""
    descriptor = blocks.file.fileno()

    def parse(start: int, end: int) -> pd.DataFrame:
        return pd.read_csv(BufferedReader(_Range(descriptor, start, end), PARSER_BUFFER),
                           **options)

    with ThreadPoolExecutor(threads, thread_name_prefix="csv") as pool:
        parsing: deque[Future[pd.DataFrame]] = deque()
        try:
            for start, end in blocks:
                parsing.append(pool.submit(parse, start, end))
                while len(parsing) > threads or (parsing and parsing[0].done()):
                    yield parsing.popleft().result()
        except _Handover:
            pass
        while parsing:
            yield parsing.popleft().result()


def _names(header: bytes, path: Path, separator: str) -> list[str] | None:
    """The file's column names, if its first line alone is its header, as pandas reads it."""
    if not header.endswith(b"\n") or b"\r" in header[:-2]:
        return None
    names = list(pd.read_csv(path, sep=separator, nrows=0).columns)
    try:  # a newline in a quoted name gives other names, or no end of the quote
        alone = list(pd.read_csv(BytesIO(header), sep=separator, nrows=0).columns)
    except (ValueError, pd.errors.ParserError):
        return None
    return names if alone == names else None


class _Range(RawIOBase):
    """Bytes `start` to `end` of an open file, read at their offsets (threads share the file)."""

    def __init__(self, descriptor: int, start: int, end: int) -> None:
        super().__init__()
        self.descriptor, self.position, self.end = descriptor, start, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self.end - self.position)
        if size <= 0:
            return 0
        read = os.preadv(self.descriptor, [memoryview(buffer)[:size]], self.position)
        self.position += read
        return read


class _Blocks:
    """(start, end) offsets of blocks of whole lines, of about `rows` rows and at most
    MOST_BLOCK_BYTES, from `file`'s position up to its size when opened, each starting with a
    row of as many fields as `names`; `_Handover` where they cannot go on, and `whole` once
    they have reached the end."""

    def __init__(self, file: BinaryIO, names: list[str], separator: str, rows: int) -> None:
        self.file = file
        self.rows = rows
        self.fields = len(names)
        self.separator = separator.encode()
        self.blank = b" \t".replace(self.separator, b"") + b"\r\n"
        self.end = os.fstat(file.fileno()).st_size  # rows appended later are not read
        sample = file.read(SAMPLE_BYTES)
        file.seek(-len(sample), os.SEEK_CUR)
        self.size = max(1, min(rows * len(sample) // max(1, sample.count(b"\n")),
                               MOST_BLOCK_BYTES, self.end))
        self.whole = False  # the blocks reached the end

    def __iter__(self) -> Iterator[tuple[int, int]]:
        buffer = bytearray(self.size)
        while (start := self.file.tell()) < self.end:
            read = self.file.readinto(memoryview(buffer)[:self.end - start])
            cut = read if start + read == self.end else buffer.rfind(b"\n", 0, read) + 1
            if not cut:  # a line longer than the buffer
                if len(buffer) >= LONGEST_LINE * self.size:
                    raise _Handover
                buffer = bytearray(2 * len(buffer))
                self.file.seek(start)
                continue
            lines = buffer.count(b"\n", 0, cut)
            if lines > 2 * self.rows:  # shorter lines than the sample's
                cut = buffer.find(b"\n", cut * self.rows // lines) + 1
            if buffer.find(QUOTE, 0, cut) >= 0:
                raise _Handover
            self._check(buffer, cut)
            self.file.seek(start + cut)
            yield start, start + cut
        self.whole = True

    def _check(self, block: bytearray, end: int) -> None:
        """`_Handover` where the block's first row has other than as many fields as the
        header: pandas reads a row of more as the whole file's first row as an index or not
        (by `usecols`), and later as an error or not; with `usecols`, rows of fewer that start
        a block as an error. Within a block's rows, as in the whole file."""
        position = 0
        while position < end:
            line = LINE.match(block, position, end).group()
            if line.strip(self.blank):
                if line.count(self.separator) != self.fields - 1:
                    raise _Handover
                return
            position += len(line) + 1
