"""Rank 0: lists the input lazily, hands out mini-batches on request, steals for idle workers,
retries failures on another rank, hands out output offsets, journals commits, enforces thresholds,
and (if asked) runs copies of stragglers at the tail, the first success winning (protocol.py).

Rank 0 keeps only descriptors of mini-batches that are pending, in flight or awaiting commit.
A loop pass costs O(messages), not O(ranks): the peers that want work and the live ones are kept
in their own collections, so that 10k ranks do not cost a walk over 10k peers per pass.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from .protocol import (Assign, Attempt, Cancel, Commit, Fatal, Goodbye, InitFailed, Leaving, Offset, Report, Request,
                       Revoke, Revoked, Status, Stop)
from .summary import Accounting
from .transport import slack_patience

log = logging.getLogger(__name__)
LIST_BUDGET_SECONDS = 0.001      # listing work per loop pass, so dispatching never stalls
LIST_AHEAD = 20_000              # descriptors listed ahead of demand (totals known early; memory bounded)
SPECULATE_AFTER = 1.5            # a copy once the running one has taken this many median run times
SPECULATE_MIN_SAMPLES = 5        # ... and as many attempts have ended, to know the median
SPECULATE_EVERY = 0.05           # seconds between looks for stragglers (a walk over the peers)
PATIENT_PEERS = 64               # rank 0 sleeps past MPI only with this few peers (a walk over them)
PATIENT_RUN = 0.05               # ... and mini-batches shorter than this (long ones: workers hold one
                                 # in reserve, and a prompt answer is what keeps the tail short)


@dataclass
class Pending:
    spec: Any
    attempt: int = 1
    tried: frozenset[int] = frozenset()


@dataclass
class Peer:
    rank: int
    host: str
    alive: bool = True
    wants: int = 0
    outstanding: "OrderedDict[int, Pending]" = field(default_factory=OrderedDict)
    revoking: bool = False
    all_started: bool = False        # a Revoke got nothing back: what it holds has all begun
    said_goodbye: bool = False
    current_since: float = 0.0       # when the oldest mini-batch it holds began (as far as rank 0 knows)
    ready: bool = False
    last_error: str | None = None
    stats: dict = field(default_factory=dict)

    @property
    def running(self) -> int | None:
        """The mini-batch it runs: a worker runs what it holds in the order it got it."""
        return next(iter(self.outstanding), None)


def last_line(error: str) -> str | None:
    """The last line of a traceback, for status.json (None for an empty text)."""
    lines = error.strip().splitlines()
    return lines[-1][:200] if lines else None


class Dispatcher:
    def __init__(self, cfg: Any, source: Iterator[Any], peers: dict[int, str], send: Any,
                 journal: Any, attempts_log: Any, accounting: Accounting, admit: Any = None) -> None:
        self.cfg = cfg
        self.source = source
        self.send = send                       # send(dest, msg)
        self.journal = journal
        self.attempts_log = attempts_log
        self.acc = accounting
        # resume: 0 = already done (skip), n >= 1 = run as attempt n, -1 = fail now (killed the job run_max_try times)
        self.admit = admit or (lambda spec: 1)
        self.peers = {r: Peer(r, h) for r, h in peers.items()}
        self.alive: set[int] = set(self.peers)             # ranks that have not left
        self.wanting: dict[int, Peer] = {}                 # peers with wants > 0, in order of asking
        self.wants_total = 0
        self.fresh: deque[Pending] = deque()
        self.retries: deque[Pending] = deque()
        # resume: mini-batches an earlier run died under. Dealt last, so that a poison pill takes
        # the job down only once all else is done, and an outside kill early in each run does not
        # charge the same first-dealt mini-batches again and again (false poison verdicts).
        self.suspects: deque[Pending] = deque()
        self.listing_done = False
        self.listed_batches = 0
        self.listed_items = 0
        self.counts_known = True               # tabular CSV slices learn their row count when read
        self.end = 0                            # next free byte of the append file
        self.header_written = False
        # (rank, flush_id) → (report, offset, header bytes): given an offset, not yet written
        self.flushes: dict[tuple[int, int], tuple[Report, int, int]] = {}
        self.stop_reason: str | None = None
        self.stop_state: str | None = None
        self.stop_sent = False
        self.hard_stop_at: float | None = None
        self.fatal: Fatal | None = None
        self.tracked: dict[int, Pending] = {}   # handed out at least once, not yet final
        self.copies: dict[int, tuple[int, int]] = {}   # speculation: id → (rank, rank) running it twice
        self.run_times: deque[float] = deque(maxlen=256)   # of recent attempts, for the median
        self.mean_run = 0.0                                 # their moving average, for `patience`
        self.next_speculation = 0.0

    # -------------------------------------------------------------- the loop's table of contents
    def step(self) -> bool:
        progressed = self._refill()
        progressed |= self._serve()
        progressed |= self._steal()
        progressed |= self._speculate()
        self._check_grace()
        self._check_thresholds()
        self._check_done()
        self.journal.flush()              # this pass's commit records, in one write
        return progressed

    @property
    def finished(self) -> bool:
        return self.stop_sent and all(p.said_goodbye for p in self.peers.values())

    @property
    def patience(self) -> float:
        """Seconds rank 0 may leave MPI unread (Worker.patience's rule, for every peer): while
        each live worker holds work beyond its running mini-batch and none waits for more, its
        next request can wait a quarter of that work. Rank 0 then wakes a few times per
        mini-batch, not every few ms (CPU-bound jobs: the cores are the children's)."""
        if (self.stop_reason or self.wants_total or not 0 < self.mean_run < PATIENT_RUN or not self.alive
                or len(self.alive) > PATIENT_PEERS):
            return 0.0
        return slack_patience(min(len(self.peers[r].outstanding) for r in self.alive), self.mean_run)

    def handle(self, src: int, msg: Any) -> None:
        handler = self._HANDLERS[type(msg)]
        handler(self, self.peers[src], msg)

    # -------------------------------------------------------------- listing
    def _refill(self) -> bool:
        if self.listing_done or self.stop_reason:
            return False
        demand = (len(self.alive) + self.wants_total) * 2      # >= 2 x sum of max(wants, 1)
        target = max(demand, LIST_AHEAD)
        if len(self.fresh) >= target:
            return False
        deadline = time.perf_counter() + LIST_BUDGET_SECONDS
        added = 0
        while len(self.fresh) < target and time.perf_counter() < deadline:
            try:
                spec = next(self.source)
            except StopIteration:
                self._listing_finished()
                break
            except Exception as exc:   # a listing error mid-run: stop with its message
                self.begin_stop(f"listing the input failed: {exc}", "failed")
                break
            self.listed_batches += 1
            self.listed_items += max(spec.nitems, 0)
            self.counts_known &= spec.nitems >= 0
            attempt = self.admit(spec)
            if attempt == 0:
                continue
            if attempt < 0:
                self._poison(spec)
                continue
            if attempt > 1:
                self.suspects.append(Pending(spec, attempt))
                continue
            self.fresh.append(Pending(spec, attempt))
            added += 1
        return added > 0 and len(self.fresh) - added < demand

    def _listing_finished(self) -> None:
        self.listing_done = True
        self.acc.batches_total = self.listed_batches
        self.acc.items_total = self.listed_items if self.counts_known else None
        self.journal.listing(self.listed_batches, self.listed_items)
        log.info("listing finished: %d mini-batches, %d items", self.listed_batches, self.listed_items)
        if self.listed_batches == 0:
            self.begin_stop("the input is empty: no items matched input.paths", "failed")

    # -------------------------------------------------------------- handing out work
    def _next_for(self, peer: Peer, alive: set[int]) -> Pending | None:
        for i, p in enumerate(self.retries):
            if peer.rank not in p.tried or alive <= p.tried:
                del self.retries[i]
                return p
        if self.fresh:
            return self.fresh.popleft()
        return self.suspects.popleft() if self.suspects and self.listing_done else None

    def _serve(self) -> bool:
        if self.stop_reason:
            return False
        progressed = False
        for peer in list(self.wanting.values()):
            assign = self._deal(peer)
            if assign is not None:
                self.send(peer.rank, assign)
                progressed = True
        return progressed

    def _deal(self, peer: Peer) -> Assign | None:
        """Up to `peer.wants` mini-batches for `peer`, marked outstanding; None if there is none."""
        batch: list[Pending] = []
        while len(batch) < peer.wants:
            p = self._next_for(peer, self.alive)
            if p is None:
                break
            batch.append(p)
        if not batch:
            return None
        if not peer.outstanding:
            peer.current_since = time.time()
        peer.all_started = False
        for p in batch:
            peer.outstanding[p.spec.id] = p
            self.tracked[p.spec.id] = p
        self._want(peer, -len(batch))
        return Assign(tuple(p.spec for p in batch), tuple(p.attempt for p in batch))

    def _steal(self) -> bool:
        """Idle worker, nothing left to hand out: take back what a busy worker has not started."""
        if self.stop_reason or self.fresh or self.retries or self.suspects or not self.listing_done:
            return False
        idle = [p for p in self.wanting.values() if not p.outstanding]
        if not idle:
            return False
        victims = sorted((p for p in self.peers.values() if self._stealable(p)),
                         key=lambda p: len(p.outstanding), reverse=True)
        progressed = False
        for victim in victims[:len(idle)]:
            ids = list(victim.outstanding)[1:]          # the oldest is probably running: leave it
            take = tuple(ids[len(ids) // 2:]) if len(ids) > 1 else tuple(ids)
            victim.revoking = True
            self.send(victim.rank, Revoke(take))
            progressed = True
        return progressed

    @staticmethod
    def _stealable(p: Peer) -> bool:
        return p.alive and not p.revoking and not p.all_started and len(p.outstanding) > 1

    def _speculate(self) -> bool:
        """Tail of the job, a worker idle: it gets a copy of the mini-batch that has run longest,
        if that one is past SPECULATE_AFTER median run times (a slow node). See `_race`."""
        if (not self.cfg.speculative or self.stop_reason or self.fresh or self.retries or self.suspects
                or not self.listing_done or len(self.run_times) < SPECULATE_MIN_SAMPLES):
            return False
        now = time.time()
        if now < self.next_speculation:
            return False
        idle = [p for p in self.wanting.values() if not p.outstanding]
        if not idle:
            return False
        self.next_speculation = now + SPECULATE_EVERY
        if any(p.revoking or self._stealable(p) for p in self.peers.values()):
            return False                 # unstarted work may still be stolen: that first
        times = sorted(self.run_times)
        late_since = now - SPECULATE_AFTER * times[len(times) // 2]     # the median (upper, if even)
        late = sorted((p for p in self.peers.values() if p.outstanding and p.current_since < late_since
                       and p.running not in self.copies), key=lambda p: p.current_since)
        for copy, slow in zip(idle, late):
            bid = slow.running
            p = slow.outstanding[bid]
            copy.outstanding[bid] = p
            copy.current_since = now
            self.copies[bid] = (slow.rank, copy.rank)
            self._want(copy, -1)
            self.acc.speculated += 1
            self.send(copy.rank, Assign((p.spec,), (p.attempt,)))
            log.info("mini-batch %d has run %.1fs on rank %d: a copy runs on rank %d", bid, now - slow.current_since,
                     slow.rank, copy.rank)
        return bool(late)

    def _race(self, peer: Peer, a: Attempt) -> bool:
        """One of two copies of a mini-batch ended. The first success is claimed (True: handle it
        as usual) and the other copy cancelled; a failure leaves the decision to the other copy."""
        first, second = self.copies.pop(a.batch_id)
        if not a.ok:
            self.attempts_log.attempt(a)
            return False
        other = self.peers[second if peer.rank == first else first]
        if other.outstanding.pop(a.batch_id, None) is not None:
            other.current_since = time.time()
            self.send(other.rank, Cancel((a.batch_id,)))
        return True

    # -------------------------------------------------------------- handlers
    def _poison(self, spec: Any) -> None:
        error = (f"mini-batch {spec.id} was running each of the {self.cfg.run_max_try} times the whole job died "
                 "(poison pill?); it is failed without another try")
        self.attempts_log.error(f"mini-batch {spec.id}", error)
        self.acc.failed(spec.nitems)
        self.journal.failed(spec.id, self.cfg.run_max_try, spec.nitems, spec.digest(), error)

    def _want(self, peer: Peer, change: int) -> None:
        """The only place `wants` changes: keeps `wanting` and `wants_total` in step."""
        wants = max(0, peer.wants + change) if peer.alive else 0
        self.wants_total += wants - peer.wants
        peer.wants = wants
        if wants > 0:
            self.wanting.setdefault(peer.rank, peer)
        else:
            self.wanting.pop(peer.rank, None)

    def _on_request(self, peer: Peer, msg: Request) -> None:
        self._want(peer, msg.credits)
        peer.ready = True             # workers ask for work only once init() has finished

    def _on_revoked(self, peer: Peer, msg: Revoked) -> None:
        peer.revoking = False
        peer.all_started = not msg.batch_ids   # until it reports or gets more (no Revoke loop)
        self._give_back(peer, msg.batch_ids)

    def _give_back(self, peer: Peer, batch_ids: tuple[int, ...]) -> None:
        """Unstarted mini-batches return to the front of the queue, in order, attempt unchanged."""
        for bid in reversed(batch_ids):
            p = peer.outstanding.pop(bid, None)
            if p is not None and self.copies.pop(bid, None) is not None:
                continue        # one of two copies: the other one runs on
            if p is not None:   # a retry keeps its "another rank first" rule
                (self.retries if p.attempt > 1 else self.fresh).appendleft(p)

    def _on_report(self, peer: Peer, msg: Report) -> None:
        if msg.commit is not None:               # the previous flush's, held by the worker
            self._on_commit(peer, msg.commit)
        outstanding = peer.outstanding
        peer.all_started = False
        ok: list[Attempt] = []
        superseded: list[Attempt] = []
        for a in msg.attempts:
            took = a.end - a.start
            self.run_times.append(took)
            self.mean_run = took if not self.mean_run else 0.8 * self.mean_run + 0.2 * took
            if outstanding.pop(a.batch_id, None) is None:      # cancelled: its twin was claimed
                superseded.append(a)
                continue
            if self.copies and a.batch_id in self.copies and not self._race(peer, a):
                continue
            if a.error:
                peer.last_error = last_line(a.error) or peer.last_error
            if a.ok:
                ok.append(a)
            else:
                self.attempts_log.attempt(a)
                self._attempt_failed(a)
        for a in superseded:
            self.attempts_log.attempt(a, status=Status.SUPERSEDED)
        self.acc.attempts += len(msg.attempts)
        peer.current_since = time.time()         # the next one it holds began when these ended
        if msg.credits:                          # a Request riding on the Report
            self._want(peer, msg.credits)
            peer.ready = True
        if msg.nbytes == 0:      # the worker's rows hold its ok attempts: all of them were taken?
            whole = msg.rows is not None and not superseded and len(ok) == sum(a.ok for a in msg.attempts)
            self._commit(ok, 0, 0, 0.0, 0, msg.rows if whole else None)
            return
        nbytes, drop = msg.nbytes, ()
        if superseded:
            drop = tuple(a.batch_id for a in superseded if a.nbytes)
            nbytes -= sum(a.nbytes for a in superseded)
        header = b""
        if msg.header is not None and not self.header_written and nbytes:
            header = msg.header
            self.header_written = True
        self.flushes[(peer.rank, msg.flush_id)] = (ok, self.end, len(header) + nbytes, len(header))
        assign = self._deal(peer) if peer.wants and not self.stop_reason else None
        self.send(peer.rank, Offset(msg.flush_id, self.end, header or None, assign, drop))
        self.end += len(header) + nbytes

    def _on_commit(self, peer: Peer, msg: Commit) -> None:
        ok, offset, length, header = self.flushes.pop((peer.rank, msg.flush_id))
        self._commit(ok, offset, length, msg.write_seconds, header, msg.rows)

    def _commit(self, ok: list[Attempt], offset: int, length: int, write_seconds: float, header: int,
                csv_rows: str | None) -> None:
        """Journal the attempts whose bytes are in [offset, offset + length) as done."""
        if not ok:
            return
        self.attempts_log.committed(ok, write_seconds, csv_rows)
        rows = []
        for a in ok:
            self.acc.committed(a.succeeded, a.failed)
            p = self.tracked.pop(a.batch_id)
            rows.append((a.batch_id, a.attempt, a.succeeded, a.failed, a.digest or p.spec.digest()))
        self.journal.commit(offset, length, header, rows)

    def _attempt_failed(self, a: Attempt) -> None:
        p = self.tracked[a.batch_id]
        if a.attempt < self.cfg.run_max_try and not self.stop_reason:
            self.acc.retries += 1
            retry = Pending(p.spec, a.attempt + 1, p.tried | {a.rank})
            self.tracked[a.batch_id] = retry
            self.retries.append(retry)
            log.info("mini-batch %d attempt %d %s on rank %d; retrying", a.batch_id, a.attempt, a.status, a.rank)
            return
        del self.tracked[a.batch_id]
        self.acc.failed(a.nitems)
        self.journal.failed(a.batch_id, a.attempt, a.nitems, p.spec.digest(), a.error or "")
        log.warning("mini-batch %d failed after %d attempts: %s", a.batch_id, a.attempt,
                    (a.error or "").strip().splitlines()[-1:] or a.status)

    def _on_init_failed(self, peer: Peer, msg: InitFailed) -> None:
        self.attempts_log.error(f"init() failed on rank {peer.rank} ({peer.host}), try {msg.tries} of "
                                f"{self.cfg.init_max_try}", msg.error)
        peer.last_error = last_line(msg.error)

    def _on_leaving(self, peer: Peer, msg: Leaving) -> None:
        if peer.alive and msg.reason:
            self.attempts_log.error(f"rank {peer.rank} ({peer.host}) left the job", msg.reason)
            log.error("rank %d (%s) leaves the job: init() keeps failing", peer.rank, peer.host)
        peer.alive = False
        self.alive.discard(peer.rank)
        self._want(peer, 0)
        self._give_back(peer, msg.returned)
        if not self.alive and not self.stop_reason:
            self.begin_stop("no worker could run init(): every worker left the job. First error:\n"
                            + (msg.reason or "see logs/job_error.txt"), "failed")

    def _on_goodbye(self, peer: Peer, msg: Goodbye) -> None:
        peer.said_goodbye = True
        peer.stats = msg.stats

    def _on_fatal(self, peer: Peer, msg: Fatal) -> None:
        self.fatal = msg

    _HANDLERS = {Request: _on_request, Revoked: _on_revoked, Report: _on_report,
                 Commit: _on_commit, InitFailed: _on_init_failed, Leaving: _on_leaving, Goodbye: _on_goodbye,
                 Fatal: _on_fatal}

    # -------------------------------------------------------------- ending
    def _check_thresholds(self) -> None:
        if self.stop_reason:
            return
        reason = self.acc.exceeded()
        if reason:
            self.begin_stop(reason, "failed")

    def _check_done(self) -> None:
        if self.stop_reason or not self.listing_done or self.fresh or self.retries or self.suspects or self.flushes:
            return
        if self.tracked:     # handed out, not final yet: outstanding somewhere (cheap test first)
            return
        if any(p.outstanding for p in self.peers.values()):
            return
        self.begin_stop("", "succeeded")

    def begin_stop(self, reason: str, state: str) -> None:
        """Tell every worker to finish: drain (done), interrupt (signal: finish the running mini-batch
        within grace_period) or abort (threshold, fatal: kill it)."""
        if self.stop_sent:
            return
        self.stop_reason, self.stop_state = reason or "done", state
        mode = {"succeeded": "drain", "interrupted": "interrupt"}.get(state, "abort")
        if mode != "drain":
            log.error("stopping the job: %s", reason)
        if mode == "interrupt":
            self.hard_stop_at = time.monotonic() + self.cfg.grace_period
        self._stop_all(Stop(reason, mode))
        self.stop_sent = True

    def _stop_all(self, msg: Stop) -> None:
        for peer in self.peers.values():
            if not peer.said_goodbye:
                self.send(peer.rank, msg)

    def _check_grace(self) -> None:
        if self.hard_stop_at is not None and time.monotonic() > self.hard_stop_at:
            self.hard_stop_at = None
            log.error("grace_period of %gs is over: killing the mini-batches still running", self.cfg.grace_period)
            self._stop_all(Stop(self.stop_reason or "interrupted", "abort"))

    def in_flight(self) -> int:
        return sum(len(p.outstanding) for p in self.peers.values())
