"""Tabular mini-batches (CSV/JSONL byte ranges, Parquet row groups, HDF5 row ranges) and readers.

Rank 0 calls ``iter_slices``/``iter_partitions`` and sends only ``TabularSlice`` descriptors;
workers call ``read_slice``.  A slice never crosses a file boundary and small files are not
merged (ParallelRunStep semantics: ten 1 KB files are ten mini-batches).  Zero-byte files
yield no slice; a header-only CSV yields one slice of zero rows.  ``mini_batch_size`` counts
bytes on disk: CSV/JSONL byte ranges, compressed column chunks of Parquet row groups,
``itemsize * row width`` for HDF5.

CSV/JSONL split points are record starts found by reading ``csv_scan_bytes`` (64 KiB) after
each point, never the whole file; every slice re-reads the header record(s) from the file
start.  Quoted line breaks: the scanner tokenizes forward under both hypotheses (inside or
outside quotes) until they agree, which happens at the first quoted field, or until one breaks
RFC 4180 quoting or ends inside quotes at end of file.  Limits: a window with no quote
character is taken as outside quotes, so a quoted field longer than ``csv_scan_bytes`` that
straddles a split point is cut, and the slice ending inside it fails ("EOF inside string",
naming its byte range) rather than losing rows silently; one-character separators and line
terminators (``\n``/``\r\n`` by default) only; ``skiprows`` must be an int and ``nrows`` or
``skipfooter`` are refused when a file needs splitting; compressed files (.gz, .bz2, .xz,
.zst, .zip) are never split and UTF-16/32 files are refused when they need it.
``csvsplit`` holds the scanner.

Parquet: consecutive row groups are packed up to ``mini_batch_size``; a larger row group is cut
into row ranges, read batch by batch; pyarrow cannot seek to a row, so each process keeps its
last row group's reader open and resumes it for a later range of the same group.  HDF5 (h5py): row ranges
of ``hdf5_dataset`` (the only dataset when unset); compound fields become columns, 2-D arrays
integer-named columns, 1-D arrays one column named after the dataset, byte strings are decoded
as UTF-8.  Parquet/HDF5 files whose metadata cannot be read yield one whole-file slice
(``stop = -1``), so only that mini-batch fails, with the reader's error.
"""
from __future__ import annotations

import io
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and pandas are imported where used: ranks that only slice need neither
    import numpy as np
    import pandas as pd

from prs_mpi import csvsplit
from prs_mpi.dataset import iter_input_files
from prs_mpi.config import parse_size  # noqa: F401 - "1MB" = 1024**2 bytes, as ParallelRunStep
from prs_mpi.storage import (basename, file_size, is_url, local_path, open_binary,
                             redact, redact_text)

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "parquet", "hdf5")
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".h5": "hdf5",
             ".hdf5": "hdf5"}
_ALIASES = {"json": "jsonl", "ndjson": "jsonl", "tsv": "csv", "pq": "parquet", "h5": "hdf5"}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}
_COMPRESSED = tuple(_COMPRESSION)
# [input] keys that belong to prs-mpi, not to the pandas readers.
OWN_KEYS = frozenset({"kind", "paths", "format", "hdf5_dataset", "partition_keys",
                      "partition_format", "csv_scan_bytes", "columns", "input_mode"})
_SCAN_ROWS = 1 << 16


class SliceReadError(Exception):
    """A slice could not be read; the message names the file (credentials removed) and range."""


@dataclass(frozen=True)
class TabularSlice:
    """One tabular mini-batch: a range of one file, optionally restricted to a key value.

    unit "bytes": CSV/JSONL byte range [start, stop) starting at a record boundary;
    unit "row_group": Parquet row groups [start, stop); unit "rows": HDF5 rows [start, stop)
    of the dataset, or rows [start, stop) inside Parquet row group ``row_group``.
    ``stop = -1`` means "to the end".  ``filter`` keeps only rows whose columns equal the
    given values (``None`` matches missing values).  ``nrows`` is the row count or -1.
    """

    path: str
    format: str
    start: int
    stop: int
    unit: str
    row_group: int | None = None
    nrows: int = -1
    filter: tuple[tuple[str, object], ...] | None = None

    def describe(self) -> str:
        """Human-readable location, e.g. ``data.csv bytes 0-1048576``, credentials removed."""
        unit = "row groups" if self.unit == "row_group" else self.unit
        where = f"{unit} {self.start}-{'end' if self.stop < 0 else self.stop}"
        if self.row_group is not None:
            where += f" of row group {self.row_group}"
        if self.filter:
            where += " where " + ", ".join(f"{k}={v!r}" for k, v in self.filter)
        return f"{redact(self.path)} {where}"


