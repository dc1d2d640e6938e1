"""Exactly-once across crashes: kill -9 / resume cycles, lost ranks, poison pills, signals,
--retry-failed, allow_reuse, disk full, and a zoo of misbehaving entry scripts."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from jobkit import ECHO, MPIEXEC, PRS, launch
from prs_mpi.journal import read_records, replay
from prs_mpi.runner import STATE_DIR

pytestmark = pytest.mark.mpi
KILL_CYCLES = int(os.environ.get("PRS_KILL_CYCLES", "20"))

SLOW_ECHO = """
import os, random, time
def run(mini_batch):
    time.sleep(random.uniform(0.0, 0.03))
    # odd items carry a newline, escaped by prs-mpi into one line
    return [os.path.basename(p) + ("\\nodd" if int(p[-9:-4]) % 2 else "") for p in mini_batch]
"""


def expected_line(i: int) -> str:
    return f"f{i:05d}.txt" + ("\\nodd" if i % 2 else "")


def start(job: Path, nprocs: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([MPIEXEC, "-n", str(nprocs), *PRS, "run", str(job), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill_job(proc: subprocess.Popen, out_dir: Path) -> None:
    """kill -9 of the whole job: mpiexec, its proxies and every rank; children die with their rank."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _job_processes(out_dir):
        time.sleep(0.1)
    assert not _job_processes(out_dir), "processes of the killed job survive"


