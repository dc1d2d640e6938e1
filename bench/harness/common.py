"""Shared harness plumbing: paths, the peers' environment, timed subprocesses, result rows."""
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
WORK = BENCH / "work"
PEERS = BENCH / "peers"
WORKLOADS = BENCH / "workloads"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


class PeerError(RuntimeError):
    """A contender's subprocess failed, timed out or printed no JSON result."""


def mpiexec() -> str:
    """The ``mpiexec`` next to this interpreter (the venv's MPICH wheel), else the one on PATH."""
    local = BIN / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if not found:
        raise PeerError("no mpiexec next to this Python or on PATH; install the project with "
                        "its 'mpich' extra (pip install -e '.[mpich]')")
    return found


def peer_env() -> dict[str, str]:
    """Environment for every contender: bench/ importable, BLAS on one thread."""
    env = dict(os.environ, **ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), str(PEERS),
                                                      os.environ.get("PYTHONPATH")]))
    return env


def peer(script: str, *args) -> list[str]:
    """Command line running ``bench/peers/<script>`` with this interpreter."""
    return [PYTHON, str(PEERS / script), *map(str, args)]


def futures_peer(script: str, *args) -> list[str]:
    """Command line running a peer under ``python -m mpi4py.futures`` (workers = other ranks)."""
    return [PYTHON, "-m", "mpi4py.futures", str(PEERS / script), *map(str, args)]


def mpi(ranks: int, cmd: list[str]) -> list[str]:
    return [mpiexec(), "-n", str(ranks), *cmd]


def launch(cmd: list[str], timeout: float, env: dict | None = None,
           watch: Callable[[int], object] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` in its own process group and return (result, seconds from launch to exit).

    On timeout the whole group (mpiexec, its proxies and ranks) is killed. ``watch(pid)`` is
    called right after the start, e.g. to sample the process tree's memory.
    """
    log.debug("running %s", " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or peer_env(), cwd=ROOT, start_new_session=True)
    if watch is not None:
        watch(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise PeerError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    outer = time.perf_counter() - t0
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), outer


def failure(proc: subprocess.CompletedProcess) -> PeerError:
    """An error naming the command, its exit code and the end of its output."""
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
    return PeerError(f"exit code {proc.returncode} from {' '.join(proc.args)}:\n  "
                     + "\n  ".join(tail))


def run_json(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd``, return the last JSON line it printed plus ``outer_s`` (launch to exit)."""
    proc, outer = launch(cmd, timeout, env)
    if proc.returncode != 0:
        raise failure(proc)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise PeerError(f"no JSON line in the output of {' '.join(cmd)}")
    record = json.loads(lines[-1])
    record["outer_s"] = outer
    return record


@dataclass
class Row:
    """One contender's figures for one metric; ``samples`` are the repetitions' values."""

    workload: str
    contender: str
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""
    refs: tuple[str, ...] = ()  # contenders of the same workload this row is compared with
    lower_is_better: bool = False

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Section:
    """A workload's rows plus free-text facts (parameters, recorded inputs, skipped contenders)."""

    title: str
    rows: list[Row] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # extra markdown blocks


def interleave(contenders: dict[str, Callable[[], dict]], reps: int) -> dict[str, list[dict]]:
    """Run every contender once per repetition, in turn; a contender that fails is dropped
    from later repetitions and its error kept under the key ``"error"`` of its last record."""
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    failed: set[str] = set()
    for rep in range(reps):
        for name, fn in contenders.items():
            if name in failed:
                continue
            try:
                results[name].append(fn())
                log.info("  rep %d %-28s ok", rep + 1, name)
            except PeerError as exc:
                log.warning("  rep %d %-28s FAILED: %s", rep + 1, name, exc)
                results[name].append({"error": str(exc)})
                failed.add(name)
    return results


def samples(records: list[dict], key: str) -> list[float]:
    """The values of ``key`` over the successful records."""
    return [r[key] for r in records if "error" not in r and r.get(key) is not None]


def error_of(records: list[dict]) -> str:
    """The last error, on one line (command line cut to its program), for a table cell."""
    errors = [r["error"] for r in records if "error" in r]
    if not errors:
        return ""
    first, *rest = errors[-1].splitlines()
    text = " / ".join([first.split(" from ")[0]] + [line.strip() for line in rest])
    return text.replace("|", "\\|")[:400]
