"""Real jobs under mpiexec with leaders forced on (6 ranks, a relay every 3: ranks 3-5 talk to
rank 0 through rank 3): exactly once, retries on another rank, stealing, thresholds, kill/resume."""
from __future__ import annotations

import time

import pytest

from jobkit import launch
from test_mpi_runs import RAISE_ON, SLOW_ECHO, expected_names
from test_reliability import (SLOW_ECHO as RANDOM_ECHO, check_no_torn_or_duplicate, committed_prefix, expected_line,
                              kill_job, start)

pytestmark = pytest.mark.mpi
LEADERS = {"ranks_per_leader": 3}


def attempts_rows(jobdir) -> list[list[str]]:
    text = (jobdir.out / "logs" / "sys" / "processed_mini_batches.csv").read_text()
    return [line.split(",") for line in text.splitlines()[1:]]


def test_every_item_exactly_once_through_a_leader(jobdir):
    jobdir.files(90)
    jobdir.script(SLOW_ECHO)
    r = launch(6, ["run", str(jobdir.job(mini_batch_size=1, dispatch=LEADERS))])
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == expected_names(90)
    rows = attempts_rows(jobdir)
    assert len(rows) == 90
    ranks = {int(row[2]) for row in rows}
    assert ranks & {4, 5}, f"no member of the relayed group did any work: {ranks}"
    assert "leaders: 1 relay rank(s) [3]" in (jobdir.out / "logs" / "sys" / "rank0.log").read_text()


def test_long_mini_batches_with_a_reserve_behind_the_leader(jobdir):
    """From 50 ms on, a worker behind a leader holds one mini-batch in reserve and its Reports wait
    for the bundle to fill; the tail takes reserves back by stealing: still exactly once."""
    jobdir.files(40)
    jobdir.script(SLOW_ECHO.replace("0.02", "0.07"))
    r = launch(6, ["run", str(jobdir.job(mini_batch_size=1, dispatch=LEADERS))])
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == expected_names(40)
    rows = attempts_rows(jobdir)
    assert sorted(int(row[0]) for row in rows) == list(range(40))          # one attempt each
    assert {int(row[2]) for row in rows} & {4, 5}


def test_short_mini_batches_with_prefetch_and_stealing(jobdir):
    """Tiny mini-batches are prefetched, so the end of the job revokes queued ones: still once."""
    jobdir.files(300)
    jobdir.script(SLOW_ECHO.replace("0.02", "0.001"))
    r = launch(6, ["run", str(jobdir.job(mini_batch_size=1, prefetch=8, dispatch=LEADERS))])
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == expected_names(300)
    assert jobdir.result()["mini_batches"]["total"] == 300


def test_failing_mini_batches_are_retried_on_other_ranks(jobdir):
    jobdir.files(24)
    jobdir.script(RAISE_ON.format(bad="{'f00004.txt', 'f00017.txt'}"))
    job = jobdir.job(mini_batch_size=1, run_max_try=3, allowed_failed_count=2, dispatch=LEADERS)
    r = launch(6, ["run", str(job)])
    assert r.returncode == 0, r.output
    res = jobdir.result()
    assert res["mini_batches"]["failed"] == 2 and res["mini_batches"]["retried"] == 4
    tries = [(row[0], row[2]) for row in attempts_rows(jobdir) if row[13] == "failed"]
    assert len(tries) == 6
    for bid in {b for b, _ in tries}:
        assert len({rank for b, rank in tries if b == bid}) == 3     # three different ranks


def test_threshold_aborts_the_job_with_exit_code_1(jobdir):
    jobdir.files(60)
    jobdir.script(RAISE_ON.format(bad="{'f00003.txt', 'f00011.txt', 'f00021.txt', 'f00040.txt'}"))
    r = launch(6, ["run", str(jobdir.job(mini_batch_size=1, run_max_try=1, allowed_failed_count=2,
                                         dispatch=LEADERS))])
    assert r.returncode == 1, r.output
    assert "allowed_failed_count exceeded" in r.stderr
    rows = jobdir.rows()
    assert len(rows) == len(set(rows))
    assert jobdir.result()["state"] == "failed"


def test_kill9_mid_run_then_resume_through_leaders(jobdir):
    n = 400
    jobdir.files(n)
    jobdir.script(RANDOM_ECHO.replace("0.0, 0.03", "0.02, 0.05"))
    job = jobdir.job(mini_batch_size=2, flush_interval=0.05, status_interval=0.5, dispatch=LEADERS)
    proc = start(job, 6)
    out = jobdir.out / "parallel_run_step.txt"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 200):
        time.sleep(0.05)
    assert proc.poll() is None, "the job finished before it could be killed: make it longer"
    kill_job(proc, jobdir.out)
    check_no_torn_or_duplicate(committed_prefix(jobdir.out), n)   # past it: holes and torn rows, cut on resume
    r = launch(6, ["run", str(job), "--resume"], timeout=300)
    assert r.returncode == 0, r.output
    got = check_no_torn_or_duplicate(jobdir.rows(), n)
    assert got == {expected_line(i) for i in range(n)}
    assert jobdir.result()["items"] == {"total": n, "succeeded": n, "failed": 0}