def detect_format(path: str, explicit: str | None = None) -> str:
    """csv, jsonl, parquet or hdf5, from ``explicit`` (``[input].format``) or the suffix."""
    if explicit:
        fmt = _ALIASES.get(explicit.lower(), explicit.lower())
        if fmt not in FORMATS:
            raise ValueError(f"[input].format {explicit!r} is not one of {', '.join(FORMATS)}")
        return fmt
    name = basename(path).lower()
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    dot = name.rfind(".")
    fmt = _SUFFIXES.get(name[dot:]) if dot >= 0 else None
    if fmt is None:
        raise ValueError(f"cannot tell the table format of {redact(path)!r} from its name; set "
                         f"[input].format to one of {', '.join(FORMATS)}")
    return fmt


def reader_options(options: Mapping) -> dict:
    """The options meant for the pandas reader: everything but prs-mpi's own keys."""
    opts = {k: v for k, v in options.items() if k not in OWN_KEYS}
    if opts.get("header") is False:  # TOML has no null: header = false means "no header"
        opts["header"] = None
    return opts


def _text_options(path: str, fmt: str, options: Mapping, keys: Iterable[str] = ()) -> dict:
    """pandas keywords for one CSV/JSONL file: .tsv means tab-separated, compression by suffix,
    partition ``keys`` read as text (CSV) so that the key scan and the reads compare equal."""
    opts, name = reader_options(options), basename(path).lower()
    suffix = next((c for c in _COMPRESSED if name.endswith(c)), "")
    if suffix:
        opts.setdefault("compression", _COMPRESSION[suffix])
    if fmt == "jsonl":
        opts["lines"] = True
    elif name.removesuffix(suffix).endswith(".tsv") and not {"sep", "delimiter"} & set(opts):
        opts["sep"] = "\t"
    dtype, keys = opts.get("dtype"), list(keys)
    if keys and fmt == "csv" and (dtype is None or isinstance(dtype, Mapping)):
        opts["dtype"] = {**{key: str for key in keys}, **(dtype or {})}
    return opts


def iter_tabular_batches(cfg, seen=None) -> Iterator[tuple[int, object, dict | None, str | None]]:
    """(nitems, slice or tuple of slices, partition key values, subset description) per
    mini-batch of a tabular job, lazily (files are listed as slicing proceeds; ``seen``: see
    dataset.iter_input_files)."""
    options = dict(cfg.input.options)
    if cfg.input.hdf5_dataset:
        options["hdf5_dataset"] = cfg.input.hdf5_dataset
    files = iter_input_files(cfg, seen)
    if cfg.partition_keys:
        for values, slices in iter_partitions(files, cfg.input.format, list(cfg.partition_keys),
                                              options):
            nitems = -1 if any(s.nrows < 0 for s in slices) else sum(s.nrows for s in slices)
            shown = "; ".join(s.describe() for s in slices[:3])
            yield nitems, tuple(slices), values, shown + ("; ..." if len(slices) > 3 else "")
        return
    for path in files:
        for s in iter_slices(path, detect_format(path, cfg.input.format), cfg.mini_batch_size,
                             options):
            yield s.nrows, s, None, None


def iter_slices(path: str, fmt: str, max_bytes: int, options: Mapping) -> Iterator[TabularSlice]:
    """The slices of one file, in file order, each about ``max_bytes`` (see module doc)."""
    if fmt in ("csv", "jsonl"):
        return _text_slices(path, fmt, max_bytes, options)
    if fmt == "parquet":
        return _parquet_slices(path, max_bytes)
    if fmt == "hdf5":
        return _hdf5_slices(path, max_bytes, options)
    raise ValueError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")


