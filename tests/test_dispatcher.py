"""Rank 0's scheduling and failure accounting, driven message by message (no MPI)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from prs_mpi import dispatcher as dispatcher_mod
from prs_mpi.dataset import MiniBatchSpec
from prs_mpi.dispatcher import Dispatcher
from prs_mpi.protocol import (Assign, Attempt, Cancel, Commit, Goodbye, Leaving, Offset, Report, Request, Revoke,
                              Revoked, Status, Stop)
from prs_mpi.summary import Accounting


class FakeJournal:
    def __init__(self):
        self.records = []

    def __getattr__(self, name):
        return lambda *a, **k: self.records.append((name, a))


class FakeLog:
    first_error = None

    def __init__(self):
        self.rows = []

    def attempt(self, a, write_seconds=0.0, status=None):
        self.rows.append(a)

    def committed(self, ok, write_seconds, rows=None):
        self.rows.extend(ok)

    def error(self, where, text):
        self.rows.append((where, text))


def make(n_batches=10, ranks=(1, 2, 3), per=2, run_max_try=3, admit=None, speculative=False, **acc):
    cfg = SimpleNamespace(run_max_try=run_max_try, speculative=speculative)
    specs = iter([MiniBatchSpec(id=i, items=tuple(f"f{i}_{j}" for j in range(per)), nitems=per)
                  for i in range(n_batches)])
    sent = []
    d = Dispatcher(cfg, specs, {r: f"h{r}" for r in ranks}, lambda dest, m: sent.append((dest, m)),
                   FakeJournal(), FakeLog(), Accounting(**acc), admit)
    return d, sent


def attempt(bid, rank, status=Status.OK, attempt_no=1, succeeded=2, nitems=2, nbytes=0):
    failed = nitems - succeeded if status.succeeded else nitems
    return Attempt(bid, attempt_no, rank, f"h{rank}", 100 + rank, nitems, succeeded if status.succeeded else 0,
                   failed, 0.0, 1.0, 1.0, 0.0, status, None if status.succeeded else "Boom", nbytes)


def assigned(sent, rank):
    """Ids dealt to `rank`, in plain Assigns or riding on Offsets."""
    assigns = [m.assign if isinstance(m, Offset) else m for dest, m in sent if dest == rank]
    return [b.id for m in assigns if isinstance(m, Assign) for b in m.batches]


def finish(d, rank, ids, **kw):
    d.handle(rank, Report(0, tuple(attempt(i, rank, **kw) for i in ids)))


def test_pull_assigns_only_what_is_asked_and_everything_once():
    d, sent = make(10)
    d.handle(1, Request(3))
    d.handle(2, Request(2))
    d.step()
    assert assigned(sent, 1) == [0, 1, 2] and assigned(sent, 2) == [3, 4]
    d.handle(3, Request(10))
    d.step()
    assert assigned(sent, 3) == [5, 6, 7, 8, 9]
    for r in (1, 2, 3):
        finish(d, r, assigned(sent, r))
    d.step()
    assert d.acc.batches_ok == 10 and d.acc.items_ok == 20
    assert any(isinstance(m, Stop) and not m.abort for _, m in sent)
    assert not d.finished
    for r in (1, 2, 3):
        d.handle(r, Goodbye({}))
    assert d.finished and d.stop_state == "succeeded"


def test_resume_deals_what_an_earlier_run_died_under_last_and_fails_a_poison_pill():
    """admit: 0 = done, n = attempt n (n > 1: the job died under it n-1 times), -1 = poison."""
    verdict = {0: 0, 1: 3, 2: 2, 5: -1}
    d, sent = make(8, ranks=(1,), admit=lambda spec: verdict.get(spec.id, 1))
    d.handle(1, Request(4))
    d.step()
    assert assigned(sent, 1) == [3, 4, 6, 7]              # the suspects wait for everything else
    finish(d, 1, [3, 4, 6, 7])
    d.handle(1, Request(4))
    d.step()
    got = [m for dest, m in sent if isinstance(m, Assign)][-1]
    assert [b.id for b in got.batches] == [1, 2] and got.attempts == (3, 2)
    finish(d, 1, [1, 2])
    d.step()
    assert [a[:3] for name, a in d.journal.records if name == "failed"] == [(5, 3, 2)]   # id, attempt, items
    assert d.acc.batches_ok == 6 and any(isinstance(m, Stop) for _, m in sent)


def test_output_offsets_are_disjoint_and_commit_after_write():
    d, sent = make(3)
    d.handle(1, Request(3))
    d.step()
    d.handle(1, Report(1, (attempt(0, 1, nbytes=10), attempt(1, 1, nbytes=5)), 15, b"h\n"))
    d.handle(1, Report(2, (attempt(2, 1, nbytes=7),), 7, b"h\n"))
    offs = [m for _, m in sent if isinstance(m, Offset)]
    assert [(o.offset, o.header) for o in offs] == [(0, b"h\n"), (17, None)]
    assert d.acc.batches_ok == 0            # not done before the bytes are written
    d.step()
    assert not any(isinstance(m, Stop) for _, m in sent)
    d.handle(1, Commit(1, 0.1))
    d.handle(1, Commit(2, 0.1))
    assert d.acc.batches_ok == 3
    commits = [a for name, a in d.journal.records if name == "commit"]
    assert [(c[0], c[1], c[2]) for c in commits] == [(0, 17, 2), (17, 7, 0)]


def test_a_long_mini_batch_costs_one_message_each_way():
    """Report(credits, commit of the previous flush) in; Offset carrying the next Assign out."""
    d, sent = make(3)
    d.handle(1, Request(1))
    d.step()
    assert [type(m) for _, m in sent] == [Assign] and d.peers[1].running == 0
    sent.clear()
    d.handle(1, Report(0, (attempt(0, 1, nbytes=10),), 10, credits=1))
    assert [type(m) for _, m in sent] == [Offset]                     # one message: offset + work
    assert sent[0][1].offset == 0 and [b.id for b in sent[0][1].assign.batches] == [1]
    assert sent[0][1].assign.attempts == (1,) and d.peers[1].running == 1 and d.peers[1].wants == 0
    assert d.acc.batches_ok == 0                                      # written, not yet committed
    d.step()
    assert len(sent) == 1                                             # nothing dealt twice
    sent.clear()
    d.handle(1, Report(1, (attempt(1, 1, nbytes=5),), 5, credits=1, commit=Commit(0, 0.5)))
    commits = [a for name, a in d.journal.records if name == "commit"]
    assert [(c[0], c[1], [r[0] for r in c[3]]) for c in commits] == [(0, 10, [0])]   # the held commit first
    assert sent[0][1].offset == 10 and [b.id for b in sent[0][1].assign.batches] == [2]
    d.handle(1, Report(2, (attempt(2, 1, nbytes=5),), 5, credits=1, commit=Commit(1, 0.5)))
    assert sent[-1][1].assign is None and d.peers[1].running is None  # nothing left: offset alone
    d.step()
    assert not any(isinstance(m, Stop) for _, m in sent)              # flush 2 is not committed yet
    d.handle(1, Commit(2, 0.1))
    d.step()
    assert d.acc.batches_ok == 3 and any(isinstance(m, Stop) for _, m in sent)


def test_credits_on_a_report_without_bytes_are_served_in_the_pass():
    d, sent = make(4)
    d.handle(1, Request(1))
    d.handle(2, Request(1))
    d.step()
    sent.clear()
    d.handle(1, Report(0, (attempt(0, 1),), 0, credits=2))
    assert sent == [] and d.acc.batches_ok == 1                       # no bytes: done, no Offset
    d.step()
    assert assigned(sent, 1) == [2, 3] and d.peers[1].ready
    d.handle(2, Report(0, (attempt(1, 2, status=Status.FAILED),), 0, credits=1))
    d.step()
    assert d.retries and d.peers[2].last_error == "Boom"              # retried, not dealt back to rank 2


def test_rows_a_worker_formatted_are_logged_as_sent_when_every_ok_attempt_is_taken():
    from prs_mpi.runlog import committed_rows
    d, sent = make(4)
    logged = []
    d.attempts_log.committed = lambda ok, write_seconds, rows=None: logged.append(([a.batch_id for a in ok], rows))
    d.handle(1, Request(3))
    d.step()
    ok0, failed1, ok2 = attempt(0, 1), attempt(1, 1, status=Status.FAILED), attempt(2, 1)
    d.handle(1, Report(0, (ok0, failed1, ok2), 0, rows=committed_rows([ok0, ok2], 0.0)))
    assert logged == [([0, 2], committed_rows([ok0, ok2], 0.0))]
    d.handle(1, Report(1, (attempt(2, 1),), 0, rows="stale"))       # already done: not taken
    assert logged[1:] == []


def test_idle_worker_steals_unstarted_batches():
    d, sent = make(6)
    d.handle(1, Request(6))
    d.step()
    assert assigned(sent, 1) == [0, 1, 2, 3, 4, 5]
    d.handle(2, Request(2))
    d.step()   # listing is done and nothing is left: rank 2 is idle → revoke from rank 1
    revokes = [m for dest, m in sent if dest == 1 and isinstance(m, Revoke)]
    assert len(revokes) == 1 and 0 not in revokes[0].batch_ids and revokes[0].batch_ids
    # rank 1 had already started 3: it gives back only the others
    given = tuple(i for i in revokes[0].batch_ids if i != 3)
    d.handle(1, Revoked(given))
    d.step()
    assert assigned(sent, 2) == sorted(given)[:2]
    assert set(assigned(sent, 2)).isdisjoint({0, 1, 2, 3} - set(given))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now

    @staticmethod
    def perf_counter():
        return time.perf_counter()


def clocked(monkeypatch, n_batches, speculative=True):
    """A dispatcher for ranks 1 and 2 whose clock the test moves."""
    clock = Clock()
    monkeypatch.setattr(dispatcher_mod, "time", clock)
    d, sent = make(n_batches, ranks=(1, 2), speculative=speculative)
    return d, sent, clock


def straggling(monkeypatch):
    """Rank 1 holds mini-batch 3 long after the 7 others each took 1 s; rank 2 is idle."""
    d, sent, clock = clocked(monkeypatch, 8)
    d.handle(1, Request(4))
    d.handle(2, Request(4))
    d.step()
    assert assigned(sent, 1) == [0, 1, 2, 3]
    finish(d, 1, [0, 1, 2])
    finish(d, 2, [4, 5, 6, 7])
    d.handle(2, Request(1))
    d.step()
    assert assigned(sent, 2) == [4, 5, 6, 7]        # not yet: 3 has not run 1.5 median times
    clock.now += 2.0
    d.step()
    return d, sent, clock


def test_an_idle_worker_copies_a_straggler_and_the_first_success_wins(monkeypatch):
    d, sent, clock = straggling(monkeypatch)
    assert assigned(sent, 2) == [4, 5, 6, 7, 3] and d.copies == {3: (1, 2)} and d.acc.speculated == 1
    d.step()
    assert d.acc.speculated == 1                    # one copy per mini-batch
    d.handle(2, Report(1, (attempt(3, 2, nbytes=8),), 8))        # the copy wins
    assert [m for dest, m in sent if dest == 1 and isinstance(m, Cancel)] == [Cancel((3,))]
    win = [m for dest, m in sent if dest == 2 and isinstance(m, Offset)][-1]
    assert (win.offset, win.drop) == (0, ())
    d.handle(1, Report(1, (attempt(3, 1, nbytes=8),), 8))        # crossed the Cancel
    late = [m for dest, m in sent if dest == 1 and isinstance(m, Offset)][-1]
    assert (late.offset, late.drop) == (8, (3,)) and d.end == 8    # its rows take no room
    d.handle(2, Commit(1, 0.0))
    d.handle(1, Commit(1, 0.0))
    d.step()
    assert d.acc.batches_ok == 8 and d.acc.items_ok == 16
    journaled = [row[0] for name, a in d.journal.records if name == "commit" for row in a[3]]
    assert sorted(journaled) == list(range(8))     # 3 once: the copy's
    # both attempts are in processed_mini_batches.csv (the loser as "superseded")
    assert sorted(r.rank for r in d.attempts_log.rows if getattr(r, "batch_id", None) == 3) == [1, 2]
    assert any(isinstance(m, Stop) for _, m in sent)


def test_a_failed_copy_leaves_the_decision_to_the_other(monkeypatch):
    d, sent, clock = straggling(monkeypatch)
    d.handle(1, Report(1, (attempt(3, 1, status=Status.FAILED),)))   # the original fails
    assert d.acc.retries == 0 and not d.retries and not [m for _, m in sent if isinstance(m, Cancel)]
    d.handle(2, Report(1, (attempt(3, 2, nbytes=8),), 8))
    d.handle(2, Commit(1, 0.0))
    d.step()
    assert d.acc.batches_ok == 8 and d.acc.batches_failed == 0


def test_a_straggler_is_copied_once_a_revoke_finds_all_it_holds_begun(monkeypatch):
    d, sent, clock = clocked(monkeypatch, 9)
    d.handle(1, Request(4))
    d.handle(2, Request(5))
    d.step()
    finish(d, 1, [0, 1])                            # 2 and 3 are both in rank 1's child
    finish(d, 2, [4, 5, 6, 7, 8])
    d.handle(2, Request(1))
    clock.now += 2.0
    d.step()
    assert [m for dest, m in sent if dest == 1 and isinstance(m, Revoke)] == [Revoke((3,))] and not d.copies
    d.handle(1, Revoked(()))                        # nothing unstarted: stealing cannot help
    clock.now += 0.1                                # the next look for stragglers (SPECULATE_EVERY)
    d.step()
    assert d.copies == {2: (1, 2)} and assigned(sent, 2)[-1] == 2
    assert len([m for _, m in sent if isinstance(m, Revoke)]) == 1   # no Revoke loop


def test_speculation_is_off_unless_asked(monkeypatch):
    d, sent, clock = clocked(monkeypatch, 3, speculative=False)
    d.handle(1, Request(3))
    d.step()
    finish(d, 1, [0, 1])
    d.handle(2, Request(1))
    clock.now += 100
    d.step()
    assert assigned(sent, 2) == [] and not d.copies


def test_retry_goes_to_another_rank_then_fails_after_run_max_try():
    d, sent = make(1, ranks=(1, 2), run_max_try=2)
    d.handle(1, Request(1))
    d.step()
    finish(d, 1, [0], status=Status.CRASHED)
    d.handle(1, Request(1))
    d.step()
    assert assigned(sent, 1) == [0]        # not again to rank 1 while rank 2 may take it
    d.handle(2, Request(1))
    d.step()
    second = [m for dest, m in sent if dest == 2 and isinstance(m, Assign)]
    assert second and second[0].attempts == (2,)
    finish(d, 2, [0], status=Status.TIMEOUT, attempt_no=2)
    assert d.acc.batches_failed == 1 and d.acc.items_failed == 2 and d.acc.retries == 1


@pytest.mark.parametrize("failed_items,threshold,stops", [(10, 10, False), (11, 10, True), (1, 0, True)])
def test_error_threshold_is_exceeded_only_above(failed_items, threshold, stops):
    d, sent = make(40, ranks=(1,), per=1, error_threshold=threshold)
    d.handle(1, Request(40))
    d.step()
    for i in range(failed_items):
        d.handle(1, Report(0, (attempt(i, 1, succeeded=0, nitems=1),)))
    d.step()
    stop = [m for _, m in sent if isinstance(m, Stop)]
    assert bool(stop) == stops
    if stops:
        assert stop[0].abort and "error_threshold exceeded" in stop[0].reason and d.stop_state == "failed"


@pytest.mark.parametrize("failed,allowed,stops", [(2, 2, False), (3, 2, True)])
def test_allowed_failed_count_boundary(failed, allowed, stops):
    d, sent = make(10, ranks=(1,), run_max_try=1, allowed_failed_count=allowed)
    d.handle(1, Request(10))
    d.step()
    finish(d, 1, list(range(failed)), status=Status.FAILED)
    d.step()
    assert any(isinstance(m, Stop) for _, m in sent) == stops


@pytest.mark.parametrize("failed,pct,stops", [(2, 20.0, False), (3, 20.0, True)])
def test_allowed_failed_percent_checked_once_listing_is_known(failed, pct, stops):
    d, sent = make(10, ranks=(1,), run_max_try=1, allowed_failed_percent=pct)
    d.handle(1, Request(10))
    d.step()
    finish(d, 1, list(range(failed)), status=Status.FAILED)
    d.step()
    assert any(isinstance(m, Stop) and m.abort for _, m in sent) == stops


def test_partial_returns_count_items_not_batches():
    d, _ = make(2, ranks=(1,), per=4)
    d.handle(1, Request(2))
    d.step()
    d.handle(1, Report(0, (attempt(0, 1, Status.PARTIAL, succeeded=3, nitems=4),
                           attempt(1, 1, succeeded=4, nitems=4))))
    assert (d.acc.batches_ok, d.acc.batches_failed, d.acc.items_ok, d.acc.items_failed) == (2, 0, 7, 1)


def test_leaving_worker_returns_its_queue_and_last_one_ends_the_job():
    d, sent = make(4, ranks=(1, 2))
    d.handle(1, Request(2))
    d.step()
    d.handle(1, Leaving("init() failed: ImportError: no module named tf", (0, 1)))
    d.handle(2, Request(4))
    d.step()
    assert assigned(sent, 2) == [0, 1, 2, 3]
    d.handle(2, Leaving("init() failed again", (0, 1, 2, 3)))
    d.step()
    stop = [m for _, m in sent if isinstance(m, Stop)]
    assert stop and stop[0].abort and "every worker left the job" in stop[0].reason
    assert "init() failed" in stop[0].reason


def test_empty_input_stops_with_a_clear_reason():
    d, sent = make(0, ranks=(1,))
    d.step()
    assert d.stop_state == "failed" and "input is empty" in d.stop_reason


def test_rank0_may_sleep_only_while_every_worker_holds_work_beyond_its_running_one(monkeypatch):
    """Dispatcher.patience: a quarter of the least slack any worker holds, 0 while one waits."""
    def done(rank, bid, credits=0):
        a = attempt(bid, rank)
        a.end = a.start + 0.02
        d.handle(rank, Report(0, (a,), 0, credits=credits))

    d, sent = make(20, ranks=(1, 2))
    d.handle(1, Request(3))
    d.handle(2, Request(2))
    d.step()
    assert d.patience == 0.0                         # no run time measured yet
    done(1, 0)                                       # ranks 1 and 2 hold 2 apiece
    assert d.mean_run == 0.02 and d.patience == pytest.approx(1 * 0.02 / 4)
    done(2, 3, credits=1)
    assert d.patience == 0.0                         # rank 2 asks: it is answered at once
    d.step()
    assert assigned(sent, 2) == [3, 4, 5] and d.patience == pytest.approx(0.005)
    done(1, 1)                                       # rank 1 holds its running one only
    assert d.patience == 0.0
    d.handle(1, Request(3))
    d.step()
    assert d.patience == pytest.approx(0.005)        # rank 2 holds the least: 2
    monkeypatch.setattr(dispatcher_mod, "PATIENT_PEERS", 1)
    assert d.patience == 0.0                         # too many peers to walk each pass
    monkeypatch.setattr(dispatcher_mod, "PATIENT_PEERS", 64)
    monkeypatch.setattr(dispatcher_mod, "PATIENT_RUN", 0.01)
    assert d.patience == 0.0                         # long mini-batches: rank 0 stays prompt
    monkeypatch.setattr(dispatcher_mod, "PATIENT_RUN", 0.05)
    d.begin_stop("allowed_failed_count exceeded", "failed")
    assert d.patience == 0.0                         # stopping: every message counts
