"""The worker's side of the protocol without MPI or a child: what it sends rank 0 and when
(requests riding on Reports, Commits held until the next Report, Offsets carrying work)."""
from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest

from prs_mpi import worker as worker_mod
from prs_mpi.child import RunResult
from prs_mpi.dataset import MiniBatchSpec
from prs_mpi.protocol import Assign, Cancel, Commit, Goodbye, Offset, Report, Request, Stop
from prs_mpi.runlog import committed_rows
from prs_mpi.worker import Worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class FakeRunner:
    """Finishes each submitted mini-batch when told to (`finish()`), with 8 bytes of rows."""

    pid = 4242
    waitables: list = []

    def __init__(self) -> None:
        self.events = deque([("init_ok", 0.1)])
        self.submitted: deque = deque()

    def start(self) -> None:
        pass

    def poll(self):
        return self.events.popleft() if self.events else None

    def submit_many(self, group) -> None:
        self.submitted.extend(group)

    def finish(self) -> None:
        batch, _ = self.submitted.popleft()
        self.events.append(("result", batch.id, RunResult("ok", 1, 1, data=b"row %03d\n" % batch.id)))

    def shutdown(self, timeout: float) -> None:
        return None

    def kill(self) -> None:
        self.killed = getattr(self, "killed", 0) + 1
        self.submitted.clear()


