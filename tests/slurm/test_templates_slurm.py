"""slurm/*.sbatch on the real Slurm, with a stand-in for prs-mpi (PRS=...): the launch line,
SRUN_CPUS_PER_TASK, USR1 forwarding, requeue on exit 75 and --resume on the requeued run."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]

FAKE_PRS = """\
import os, signal, sys, time
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
from mpi4py import MPI
c = MPI.COMM_WORLD
resume = "--resume" in sys.argv
open(os.path.join(os.environ["FAKE_READY"], f"{os.environ.get('SLURM_RESTART_COUNT', '0')}.{c.rank}"), "w").close()
deadline = time.time() + 60
while not resume and not got and time.time() < deadline:
    time.sleep(0.05)
sys.stdout.write(f"rank={c.rank} size={c.size} restart={os.environ.get('SLURM_RESTART_COUNT', '0')} "
                 f"resume={resume} usr1={bool(got)} cpt={os.environ.get('SRUN_CPUS_PER_TASK')} "
                 f"job={sys.argv[-2] if resume else sys.argv[-1]}\\n")
c.Barrier()
sys.exit(75 if got else 0)
"""


def test_cpu_template_requeues_on_usr1_and_resumes(run_sbatch, tmp_path):
    fake, ready = tmp_path / "fake_prs.py", tmp_path / "ready"
    fake.write_text(FAKE_PRS)
    ready.mkdir()
    times = {}

    def on_running(job_id):  # signal once every rank of the first run has its handler
        deadline = time.monotonic() + 60
        while len(list(ready.glob("0.*"))) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True, timeout=30)
        times["signalled"] = time.time()

    job = run_sbatch((REPO / "slurm" / "cpu.sbatch").read_text(), script_args=["/jobs/job.toml"],
                     env={"PRS": f"{sys.executable} {fake}", "FAKE_READY": str(ready)},
                     timeout=180, on_running=on_running)
    assert job.state == "COMPLETED", job.output
    assert job.info.get("Restarts") == "1"
    rows = [dict(kv.split("=") for kv in ln.split()) for ln in job.output.splitlines()
            if ln.startswith("rank=")]
    first = [r for r in rows if r["restart"] == "0"]
    second = [r for r in rows if r["restart"] == "1"]
    assert sorted(int(r["rank"]) for r in first) == list(range(8)), job.output
    assert sorted(int(r["rank"]) for r in second) == list(range(8)), job.output
    assert all(r["usr1"] == "True" and r["resume"] == "False" for r in first)
    assert all(r["usr1"] == "False" and r["resume"] == "True" for r in second)
    assert all(r["cpt"] == "1" and r["job"] == "/jobs/job.toml" and r["size"] == "8"
               for r in rows)
    assert "requeueing job" in job.output
    print(f"\nrequeue: USR1 -> running again took "
          f"{min(p.stat().st_mtime for p in ready.glob('1.*')) - times['signalled']:.1f} s")
