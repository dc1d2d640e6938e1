"""Workload 3, CPU inference scaling: the numpy MLP stand-in at 1 and 2 worker processes."""
import functools
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor

from harness.common import (PYTHON, Row, Section, error_of, futures_peer, interleave,
                            mpi, peer, peer_env, run_json, samples)
from harness.items import numbered, write_items
from harness.prs import PrsWorkload, prs_missing, run_prs
from harness.settings import Settings

BATCH = 8
PLAIN = "plain loop (1 process)"


@functools.cache
def ray_missing() -> str | None:
    """Why the Ray peer cannot run, or None (it runs only where ``import ray`` already works)."""
    try:
        proc = subprocess.run([PYTHON, "-c", "import ray"], capture_output=True, timeout=120,
                              env=peer_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"skipped: import ray failed ({exc})"
    return None if proc.returncode == 0 else "skipped: ray is not installed (optional peer)"


def side_by_side(cfg: Settings, names: list[str]) -> dict:
    """Two plain loops at once on half the items each: what two independent processes get on
    this machine (shared caches, memory bandwidth, the OS), with nothing coordinating them."""
    halves = [write_items(f"cpu_items_half{i}", names[i::2]) for i in (0, 1)]
    loop = lambda half: run_json(peer("plain_loop.py", "--kind", "cpu_model", "--items", half, "--batch", BATCH),
                                 cfg.timeout)
    with ThreadPoolExecutor(2) as pool:      # started together, each waited for by its own thread
        records = list(pool.map(loop, halves))
    return {"items_per_s": sum(r["items"] for r in records) / max(r["seconds"] for r in records)}


def peer_contenders(cfg: Settings, listing: str) -> dict:
    t = cfg.timeout
    task = ("--kind", "cpu_model", "--items", listing, "--batch", BATCH)
    pp = lambda w: lambda: run_json(peer("process_pool.py", *task, "--workers", w), t)
    loop = lambda w: lambda: run_json(mpi(w + 1, peer("mpi_loop.py", *task)), t)
    out = {PLAIN: lambda: run_json(peer("plain_loop.py", *task), t),
           "ProcessPoolExecutor 1 worker": pp(1), "ProcessPoolExecutor 2 workers": pp(2),
           "mpi_loop 1 worker (2 ranks)": loop(1), "mpi_loop 2 workers (3 ranks)": loop(2),
           "MPIPoolExecutor 2 workers (3 ranks)": lambda: run_json(
               mpi(3, futures_peer("pool_futures.py", *task, "--chunksize", 1)), t)}
    if not ray_missing():
        out["Ray Data map_batches 2 workers"] = lambda: run_json(
            peer("ray_peer.py", *task, "--workers", 2), t)
    return out


def prs_contenders(cfg: Settings, listing: str) -> dict:
    if prs_missing():
        return {}
    work = PrsWorkload("cpu", "cpu_model.py", listing, mini_batch_size=BATCH)
    run = lambda ranks, iso: lambda: run_prs(work, ranks, iso, timeout=cfg.timeout)
    return {"prs-mpi 1 worker (process, 1 rank)": run(1, "process"),
            "prs-mpi 2 workers (process, 2 ranks)": run(2, "process"),
            "prs-mpi 2 workers (none, 3 ranks)": run(3, "none")}


def _from_first_start(records: list[dict]) -> str:
    spans = samples(records, "span_items_per_s")
    if not spans or not samples(records, "ready_items_per_s"):
        return ""
    return f"over the whole span (a worker still in init): {statistics.median(spans):,.1f} items/s"


def run(cfg: Settings) -> Section:
    n = cfg.size(600, 4_000)
    names = numbered(n, "img_")
    listing = str(write_items("cpu_items", names))
    contenders = {**peer_contenders(cfg, listing),
                  "two plain loops side by side (half the items each)": lambda: side_by_side(cfg, names),
                  **prs_contenders(cfg, listing)}
    results = interleave(contenders, cfg.reps)
    section = Section(f"CPU inference scaling: {n:,} items, numpy MLP stand-in "
                      f"(workloads/cpu_model.py), mini-batches of {BATCH}, BLAS on 1 thread")
    for name, records in results.items():
        values = samples(records, "ready_items_per_s") or samples(records, "span_items_per_s") \
            or samples(records, "items_per_s") or samples(records, "throughput")
        note = error_of(records) or _from_first_start(records)
        section.rows.append(Row("cpu", name, "items/s", values, note, () if name == PLAIN else (PLAIN,)))
    for missing, who in ((prs_missing(), "prs-mpi"), (ray_missing(), "Ray Data")):
        if missing:
            section.rows.append(Row("cpu", who, "items/s", [], missing))
    section.facts.append("Target: >= 1.9x the plain loop at 2 workers on 2 cores. Peers time the "
                         "work after their workers are started and initialised (a barrier). prs-mpi "
                         "starts work as each worker becomes ready: its figure is items over the span "
                         "from the first mini-batch's start to the last one's end, less the "
                         "worker-seconds spent in init() after the first worker was ready (divided by "
                         "the workers); the note gives the figure over the whole span.")
    section.facts.append("Two plain loops side by side: two independent processes started together, "
                         "each timing its own loop after init; items/s is all items over the slower "
                         "one's time. It is what this machine gives two processes with nothing "
                         "coordinating them, a practical ceiling for any 2-worker contender.")
    return section
