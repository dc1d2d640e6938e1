"""CSV/JSONL split points (the first record start at or after a byte offset, read near it only)
and the stream a byte-range slice is parsed from."""
from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prs_mpi.config import parse_size
from prs_mpi.storage import redact

log = logging.getLogger(__name__)

_CHUNK = 1 << 16  # the largest read near a split point
SCAN_BYTES = _CHUNK  # default csv_scan_bytes: how far past a split point quotes are looked for
_FIRST_READ = 1 << 12  # reads near a split point start small and double up to _CHUNK


@dataclass(frozen=True)
class Dialect:
    """What decides record boundaries: separator, quoting, line terminator, header records."""

    delimiter: int
    quote: int | None
    escape: int | None
    newline: int
    doublequote: bool
    header_records: int
    window: int

    @classmethod
    def from_options(cls, path: str, fmt: str, opts: Mapping, scan_bytes=SCAN_BYTES) -> Dialect:
        """The dialect of ``fmt`` ("csv" or "jsonl") under pandas reader keywords ``opts``;
        ``scan_bytes`` ("64KB" or a byte count) is how far past a split point quotes are
        looked for.  Raises ValueError when ``opts`` make the file impossible to split."""
        window = parse_size(scan_bytes)
        if fmt == "jsonl":
            return cls(ord(","), None, None, ord("\n"), True, 0, window)
        refused = [k for k in ("nrows", "skipfooter", "chunksize", "iterator") if opts.get(k)]
        skiprows, sep = opts.get("skiprows") or 0, opts.get("sep", opts.get("delimiter")) or ","
        encoding = str(opts.get("encoding") or "utf-8").lower().replace("_", "-")
        if not isinstance(skiprows, int) or encoding.startswith(("utf-16", "utf-32")):
            refused.append("skiprows" if not isinstance(skiprows, int) else "encoding")
        if refused or len(sep) != 1:
            raise ValueError(f"{redact(path)} is larger than mini_batch_size but cannot be split "
                             f"with {'options ' + str(refused) if refused else 'separator ' + repr(sep)}"
                             "; use plain options and a one-character separator, or raise "
                             "mini_batch_size above the file size")
        quote = None if opts.get("quoting") == 3 else ord(opts.get("quotechar") or '"')
        header = opts.get("header", "infer")
        if header == "infer":
            header = None if opts.get("names") is not None else 0
        rows = 0 if header is None else (max(header) if isinstance(header, list) else header) + 1
        esc = opts.get("escapechar")
        return cls(ord(sep), quote, ord(esc) if esc else None,
                   ord(opts.get("lineterminator") or "\n"), bool(opts.get("doublequote", True)),
                   skiprows + rows, window)


# Tokenizer states (the subset of pandas' C tokenizer that decides record boundaries).
_START, _FIELD, _QUOTED, _QUOTE_END, _ESC, _ESC_QUOTED = range(6)


def _advance(state: int, c: int, d: Dialect) -> tuple[int, bool]:
    """Next tokenizer state after byte ``c``, and whether ``c`` ended a record."""
    if state == _QUOTED:
        return (_QUOTE_END if c == d.quote else _ESC_QUOTED if c == d.escape else _QUOTED), False
    if state == _ESC_QUOTED:
        return _QUOTED, False
    if state == _ESC:
        return _FIELD, False
    if c == d.quote and (state == _START or (state == _QUOTE_END and d.doublequote)):
        return _QUOTED, False
    if c == d.newline:
        return _START, True
    if c == d.delimiter:
        return _START, False
    return (_ESC if c == d.escape else _FIELD), False