@pytest.fixture
def setup(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(worker_mod, "time", clock)
    cfg = SimpleNamespace(prefetch=2, flush_bytes=1 << 20, flush_interval=0.5, init_max_try=3,
                          run_invocation_timeout=60.0)
    sent: list = []
    runner = FakeRunner()
    output = SimpleNamespace(writes=[], write_chunks=lambda off, chunks: output.writes.append((off, chunks)) or 0.01)
    w = Worker(3, "h", cfg, sent.append, output, lambda: runner, reserve=0)   # tests set their reserve
    w.mean_run = 0.2            # it has seen long mini-batches: no prefetch (worker.LONG_RUN)
    return w, sent, runner, clock, output


def spec(i: int) -> MiniBatchSpec:
    return MiniBatchSpec(i, (f"f{i}",), 1)


def commit_of(report: Report, seconds: float = 0.01) -> Commit:
    """The Commit a worker sends once `report`'s bytes are written: it carries the csv rows."""
    return Commit(report.flush_id, seconds, committed_rows(list(report.attempts), seconds))


def run_one(w, runner, clock, seconds=0.2):
    clock.now += seconds
    runner.finish()
    w.step()


def test_long_mini_batches_cost_one_message_each_way(setup):
    w, sent, runner, clock, output = setup
    w.step()                                       # init done: ask for one
    assert sent == [Request(1)]
    w.handle(Assign((spec(0),), (1,)))
    w.step()
    sent.clear()
    run_one(w, runner, clock)                      # finished, idle: Report asks for the next one
    assert sent == [Report(0, sent[0].attempts, 8, None, credits=1, commit=None, urgent=True)]
    assert sent[0].attempts[0].digest == spec(0).digest()     # computed here, not at rank 0
    first = sent[0]
    sent.clear()
    w.handle(Offset(0, 100, None, Assign((spec(1),), (1,))))
    w.step()
    assert output.writes == [(100, [b"row 000\n"])] and list(runner.submitted) == [(spec(1), 1)]
    assert sent == []                              # the Commit waits: work runs
    run_one(w, runner, clock)
    assert sent == [Report(1, sent[0].attempts, 8, None, credits=1, commit=commit_of(first), urgent=True)]
    assert sent[0].commit.rows.startswith("0,1,3,h,4242,1,1,0,1000.000000,1000.200000,")
    second = sent[0]
    sent.clear()
    w.handle(Offset(1, 108))                       # no work came with it: idle, so commit now
    w.step()
    assert sent == [commit_of(second)]


def test_one_long_mini_batch_waits_in_reserve(setup):
    w, sent, runner, clock, output = setup
    w.reserve = 1
    w.step()
    assert sent == [Request(2)]                    # the one to run and one in reserve
    w.handle(Assign((spec(0), spec(1)), (1, 1)))
    w.step()
    assert list(runner.submitted) == [(spec(0), 1)] and len(w.queue) == 1   # the reserve stays stealable
    sent.clear()
    run_one(w, runner, clock)                      # the reserve starts at once: not urgent
    assert [(m.credits, m.urgent) for m in sent] == [(1, False)] and list(runner.submitted) == [(spec(1), 1)]
    w.handle(Offset(0, 0))                         # no work yet: the reserve is gone
    w.step()
    sent.clear()
    run_one(w, runner, clock)                      # idle now: urgent, and the held Commit rides along
    assert [(m.credits, m.urgent, m.commit.flush_id) for m in sent] == [(1, True, 0)]


def hold_a_commit(w, sent, runner, clock) -> Report:
    """Run mini-batch 0 and write it; mini-batch 1 arrives with the Offset and runs, so the
    Commit of 0 is held. Returns 0's Report."""
    w.step()
    w.handle(Assign((spec(0),), (1,)))
    w.step()
    run_one(w, runner, clock)
    first = sent[-1]
    w.handle(Offset(0, 0, None, Assign((spec(1),), (1,))))
    w.step()
    sent.clear()
    return first


def test_a_held_commit_goes_alone_after_flush_interval(setup):
    w, sent, runner, clock, output = setup
    first = hold_a_commit(w, sent, runner, clock)
    clock.now += 0.4
    w.step()
    assert sent == []
    clock.now += 0.2                               # past flush_interval, still running
    w.step()
    assert sent == [commit_of(first)]


def test_stop_sends_the_held_commit_before_goodbye(setup):
    w, sent, runner, clock, output = setup
    first = hold_a_commit(w, sent, runner, clock)
    w.handle(Stop("done", "interrupt"))            # finish the running one, then leave
    run_one(w, runner, clock)
    w.handle(Offset(1, 8))
    for _ in range(3):
        w.step()
    kinds = [type(m) for m in sent]
    assert kinds == [Report, Commit, Goodbye] and sent[0].commit == commit_of(first)
    assert sent[0].credits == 0                    # stopping: no more work asked for


def test_idle_with_a_request_held_by_a_leader_it_asks_again_urgently(setup):
    w, sent, runner, clock, output = setup
    w.reserve = 1
    w.step()
    w.handle(Assign((spec(0),), (1,)))             # one of the two came; one is still asked for
    w.step()
    sent.clear()
    run_one(w, runner, clock)                      # idle: asks for one more, urgently
    assert [(type(m), m.credits, m.urgent) for m in sent] == [(Report, 1, True)] and w.requested == 2
    w.handle(Offset(0, 0, None, Assign((spec(1),), (1,))))
    w.step()
    sent.clear()
    run_one(w, runner, clock)                      # idle again while one request is still out
    assert [(type(m), m.credits, m.urgent) for m in sent] == [(Report, 1, True)] and w.requested == 2


def test_offset_drop_leaves_out_the_rows_of_a_superseded_copy(setup):
    w, sent, runner, clock, output = setup
    w.cfg.flush_interval = 10.0
    w.step()
    w.handle(Assign((spec(0), spec(1), spec(2)), (1, 1, 1)))
    w.mean_run = 0.01                              # short ones: they flush together
    for _ in range(3):
        w.step()
        run_one(w, runner, clock, 0.01)
    report = next(m for m in sent if isinstance(m, Report))
    assert [a.batch_id for a in report.attempts] == [0, 1, 2] and report.nbytes == 24
    w.handle(Offset(report.flush_id, 50, None, None, drop=(1,)))
    w.step()
    assert output.writes == [(50, [b"row 000\n", b"row 002\n"])]
    commit = next(m for m in sent if isinstance(m, Commit))
    assert [row.split(",")[0] for row in commit.rows.splitlines()] == ["0", "2"]


def test_cancel_kills_the_running_copy_and_requeues_what_waited_behind_it(setup):
    w, sent, runner, clock, output = setup
    w.mean_run = 0.01                              # two at a time go to the child (PIPELINE)
    w.step()
    w.handle(Assign((spec(0), spec(1), spec(2)), (1, 1, 1)))
    w.step()
    assert [b.id for b, _ in runner.submitted] == [0, 1] and [b.id for b, _ in w.queue] == [2]
    w.handle(Cancel((0,)))
    assert runner.killed == 1 and w.stats["cancelled"] == 1 and not w.running
    assert [b.id for b, _ in w.queue] == [1, 2]    # not charged: they run after the restart
    w.handle(Cancel((2,)))                         # a queued one: dropped, nothing killed
    assert runner.killed == 1 and [b.id for b, _ in w.queue] == [1]


def test_patience_only_while_the_child_has_work_queued(setup):
    w, sent, runner, clock, output = setup
    w.step()
    assert w.patience == 0.0                       # nothing to run: replies from rank 0 are awaited
    w.handle(Assign((spec(0), spec(1)), (1, 1)))
    w.step()
    assert len(w.running) + len(w.queue) == 2 and w.patience == pytest.approx(0.2 / 4)
    run_one(w, runner, clock)                      # one left: the next reply matters again
    assert len(w.running) + len(w.queue) == 1 and w.patience == 0.0
    w.handle(Stop("done", "interrupt"))
    assert w.patience == 0.0


def test_backoff_starts_at_the_patience_only_when_a_pipe_can_wake_it(monkeypatch):
    from prs_mpi import transport
    slept = []
    monkeypatch.setattr(transport.PipeWait, "__call__", lambda self, conns, timeout: slept.append(timeout))
    monkeypatch.setattr(transport.time, "sleep", lambda s: slept.append(s))
    b = transport.Backoff(max_sleep=0.01)
    b.wait(False, ["pipe"], patience=0.004)
    b.wait(False, ["pipe"], patience=0.004)
    b.wait(True)
    b.wait(False, [], patience=0.004)             # no pipe: nothing would wake it early
    b.wait(False, ["pipe"], patience=0.5)
    assert slept == [0.004, 0.008, 2e-5, 0.01]
    # rank 0 answers the others: its own sleep stays short, its patience may reach max_patience
    slept.clear()
    r0 = transport.Backoff(max_sleep=0.002, max_patience=0.005)
    r0.wait(False, ["pipe"], patience=0.004)
    r0.wait(False, ["pipe"], patience=0.004)
    r0.wait(False, ["pipe"], patience=0.5)
    r0.wait(False, [])
    assert slept == [0.004, 0.004, 0.005, 0.002]


def test_pipe_wait_wakes_on_data_and_follows_new_connections():
    import time
    from multiprocessing import Pipe
    from prs_mpi import transport
    wait = transport.PipeWait()
    a_in, a_out = Pipe(duplex=False)
    assert wait([a_in], 0.01) is False
    a_out.send("x")
    t0 = time.monotonic()
    assert wait([a_in], 5.0) is True and time.monotonic() - t0 < 1.0
    b_in, b_out = Pipe(duplex=False)
    assert wait([b_in], 0.01) is False          # a new set of connections: a has data, b has none
    b_out.send("y")
    assert wait([b_in], 5.0) is True


def test_a_report_with_nothing_to_write_carries_its_rows_and_drains_every_result(setup):
    """summary_only: no Offset, no Commit; the worker formats the csv rows of its ok attempts."""
    w, sent, runner, clock, output = setup
    w.mean_run = 0.0001                            # tiny mini-batches
    w.step()
    w.handle(Assign(tuple(spec(i) for i in range(3)), (1, 1, 1)))
    w.step()
    clock.now += 0.01
    for _ in range(3):
        batch, _ = runner.submitted.popleft()
        status = "failed" if batch.id == 1 else "ok"
        runner.events.append(("result", batch.id, RunResult(status, 1, int(status == "ok"), error=None)))
    sent.clear()
    w.step()                                       # all three results in one pass; idle: flush
    report = next(m for m in sent if isinstance(m, Report))
    assert [a.batch_id for a in report.attempts] == [0, 1, 2] and report.nbytes == 0
    assert report.rows == committed_rows([a for a in report.attempts if a.ok], 0.0)
    assert [row.split(",")[0] for row in report.rows.splitlines()] == ["0", "2"]


def test_a_crash_charges_the_culprit_and_reruns_the_held_ones_before_it_free(setup, tmp_path):
    """The child held the results of 0 and 1 (tiny mini-batches) and died running 2: 2 is charged
    with the crash; 0 and 1 ran to the end, so they run again without an attempt used; 3 was
    never begun. The start log hears that 0 and 1 ended (they did not take the job down)."""
    from prs_mpi.journal import StartLog, died_under
    w, sent, runner, clock, output = setup
    w.start_log = StartLog(str(tmp_path), 3)
    w.mean_run = 0.0005                            # tiny: several at a time go to the child
    w.step()
    w.handle(Assign(tuple(spec(i) for i in range(4)), (1, 1, 1, 1)))
    w.step()
    assert [b.id for b, _ in runner.submitted] == [0, 1, 2, 3]
    for i in range(3):
        w.start_log.started(i, 1)                  # what the child writes before each run()
    runner.events.append(("crashed", "the child process running user code killed by SIGSEGV", 2))
    sent.clear()
    w.cfg.flush_interval = 0.0
    w.step()
    report = next(m for m in sent if isinstance(m, Report))
    assert [(a.batch_id, a.status) for a in report.attempts] == [(2, "crashed")]
    assert runner.killed == 1 and w.stats["restarts"] == 1
    runner.events.append(("init_ok", 0.1))        # the restarted child
    w.step()
    assert [b.id for b, _ in runner.submitted] == [0, 1, 3] and all(a == 1 for _, a in runner.submitted)
    log = tmp_path / "started" / "rank3.log"
    assert sorted(log.read_text().split("\n")[3:6]) == ["E 0 1", "E 1 1", "E 2 1"]
    w.start_log.started(0, 1)                      # the new child runs 0 again ... and the job dies
    w.start_log.close()
    assert died_under(log.read_bytes().split(b"\n")) == [(0, 1)]


def test_a_crash_with_no_known_culprit_charges_the_first_handed_over(setup):
    w, sent, runner, clock, output = setup
    w.mean_run = 0.0005
    w.cfg.flush_interval = 0.0
    w.step()
    w.handle(Assign((spec(0), spec(1)), (1, 1)))
    w.step()
    runner.events.append(("timeout", "run() did not return within run_invocation_timeout=1s", None))
    sent.clear()
    w.step()
    report = next(m for m in sent if isinstance(m, Report))
    assert [(a.batch_id, a.status) for a in report.attempts] == [(0, "timeout")]
    runner.events.append(("init_ok", 0.1))
    w.step()
    assert [b.id for b, _ in runner.submitted] == [1]


@pytest.mark.parametrize("paths,handed,asked", [(1, 64, 64), (100, 20, 20), (1000, 2, 2)])
def test_tiny_mini_batches_are_held_by_the_path_budget(setup, paths, handed, asked):
    """Tiny mini-batches: up to 64 go to the child and 64 are asked for, but never much more than
    worker.ITEM_BUDGET paths' worth (a supervisor holds their descriptors)."""
    w, sent, runner, clock, output = setup
    w.cfg.flush_interval = 0.0
    w.mean_run = 0.0                               # nothing seen yet
    w.step()
    w.handle(Assign((MiniBatchSpec(0, tuple(f"f{i}" for i in range(paths)), paths),), (1,)))
    w.step()
    clock.now += 0.00005
    runner.finish()                                # a tiny one ended: the budget is known
    w.step()
    assert w.requested == asked                    # asked for, not yet come
    many = tuple(MiniBatchSpec(i, tuple(f"f{i}.{j}" for j in range(paths)), paths) for i in range(1, 65))
    w.handle(Assign(many, (1,) * 64))
    w.step()
    assert len(runner.submitted) == handed


@pytest.mark.parametrize("own, others, expected", [
    (0.03, 0.02, 0.02),      # every worker holds work: rank 0 sleeps up to the least slack
    (0.03, 0.0, 0.005),      # one waits for work: as before, up to RELAY_PATIENCE on its pipe
    (0.0, 0.02, 0.0),        # its own child waits: no patience at all
    (0.002, 0.02, 0.002),
])
def test_rank0_sleeps_the_least_of_its_own_and_the_dispatchers_patience(own, others, expected):
    from types import SimpleNamespace
    from prs_mpi.job import RankLoop
    waited = []
    loop = RankLoop.__new__(RankLoop)
    loop.worker = SimpleNamespace(done=False, waitables=["pipe"], patience=own)
    loop.dispatcher = SimpleNamespace(patience=others)
    loop.backoff = SimpleNamespace(wait=lambda progressed, conns=(), patience=0.0: waited.append(patience))
    loop._wait(False)
    assert waited == [pytest.approx(expected)]
