"""The run journal: an append-only JSON-lines record of commits and final failures (rank 0 only).

A mini-batch is done once a `commit` record naming it is in the journal; the record is written
only after the worker reported its bytes written at [offset, offset + length). Records are single
`write()`s to an O_APPEND file; a torn last line (kill -9 mid-write) is ignored on reading. Commit
records of one rank-0 loop pass are written together by `flush()` at the end of the pass (every
other record writes them first): one system call per pass, not per mini-batch. Until then the
mini-batches are not done: a job that dies in between runs them again on resume, as it would
had it died a moment before their Commit arrived.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

JOURNAL_NAME = "journal.jsonl"


class Journal:
    def __init__(self, state_dir: str, fsync: bool = False) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.path = os.path.join(state_dir, JOURNAL_NAME)
        self.fsync = fsync
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.pending: list[bytes] = []       # commit lines of this loop pass, not yet written
        if _torn_tail(self.path):            # an earlier run died mid-write: end its torn line, so
            os.write(self.fd, b"\n")          # that it does not swallow this run's first record

    def _write(self, record: dict[str, Any]) -> None:
        self.pending.append((json.dumps(record, separators=(",", ":"), default=str) + "\n").encode())
        self.flush()

    def flush(self) -> None:
        """Write the held records in one write() (then fsync if asked)."""
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending = []
        while data:                       # a regular file takes it whole; a short write is retried
            data = data[os.write(self.fd, data):]
        if self.fsync:
            os.fsync(self.fd)

    def begin(self, run_id: str, fingerprint: str, mode: str, **extra: Any) -> None:
        self._write({"t": "begin", "run": run_id, "fingerprint": fingerprint, "mode": mode, **extra})

    def commit(self, offset: int, length: int, header: int, batches: list[tuple]) -> None:
        """batches: (id, attempt, succeeded, failed, digest) each: ints and a hex digest.

        The line is the one `json.dumps` would write, formatted directly (one per mini-batch at
        rank 0: json.dumps was a third of its book-keeping); `commit_line` says why that is exact.
        Held until `flush()`, which the dispatcher calls at the end of each loop pass.
        """
        self.pending.append(commit_line(offset, length, header, batches))

    def failed(self, batch_id: int, attempt: int, nitems: int, digest: str, error: str) -> None:
        self._write({"t": "failed", "id": batch_id, "attempt": attempt, "n": nitems, "d": digest,
                     "error": error[-2000:]})

    def listing(self, batches_total: int, items_total: int) -> None:
        self._write({"t": "listing", "batches": batches_total, "items": items_total})

    def end(self, state: str, reason: str = "") -> None:
        self._write({"t": "end", "state": state, "reason": reason})

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1


def _torn_tail(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def commit_line(offset: int, length: int, header: int, batches: list[tuple]) -> bytes:
    """A commit record, byte for byte as `json.dumps(record, separators=(",", ":"))` writes it.
    Formatted directly for what the dispatcher passes (ints print the same either way; a hex
    digest needs no escaping); anything else (a bool, a digest that is not plain ASCII letters
    and digits) goes through json.dumps."""
    rows = []
    for b, a, ok, f, d in batches:
        if not (type(b) is type(a) is type(ok) is type(f) is int and type(d) is str and d.isalnum() and d.isascii()):
            rows = None
            break
        rows.append(f'[{b},{a},{ok},{f},"{d}"]')
    if rows is None or not (type(offset) is type(length) is type(header) is int):
        record = {"t": "commit", "off": offset, "len": length, "hdr": header, "b": batches}
        return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
    return f'{{"t":"commit","off":{offset},"len":{length},"hdr":{header},"b":[{",".join(rows)}]}}\n'.encode()


class StartLog:
    """Per-rank record of attempts: `S id attempt` written by the child just before run(), `E id
    attempt` by the supervisor once it saw the attempt end (result, crash or timeout), and `R` by
    the supervisor when a run (a launch of the job) begins on this rank.

    The child runs its mini-batches one after the other, so when the whole job dies, only the last
    `S` of a run on a rank can have been running; if no `E` follows it, the job died under it. Rank
    0 may never have heard of it, but this file survives: a resume charges that attempt, so a
    poison pill cannot loop forever.
    """

    def __init__(self, state_dir: str, rank: int) -> None:
        path = self.path(state_dir, rank)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @staticmethod
    def path(state_dir: str, rank: int) -> str:
        return os.path.join(state_dir, "started", f"rank{rank}.log")

    def run_begins(self) -> None:
        os.write(self.fd, b"R\n")

    def started(self, batch_id: int, attempt: int) -> None:
        os.write(self.fd, f"S {batch_id} {attempt}\n".encode())

    def ended(self, pairs: list[tuple[int, int]]) -> None:
        """The supervisor saw these (id, attempt) end: they did not take the job down. One write."""
        os.write(self.fd, "".join([f"E {batch_id} {attempt}\n" for batch_id, attempt in pairs]).encode())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def died_under(lines: list[bytes]) -> list[tuple[int, int]]:
    """(id, attempt) of the mini-batches a job died under, from one rank's start log (StartLog)."""
    out: list[tuple[int, int]] = []
    last: tuple[int, int] | None = None
    ended: set[tuple[int, int]] = set()

    def close_run() -> None:
        if last is not None and last not in ended:
            out.append(last)

    for line in lines:
        if line.strip() == b"R":
            close_run()
            last, ended = None, set()
            continue
        entry = _start_log_entry(line)
        if entry is None:
            continue
        kind, key = entry
        if kind == b"S":
            last = key
            ended.discard(key)          # begun again (its result was lost with a crashed child)
        else:
            ended.add(key)
    close_run()
    return out


