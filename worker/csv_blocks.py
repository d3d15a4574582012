"""A CSV file's rows parsed on several threads, in blocks of whole rows, and yielded in the
file's order: each value is parsed by pandas' own parser as `read_csv` parses the whole file, and
a large file is read on every core (pandas' parser lets go of the GIL while it tokenizes and
converts).

A block is cut at a newline with an even number of quote characters since the block's start, so
not inside a quoted field unless a quote stands in the middle of a field (pandas takes it for a
character). A block that starts where a row starts and ends inside a quoted field fails to parse
("EOF inside string"), so a block that parses starts the next one where a row starts. Where a
block fails, or a line is too long for one, or a block's first row has other than as many
fields as the header (pandas reads a row of more as an index or an error, by where it is and
`usecols`, and with `usecols` a block starting with a row of fewer as an error), pandas' own
chunked reader reads the whole file again, from its start, and gives the rows not given yet,
or the error the file has. So does a file whose first line alone is not its header, and a
block that pandas' parser could read otherwise than within the file: one holding a BOM (skipped
where a parse starts) or a line starting with blanks across the end of one of its 256 KiB reads
of the file or of the block (whose blanks it drops, so that a quote after them opens a field).
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from io import BufferedReader, BytesIO, RawIOBase
from pathlib import Path
from typing import Any, BinaryIO, Callable

import pandas as pd

MOST_THREADS = 4
SAMPLE_BYTES = 1 << 16  # the rows' first bytes, whose lines' length sizes a block
LONGEST_ROW = 64  # a row longer than this many blocks is pandas' own reader's
MOST_BLOCK_BYTES = 1 << 23  # a block's most bytes, however short its lines
WINDOW_BYTES = 1 << 18  # a block's first bytes, whose lines tell if they are short
PANDAS_READ_BYTES = 1 << 18  # what pandas' parser reads of its source at a time
PARSER_BUFFER = PANDAS_READ_BYTES
BOM = b"\xef\xbb\xbf"
QUOTE = b'"'
LINE = re.compile(rb"[^\r\n]*")  # pandas ends a line at \n, \r\n or \r


class _Handover(Exception):
    """The blocks stop here: pandas' own reader reads the file."""


def csv_chunks(path: Path, options: dict[str, Any], rows: int,
               threads: int | None = None) -> Iterator[pd.DataFrame]:
    """The data rows of the CSV file at `path`, about `rows` at a time, as
    `pd.read_csv(path, chunksize=rows, **options)` gives them (`options`: `sep`, `usecols`,
    `dtype`), parsed on `threads` threads (None: the cores, at most MOST_THREADS); no chunk
    is empty. On one core (`threads` None), pandas' own reader: blocks would only add their
    cost."""
    if threads is None:
        threads = min(MOST_THREADS, os.cpu_count() or 1)
        threads = threads if threads > 1 else 0
    given = 0
    with open(path, "rb") as file:
        names = _names(file.readline(SAMPLE_BYTES), path, options["sep"]) if threads else None
        if names is not None:
            blocks = _Blocks(file, names, options["sep"], rows)
            try:
                with closing(_parsed(blocks, {**options, "header": None, "names": names},
                                     threads)) as parsed:
                    for chunk in parsed:
                        chunk.index = pd.RangeIndex(given, given + len(chunk))
                        given += len(chunk)
                        if len(chunk):
                            yield chunk
                return
            except _Handover:
                pass
    with pd.read_csv(path, chunksize=rows, **options) as reader:
        for chunk in reader:
            if given < len(chunk):
                yield chunk.iloc[given:]
            given = max(0, given - len(chunk))


def _parsed(blocks: _Blocks, options: dict[str, Any], threads: int) -> Iterator[pd.DataFrame]:
    """Each block parsed, in order, on `threads` threads; `_Handover` where the blocks stop or
    one fails to parse (pandas' own reader then says why, if the file is at fault)."""
    descriptor = blocks.file.fileno()

    def parse(start: int, end: int) -> pd.DataFrame:
        frame = pd.read_csv(BufferedReader(_Range(descriptor, start, end), PARSER_BUFFER),
                            **options)
        _release_freed_memory()
        return frame

    def result(future: Future[pd.DataFrame]) -> pd.DataFrame:
        try:
            return future.result()
        except Exception as error:  # noqa: BLE001 - a block cut inside a quote, or a bad row
            raise _Handover from error

    with ThreadPoolExecutor(threads, thread_name_prefix="csv") as pool:
        parsing: deque[Future[pd.DataFrame]] = deque()
        try:
            for start, end in blocks:
                parsing.append(pool.submit(parse, start, end))
                while len(parsing) > threads or (parsing and parsing[0].done()):
                    yield result(parsing.popleft())
            while parsing:
                yield result(parsing.popleft())
        finally:
            for future in parsing:
                future.cancel()


def _find_malloc_trim() -> Callable[[int], int]:
    """glibc's malloc_trim, or a stand-in that does nothing where the C library has none."""
    library = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(library), "malloc_trim", None) if library else None
    return trim if trim is not None else lambda pad: 0


