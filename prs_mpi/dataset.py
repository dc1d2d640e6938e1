"""Input listing and partitioning into mini-batch descriptors (lazy; no MPI, no data rows read)."""
from __future__ import annotations

from .compact import Compact

import fnmatch
import itertools
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from .config import JobConfig
from .errors import InputError

try:                # hashlib's own source of blake2b: without OpenSSL's 3 MB in every worker rank
    from _blake2 import blake2b
except ImportError:   # pragma: no cover - a Python built without it
    from hashlib import blake2b


@dataclass(slots=True)
class MiniBatchSpec(Compact):
    """What rank 0 sends: small metadata, never data rows. Treated as immutable, not frozen: it
    is built on rank 0 and unpickled on the worker and in the child, and a frozen dataclass's
    __init__ costs ~1 µs more each time (protocol.py's messages are built the same way)."""

    id: int
    items: tuple[str, ...] = ()
    nitems: int = 0
    slice: Any = None                      # tabular.TabularSlice for tabular input
    partition: Mapping[str, Any] | None = None
    dataset: str | None = None             # a description of the subset (partitioned input)

    def digest(self) -> str:
        """A short content hash; the journal uses it to detect a changed input on resume."""
        # the same bytes as one update per item (item + NUL), fed in one call
        h = blake2b(b"".join([item.encode("utf-8", "surrogateescape") + b"\0" for item in self.items]),
                    digest_size=8)
        if self.slice is not None:
            h.update(repr(self.slice).encode())
        return h.hexdigest()


def iter_mini_batches(cfg: JobConfig, fingerprint: InputFingerprint | None = None) -> Iterator[MiniBatchSpec]:
    """Mini-batches in a deterministic order, produced lazily as the input is listed (and
    `fingerprint` fed with every listed file)."""
    seen = fingerprint.add if fingerprint is not None else None
    if cfg.input.kind == "tabular":
        from .tabular import iter_tabular_batches
        specs: Iterable[tuple] = iter_tabular_batches(cfg, seen)
        for i, (nitems, sl, part, desc) in enumerate(specs):
            yield MiniBatchSpec(id=i, nitems=nitems, slice=sl, partition=part, dataset=desc)
        return
    files = iter_input_files(cfg, seen)
    if cfg.input.partition_format:
        yield from _partitioned_file_batches(files, cfg.input.partition_format, cfg.input.paths)
        return
    ids = itertools.count()
    while True:
        chunk = tuple(itertools.islice(files, cfg.mini_batch_size))
        if not chunk:
            return
        yield MiniBatchSpec(id=next(ids), items=chunk, nitems=len(chunk))


# ---------------------------------------------------------------- listing

def iter_input_files(cfg: JobConfig, seen: Any = None) -> Iterator[str]:
    """Expand [input].paths (globs, directories, URLs, @listing files) lazily, in a stable order;
    relative lines of a listing file are relative to the job file, like every path in it.
    `seen(path, stat or None)`: see storage.iter_files."""
    from . import storage
    return storage.iter_files(list(cfg.input.paths), os.path.dirname(os.path.abspath(cfg.job_file)), seen)


class InputFingerprint:
    """What allow_reuse compares: every listed path with its size and mtime (local files), fed
    by the listing itself (a run records it without listing and stat-ing its input again)."""

    def __init__(self) -> None:
        import hashlib
        from .storage import is_url
        self._hash = hashlib.sha256()
        self._is_url = is_url
        self.files = 0

    def add(self, path: str, st: os.stat_result | None = None) -> None:
        self.files += 1
        if st is None and not self._is_url(path):
            try:
                st = os.stat(path)
            except OSError:
                pass
        self._hash.update((f"{path}\n" if st is None else f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n").encode())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:32]


def input_fingerprint(cfg: JobConfig) -> str:
    """The input's fingerprint now (lists it in full)."""
    fingerprint = InputFingerprint()
    for _ in iter_input_files(cfg, fingerprint.add):
        pass
    return fingerprint.hexdigest()


# ---------------------------------------------------------------- partition_format

_KEY_RE = re.compile(r"\{(\w+)\}")


def compile_partition_format(fmt: str) -> tuple[re.Pattern[str], list[str]]:
    """'{user}/{genre}/*.wav' → a regex over the path's tail and the key names."""
    keys = _KEY_RE.findall(fmt)
    if not keys:
        raise InputError(f"input.partition_format {fmt!r} names no {{key}}; e.g. '{{user}}/{{genre}}/*.wav'")
    regex = ""
    for part in re.split(r"(\{\w+\})", fmt):
        m = _KEY_RE.fullmatch(part)
        if m:
            regex += f"(?P<{m.group(1)}>[^/]+)"
        elif part:
            regex += fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*")
    return re.compile(f"(?:^|/){regex}$"), keys


def _partitioned_file_batches(files: Iterator[str], fmt: str, roots: tuple[str, ...]) -> Iterator[MiniBatchSpec]:
    """One mini-batch per distinct key value. Files are grouped in listing order."""
    pattern, keys = compile_partition_format(fmt)
    groups: dict[tuple, list[str]] = {}
    unmatched = 0
    for path in files:
        m = pattern.search(path.replace(os.sep, "/"))
        if not m:
            unmatched += 1
            continue
        groups.setdefault(tuple(m.group(k) for k in keys), []).append(path)
    if not groups:
        raise InputError(f"input.partition_format {fmt!r} matched none of the {unmatched} listed files; "
                         "the format must describe the end of each path, e.g. '{user}/{genre}/*.wav'")
    for i, (values, items) in enumerate(groups.items()):
        part = dict(zip(keys, values))
        desc = ", ".join(f"{k}={v}" for k, v in part.items())
        yield MiniBatchSpec(id=i, items=tuple(items), nitems=len(items), partition=part, dataset=desc)
