"""Non-blocking MPI messaging and the adaptive polling back-off every rank waits with.

MPICH's blocking calls busy-wait, which starves workers on an oversubscribed node, so no rank
ever blocks in MPI: sends are `isend`s completed lazily, receives are matched probes, and an idle
rank sleeps with an exponential back-off (or waits on its child's pipe, which wakes it at once).
"""
from __future__ import annotations

import select
import time
from typing import Any, Iterator

from .protocol import tag_of


class PipeWait:
    """Sleep until one of some connections is readable, or a timeout: one poll(2) call, the poll
    object rebuilt only when the connections change (multiprocessing.connection.wait builds a
    selector every call, which cost an idle supervisor more than the wake-up itself)."""

    def __init__(self) -> None:
        self._fds: tuple[int, ...] = ()
        self._poll = select.poll()

    def __call__(self, conns: list[Any], timeout: float) -> bool:
        fds = tuple(c.fileno() for c in conns)
        if fds != self._fds:
            self._poll = select.poll()
            for fd in fds:
                self._poll.register(fd, select.POLLIN)
            self._fds = fds
        return bool(self._poll.poll(timeout * 1000.0))


def slack_patience(held: int, mean_run: float) -> float:
    """How long a rank holding `held` mini-batches (the running one first) may leave MPI unread:
    a quarter of the work beyond the running one, which may end at any moment (0 with none)."""
    return (held - 1) * mean_run / 4 if held >= 2 else 0.0


class Backoff:
    """Sleep 0 while busy; 20 µs doubling to `max_sleep` while idle. `patience`: the caller can
    wait that long for anything but `conns` (its child's pipe wakes it at once), so the sleep
    starts there, up to `max_patience` (default `max_sleep`): a worker whose child has work
    queued need not poll MPI every few µs."""

    def __init__(self, max_sleep: float = 0.005, min_sleep: float = 2e-5, max_patience: float | None = None) -> None:
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self.max_patience = max_sleep if max_patience is None else max_patience
        self.current = 0.0
        self.wait_pipes = PipeWait()

    def wait(self, progressed: bool, conns: list[Any] = (), patience: float = 0.0) -> None:
        if progressed:
            self.current = 0.0
            return
        self.current = min(self.max_sleep, max(self.min_sleep, self.current * 2))
        if conns:
            self.current = max(self.current, min(patience, self.max_patience))
            self.wait_pipes(conns, self.current)
        else:
            time.sleep(self.current)


class Channel:
    """One rank's endpoint: isend with lazy completion, non-blocking matched receive."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI
        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self._pending: list[Any] = []
        self.sent = 0
        self.received = 0

    def send(self, dest: int, msg: object) -> None:
        self._pending.append(self.comm.isend(msg, dest=dest, tag=int(tag_of(msg))))
        self.sent += 1
        if len(self._pending) > 64:
            self.progress()

    def progress(self) -> None:
        """Complete finished sends (keeps the pending list short)."""
        if self._pending:
            self._pending = [r for r in self._pending if not r.Test()]

    def poll(self, source: int | None = None) -> Iterator[tuple[int, object]]:
        """Yield (source, message) for every message already arrived."""
        MPI = self._MPI
        status = MPI.Status()
        src = MPI.ANY_SOURCE if source is None else source
        while True:
            msg = self.comm.improbe(source=src, tag=MPI.ANY_TAG, status=status)
            if msg is None:
                break
            obj = msg.recv()
            self.received += 1
            yield status.Get_source(), obj
        self.progress()

    def flush(self, force: bool = False) -> None:
        """Nothing is held back here (a leader's Router bundles: prs_mpi/leader.py)."""

    relay_done = True      # no relaying to finish (see Router.relay_done)

    def drain(self, timeout: float) -> bool:
        """Wait (politely) until every pending send completed; False on timeout."""
        deadline = time.monotonic() + timeout
        backoff = Backoff(max_sleep=0.01)
        while self._pending and time.monotonic() < deadline:
            self.progress()
            backoff.wait(not self._pending)
        return not self._pending


def polite_barrier(comm: Any, max_sleep: float = 0.005) -> None:
    """Wait for every rank without spinning (MPICH's blocking collectives busy-wait): call this
    before a blocking collective whose other ranks may be busy for a while, e.g. rank 0 writing
    the result while the workers wait to exit."""
    request = comm.Ibarrier()
    backoff = Backoff(max_sleep=max_sleep)
    while not request.Test():
        backoff.wait(False)