def _text_slices(path: str, fmt: str, max_bytes: int, options: Mapping) -> Iterator[TabularSlice]:
    size = file_size(path)
    if size == 0:
        log.debug("skipping empty file %s", redact(path))
        return
    if size <= max_bytes or basename(path).lower().endswith(_COMPRESSED):
        yield TabularSlice(path, fmt, 0, size, "bytes")
        return
    dialect = _dialect(path, fmt, options)
    with open_binary(path) as f:
        start, lower = 0, csvsplit.header_end(f, size, dialect) + 1
        while True:
            target = max(start + max_bytes, lower)
            cut = size if target >= size else csvsplit.next_boundary(f, target, size, dialect)
            if cut >= size:
                break
            yield TabularSlice(path, fmt, start, cut, "bytes")
            start = cut
        yield TabularSlice(path, fmt, start, size, "bytes")


def _dialect(path: str, fmt: str, options: Mapping) -> csvsplit.Dialect:
    """How to find record boundaries in one CSV/JSONL file read with ``options``."""
    return csvsplit.Dialect.from_options(path, fmt, _text_options(path, fmt, options),
                                         options.get("csv_scan_bytes", csvsplit.SCAN_BYTES))


def _parquet_slices(path: str, max_bytes: int) -> Iterator[TabularSlice]:
    try:
        with _parquet_file(path) as pf:
            groups = [(pf.metadata.row_group(i).num_rows, _row_group_bytes(pf.metadata.row_group(i)))
                      for i in range(pf.metadata.num_row_groups)]
    except Exception as exc:  # noqa: BLE001 - the worker reports it for this file only
        log.warning("cannot read Parquet metadata of %s (%s); it becomes one mini-batch",
                    redact(path), exc)
        yield TabularSlice(path, "parquet", 0, -1, "row_group")
        return
    first, rows, nbytes = 0, 0, 0
    for index, (group_rows, group_bytes) in enumerate(groups):
        if index > first and (nbytes + group_bytes > max_bytes or group_bytes > max_bytes):
            yield TabularSlice(path, "parquet", first, index, "row_group", nrows=rows)
            first, rows, nbytes = index, 0, 0
        if group_bytes > max_bytes and group_rows > 1:
            step = math.ceil(group_rows / math.ceil(group_bytes / max_bytes))
            for lo in range(0, group_rows, step):
                hi = min(lo + step, group_rows)
                yield TabularSlice(path, "parquet", lo, hi, "rows", row_group=index, nrows=hi - lo)
            first = index + 1
            continue
        rows, nbytes = rows + group_rows, nbytes + group_bytes
    if first < len(groups):
        yield TabularSlice(path, "parquet", first, len(groups), "row_group", nrows=rows)


def _row_group_bytes(meta) -> int:
    return sum(meta.column(j).total_compressed_size for j in range(meta.num_columns))