def _start_log_entry(line: bytes) -> tuple[bytes, tuple[int, int]] | None:
    """(b"S" or b"E", (id, attempt)) of a start-log line, None for anything else."""
    parts = line.split()
    if len(parts) == 3 and parts[0] in (b"S", b"E") and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], (int(parts[1]), int(parts[2]))
    return None


def last_started(path: str, since: int, tail: int = 1 << 16) -> int | None:
    """The id of the last `S` line written at or after byte `since` of a start log (StartLog), read
    from its last `tail` bytes: the mini-batch a child was running when it died."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            begin = max(since, size - tail)
            cut = begin > since                 # then read from the byte before: a line may be cut
            f.seek(begin - cut)
            data = f.read()
    except OSError:
        return None
    lines = data.split(b"\n")
    if cut:
        lines = lines[1:]                       # whole only if that byte was the newline before it
    for line in reversed(lines):
        entry = _start_log_entry(line)
        if entry is not None and entry[0] == b"S":
            return entry[1][0]
    return None


def read_started(state_dir: str) -> dict[int, int]:
    """id → how many runs of the job died while it was running, over every rank's start log.

    Each run gives a mini-batch a new attempt number, so a death is one (id, attempt) pair: two
    ranks running copies of the same attempt (speculation) count once."""
    deaths: set[tuple[int, int]] = set()
    d = os.path.join(state_dir, "started")
    if not os.path.isdir(d):
        return {}
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            deaths.update(died_under(f.read().split(b"\n")))
    out: dict[int, int] = {}
    for bid, _attempt in deaths:
        out[bid] = out.get(bid, 0) + 1
    return out


def read_records(state_dir: str) -> Iterator[dict[str, Any]]:
    path = os.path.join(state_dir, JOURNAL_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue   # a torn last record from a crash mid-write


@dataclass
class JournalState:
    """What a journal says about a run, replayed from its records."""

    fingerprint: str | None = None
    runs: int = 0
    committed: dict[int, tuple] = field(default_factory=dict)   # id → (attempt, ok, failed, digest, off, len)
    failed: dict[int, tuple] = field(default_factory=dict)      # id → (attempt, nitems, digest, error)
    regions: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, length, header bytes)
    started: dict[int, int] = field(default_factory=dict)       # id → highest attempt begun
    end_state: str | None = None
    batches_total: int | None = None
    items_total: int | None = None

    def kept_end(self) -> int:
        """End of the contiguous committed prefix of the output: what a continuing run keeps."""
        end = 0
        for off, length, _hdr in sorted(self.regions):
            if off != end:
                break
            end += length
        return end

    def cut_to_prefix(self) -> None:
        """Forget commits past the kept prefix, as the continuing run did by truncating the file.

        Without this a region an earlier run committed past a hole outlives the cut: the next
        run rewrites those bytes with other rows, its regions can end exactly where the stale one
        starts, and the stale region would then read as contiguous (rows lost and duplicated)."""
        end = self.kept_end()
        self.regions = [r for r in self.regions if r[0] + r[1] <= end]
        self.committed = {bid: c for bid, c in self.committed.items() if c[4] + c[5] <= end}


def replay(state_dir: str) -> JournalState:
    st = JournalState()
    for rec in read_records(state_dir):
        t = rec.get("t")
        if t == "begin":
            st.cut_to_prefix()
            st.fingerprint = rec.get("fingerprint")
            st.runs += 1
            st.end_state = None
        elif t == "commit":
            st.regions.append((rec["off"], rec["len"], rec.get("hdr", 0)))
            for bid, attempt, ok, failed, digest in rec["b"]:
                st.committed[bid] = (attempt, ok, failed, digest, rec["off"], rec["len"])
                st.failed.pop(bid, None)
        elif t == "failed":
            st.failed[rec["id"]] = (rec["attempt"], rec["n"], rec["d"], rec.get("error", ""))
        elif t == "listing":
            st.batches_total, st.items_total = rec["batches"], rec["items"]
        elif t == "end":
            st.end_state = rec.get("state")
    st.started = read_started(state_dir)
    return st
