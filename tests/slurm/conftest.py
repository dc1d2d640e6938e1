"""Fixtures for tests against a real single-node Slurm (scripts/slurm/start-slurm.sh).

The session fixture starts Slurm (installing slurm-wlm + munge with apt-get if needed) and
skips every test here, with the reason, where that cannot be done (not root, no apt-get,
install refused).  A cluster that was already running is left running; one the fixture
started is stopped again at the end of the session.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START = REPO / "scripts" / "slurm" / "start-slurm.sh"
STOP = REPO / "scripts" / "slurm" / "stop-slurm.sh"
CANNOT_RUN_HERE = 3  # start-slurm.sh's exit code for "not root / no apt / install failed"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}


def _alive(pidfile: str) -> bool:
    try:
        os.kill(int(Path(pidfile).read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm; yields the node's host name."""
    if os.geteuid() != 0:
        pytest.skip("Slurm tests need root (they start munged, slurmctld and slurmd); "
                    "run them as root, e.g. in .ci/run")
    was_running = _alive("/run/slurm/slurmctld.pid") and _alive("/run/slurm/slurmd.pid")
    try:
        res = subprocess.run([str(START)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("scripts/slurm/start-slurm.sh did not finish in 600 s (apt-get stuck?)")
    if res.returncode == CANNOT_RUN_HERE:
        pytest.skip(f"Slurm cannot run here: {res.stderr.strip().splitlines()[-1]}")
    if res.returncode != 0:
        pytest.fail(f"start-slurm.sh failed (exit {res.returncode}):\n{res.stderr}")
    yield os.uname().nodename.split(".")[0]
    if not was_running:
        subprocess.run([str(STOP)], capture_output=True, text=True, timeout=120)


@dataclass
class JobRun:
    job_id: str
    state: str
    exit_code: str  # "rc:signal" as scontrol reports it
    output: str
    submitted: float  # time.time() of sbatch
    started: float | None  # first time the job was seen RUNNING (poll resolution)
    info: dict


def scontrol_job(job_id: str) -> dict:
    res = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", res.stdout)) if res.returncode == 0 else {}


def wait_job(job_id: str, timeout: float, poll: float = 0.1, on_running=None) -> tuple[dict, float | None]:
    """Poll scontrol until the job is in a terminal state; fail the test at the deadline."""
    deadline, started, info = time.monotonic() + timeout, None, {}
    while time.monotonic() < deadline:
        info = scontrol_job(job_id)
        state = info.get("JobState")
        if state == "RUNNING" and started is None:
            started = time.time()
            if on_running:
                on_running(job_id)
        if state in TERMINAL:
            return info, started
        time.sleep(poll)
    subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    pytest.fail(f"Slurm job {job_id} not finished after {timeout:.0f} s "
                f"(last state {info.get('JobState')}, reason {info.get('Reason')})")


@pytest.fixture
def run_sbatch(slurm_cluster, tmp_path):
    """run_sbatch(text, *sbatch_args, script_args=(), timeout=120, env=None, on_running=None)
    -> JobRun, once the job has ended; on_running(job_id) is called when it first runs."""
    def run(text: str, *args: str, script_args=(), timeout: float = 120,
            env: dict | None = None, on_running=None) -> JobRun:
        script = tmp_path / f"job{len(list(tmp_path.glob('job*.sbatch')))}.sbatch"
        script.write_text(text)
        out = tmp_path / f"{script.stem}-%j.out"
        t0 = time.time()
        res = subprocess.run(["sbatch", "--parsable", f"--output={out}", *args, str(script), *script_args],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env=dict(os.environ, **(env or {})))
        assert res.returncode == 0, f"sbatch failed: {res.stderr}"
        job_id = res.stdout.strip().split(";")[0]
        info, started = wait_job(job_id, timeout, on_running=on_running)
        log = Path(str(out).replace("%j", job_id))
        return JobRun(job_id, info.get("JobState", "?"), info.get("ExitCode", "?"),
                      log.read_text() if log.exists() else "", t0, started, info)
    return run
