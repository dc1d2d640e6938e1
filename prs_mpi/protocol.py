"""MPI message tags and messages between rank 0 (dispatcher) and the workers. Nothing else.

Flow for one worker (W) and the dispatcher (D):

    W → D  Request(credits)          W wants `credits` more mini-batches in its prefetch queue
                                     (only when no Report goes out in the same step: see below)
    D → W  Assign(batches)           descriptors only; never data rows
    D → W  Revoke(batch_ids)         work stealing: give back what you have not started
    W → D  Revoked(batch_ids)        the ids actually given back (started ones stay)
    W → D  Report(flush_id, attempts, nbytes, header, credits, commit)
                                     finished attempts; nbytes > 0 asks for an output offset;
                                     `credits` asks for work as a Request would; `commit` is the
                                     Commit of the previous flush when it was held until now;
                                     `urgent`: the worker may run dry soon (see leaders below)
    D → W  Offset(flush_id, offset, header, assign, drop)
                                     where to Write_at the flush (header first if set); `assign`
                                     is the Assign for the Report's credits when rank 0 has work;
                                     `drop`: leave out these mini-batches' rows (another copy won)
    W → D  Commit(flush_id)          the bytes are in the file: the mini-batches are done
    D → W  Cancel(batch_ids)         speculation: another rank's copy of these was claimed first;
                                     drop them, kill the child if it runs one (no attempt charged)
    W → D  InitFailed(error, tries)  init() failed on this rank (it retries; job_error.txt shows it)
    W → D  Leaving(reason, returned) the worker cannot go on (init failed too often)
    D → W  Stop(reason, mode)        finish: drain | interrupt (finish the running one) | abort;
                                     then flush, shutdown(), say Goodbye
    W → D  Goodbye(stats)            last message of a worker
    W → D  Fatal(error)              an unhandled error on a worker; D ends the job

A long mini-batch (no prefetch) costs rank 0 one message in and one out: the worker finishes it,
sends Report(credits=1, commit=<the previous flush>), and gets Offset(assign=<the next one>).
A worker holds a Commit only while it runs work and at most `flush_interval` seconds; idle,
stopping or past that, it sends the Commit on its own. Nothing tells rank 0 when a run begins:
the oldest mini-batch a worker holds is the one it runs (a worker runs its queue in order), and
the per-rank start logs (journal.StartLog) charge attempts when the whole job dies.

Speculation (`[dispatch] speculative`). At the tail (nothing left to hand out or steal) an idle
worker gets a copy of the mini-batch that has run longest, once that one runs well past the
median (a slow node, a throttled GPU). Both copies are outstanding; the first successful Report
claims the output (its rows get an offset) and the other copy is cancelled. A Report may still
bring the cancelled copy's result (it crossed the Cancel): rank 0 knows the mini-batch is no
longer outstanding on that rank, so the Offset drops its rows. Exactly once holds because only
a claimed result is ever given an offset, and a mini-batch is claimed once.

Relays (prs_mpi/leader.py; `[dispatch] ranks_per_leader`). With leaders on, the ranks are cut
into groups (one per node by default); the lowest rank of a group is its leader, and rank 0's
group has none (it talks to rank 0 directly). A worker sends its messages to its leader instead
of rank 0; the leader (a worker itself) packs them, its own included, into

    L → D  Bundle(((src, msg), ...)) every logical message of its group since the last bundle,
                                     in arrival order; sent at once when it holds a Request, a
                                     Revoked or an urgent Report (a worker may wait for work),
                                     else after max_delay or max_bundle messages. A worker
                                     keeps one long mini-batch in reserve, so that its
                                     Reports need not be urgent and bundles fill up
    D → L  Bundle(((dest, msg), ...)) what the dispatcher sent to the group in one loop pass;
                                     the leader forwards each to `dest` (or keeps its own)

The dispatcher sees the same logical messages with the same sources, in the same per-worker
order (every hop is FIFO between one pair of ranks), so its scheduling, retries, stealing,
journal and thresholds do not change; only the MPI messages rank 0 receives and sends shrink to
about one per leader per loop pass. Fatal is still sent straight to rank 0.
"""
from __future__ import annotations

from .compact import Compact

import enum
from dataclasses import dataclass, field
from typing import Any

from .dataset import MiniBatchSpec


class Tag(enum.IntEnum):
    REQUEST = 1
    ASSIGN = 2
    REVOKE = 3
    REVOKED = 4
    REPORT = 5
    OFFSET = 6
    COMMIT = 7
    LEAVING = 8
    STOP = 9
    GOODBYE = 10
    FATAL = 11
    # 12 was Started (dropped: rank 0 takes a worker's oldest mini-batch as the running one)
    INIT_FAILED = 13
    BUNDLE = 14
    CANCEL = 15


