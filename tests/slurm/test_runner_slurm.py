"""prs-mpi itself on the real single-node Slurm: srun --mpi=pmi2, mpiexec inside the
allocation, `prs-mpi submit --wait`, and a USR1'd job that is requeued and resumes with
every item exactly once."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prs_mpi import submit as sb

pytestmark = pytest.mark.slurm

PY = sys.executable
N_ITEMS = 40


def make_job(root: Path, sleep: float = 0.0, status_interval: float = 5.0) -> Path:
    """40 small text files, mini_batch_size 2, run() returns each path (one line per item)."""
    (root / "data").mkdir(parents=True)
    for i in range(N_ITEMS):
        (root / "data" / f"f{i:02d}.txt").write_text(f"item {i}\n")
    (root / "score.py").write_text(
        "import time\n\ndef init():\n    pass\n\n\ndef run(mini_batch):\n"
        f"    time.sleep({sleep})\n    return [f\"{{p}}\" for p in mini_batch]\n")
    job = root / "job.toml"
    job.write_text(f'entry_script = "score.py"\nsource_directory = "."\nmini_batch_size = 2\n'
                   f'output_dir = "runs/t"\nprocess_count_per_node = 8\nnode_count = 1\n'
                   f'status_interval = {status_interval}\n'
                   f'[input]\nkind = "file"\npaths = ["data/*.txt"]\n')
    return job


def check_exactly_once(root: Path) -> dict:
    out = root / "runs" / "t"
    lines = (out / "parallel_run_step.txt").read_text().splitlines()
    expected = sorted(str(p) for p in (root / "data").glob("*.txt"))
    assert len(expected) == N_ITEMS
    assert sorted(lines) == expected, "every item exactly once, rows intact"
    result = json.loads((out / "job_result.json").read_text())
    assert result["state"] == "succeeded" and result["items"]["succeeded"] == N_ITEMS
    return result


def first_batch_start(root: Path) -> float:
    with open(root / "runs" / "t" / "logs" / "sys" / "processed_mini_batches.csv") as fh:
        return min(float(r["start"]) for r in csv.DictReader(fh))


@pytest.mark.parametrize("launcher", [f"srun --mpi=pmi2 {PY} -m prs_mpi",
                                      f"{sys.prefix}/bin/mpiexec -n 8 {PY} -m prs_mpi"],
                         ids=["srun-pmi2", "mpiexec"])
def test_prs_mpi_run_in_an_8_task_allocation(run_sbatch, tmp_path, launcher):
    job = make_job(tmp_path)
    run = run_sbatch(f"#!/bin/bash\n#SBATCH --ntasks=8\n{launcher} run {job}\n")
    assert run.state == "COMPLETED", run.output
    result = check_exactly_once(tmp_path)
    assert result["ranks"] == 8, result
    print(f"\n{launcher.split()[0]}: sbatch -> first mini-batch "
          f"{first_batch_start(tmp_path) - run.submitted:.2f} s, prs-mpi wall "
          f"{result['wall_seconds']:.2f} s")


def test_prs_mpi_submit_wait(slurm_cluster, tmp_path):
    job = make_job(tmp_path)
    t0 = time.time()
    res = subprocess.run([PY, "-m", "prs_mpi", "submit", str(job), "--wait"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "submitted Slurm job" in res.stdout
    assert "ended: prs-mpi run succeeded; exit code 0" in res.stdout
    check_exactly_once(tmp_path)
    assert (tmp_path / "runs" / "t" / "submit.sbatch").exists()
    print(f"\nprs-mpi submit --wait: {time.time() - t0:.2f} s end to end, first mini-batch "
          f"after {first_batch_start(tmp_path) - t0:.2f} s")


def test_usr1_requeue_resumes_with_every_item_once(slurm_cluster, tmp_path):
    job = make_job(tmp_path, sleep=1.0, status_interval=0.3)
    out = tmp_path / "runs" / "t"
    res = subprocess.run([PY, "-m", "prs_mpi", "submit", str(job)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.split("Slurm job ")[1].split()[0]
    deadline, done = time.monotonic() + 90, 0
    while time.monotonic() < deadline:  # interrupt once some, not all, items are committed
        status = sb._read_json(out / "status.json") or {}
        done = (status.get("items") or {}).get("done") or 0
        if done >= 4:
            break
        time.sleep(0.1)
    assert 4 <= done < N_ITEMS, f"job {job_id} never got part-way ({done} items done)"
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True, timeout=30)
    lines = []
    code = sb.wait(job_id, out, poll=0.5, out=lines.append, timeout=240)
    assert code == 0, "\n".join(lines) + (out / f"slurm-{job_id}.out").read_text()
    assert sb.job_info(job_id).get("Restarts") == "1"
    log = (out / f"slurm-{job_id}.out").read_text()
    assert "requeueing job" in log, log
    check_exactly_once(tmp_path)