def _job_processes(out_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("PRS_MPI_OUTPUT_DIR") == str(out_dir):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def committed_prefix(out_dir: Path) -> list[str]:
    """The lines resume keeps: the journal's contiguous committed prefix of the output file.

    Past it the file may hold anything a killed job left: a later region written while an
    earlier one never was reads back as NUL bytes (a hole); resume cuts all of it off."""
    path = out_dir / "parallel_run_step.txt"
    if not path.exists():
        return []
    end = replay(str(out_dir / STATE_DIR)).kept_end()
    data = path.read_bytes()
    assert len(data) >= end, f"committed {end} bytes but the file holds {len(data)}"
    assert data[:end].endswith(b"\n") or end == 0, "the committed prefix ends mid-line"
    return data[:end].decode().splitlines()


def check_no_torn_or_duplicate(lines: list[str], n: int) -> set[str]:
    valid = {expected_line(i) for i in range(n)}
    assert all(line in valid for line in lines), [x for x in lines if x not in valid][:5]
    assert len(lines) == len(set(lines)), "duplicated rows"
    return set(lines)


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
def test_kill9_at_random_moments_then_resume(jobdir):
    """SIGKILL of the whole job at random instants, KILL_CYCLES times, then --resume to the end.

    The job is sized so that it cannot finish before the last kill (~100 mini-batches of work
    per cycle): every cycle really is a kill, mid-run."""
    n = 200 * KILL_CYCLES
    jobdir.files(n)
    jobdir.script(SLOW_ECHO.replace("0.0, 0.03", "0.03, 0.07"))
    # a kill from outside looks like a poison pill to resume (the job died under a mini-batch);
    # this test is about exactly-once, so every mini-batch gets more tries than there are kills
    job = jobdir.job(mini_batch_size=2, flush_interval=0.05, status_interval=0.5, run_max_try=KILL_CYCLES + 1)
    rng = random.Random(int(os.environ.get("PRS_KILL_SEED", "7")))
    kills, progressed = 0, 0
    committed_before = 0
    for cycle in range(KILL_CYCLES):
        proc = start(job, 4, *([] if cycle == 0 else ["--resume"]))
        time.sleep(rng.uniform(0.3, 2.5))
        assert proc.poll() is None, "the job finished before it could be killed: make it longer"
        kill_job(proc, jobdir.out)
        kills += 1
        check_no_torn_or_duplicate(committed_prefix(jobdir.out), n)
        committed = sum(r.get("t") == "commit" for r in read_records(str(jobdir.out / STATE_DIR)))
        progressed += committed > committed_before
        committed_before = committed
    r = launch(4, ["run", str(job), "--resume"], timeout=600)
    assert r.returncode == 0, r.output
    got = check_no_torn_or_duplicate(jobdir.rows(), n)
    assert got == {expected_line(i) for i in range(n)}
    res = jobdir.result()
    assert res["items"] == {"total": n, "succeeded": n, "failed": 0}
    assert kills == KILL_CYCLES and progressed >= KILL_CYCLES // 3      # some kills land during start-up
    print(f"{kills} kill -9 cycles, {progressed} of them after new commits; {n} items exactly once")


SLOW_RANK = """
import os, time
SLOW = os.environ.get("PRS_MPI_RANK") == "2"    # a slow node
def run(mini_batch):
    time.sleep(30.0 if SLOW else 0.05)
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
@pytest.mark.parametrize("leaders", [0, 2])
def test_speculation_reruns_a_slow_ranks_mini_batch_elsewhere_exactly_once(jobdir, leaders):
    """Rank 2 takes 30 s a mini-batch, the others 50 ms: at the tail an idle rank runs a copy,
    wins, and rank 2's copy is cancelled (its child killed); each row is written once."""
    n = 40
    jobdir.files(n)
    jobdir.script(SLOW_RANK)
    job = jobdir.job(mini_batch_size=1, dispatch={"speculative": True, "ranks_per_leader": leaders})
    r = launch(4, ["run", str(job)], timeout=120)
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == [f"f{i:05d}.txt" for i in range(n)]
    res = jobdir.result()
    assert res["items"]["succeeded"] == n and res["mini_batches"]["speculated"] >= 1
    assert "a copy runs on rank" in r.output and res["wall_seconds"] < 25


def test_lost_rank_ends_job_promptly_and_resume_finishes(jobdir):
    n = 120
    jobdir.files(n)
    jobdir.script(SLOW_ECHO.replace("0.03", "0.2"))
    job = jobdir.job(mini_batch_size=1)
    proc = start(job, 4)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                if p.environ().get("PMI_RANK") == "2" and "prs_mpi" in " ".join(p.cmdline()):
                    victim = p
            except psutil.Error:
                continue
        time.sleep(0.2)
    assert victim is not None
    time.sleep(2.0)
    victim.kill()
    t0 = time.monotonic()
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 30, "the job hung after losing a rank"
    r = launch(4, ["run", str(job), "--resume"])
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == sorted(expected_line(i) for i in range(n))


POISON = """
import os, signal, time
def run(mini_batch):
    if any(p.endswith('f00005.txt') for p in mini_batch):
        os.kill(os.getppid(), signal.SIGKILL)     # takes the whole MPI job down under it
        time.sleep(30)                            # (the child dies with its supervisor)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_poison_pill_that_kills_the_job_fails_after_run_max_try(jobdir):
    jobdir.files(12)
    jobdir.script(POISON)
    job = jobdir.job(mini_batch_size=1, run_max_try=2)
    codes = []
    for i in range(5):
        # one rank: no bystander mini-batch is in flight when the job dies (those count an attempt too)
        r = launch(1, ["run", str(job)] + (["--resume"] if i else []))
        codes.append(r.returncode)
        if r.returncode == 0:
            break
    assert codes[-1] == 0 and len(codes) == 3, codes      # two deaths, then failed without running
    res = jobdir.result()
    assert res["mini_batches"]["failed"] == 1 and res["items"]["succeeded"] == 11
    assert "poison pill" in (jobdir.out / "logs" / "job_error.txt").read_text()
    assert sorted(jobdir.rows()) == [f"f{i:05d}.txt" for i in range(12) if i != 5]


def test_sigterm_stops_gracefully_and_resume_completes(jobdir):
    n = 80
    jobdir.files(n)
    jobdir.script(SLOW_ECHO.replace("0.03", "0.3"))
    job = jobdir.job(mini_batch_size=1, status_interval=0.5)
    proc = start(job, 4)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = jobdir.out / "parallel_run_step.txt"
        if out.exists() and out.stat().st_size > 0:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, output
    assert "interrupted by SIGTERM" in output
    assert json.loads((jobdir.out / "job_result.json").read_text())["state"] == "interrupted"
    status = launch(None, ["status", str(jobdir.out)])
    assert status.returncode == 75
    fresh = launch(2, ["run", str(job)])
    assert fresh.returncode == 2 and "--resume" in fresh.stderr
    r = launch(4, ["run", str(job), "--resume"])
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == sorted(expected_line(i) for i in range(n))


BUGGY = """
import os
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch if {condition}]
"""


def test_retry_failed_reruns_only_the_failures(jobdir):
    jobdir.files(30)
    jobdir.script("""