class Status(enum.StrEnum):
    """Outcome of one attempt at a mini-batch (the `status` column of processed_mini_batches.csv)."""

    OK = "ok"              # every item returned
    PARTIAL = "partial"    # fewer elements than inputs: the rest are item failures
    FAILED = "failed"      # run() raised, or returned something invalid
    TIMEOUT = "timeout"    # run_invocation_timeout passed; the child was killed
    CRASHED = "crashed"    # the child died (segfault, os._exit, OOM kill)
    SUPERSEDED = "superseded"  # a speculative copy whose twin was claimed first: rows discarded

    @property
    def succeeded(self) -> bool:
        return self in SUCCEEDED


SUCCEEDED = frozenset({"ok", "partial"})


@dataclass(slots=True)
class Attempt(Compact):
    """One run() call on one mini-batch, as the worker saw it (treated as immutable; slots and a
    plain-str status because one is pickled per mini-batch)."""

    batch_id: int
    attempt: int
    rank: int
    host: str
    pid: int
    nitems: int
    succeeded: int
    failed: int
    start: float
    end: float
    run_seconds: float
    input_seconds: float
    status: str                    # a Status value
    error: str | None = None       # full traceback / reason, for job_error.txt
    nbytes: int = 0                # bytes of output rows this attempt adds to the flush
    write_seconds: float = 0.0
    digest: str = ""               # MiniBatchSpec.digest(), computed by the worker for rank 0

    def __post_init__(self) -> None:
        self.status = str(self.status)

    @property
    def ok(self) -> bool:
        return self.status in SUCCEEDED


# The messages of every mini-batch (Request, Assign, Report, Offset, Commit) are slots
# dataclasses pickled through Compact, and treated as immutable: a frozen dataclass's __init__
# and unpickling cost rank 0 a few µs per message. The rare ones are frozen.
@dataclass(slots=True)
class Request(Compact):
    credits: int


@dataclass(slots=True)
class Assign(Compact):
    batches: tuple[MiniBatchSpec, ...]
    attempts: tuple[int, ...]      # attempt number of each batch (1 for a first try)


@dataclass(frozen=True)
class Revoke:
    batch_ids: tuple[int, ...]


@dataclass(frozen=True)
class Revoked:
    batch_ids: tuple[int, ...]


@dataclass(slots=True)
class Commit(Compact):
    flush_id: int
    write_seconds: float
    rows: str | None = None        # the flush's processed_mini_batches.csv rows (runlog.committed_rows),
                                   # formatted by the worker to spare rank 0


@dataclass(slots=True)
class Report(Compact):
    flush_id: int
    attempts: tuple[Attempt, ...]
    nbytes: int = 0
    header: bytes | None = None    # CSV header of DataFrame output, written once at offset 0
    credits: int = 0               # also a Request for this many mini-batches
    commit: Commit | None = None   # a held Commit of an earlier flush (handled first)
    urgent: bool = False           # the worker may run dry soon: a leader relays it at once
    rows: str | None = None        # nothing to write (nbytes 0): the ok attempts' processed_mini_batches.csv
                                   # rows, formatted by the worker as a Commit's are


@dataclass(slots=True)
class Offset(Compact):
    flush_id: int
    offset: int
    header: bytes | None = None    # write this first (at `offset`), the rows right after it
    assign: Assign | None = None   # work for the Report's credits, in the same message
    drop: tuple[int, ...] = ()     # mini-batches of the flush whose rows are not written


@dataclass(frozen=True)
class Cancel:
    batch_ids: tuple[int, ...]


@dataclass(frozen=True)
class InitFailed:
    error: str
    tries: int


@dataclass(frozen=True)
class Leaving:
    reason: str
    returned: tuple[int, ...]


@dataclass(frozen=True)
class Stop:
    reason: str
    mode: str = "drain"     # drain: the queue is empty, finish | interrupt: finish the running
                            # mini-batch, drop the queue | abort: kill the running one too

    @property
    def abort(self) -> bool:
        return self.mode == "abort"


@dataclass(frozen=True)
class Goodbye:
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fatal:
    rank: int
    host: str
    error: str


@dataclass(frozen=True, slots=True)
class Bundle(Compact):
    """Logical messages between rank 0 and a leader's group: (worker rank, message) pairs."""

    items: tuple[tuple[int, Any], ...]


TAG_OF: dict[type, Tag] = {
    Request: Tag.REQUEST, Assign: Tag.ASSIGN, Revoke: Tag.REVOKE, Revoked: Tag.REVOKED,
    Report: Tag.REPORT, Offset: Tag.OFFSET, Commit: Tag.COMMIT, Leaving: Tag.LEAVING,
    Stop: Tag.STOP, Goodbye: Tag.GOODBYE, Fatal: Tag.FATAL,
    InitFailed: Tag.INIT_FAILED, Bundle: Tag.BUNDLE, Cancel: Tag.CANCEL,
}


def tag_of(msg: object) -> Tag:
    return TAG_OF[type(msg)]
