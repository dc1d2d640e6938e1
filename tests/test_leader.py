"""Leaders without MPI: who leads whom, bundling and splitting, and a whole job's protocol through
relays on an in-memory network (the real Dispatcher on rank 0, scripted workers elsewhere)."""
from __future__ import annotations

import pickle
from collections import deque
from types import SimpleNamespace

import pytest

from prs_mpi.config import ConfigError, build_config
from prs_mpi.dataset import MiniBatchSpec
from prs_mpi.dispatcher import Dispatcher
from prs_mpi.leader import Router, leaders_for, make_router
from prs_mpi.protocol import (Assign, Attempt, Bundle, Commit, Goodbye, Offset, Report, Request, Revoke, Revoked,
                              Stop)
from prs_mpi.summary import Accounting


class Net:
    """Per-rank FIFO inboxes; every message is pickled on the way, as MPI would."""

    def __init__(self, size: int) -> None:
        self.inbox = {r: deque() for r in range(size)}


class FakeChannel:
    def __init__(self, net: Net, rank: int) -> None:
        self.net, self.rank, self.sent, self.received = net, rank, 0, 0

    def send(self, dest, msg):
        self.net.inbox[dest].append((self.rank, pickle.loads(pickle.dumps(msg))))
        self.sent += 1

    def poll(self, source=None):
        box = self.net.inbox[self.rank]
        while box:
            self.received += 1
            yield box.popleft()

    def drain(self, timeout):
        return True

    def progress(self):
        pass


@pytest.mark.parametrize("hosts, per, want", [
    (["a"] * 6, 3, (0, 0, 0, 3, 3, 3)),
    (["a"] * 7, 2, (0, 0, 2, 2, 4, 4, 6)),
    (["a"] * 6, 0, (0,) * 6),
    (["a"] * 8, "auto", (0,) * 8),                         # one small node: no leaders
    (["a", "a", "b", "b", "c", "c"], "auto", (0, 0, 2, 2, 4, 4)),
    (["a", "b", "a", "b"], "auto", (0, 1, 0, 1)),          # round-robin placement: lowest rank of the node
    (["a"] * 130, "auto", (0,) * 64 + (64,) * 64 + (128,) * 2),   # one fat node: groups of 64
])
def test_leaders_for(hosts, per, want):
    assert leaders_for(hosts, per) == want


def test_no_leaders_keeps_the_plain_channel():
    ch = FakeChannel(Net(4), 0)
    assert make_router(ch, ["a"] * 4, "auto") is ch
    assert isinstance(make_router(ch, ["a"] * 4, 2), Router)


def routers(size=6, per=3, **kw):
    net = Net(size)
    leaders = leaders_for(["h"] * size, per)
    return net, [Router(FakeChannel(net, r), leaders, **kw) for r in range(size)]


def test_up_bundles_keep_sources_and_order_and_wait_unless_urgent():
    net, rt = routers(max_delay=60.0)
    rt[4].send(0, Commit(7, 0.0))
    rt[5].send(0, Report(0, ()))
    rt[1].send(0, Commit(9, 0.0))                  # rank 0's own group: straight to rank 0
    assert list(rt[3].poll()) == []                # the leader holds its members' messages
    rt[3].send(0, Goodbye({}))                     # and its own
    rt[3].flush()
    assert [m for _, m in net.inbox[0]] == [Commit(9, 0.0)]   # nothing urgent: still held
    rt[4].send(0, Request(2))
    list(rt[3].poll())
    rt[3].flush()                                  # a Request goes at once, with the rest
    got = list(rt[0].poll())
    assert got == [(1, Commit(9, 0.0)), (4, Commit(7, 0.0)), (5, Report(0, ())), (3, Goodbye({})),
                   (4, Request(2))]
    assert rt[0].channel.received == 2            # two MPI messages carried five logical ones
    assert rt[3].goodbyes == {3} and not rt[3].relay_done      # members 4 and 5 still run


def test_only_an_urgent_report_goes_at_once():
    net, rt = routers(max_delay=60.0)
    rt[4].send(0, Report(3, (), 10, commit=Commit(2, 0.0)))       # no credits: held
    rt[5].send(0, Report(1, (), 0, credits=1))                    # asks for its reserve: held too
    list(rt[3].poll())
    rt[3].flush()
    assert not net.inbox[0]
    rt[5].send(0, Report(2, (), 0, credits=1, urgent=True))       # idle, waits for work: goes now
    list(rt[3].poll())
    rt[3].flush()
    assert [src for src, _ in rt[0].poll()] == [4, 5, 5]
    rt[4].send(0, Revoked((1,)))                                  # a steal under way: goes now
    list(rt[3].poll())
    rt[3].flush()
    assert list(rt[0].poll()) == [(4, Revoked((1,)))]


def test_old_messages_go_after_max_delay():
    net, rt = routers(max_delay=0.0)
    rt[4].send(0, Commit(1, 0.0))
    list(rt[3].poll())
    rt[3].flush()
    assert list(rt[0].poll()) == [(4, Commit(1, 0.0))]


def test_down_bundle_per_leader_per_pass_is_split_to_the_workers():
    net, rt = routers()
    rt[0].send(4, Offset(1, 100))
    rt[0].send(3, Stop("done"))
    rt[0].send(5, Revoke((3, 4)))
    rt[0].send(2, Stop("done"))                    # own group: direct
    assert [m for _, m in net.inbox[3]] == []      # nothing before the end of the pass
    rt[0].flush()
    assert len(net.inbox[3]) == 1 and isinstance(net.inbox[3][0][1], Bundle)
    assert list(rt[3].poll()) == [(0, Stop("done"))]          # the leader's own message
    assert list(rt[4].poll()) == [(3, Offset(1, 100))]
    assert list(rt[5].poll()) == [(3, Revoke((3, 4)))]
    assert list(rt[2].poll()) == [(0, Stop("done"))]