import os
def run(mini_batch):
    for p in mini_batch:
        if p.endswith('7.txt'):
            raise KeyError('bug on ' + os.path.basename(p))
    return [os.path.basename(p) + ' v1' for p in mini_batch]
""")
    job = jobdir.job(mini_batch_size=2, run_max_try=1)
    r = launch(3, ["run", str(job)])
    assert r.returncode == 0, r.output
    assert jobdir.result()["mini_batches"]["failed"] == 3
    jobdir.script("""
import os
def run(mini_batch):
    return [os.path.basename(p) + ' v2' for p in mini_batch]
""")
    r = launch(3, ["run", str(job), "--retry-failed"])
    assert r.returncode == 0, r.output
    rows = jobdir.rows()
    assert len(rows) == 30 and len({x.split()[0] for x in rows}) == 30
    v2 = sorted(x.split()[0] for x in rows if x.endswith("v2"))
    assert v2 == ["f00006.txt", "f00007.txt", "f00016.txt", "f00017.txt", "f00026.txt", "f00027.txt"]
    assert jobdir.result()["items"]["failed"] == 0


def test_allow_reuse(jobdir):
    jobdir.files(10)
    jobdir.script(ECHO)
    job = jobdir.job(mini_batch_size=3)
    assert launch(2, ["run", str(job)]).returncode == 0
    out = jobdir.out / "parallel_run_step.txt"
    before = out.stat().st_mtime_ns
    r = launch(2, ["run", str(job)])
    assert r.returncode == 0 and "reused" in r.stderr and out.stat().st_mtime_ns == before
    # settings that change how, not what, still reuse
    r = launch(2, ["run", str(job), "--set", "dispatch.ranks_per_leader=1", "--set", "prefetch=4"])
    assert r.returncode == 0 and "reused" in r.stderr and out.stat().st_mtime_ns == before
    r = launch(2, ["run", str(job), "--set", "allow_reuse=false"])
    assert r.returncode == 0 and "reused" not in r.stderr and out.stat().st_mtime_ns != before
    (jobdir.data / "f00099.txt").write_text("new input\n")          # a changed input runs again
    r = launch(2, ["run", str(job)])
    assert r.returncode == 0 and "reused" not in r.stderr and len(jobdir.rows()) == 11
    jobdir.script(ECHO + "\n# changed\n")                            # a changed script runs again
    r = launch(2, ["run", str(job)])
    assert r.returncode == 0 and "reused" not in r.stderr


ZOO = """
import ctypes, os, random, sys, time
class Unprintable:
    def __str__(self):
        raise RuntimeError('cannot print me')
def run(mini_batch):
    out = []
    for p in mini_batch:
        kind = open(p).read().strip()
        if kind == 'raise':
            raise ValueError('bad item ' + os.path.basename(p))
        if kind == 'exit':
            os._exit(7)
        if kind == 'oom':
            hog = []
            while True:
                hog.append(bytearray(50 * 1024 * 1024))
        if kind == 'unprintable':
            out.append(Unprintable()); continue
        if kind == 'unpicklable':
            out.append(lambda: 1); continue
        if kind == 'chatty':
            sys.stdout.write('x' * 2_000_000 + '\\n')
        if kind == 'slow' and os.environ['PRS_MPI_RANK'] == '1':
            time.sleep(1.0)
        if kind == 'skip':
            continue
        out.append(os.path.basename(p))
    if any(open(p).read().strip() == 'toomany' for p in mini_batch):
        out += ['extra']
    return out
