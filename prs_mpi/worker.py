"""One rank's worker: a prefetch queue fed by rank 0, a supervised runner, and the write path.

`Worker.step()` never blocks: it watches the runner, feeds it the next queued mini-batch, asks
rank 0 for more work before the queue runs dry, and flushes finished rows (Report → Offset →
Write_at → Commit). Messages from rank 0 arrive through `handle()`. To spare rank 0 messages, a
Report carries the step's request for work and the previous flush's Commit (held while work runs,
at most flush_interval), and rank 0's Offset may carry the next Assign (protocol.py).
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .protocol import (Assign, Attempt, Cancel, Commit, Goodbye, InitFailed, Leaving, Offset, Report, Request, Revoke,
                       Revoked, Status, Stop, SUCCEEDED)
from .runlog import committed_rows
from .transport import slack_patience

log = logging.getLogger(__name__)

TARGET_QUEUE_SECONDS = 0.005  # for short mini-batches, keep this much work queued (hides the round trip)
MAX_PREFETCH = 64
PIPELINE = 2                  # mini-batches handed to the runner at once: the child never waits for us
TINY_RUN = 0.001              # mini-batches shorter than this ...
TINY_PIPELINE = 64            # ... are handed over up to this many at a time (the child sends their
                              # results back in groups of child.HOLD_COUNT, while it runs the next ones)
LONG_RUN = 0.05               # mini-batches longer than this: one in reserve only (see `reserve`)
ITEM_BUDGET = 2048            # short mini-batches of many items: queued and handed over, at most about
                              # this many items' descriptors each (1000-item no-op ones, 8 ranks: peak
                              # supervisor RSS 41.0 MB with 32 + 64 of them held, 39.5 MB with 2 + 2)


@dataclass
class Flush:
    flush_id: int
    attempts: list[Attempt] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    header: bytes | None = None
    opened: float = 0.0
    has_failure: bool = False


class Worker:
    def __init__(self, rank: int, host: str, cfg: Any, send: Any, output: Any, runner_factory: Any,
                 monitor: Any = None, start_log: Any = None, reserve: int = 1) -> None:
        self.rank, self.host, self.cfg = rank, host, cfg
        # long mini-batches held beyond the running one (1): the next one starts without a round
        # trip to rank 0 (heavy-tailed 100 ms load balance 1.097 -> 1.062, bench/RESULTS.md), a
        # leader may hold this worker's Reports for up to leader.MAX_DELAY (fuller bundles), and
        # at the tail stealing takes a reserve back for an idle worker
        self.reserve = reserve
        self.send = send                      # send(msg) → rank 0
        self.output = output
        self.runner_factory = runner_factory
        self.monitor = monitor
        self.start_log = start_log
        self._ended: list[tuple[int, int]] = []   # attempts seen ending, for start_log
        self.queue: deque[tuple[Any, int]] = deque()
        self.requested = 0
        self.credits_due = 0                  # asked for this step: rides on a Report, else a Request
        self.commit_due: Commit | None = None  # written, not yet told: rides on the next Report
        self.commit_at = 0.0
        self.runner = runner_factory()
        self.runner.start()
        self.ready = False
        self.init_failures = 0
        self.running: deque[list] = deque()   # [batch, attempt, start] handed to the runner, in order
        self.buffer = Flush(0)
        self.inflight: Flush | None = None
        self.next_flush_id = 1
        self.stopping: Stop | None = None
        self.leaving = False
        self.done = False
        self.mean_run = 0.0
        self.batch_items = 1                  # paths in the last mini-batch that ended
        self.stats = {"rank": rank, "host": host, "batches": 0, "busy_seconds": 0.0, "init_seconds": 0.0,
                      "restarts": 0, "bytes_written": 0, "write_seconds": 0.0, "cancelled": 0}

    # -------------------------------------------------------------- main step
    def step(self) -> bool:
        progressed = self._watch_runner()
        progressed |= self._feed_runner()
        progressed |= self._ask_for_work()
        progressed |= self._maybe_flush()
        progressed |= self._send_held()
        progressed |= self._maybe_finish()
        if self.monitor is not None:
            self.monitor.maybe_sample(self.runner.pid if self.runner else None, time.time())
        return progressed

    @property
    def waitables(self) -> list[Any]:
        return self.runner.waitables if self.runner is not None else []

    @property
    def patience(self) -> float:
        """Seconds this rank may sleep on its child's pipe alone: while the child holds work beyond
        the running mini-batch, rank 0's replies (work, an offset, a Revoke) can wait a quarter
        of that work; the child's own messages wake the rank sooner (tiny mini-batches: a group
        of results at least every child.HOLD_SECONDS). 0 when something waits on them (supervisor
        wake-ups, each a context switch on the child's core, were ~1,500/s with 17 ms mini-batches)."""
        if self.runner is None or self.stopping is not None:
            return 0.0
        return slack_patience(len(self.running) + len(self.queue), self.mean_run)

    # -------------------------------------------------------------- messages from rank 0
    def handle(self, msg: Any) -> None:
        if isinstance(msg, Offset):
            if msg.assign is not None:    # queued first: the write below does not delay the next run
                self._assigned(msg.assign)
            self._write(msg)
        elif isinstance(msg, Assign):
            self._assigned(msg)
        elif isinstance(msg, Revoke):
            wanted = set(msg.batch_ids)
            kept = deque(item for item in self.queue if item[0].id not in wanted)
            returned = tuple(item[0].id for item in self.queue if item[0].id in wanted)
            self.queue = kept
            self.send(Revoked(returned))
        elif isinstance(msg, Cancel):
            self._cancel(set(msg.batch_ids))
        elif isinstance(msg, Stop):
            self.stopping = msg
            self.queue.clear()        # unstarted work stays uncommitted: a resume runs it
            if msg.abort and self.running:
                self.runner.kill()
                self._uncharge_running()
                self.running.clear()
        else:
            raise TypeError(f"worker got an unexpected message {msg!r}")

    def _cancel(self, ids: set[int]) -> None:
        """Another rank's copy of these was claimed first (speculation): drop them. A running one
        is stopped by killing the child; what was handed over behind it is queued again."""
        self.queue = deque(item for item in self.queue if item[0].id not in ids)
        if self.runner is None or not any(batch.id in ids for batch, _, _ in self.running):
            return
        self._uncharge_running()
        self._requeue_running(skip=ids)
        self.stats["cancelled"] += 1
        log.info("mini-batch(es) %s cancelled: a copy on another rank finished first", sorted(ids))
        self._restart()                            # kills the child, starts a fresh one

    def _uncharge_running(self) -> None:
        """The child is stopped on purpose: none of what it was handed counts as an attempt."""
        if self.start_log is not None and self.running:
            self.start_log.ended([(batch.id, attempt) for batch, attempt, _ in self.running])

    def _requeue_running(self, skip: set[int] | frozenset[int] = frozenset()) -> None:
        """What was handed to the child goes back to the front of the queue, in order, no attempt
        used (the child died before running it), less `skip`."""
        for batch, attempt, _ in reversed(self.running):
            if batch.id not in skip:
                self.queue.appendleft((batch, attempt))
        self.running.clear()

    def _assigned(self, msg: Assign) -> None:
        if self.leaving:   # assigned before rank 0 saw our Leaving: hand it straight back
            self.send(Leaving("", tuple(b.id for b in msg.batches)))
            return
        self.queue.extend(zip(msg.batches, msg.attempts))
        self.requested = max(0, self.requested - len(msg.batches))

    # -------------------------------------------------------------- runner
    def _watch_runner(self) -> bool:
        """Handle every event the runner has ready: a group of tiny mini-batches' results is
        taken in one pass, not one loop turn (MPI poll, dispatch, back-off) each."""
        progressed = False
        while self.runner is not None:
            event = self.runner.poll()
            if event is None:
                break
            progressed = True
            self._on_event(event)
            if event[0] != "result":
                break
        if self._ended:       # the supervisor saw these attempts end: not a death of the whole job
            self.start_log.ended(self._ended)
            self._ended = []
        return progressed

    def _on_event(self, event: tuple) -> None:
        kind = event[0]
        if kind == "init_ok":
            self.ready = True
            self.stats["init_seconds"] += event[1]
            self.stats.setdefault("ready_at", time.time())
            log.info("init() finished in %.2fs", event[1])
        elif kind == "init_err":
            self._init_failed(event[1])
        elif kind == "result":
            self._finished(event[2])
        elif kind in ("crashed", "timeout"):
            if not self.running:
                if not self.ready:
                    self._init_failed(event[1])
                return
            self._died(Status.CRASHED if kind == "crashed" else Status.TIMEOUT, event[1], event[2])

    def _died(self, status: str, reason: str, culprit: int | None) -> None:
        """The child died (or was killed) running `culprit` (None: the first handed over). Those
        handed over before it ran to the end, but their held results died with the child: they
        run again, no attempt charged; those after it were never begun."""
        ran: list[list] = []
        if culprit is not None and any(batch.id == culprit for batch, _, _ in self.running):
            while self.running[0][0].id != culprit:
                ran.append(self.running.popleft())
        if ran and self.start_log is not None:
            self._ended.extend((batch.id, attempt) for batch, attempt, _ in ran)
        from .child import RunResult
        self._finished(RunResult(status, self.running[0][0].nitems, 0, error=reason))
        self.running.extendleft(reversed(ran))
        self._requeue_running()
        self._restart()

    def _init_failed(self, error: str) -> None:
        self.init_failures += 1
        self.ready = False
        log.error("init() failed (%d of %d tries):\n%s", self.init_failures, self.cfg.init_max_try, error)
        if self.init_failures < self.cfg.init_max_try:
            self.send(InitFailed(error, self.init_failures))
        if self.init_failures >= self.cfg.init_max_try:
            self.leaving = True
            returned = tuple(item[0].id for item in self.queue)
            self.queue.clear()
            self.runner.kill()
            self.runner = None
            self.send(Leaving(f"init() failed {self.init_failures} times on rank {self.rank} ({self.host}); "
                              f"last error:\n{error}", returned))
        else:
            self._restart()

    def _restart(self) -> None:
        self.runner.kill()
        self.ready = False
        self.stats["restarts"] += 1
        if self.stopping is not None and self.stopping.abort:
            return
        self.runner = self.runner_factory()
        self.runner.start()

    def _feed_runner(self) -> bool:
        # tiny mini-batches go to the child up to TINY_PIPELINE per message (fewer when they name
        # many paths: ITEM_BUDGET); others two at a time (long ones one at a time: a reserve stays
        # in the queue, where stealing can take it back)
        limit = 1 if self.mean_run >= LONG_RUN else PIPELINE
        if 0 < self.mean_run < TINY_RUN:
            limit = max(PIPELINE, min(TINY_PIPELINE, ITEM_BUDGET // self.batch_items))
        if not self.ready or not self.queue or self.runner is None or len(self.running) >= limit:
            return False
        if self.stopping is not None and self.stopping.abort:
            return False
        group = []
        now = time.time()
        while self.queue and len(self.running) < limit:
            batch, attempt = self.queue.popleft()
            self.running.append([batch, attempt, now])
            group.append((batch, attempt))
        self.runner.submit_many(group)
        return True

    def _finished(self, result: Any) -> None:
        batch, attempt, start = self.running.popleft()
        if self.start_log is not None:   # written once this pass has taken every ready result
            self._ended.append((batch.id, attempt))
        if result.end:                   # the child's own clock (held results arrive together)
            start, end = result.start, result.end
        else:
            end = time.time()
        if self.running:
            self.running[0][2] = end       # the child begins the next one now
        att = Attempt(batch_id=batch.id, attempt=attempt, rank=self.rank, host=self.host, pid=self.runner.pid,
                      nitems=result.nitems, succeeded=result.succeeded,
                      failed=(result.nitems - result.succeeded) if result.status in SUCCEEDED else result.nitems,
                      start=start, end=end, run_seconds=result.run_seconds, input_seconds=result.input_seconds,
                      status=result.status, error=result.error, nbytes=len(result.data), digest=batch.digest())
        self.stats["batches"] += 1
        self.stats["busy_seconds"] += end - start
        self.mean_run = (end - start) if self.mean_run == 0 else 0.8 * self.mean_run + 0.2 * (end - start)
        self.batch_items = max(1, len(batch.items))     # descriptors held per mini-batch (tabular: none)
        buf = self.buffer
        if not buf.attempts:
            buf.opened = time.monotonic()
        buf.attempts.append(att)
        buf.has_failure |= not att.ok
        if result.data:
            buf.chunks.append(result.data)
            buf.nbytes += len(result.data)
            if result.header is not None and buf.header is None:
                buf.header = result.header
        if not att.ok:
            log.warning("mini-batch %d attempt %d %s: %s", batch.id, attempt, att.status,
                        (att.error or "").strip().splitlines()[-1:] or "")

    # -------------------------------------------------------------- asking for work
    def _ask_for_work(self) -> bool:
        # no work is held before init() has finished: a slow start must not sit on mini-batches
        if self.stopping is not None or self.leaving or not self.ready:
            return False
        if self.mean_run >= LONG_RUN:
            # long mini-batches: hold `reserve` (0 or 1) beyond the running one, so a long one is
            # seldom stuck behind another while a worker idles (stealing takes a reserve back).
            # Idle with a request still held by a leader, it asks for one more, urgently.
            held = len(self.running) + len(self.queue) + self.requested
            if held > self.reserve:
                return False
            self.requested += 1 + self.reserve - held
            self.credits_due += 1 + self.reserve - held
            return True
        depth = self.cfg.prefetch if self.mean_run > 0 else 1   # one until we know how long they take
        if self.mean_run > 0:
            depth = max(depth, min(MAX_PREFETCH, math.ceil(TARGET_QUEUE_SECONDS / self.mean_run),
                                   ITEM_BUDGET // self.batch_items))
        have = len(self.queue) + self.requested
        if have > depth // 2:
            return False
        self.requested += depth - have
        self.credits_due += depth - have
        return True

    # -------------------------------------------------------------- write path
    def _maybe_flush(self) -> bool:
        buf = self.buffer
        if not buf.attempts or self.inflight is not None:
            return False
        idle = not self.running and not self.queue
        # long mini-batches: a request for work goes anyway, so the rows go with it
        due = (buf.nbytes >= self.cfg.flush_bytes or idle or self.stopping is not None
               or time.monotonic() - buf.opened >= self.cfg.flush_interval or buf.has_failure
               or (self.credits_due > 0 and self.mean_run >= LONG_RUN))
        if not due:
            return False
        urgent = self.credits_due > 0 and (self.mean_run < LONG_RUN or not (self.running or self.queue))
        rows = None if buf.nbytes else committed_rows([a for a in buf.attempts if a.ok], 0.0)
        self.send(Report(buf.flush_id, tuple(buf.attempts), buf.nbytes, buf.header, self.credits_due,
                         self.commit_due, urgent, rows))
        self.credits_due, self.commit_due = 0, None
        if buf.nbytes:
            self.inflight = buf
        self.buffer = Flush(self.next_flush_id)
        self.next_flush_id += 1
        return True

    def _write(self, msg: Offset) -> None:
        buf = self.inflight
        if buf is None or buf.flush_id != msg.flush_id:
            raise RuntimeError(f"rank {self.rank}: offset for unknown flush {msg.flush_id}")
        attempts, chunks = buf.attempts, buf.chunks
        if msg.drop:                  # copies another rank's twin beat (speculation): rows left out
            attempts, chunks = _without(buf, set(msg.drop))
        if msg.header:
            chunks = [msg.header, *chunks]
        seconds = self.output.write_chunks(msg.offset, chunks) if chunks else 0.0
        self.stats["bytes_written"] += sum(len(c) for c in chunks)
        self.stats["write_seconds"] += seconds
        self.inflight = None
        self.commit_due = Commit(msg.flush_id, seconds, committed_rows([a for a in attempts if a.ok], seconds))
        self.commit_at = time.monotonic()

    def _send_held(self) -> bool:
        """Credits no Report carried go as a Request; a held Commit goes on its own once the
        worker idles or stops, or after flush_interval (no Report may come for a while)."""
        sent = False
        if self.credits_due:
            self.send(Request(self.credits_due))
            self.credits_due, sent = 0, True
        if self.commit_due is not None and (
                (not self.running and not self.queue) or self.stopping is not None or self.leaving
                or time.monotonic() - self.commit_at >= self.cfg.flush_interval):
            self.send(self.commit_due)
            self.commit_due, sent = None, True
        return sent

    # -------------------------------------------------------------- the end
    def _maybe_finish(self) -> bool:
        if self.done or self.stopping is None:
            return False
        if (self.running or self.queue or self.buffer.attempts or self.inflight is not None
                or self.commit_due is not None):
            return False
        if self.runner is not None:
            budget = 10.0 if self.stopping.mode == "interrupt" else min(self.cfg.run_invocation_timeout, 60.0)
            error = self.runner.shutdown(timeout=budget) if self.ready and not self.stopping.abort else None
            if error:
                log.error("shutdown() failed:\n%s", error)
                self.stats["shutdown_error"] = error
            if self.stopping.abort or not self.ready:     # not ready: init() still runs (after a restart)
                self.runner.kill()
            self.runner = None
        if self.monitor is not None:
            self.monitor.close()
        self.send(Goodbye(dict(self.stats)))
        self.done = True
        return True


def _without(buf: Flush, drop: set[int]) -> tuple[list[Attempt], list[bytes]]:
    """The flush's attempts and row chunks less those of `drop` (a chunk per attempt with rows)."""
    attempts: list[Attempt] = []
    chunks: list[bytes] = []
    rows = iter(buf.chunks)
    for a in buf.attempts:
        chunk = next(rows) if a.nbytes else b""
        if a.batch_id in drop:
            continue
        attempts.append(a)
        if chunk:
            chunks.append(chunk)
    return attempts, chunks