def read_at(f, pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


def _record_end(f, pos: int, size: int, state: int, d: Dialect, count: int = 1,
                skip_blank: bool = False) -> int:
    """Offset after the ``count``-th record ending at or after ``pos`` (else ``size``); with
    ``skip_blank``, empty lines are not counted (pandas skips them when finding the header)."""
    filled, step = not skip_blank, _FIRST_READ
    while pos < size:
        chunk, step = read_at(f, pos, min(step, size - pos)), min(2 * step, _CHUNK)
        if not chunk:
            break
        for i, c in enumerate(chunk):
            state, ended = _advance(state, c, d)
            if ended:
                if filled:
                    count -= 1
                    if count == 0:
                        return pos + i + 1
                filled = not skip_blank
            elif c != 13:  # a record holding only "\r" is blank
                filled = True
        pos += len(chunk)
    return size


def header_end(f, size: int, d: Dialect) -> int:
    """Offset where data records start (after skipped rows and header records)."""
    if not d.header_records:
        return 0
    return _record_end(f, 0, size, _START, d, d.header_records, skip_blank=True)


def next_boundary(f, target: int, size: int, d: Dialect) -> int:
    """The first record start at or after ``target`` (or ``size``), reading near ``target`` only."""
    pos, step = target - 1, _FIRST_READ
    while True:  # the line break ending the line that holds byte target-1
        chunk, step = read_at(f, pos, step), min(2 * step, _CHUNK)
        if not chunk:
            return size
        found = chunk.find(bytes([d.newline]))
        if found >= 0:
            candidate = pos + found + 1
            break
        pos += len(chunk)
    if d.quote is None or candidate >= size:
        return candidate
    return _resolve_quotes(f, candidate, size, d)


def _resolve_quotes(f, candidate: int, size: int, d: Dialect) -> int:
    """Decide whether the line break before ``candidate`` lay inside a quoted field."""
    window = read_at(f, candidate, d.window)
    first = window.find(bytes([d.quote])) if d.escape is None else 0
    if first < 0:
        if candidate + len(window) < size:
            log.debug("no quote within %d bytes after offset %d: taking it as outside quotes",
                      d.window, candidate)
        return candidate
    outside = _START if first == 0 or window[first - 1] in (d.delimiter, d.newline) else _FIELD
    inside, inside_end, odd = _QUOTED, -1, [False, False]  # odd: broke RFC 4180 quoting
    for i in range(first, len(window)):
        c = window[i]
        odd = [odd[0] or _irregular(outside, c, d), odd[1] or _irregular(inside, c, d)]
        outside, _ = _advance(outside, c, d)
        inside, ended = _advance(inside, c, d)
        if ended and inside_end < 0:
            inside_end = candidate + i + 1
        if outside == inside:  # both readings agree from here on: any later record end is real
            after = candidate + i + 1
            return after if ended else _record_end(f, after, size, inside, d)
    quoted = (_QUOTED, _ESC_QUOTED)
    if candidate + len(window) >= size:  # ending inside quotes is an error for pandas
        odd = [odd[0] or outside in quoted, odd[1] or inside in quoted]
    if odd[0] and not odd[1]:
        return inside_end if inside_end >= 0 else size
    return candidate


def _irregular(state: int, c: int, d: Dialect) -> bool:
    """A quote inside an unquoted field, or text right after a closing quote."""
    if state == _FIELD:
        return c == d.quote
    return state == _QUOTE_END and c not in (d.quote, d.delimiter, d.newline, 13)


class RangeReader(io.RawIOBase):
    """``prefix`` (a slice's header records), then bytes [start, stop) of the open binary file
    ``f`` (to its end when ``stop`` is None), as one read-only stream.  The parser pulls it in
    its own buffer-sized reads, so a slice is never copied whole into memory."""

    def __init__(self, prefix: bytes, f, start: int, stop: int | None):
        super().__init__()
        self._prefix, self._f = prefix, f
        self._left = None if stop is None else max(0, stop - start)
        f.seek(start)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        out, self._prefix = self._prefix[:size], self._prefix[size:]
        size = size - len(out) if self._left is None else min(size - len(out), self._left)
        if size:
            rest = self._f.read(size)
            out = out + rest if out else rest
            if self._left is not None:
                self._left -= len(rest)
        return out

    def readall(self) -> bytes:
        rest = self._f.read(-1 if self._left is None else self._left)
        out, self._prefix, self._left = self._prefix + rest, b"", 0
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def blank(self) -> bool:
        """Whether the rest of the stream is only whitespace; what was read is read again."""
        seen: list[bytes] = []
        while chunk := self.read(_CHUNK):
            seen.append(chunk)
            if chunk.strip():
                break
        self._prefix = b"".join(seen) + self._prefix
        return not seen or not seen[-1].strip()
