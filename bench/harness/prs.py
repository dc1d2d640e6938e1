"""The prs-mpi contender: write a job.toml, run it under mpiexec, read its ``job_result.json``.

``run_prs`` is the single hook every workload calls; asked to (``memory=True``), it samples each
rank's peak memory, and it derives, from ``logs/sys/processed_mini_batches.csv``, the span from the first mini-batch's
start to the last one's end (steady-state throughput), and that throughput without the capacity
of workers still in init() (``ready_items_per_s``: the peers start their clocks once every worker
is ready, at a barrier).
"""
import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.common import BIN, WORK, WORKLOADS, ONE_THREAD, PeerError, failure, launch, mpiexec
from harness.rss import TreeSampler

PRS_BIN = BIN / "prs-mpi"


@dataclass(frozen=True)
class PrsWorkload:
    """What to run: an entry script from ``bench/workloads`` over a listing file or globs."""

    name: str
    entry_script: str
    inputs: str  # a listing file (one item per line, ends in .txt) or a glob
    mini_batch_size: int = 1
    output_action: str = "summary_only"
    extra: dict = field(default_factory=dict)  # further job keys; a dict value is a table


def prs_missing() -> str | None:
    """Why the prs-mpi contender cannot run here, or None when it can."""
    if not PRS_BIN.exists():
        return (f"skipped: {PRS_BIN} does not exist yet (install the project into this venv: "
                "pip install -e .)")
    return None


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def job_toml(workload: PrsWorkload, isolation: str, output_dir: Path) -> str:
    """The job file's text."""
    paths = [f"@{workload.inputs}" if workload.inputs.endswith(".txt") else workload.inputs]
    extra = {k: v for k, v in workload.extra.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in workload.extra.items() if isinstance(v, dict)}   # e.g. [dispatch]
    top = {"entry_script": workload.entry_script, "source_directory": str(WORKLOADS),
           "mini_batch_size": workload.mini_batch_size, "output_dir": str(output_dir),
           "output_action": workload.output_action, "isolation": isolation, **extra}
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    lines += ["", "[input]", 'kind = "file"', f"paths = {_toml_value(paths)}", ""]
    for name, table in tables.items():
        lines += [f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items()), ""]
    lines += ["[environment_variables]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in ONE_THREAD.items()]
    return "\n".join(lines) + "\n"


def attempt_span(output_dir: Path) -> tuple[float, float] | None:
    """(first start, last end) over every mini-batch attempt, if the runner wrote its CSV."""
    path = output_dir / "logs" / "sys" / "processed_mini_batches.csv"
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        spans = [(float(r["start"]), float(r["end"])) for r in csv.DictReader(fh)]
    return (min(s for s, _ in spans), max(e for _, e in spans)) if spans else None


def parse_result(output_dir: Path) -> dict:
    """The figures the harness reports, from ``job_result.json`` (schema v1, docs/DESIGN.md)."""
    path = output_dir / "job_result.json"
    if not path.exists():
        raise PeerError(f"prs-mpi exited 0 but wrote no {path}")
    result = json.loads(path.read_text())
    if result.get("state") != "succeeded":
        raise PeerError(f"prs-mpi job state {result.get('state')!r}: {result.get('reason')}")
    items = result["items"]["succeeded"]
    out = {"wall_seconds": result["wall_seconds"], "items": items,
           "throughput": result["throughput_items_per_s"], "workers": result.get("workers"),
           "mini_batches": result["mini_batches"]["total"]}
    span = attempt_span(output_dir)
    if span is not None:
        out["makespan_s"] = span[1] - span[0]
        out["first_batch_s"] = span[0] - result["started"]
        out["span_items_per_s"] = items / out["makespan_s"] if out["makespan_s"] > 0 else None
    ready = [w["ready_at"] for w in result.get("worker_stats", []) if w.get("ready_at")]
    if ready:   # workers whose init() finished later were not available from the first start
        out["ready_skew_s"] = sum(r - min(ready) for r in ready)
        if out.get("span_items_per_s"):   # the worker-seconds the span held, less those spent in init
            out["ready_items_per_s"] = items / (out["makespan_s"] - out["ready_skew_s"] / len(ready))
    return out


def run_prs(workload: PrsWorkload, ranks: int, isolation: str = "process",
            timeout: float = 600, keep: bool = False, memory: bool = False, pss: bool = False) -> dict:
    """Run ``mpiexec -n ranks prs-mpi run job.toml``; return its figures plus ``outer_s`` and, when
    ``memory``, ``rss`` (peak MB per rank: ``{"supervisor": {rank: MB}, "children": {rank: MB}}``,
    and ``"supervisor_pss"`` when ``pss``). Sampling costs the harness ~4 ms of CPU every 50 ms on
    the job's cores, which no peer pays, so the timed workloads leave it off."""
    missing = prs_missing()
    if missing:
        raise PeerError(missing)
    job_dir = WORK / "prs" / f"{workload.name}-{isolation}-{ranks}"
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    job = job_dir / "job.toml"
    job.write_text(job_toml(workload, isolation, job_dir / "out"))
    samplers: list[TreeSampler] = []

    def watch(pid: int) -> None:
        samplers.append(TreeSampler(pid, pss=pss))
        samplers[0].start()

    try:
        proc, outer = launch([mpiexec(), "-n", str(ranks), str(PRS_BIN), "run", str(job)],
                             timeout, watch=watch if memory else None)
    finally:
        rss = samplers[0].stop() if samplers else {}
    if proc.returncode != 0:
        raise failure(proc)
    out = parse_result(job_dir / "out")
    out.update(outer_s=outer, rss=rss, ranks=ranks, isolation=isolation)
    if not keep:
        shutil.rmtree(job_dir, ignore_errors=True)
    return out
