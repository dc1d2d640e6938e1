"""Non-blocking MPI messaging and the adaptive polling back-off every rank waits with.

MPICH's blocking calls busy-wait, which starves workers on an oversubscribed node, so no rank
ever blocks in MPI: sends are `isend`s completed lazily, receives are matched probes, and an idle
rank sleeps with an exponential back-off (or waits on its child's pipe, which wakes it at once).
"""
from __future__ import annotations

import time
from multiprocessing.connection import wait as wait_connections
from typing import Any, Iterator

from .protocol import tag_of


class Backoff:
    """Sleep 0 while busy; 20 µs doubling to `max_sleep` while idle. `patience`: the caller can
    wait that long for anything but `conns` (its child's pipe wakes it at once), so the doubling
    starts there: a worker whose child has work queued need not poll MPI every few µs."""

    def __init__(self, max_sleep: float = 0.005, min_sleep: float = 2e-5) -> None:
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self.current = 0.0

    def wait(self, progressed: bool, conns: list[Any] = (), patience: float = 0.0) -> None:
        if progressed:
            self.current = 0.0
            return
        self.current = min(self.max_sleep, max(self.min_sleep, self.current * 2, patience if conns else 0.0))
        if conns:
            wait_connections(conns, timeout=self.current)
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