def _hdf5_slices(path: str, max_bytes: int, options: Mapping) -> Iterator[TabularSlice]:
    try:
        with _hdf5_dataset(path, options) as ds:
            rows, width = ds.shape[0], ds.dtype.itemsize * math.prod(ds.shape[1:])
    except Exception as exc:  # noqa: BLE001 - the worker reports it for this file only
        log.warning("cannot read HDF5 dataset of %s (%s); it becomes one mini-batch",
                    redact(path), exc)
        yield TabularSlice(path, "hdf5", 0, -1, "rows")
        return
    step = max(1, max_bytes // max(1, width))
    for lo in range(0, rows, step):
        hi = min(lo + step, rows)
        yield TabularSlice(path, "hdf5", lo, hi, "rows", nrows=hi - lo)


def read_slice(s: TabularSlice | Sequence[TabularSlice], options: Mapping) -> pd.DataFrame:
    """The rows of ``s`` (or of several slices, concatenated) as a DataFrame; any failure raises
    SliceReadError naming the file and range."""
    if not isinstance(s, TabularSlice):
        return _concat(read_slice(one, options) for one in s)
    try:
        if s.format in ("csv", "jsonl"):
            return _read_text(s, options)
        if s.format == "parquet":
            return _read_parquet(s, options)
        if s.format == "hdf5":
            return _read_hdf5(s, options)
        raise ValueError(f"unknown table format {s.format!r}")
    except Exception as exc:  # noqa: BLE001 - reported with the slice's location
        message = redact_text(str(exc), s.path)
        raise SliceReadError(f"cannot read {s.describe()}: {type(exc).__name__}: {message}") from None


def _read_text(s: TabularSlice, options: Mapping) -> pd.DataFrame:
    import pandas as pd

    opts = _text_options(s.path, s.format, options, (key for key, _ in s.filter or ()))
    read = pd.read_json if s.format == "jsonl" else pd.read_csv
    with open_binary(s.path) as f:
        if "compression" in opts:  # never split: parse the whole stream
            return _parse(read, f, opts, s.filter)
        source = _range_stream(f, s, options)
        if source.blank():
            return pd.DataFrame()
        return _parse(read, source, opts, s.filter)


def _range_stream(f, s: TabularSlice, options: Mapping) -> csvsplit.RangeReader:
    """The bytes of ``s``, after the file's header records when ``s`` starts past them: streamed
    from a local file, fetched in one request from a URL (whose reads are not buffered)."""
    head = b""
    if s.start > 0 and s.format == "csv":
        d = _dialect(s.path, s.format, options)
        head = csvsplit.read_at(f, 0, csvsplit.header_end(f, s.start, d))
    stop = s.stop if s.stop >= 0 else None
    if is_url(s.path):
        body = csvsplit.read_at(f, s.start, -1 if stop is None else stop - s.start)
        return csvsplit.RangeReader(head, io.BytesIO(body), 0, None)
    return csvsplit.RangeReader(head, f, s.start, stop)


def _parse(read, source, opts: dict, condition) -> pd.DataFrame:
    if not condition:
        return read(source, **opts)
    with read(source, chunksize=_SCAN_ROWS, **opts) as chunks:
        return _concat(chunk[_mask(chunk, condition)] for chunk in chunks)


def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    frames = list(frames)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _mask(frame: pd.DataFrame, condition: tuple[tuple[str, object], ...]):
    import pandas as pd

    keep = pd.Series(True, index=frame.index)
    for key, value in condition:
        keep &= frame[key].isna() if value is None else frame[key] == value
    return keep


@contextmanager
def _parquet_file(path: str):
    import pyarrow.parquet as pq

    if not is_url(path):
        with pq.ParquetFile(local_path(path)) as pf:
            yield pf
        return
    with open_binary(path) as f, pq.ParquetFile(f) as pf:
        yield pf


def _read_parquet(s: TabularSlice, options: Mapping) -> pd.DataFrame:
    columns = options.get("columns")
    if s.unit == "rows" and not s.filter:
        return _RowCursor.read(s, columns).to_pandas()
    with _parquet_file(s.path) as pf:
        if s.filter:  # filtered in pandas, exactly as the key scan saw the values
            return _concat(frame[_mask(frame, s.filter)] for frame in (
                batch.to_pandas() for batch in pf.iter_batches(_SCAN_ROWS, columns=columns)))
        stop = pf.metadata.num_row_groups if s.stop < 0 else s.stop
        return pf.read_row_groups(range(s.start, stop), columns=columns).to_pandas()


class _RowCursor:
    """One Parquet row group's batch iterator, kept open in this process between reads: a row
    range at or after the previous one resumes there instead of decoding the row group from
    its start again (pyarrow cannot seek to a row), so a worker decodes each large row group
    about once however many mini-batches it is cut into.  The file stays open for the next
    row group of the same file (its footer is parsed once)."""

    _lock = threading.Lock()
    _current: _RowCursor | None = None

    def __init__(self, key: tuple, s: TabularSlice, previous: _RowCursor | None = None):
        self.key, self.pos, self.pending = key, 0, None
        if previous is not None and previous.key[0] == key[0]:
            self.files, self.pf = previous.files, previous.pf
        else:
            if previous is not None:
                previous.files.close()
            self.files = ExitStack()
            self.pf = self.files.enter_context(_parquet_file(s.path))
        size = max(1024, min(s.stop - s.start, _SCAN_ROWS))
        self.batches = self.pf.iter_batches(size, row_groups=[s.row_group],
                                            columns=list(key[2]) if key[2] else None)

    @classmethod
    def read(cls, s: TabularSlice, columns):
        key = (s.path, s.row_group, tuple(columns) if columns else None)
        with cls._lock:
            cursor = cls._current
            if cursor is None or cursor.key != key or cursor.pos > s.start:
                cls._current = None
                cursor = cls._current = cls(key, s, cursor)
            try:
                return cursor.take(s.start, s.stop)
            except BaseException:
                cls._current = None
                cursor.files.close()
                raise

    def take(self, start: int, stop: int):
        import pyarrow as pa

        parts = []
        while self.pos < stop:
            batch = self.pending if self.pending is not None else next(self.batches, None)
            self.pending = None
            if batch is None:
                break
            lo, hi = max(start - self.pos, 0), min(stop - self.pos, batch.num_rows)
            if hi > lo:
                parts.append(batch.slice(lo, hi - lo))
            if hi < batch.num_rows:  # keep the rest for the next range
                self.pending, self.pos = batch.slice(hi), self.pos + hi
                break
            self.pos += batch.num_rows
        return pa.Table.from_batches(parts) if parts else _empty(self.pf, self.key[2])


def _empty(pf, columns):
    table = pf.schema_arrow.empty_table()
    return table.select(columns) if columns else table


@contextmanager
def _hdf5_dataset(path: str, options: Mapping):
    import h5py

    with open_binary(path, exact=False) as raw, \
            h5py.File(raw, "r") as h5:
        name = options.get("hdf5_dataset")
        if not name:
            found: list[str] = []
            h5.visititems(lambda key, obj: found.append(key) if isinstance(obj, h5py.Dataset)
                          else None)
            if len(found) != 1:
                raise ValueError(f"{redact(path)} holds datasets {found[:10]}; set "
                                 "[input].hdf5_dataset to the one to read")
            name = found[0]
        if name not in h5 or not isinstance(h5[name], h5py.Dataset) or not h5[name].shape:
            raise ValueError(f"{redact(path)} has no table dataset {name!r}; fix "
                             "[input].hdf5_dataset")
        yield h5[name]


def _read_hdf5(s: TabularSlice, options: Mapping) -> pd.DataFrame:
    columns = options.get("columns")
    with _hdf5_dataset(s.path, options) as ds:
        stop = ds.shape[0] if s.stop < 0 else s.stop
        if not s.filter:
            return _hdf5_frame(ds, s.start, stop, columns)
        parts = (_hdf5_frame(ds, lo, min(lo + _SCAN_ROWS, stop), columns)
                 for lo in range(s.start, stop, _SCAN_ROWS))
        return _concat(part[_mask(part, s.filter)] for part in parts)


def _hdf5_frame(ds, start: int, stop: int, columns=None) -> pd.DataFrame:
    import pandas as pd

    names = ds.dtype.names
    if names and columns:
        names = [n for n in names if n in columns]
    rows = ds.fields(list(names))[start:stop] if names and columns else ds[start:stop]
    if names:
        return pd.DataFrame({n: _column(rows[n]) for n in names})
    rows = _decode(rows)
    if rows.ndim == 2:
        return pd.DataFrame(rows)
    label = ds.name.rsplit("/", 1)[-1] or "value"
    return pd.DataFrame({label: _column(rows) if rows.ndim == 1 else list(rows)})


def _decode(values: np.ndarray) -> np.ndarray:
    """UTF-8 text for HDF5 byte strings (fixed length 'S', or variable length objects)."""
    import numpy as np

    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8")
    if values.dtype.kind == "O" and values.size and isinstance(values.flat[0], bytes):
        return np.vectorize(lambda v: v.decode("utf-8"), otypes=[object])(values)
    return values


def _column(values: np.ndarray):
    values = _decode(values)
    return list(values) if values.ndim > 1 else values


def iter_partitions(paths: Iterable[str], fmt: str | None, keys: list[str],
                    options: Mapping) -> Iterator[tuple[dict, list[TabularSlice]]]:
    """One (key values, slices) pair per distinct combination of ``keys``, sorted by value.

    Files in hive layout (``.../STATE=CA/YEAR=2020/...``) take their keys from the path
    without being read (values are strings, ``filter`` is None).  Otherwise rank 0 scans
    only the key columns, chunk by chunk (memory: the distinct values and their counts),
    and each slice is a whole file with ``filter`` set; the worker then reads that file,
    keeping matching rows (a file is read once per key value it holds).  CSV key columns
    are read as strings in both places, so their values compare exactly.
    """
    keys = list(keys)
    if not keys:
        raise ValueError("partition_keys is empty; name at least one column")
    files: list[tuple[str, str, bool]] = []
    index: dict[tuple, list[tuple[int, int]]] = {}
    for path in paths:
        file_fmt = detect_format(path, fmt)
        hive = _hive_values(path, keys)
        counts = Counter({hive: -1}) if hive is not None else _count_keys(path, file_fmt, keys,
                                                                           options)
        files.append((path, file_fmt, hive is not None))
        for value, count in counts.items():
            index.setdefault(value, []).append((len(files) - 1, count))
    for value in sorted(index, key=_sort_key):
        slices = [_whole_file(*files[i], condition=tuple(zip(keys, value)), nrows=count)
                  for i, count in index[value]]
        yield dict(zip(keys, value)), slices


def _whole_file(path: str, fmt: str, hive: bool, condition, nrows: int) -> TabularSlice:
    unit = {"csv": "bytes", "jsonl": "bytes", "parquet": "row_group", "hdf5": "rows"}[fmt]
    return TabularSlice(path, fmt, 0, -1, unit, nrows=nrows, filter=None if hive else condition)


def _hive_values(path: str, keys: list[str]) -> tuple | None:
    from urllib.parse import unquote

    segments = dict(part.split("=", 1) for part in path.replace("\\", "/").split("/")
                    if "=" in part and "?" not in part)
    if all(key in segments for key in keys):
        return tuple(unquote(segments[key]) for key in keys)
    return None


def _count_keys(path: str, fmt: str, keys: list[str], options: Mapping) -> Counter:
    counts: Counter = Counter()
    try:
        for frame in _key_frames(path, fmt, keys, options):
            missing = [k for k in keys if k not in frame.columns]
            if missing:
                raise KeyError(f"partition key column(s) {missing} not in {list(frame.columns)}")
            grouped = frame[keys].groupby(keys, dropna=False, sort=False).size()
            for value, count in grouped.items():
                value = value if isinstance(value, tuple) else (value,)
                counts[tuple(_plain(v) for v in value)] += int(count)
    except Exception as exc:
        raise ValueError(f"cannot scan partition keys {keys} in {redact(path)}: "
                         f"{type(exc).__name__}: {exc}") from None
    return counts


def _key_frames(path: str, fmt: str, keys: list[str], options: Mapping) -> Iterator[pd.DataFrame]:
    import pandas as pd

    if fmt == "parquet":
        with _parquet_file(path) as pf:
            for batch in pf.iter_batches(batch_size=_SCAN_ROWS, columns=keys):
                yield batch.to_pandas()
    elif fmt == "hdf5":
        with _hdf5_dataset(path, options) as ds:
            for lo in range(0, ds.shape[0], _SCAN_ROWS):
                yield _hdf5_frame(ds, lo, min(lo + _SCAN_ROWS, ds.shape[0]), keys)
    else:
        opts = _text_options(path, fmt, options, keys)
        if fmt == "csv":
            opts["usecols"] = keys
        read = pd.read_csv if fmt == "csv" else pd.read_json
        with open_binary(path) as f, read(f, chunksize=_SCAN_ROWS, **opts) as chunks:
            yield from chunks


def _plain(value):
    """Python scalar for a key value; missing values become None."""
    import numpy as np
    import pandas as pd

    if value is None or (np.ndim(value) == 0 and not isinstance(value, (str, bytes))
                         and pd.isna(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _sort_key(value: tuple) -> tuple:
    return tuple((v is None, type(v).__name__, "" if v is None else v) for v in value)
