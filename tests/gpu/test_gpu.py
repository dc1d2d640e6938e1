"""On a machine with an NVIDIA GPU: discovery, pinning of worker children, and real GPU work.

Skipped where no GPU is found (CI has none); run on a GPU node with `pytest tests/gpu`.
The GPU work uses whichever framework is installed: PyTorch, else CuPy; the MNIST example
(TensorFlow) runs only where TensorFlow is installed.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prs_mpi import placement
from jobkit import JobDir, launch

GPUS = placement.physical_gpus()
pytestmark = pytest.mark.skipif(not GPUS, reason="no NVIDIA GPU found (NVML and nvidia-smi see none)")
FRAMEWORK = next((m for m in ("torch", "cupy") if importlib.util.find_spec(m)), None)
needs_framework = pytest.mark.skipif(FRAMEWORK is None, reason="neither PyTorch nor CuPy is installed")
ROOT = Path(__file__).resolve().parents[2]

# One row per file: which rank/process ran it, what it was allowed to see, where the math ran.
PROBE = """
import json, os, time
FRAMEWORK = {framework!r}

def init():
    global lib
    lib = __import__(FRAMEWORK)
    rank = os.environ["PRS_MPI_RANK"]
    total, name = _gpu_checksum(256)
    with open(os.path.join(os.environ["PRS_MPI_OUTPUT_DIR"], f"init-{{rank}}.json"), "w") as f:
        json.dump({{"rank": int(rank), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpu": name, "sum": total}}, f)

def _gpu_checksum(n):
    if FRAMEWORK == "torch":
        if not lib.cuda.is_available():
            return None, None
        a = lib.arange(n * n, dtype=lib.float32, device="cuda").reshape(n, n) / (n * n)
        return float((a @ a.T).sum().item()), lib.cuda.get_device_name(0)
    try:
        count = lib.cuda.runtime.getDeviceCount()
    except lib.cuda.runtime.CUDARuntimeError:
        count = 0
    if count == 0:
        return None, None
    a = lib.arange(n * n, dtype=lib.float32).reshape(n, n) / (n * n)
    name = lib.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return float((a @ a.T).sum()), name

def _wait_for_every_init(deadline=120.0):
    # hold the job until every rank has run init(), so the slow-to-start ones get work too
    out, ranks = os.environ["PRS_MPI_OUTPUT_DIR"], int(os.environ["PROBE_RANKS"])
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if all(os.path.exists(os.path.join(out, f"init-{{r}}.json")) for r in range(ranks)):
            return
        time.sleep(0.05)
    raise TimeoutError("not every rank finished init() within the deadline")

def run(mini_batch):
    _wait_for_every_init()
    total, name = _gpu_checksum(256)
    return [json.dumps({{"file": os.path.basename(p), "rank": int(os.environ["PRS_MPI_RANK"]),
                        "pid": os.getpid(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "gpu": name, "sum": total}}) for p in mini_batch]
"""


def expected_sum(n: int = 256) -> float:
    import numpy as np
    a = np.arange(n * n, dtype=np.float64).reshape(n, n) / (n * n)
    return float((a @ a.T).sum())


def probe_job(tmp_path: Path, ranks: int, **keys) -> JobDir:
    jd = JobDir(tmp_path)
    jd.files(24)
    jd.script(PROBE.format(framework=FRAMEWORK))
    jd.job(mini_batch_size=2, environment_variables={"PROBE_RANKS": str(ranks)}, **keys)
    return jd


def rows(jd: JobDir) -> list[dict]:
    return [json.loads(line) for line in jd.rows()]


def test_nvml_and_nvidia_smi_agree_on_the_gpus():
    smi = shutil.which("nvidia-smi")
    if smi is None:
        pytest.skip("nvidia-smi not on PATH")
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, check=True).stdout
    count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
    assert len(GPUS) == count
    assert placement.discover_gpus({}) == tuple(str(i) for i in range(count))
    if importlib.util.find_spec("pynvml"):
        assert placement._nvml_probe() == placement._smi_probe()


def test_plan_pins_children_to_the_gpus(tmp_path):
    jd = probe_job(tmp_path, 1)
    out = launch(None, ["plan", str(jd.root / "job.toml"), "--ranks-per-node", str(2 * len(GPUS))])
    assert out.returncode == 0, out.output
    for gpu in range(len(GPUS)):
        assert f"{gpu}" in out.stdout
    assert "round-robin" in out.output


@needs_framework
def test_every_worker_runs_on_its_gpu(tmp_path):
    n = 2 * len(GPUS) + 2
    jd = probe_job(tmp_path, n)
    out = launch(n, ["run", str(jd.root / "job.toml")], timeout=300)
    assert out.returncode == 0, out.output
    got = rows(jd)
    assert sorted(r["file"] for r in got) == sorted(f"f{i:05d}.txt" for i in range(24))
    inits = [json.loads((jd.out / f"init-{rank}.json").read_text()) for rank in range(n)]
    for r in got + inits:
        assert r["gpu"] and "NVIDIA" in r["gpu"], r
        assert r["sum"] == pytest.approx(expected_sum(), rel=1e-4)
        # round-robin: rank r's child sees GPU (local rank mod #GPUs) and nothing else
        assert r["cvd"] == str(r["rank"] % len(GPUS)), r


@needs_framework
def test_exclusive_leaves_extra_workers_on_cpu(tmp_path):
    n = len(GPUS) + 2
    jd = probe_job(tmp_path, n, placement={"gpu_sharing": "exclusive"})
    out = launch(n, ["run", str(jd.root / "job.toml")], timeout=300)
    assert out.returncode == 0, out.output
    by_rank: dict[int, set] = {}
    inits = [json.loads((jd.out / f"init-{rank}.json").read_text()) for rank in range(n)]
    for r in rows(jd) + inits:
        by_rank.setdefault(r["rank"], set()).add((r["cvd"], r["gpu"] is not None))
    for rank, seen in by_rank.items():
        if rank < len(GPUS):
            assert seen == {(str(rank), True)}, (rank, seen)
        else:
            assert seen == {("", False)}, (rank, seen)


@needs_framework
def test_device_cpu_hides_every_gpu(tmp_path):
    jd = probe_job(tmp_path, 2, placement={"device": "cpu"})
    out = launch(2, ["run", str(jd.root / "job.toml")], timeout=300)
    assert out.returncode == 0, out.output
    inits = [json.loads((jd.out / f"init-{rank}.json").read_text()) for rank in range(2)]
    assert {(r["cvd"], r["gpu"]) for r in rows(jd) + inits} == {("", None)}


@needs_framework
def test_outer_cuda_visible_devices_by_uuid_is_kept(tmp_path):
    uuid = GPUS[0][1]
    jd = probe_job(tmp_path, 2)
    out = launch(2, ["run", str(jd.root / "job.toml")], env={"CUDA_VISIBLE_DEVICES": uuid}, timeout=300)
    assert out.returncode == 0, out.output
    got = rows(jd)
    assert {r["cvd"] for r in got} == {uuid}
    assert all(r["gpu"] and r["sum"] == pytest.approx(expected_sum(), rel=1e-4) for r in got)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_mnist_example_on_the_gpu(tmp_path):
    example = ROOT / "scripts" / "examples" / "mnist"
    setup = subprocess.run(["bash", str(example / "setup.sh")], capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    out = launch(2, ["run", str(example / "job.toml"), "--set", f"output_dir={tmp_path / 'out'}"], timeout=600)
    assert out.returncode == 0, out.output
    check = subprocess.run([sys.executable, str(example / "check_results.py"),
                            "--results", str(tmp_path / "out" / "mnist_outputs.txt")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