class ScriptedWorker:
    """Asks for 2, runs one mini-batch per `every` pumps, fails the first try of `bad`. Like
    prs_mpi.worker, its Report carries its request for work and the Commit it held (protocol.py)."""

    def __init__(self, rank, send, every=1, bad=()):
        self.rank, self.send, self.every, self.bad = rank, send, every, set(bad)
        self.queue, self.asked, self.ticks, self.done, self.flush = deque(), 0, 0, False, 0
        self.got: list = []
        self.held: Commit | None = None

    def handle(self, msg):
        self.got.append(msg)
        if isinstance(msg, Offset) and msg.assign is not None:
            self.handle(msg.assign)
        if isinstance(msg, Assign):
            self.queue.extend(zip(msg.batches, msg.attempts))
            self.asked -= len(msg.batches)
        elif isinstance(msg, Revoke):
            back = tuple(b.id for b, _ in self.queue if b.id in msg.batch_ids)
            self.queue = deque((b, a) for b, a in self.queue if b.id not in back)
            self.send(Revoked(back))
        elif isinstance(msg, Offset):
            self.held = Commit(msg.flush_id, 0.0)
            if not self.queue:                   # idle: nothing else will carry it
                self.send(self.held)
                self.held = None
        elif isinstance(msg, Stop):
            if self.held:
                self.send(self.held)
            self.done = True
            self.send(Goodbye({}))

    def tick(self):
        self.ticks += 1
        if self.done:
            return
        if self.queue and self.ticks % self.every == 0:
            b, n = self.queue.popleft()
            ok = not (b.id in self.bad and n == 1)
            a = Attempt(b.id, n, self.rank, "h", 1, 1, int(ok), 1 - int(ok), 0, 0, 0, 0, "ok" if ok else "failed",
                        None if ok else "boom", 10 if ok else 0)
            credits = 2 - len(self.queue) - self.asked if len(self.queue) + self.asked < 2 else 0
            self.send(Report(self.flush, (a,), a.nbytes, credits=credits, commit=self.held))
            self.asked += credits
            self.held = None
            self.flush += 1
        if len(self.queue) + self.asked < 2:
            self.send(Request(2 - len(self.queue) - self.asked))
            self.asked = 2 - len(self.queue)


def test_a_whole_job_through_relays_exactly_once_with_retries_and_stealing():
    net, rt = routers(max_delay=0.0)
    journal = SimpleNamespace(rows=[], failed=[])
    journal.commit = lambda off, length, hdr, rows: journal.rows.extend(rows)
    journal.listing = lambda *a: None
    journal.flush = lambda: None
    attempts = SimpleNamespace(attempt=lambda *a, **k: None, committed=lambda *a: None, error=lambda *a: None,
                               first_error=None)
    specs = iter(MiniBatchSpec(id=i, items=(f"f{i}",), nitems=1) for i in range(40))
    d = Dispatcher(SimpleNamespace(run_max_try=3, speculative=False), specs, {r: "h" for r in range(1, 6)}, rt[0].send,
                   journal, attempts, Accounting())
    workers = {r: ScriptedWorker(r, lambda m, r=r: rt[r].send(0, m), every=25 if r == 5 else 1, bad={6})
               for r in range(1, 6)}
    handled = 0
    for _ in range(2000):
        for src, msg in rt[0].poll():
            d.handle(src, msg)
            handled += 1
        d.step()
        rt[0].flush()
        for r, w in workers.items():
            for _src, msg in rt[r].poll():
                w.handle(msg)
            w.tick()
            rt[r].flush()
        if d.finished and rt[3].relay_done:
            break
    assert d.finished and d.stop_state == "succeeded" and rt[3].relay_done
    assert sorted(b[0] for b in journal.rows) == list(range(40))          # each committed once
    retry = [b for b in journal.rows if b[0] == 6]
    assert retry[0][1] == 2                                               # committed on its 2nd try
    assert any(isinstance(m, Revoke) for m in workers[5].got)             # stolen from the slow member
    assert any(isinstance(m, Offset) and m.assign for w in workers.values() for m in w.got)   # work with offsets
    assert rt[0].channel.received < 0.8 * handled          # fewer MPI messages than logical ones


def test_config_key_and_typo_hints(tmp_path):
    def cfg(**dispatch):
        return build_config({"entry_script": "s.py", "input": {"paths": ["x"]}, "dispatch": dispatch},
                            tmp_path / "job.toml", "job.toml", check_files=False)
    assert cfg().ranks_per_leader == "auto"
    assert cfg(ranks_per_leader=4).ranks_per_leader == 4
    with pytest.raises(ConfigError, match="did you mean 'ranks_per_leader'"):
        cfg(ranks_per_leadr=4)
    with pytest.raises(ConfigError, match="expected 'auto'"):
        cfg(ranks_per_leader=-2)
    with pytest.raises(ConfigError, match=r"belongs in the \[dispatch\] table"):
        build_config({"entry_script": "s.py", "input": {"paths": ["x"]}, "ranks_per_leader": 2},
                     tmp_path / "job.toml", "job.toml", check_files=False)