_MALLOC_TRIM = _find_malloc_trim()


def _release_freed_memory() -> None:
    """Hands the pages a block's parser freed back to the system. Each block's parser makes
    and frees its own tokenizer buffers on a thread's malloc arena, where glibc keeps them: the
    worker's peak memory crept up with the table's size (2 passes of 600,000 rows: 6 MB more
    than of 150,000), and stays flat so (2 MB), for about 3% of the parsing time."""
    _MALLOC_TRIM(0)


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
    """(start, end) offsets of blocks of whole rows, of about `rows` rows (as long as the
    sample's) and at most MOST_BLOCK_BYTES, from `file`'s position up to its size when opened,
    each starting with a row of as many fields as `names`; `_Handover` where they cannot go
    on."""

    def __init__(self, file: BinaryIO, names: list[str], separator: str, rows: int) -> None:
        self.file = file
        self.rows = rows
        self.fields = len(names)
        self.separator = separator
        self.leading = b" \t".replace(separator.encode(), b"")  # blanks a line may start with
        self.blank = self.leading + b"\r\n"
        self.end = os.fstat(file.fileno()).st_size  # rows appended later are not read
        sample = file.read(SAMPLE_BYTES)
        file.seek(-len(sample), os.SEEK_CUR)
        self.size = max(1, min(rows * len(sample) // max(1, sample.count(b"\n")),
                               MOST_BLOCK_BYTES, self.end))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        buffer = bytearray(self.size)
        while (start := self.file.tell()) < self.end:
            read = self.file.readinto(memoryview(buffer)[:self.end - start])
            cut = self._cut(buffer, read, start + read == self.end)
            if not cut:  # a row longer than the buffer
                if len(buffer) >= LONGEST_ROW * self.size:
                    raise _Handover
                buffer = bytearray(2 * len(buffer))
                self.file.seek(start)
                continue
            if self._read_otherwise(buffer, start, cut):
                raise _Handover
            self._check(buffer, cut)
            self.file.seek(start + cut)
            yield start, start + cut

    def _cut(self, buffer: bytearray, read: int, last: bool) -> int:
        """Where the block ends: at the file's end (`last`), or after the last newline with an
        even number of quotes before it; where its first bytes' lines are shorter than the
        sample's, after about `rows` lines (0: none)."""
        cut = read if last else _row_end(buffer, read)
        window = min(cut, WINDOW_BYTES)
        if buffer.count(b"\n", 0, window) * cut > 2 * self.rows * window:
            lines = buffer.count(b"\n", 0, cut)
            if lines > 2 * self.rows:
                cut = _row_end(buffer, buffer.find(b"\n", cut * self.rows // lines) + 1) or cut
        return cut

    def _read_otherwise(self, block: bytearray, start: int, end: int) -> bool:
        """Whether pandas' parser could read the block at file offset `start` otherwise than
        within the whole file: it skips a BOM where a parse starts, and drops the leading
        blanks of a line before the end of one of its reads (of the file or of the block), so
        a quote after them opens a field in one and not in the other."""
        if block.find(BOM[:1], 0, end) >= 0 and block.find(BOM, 0, end) >= 0:  # memchr first
            return True
        for read_end in {*range(-start % PANDAS_READ_BYTES, end, PANDAS_READ_BYTES),
                         *range(PANDAS_READ_BYTES, end, PANDAS_READ_BYTES)}:
            line = block.rfind(b"\n", 0, read_end) + 1
            line = block.rfind(b"\r", line, read_end) + 1 or line
            if line < end and block[line] in self.leading:
                return True
        return False

    def _check(self, block: bytearray, end: int) -> None:
        """`_Handover` where the block's first row has other than as many fields as the
        header, or cannot be told alone (a quote open at its line's end)."""
        position = 0
        while position < end:
            line = LINE.match(block, position, end).group()
            if line.strip(self.blank):
                if QUOTE not in line:
                    fields = line.count(self.separator.encode()) + 1
                else:
                    try:
                        fields = len(next(csv.reader([line.decode()], delimiter=self.separator,
                                                     strict=True)))
                    except (csv.Error, UnicodeDecodeError):
                        raise _Handover from None
                if fields != self.fields:
                    raise _Handover
                return
            position += len(line) + 1


def _row_end(buffer: bytearray, end: int) -> int:
    """The end of the last line in `buffer[:end]` after which the number of quotes is even,
    so a row ends there unless a quote stands in a field's middle; 0 if none."""
    cut = buffer.rfind(b"\n", 0, end)
    if buffer.find(QUOTE, 0, cut) < 0:
        return cut + 1
    quotes = buffer.count(QUOTE, 0, cut)
    while cut >= 0 and quotes % 2:
        previous = buffer.rfind(b"\n", 0, cut)
        quotes -= buffer.count(QUOTE, previous + 1, cut)
        cut = previous
    return cut + 1