"""


def test_misbehaving_entry_scripts(jobdir):
    kinds = (["ok"] * 20 + ["raise", "exit", "oom", "unprintable", "unpicklable", "chatty", "skip", "toomany"]
             + ["slow"] * 6)
    jobdir.files(len(kinds), content=lambda i: kinds[i] + "\n")
    jobdir.script(ZOO)
    job = jobdir.job(mini_batch_size=1, run_max_try=2, child_memory_limit="400MB", run_invocation_timeout=30)
    r = launch(3, ["run", str(job)], timeout=300)
    assert r.returncode == 0, r.output
    res = jobdir.result()
    # failed mini-batches: raise, exit, oom, unprintable, toomany; 'skip' is an item failure
    assert res["mini_batches"]["failed"] == 5, res
    assert res["items"]["failed"] == 6 and res["items"]["succeeded"] == len(kinds) - 6
    rows = jobdir.rows()
    assert len(rows) == len(set(rows)) == len(kinds) - 6
    assert any(line.startswith("<function run.<locals>.<lambda>") for line in rows)   # str() of the lambda
    errors = (jobdir.out / "logs" / "job_error.txt").read_text()
    for needle in ("ValueError: bad item", "exited with code 7", "MemoryError", "cannot print me",
                   "returned 2 elements for a mini-batch of 1"):
        assert needle in errors, needle
    user_logs = "".join(p.read_text() for p in (jobdir.out / "logs" / "user").rglob("*.log"))
    assert "x" * 1000 in user_logs


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_fails_clearly_and_resume_after_freeing_space(jobdir, tmp_path):
    small = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(small, "600k"):
        pytest.skip("needs root and tmpfs to simulate a full disk")
    try:
        jobdir.files(300)
        jobdir.script("""
import os
def run(mini_batch):
    return [os.path.basename(p) + ' ' + 'y' * 4000 for p in mini_batch]
""")
        job = jobdir.job(mini_batch_size=5, output_dir=str(small / "out"), flush_bytes="16KB")
        r = launch(3, ["run", str(job)], timeout=120)
        assert r.returncode != 0
        assert "No space left on device" in r.output
        out = small / "out" / "parallel_run_step.txt"
        subprocess.run(["mount", "-o", "remount,size=20m", str(small)], check=True)
        r = launch(3, ["run", str(job), "--resume"], timeout=120)
        assert r.returncode == 0, r.output
        names = [line.split()[0] for line in out.read_text().splitlines()]
        assert sorted(names) == [f"f{i:05d}.txt" for i in range(300)]
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_start_log_charges_only_the_last_unfinished_start_of_each_run():
    from prs_mpi.journal import died_under
    log = b"R\nS 1 1\nS 2 1\nE 1 1\nS 3 1\nR\nS 3 2\nE 3 2\nS 4 1\nE 4 1\nR\nS 5 1\n".split(b"\n")
    # run 1 died under 3 (2 had finished: 3 started after it), run 2 ended cleanly, run 3 died under 5
    assert died_under(log) == [(3, 1), (5, 1)]


def test_a_death_under_two_copies_of_one_attempt_counts_once(tmp_path):
    """Speculation runs one attempt on two ranks: a job death under both is one death."""
    from prs_mpi.journal import read_started
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "rank1.log").write_bytes(b"R\nS 7 1\nR\nS 7 2\n")
    (tmp_path / "started" / "rank2.log").write_bytes(b"R\nS 8 1\nR\nS 7 2\n")
    assert read_started(str(tmp_path)) == {7: 2, 8: 1}


def test_read_only_output_dir_is_a_clear_error(jobdir, tmp_path):
    ro = tmp_path / "ro"
    if os.geteuid() != 0 or not _mount_tmpfs(ro, "1m"):
        pytest.skip("needs root and tmpfs to make a read-only file system")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        jobdir.files(3)
        jobdir.script(ECHO)
        r = launch(2, ["run", str(jobdir.job(output_dir=str(ro / "out")))])
        assert r.returncode == 2
        errors = [line for line in r.stderr.splitlines() if line.startswith("prs-mpi: error:")]
        assert len(errors) == 1 and "Read-only file system" in errors[0] and str(ro / "out") in errors[0]
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
