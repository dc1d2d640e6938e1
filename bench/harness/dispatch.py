"""Workload 1, dispatch overhead: no-op tasks, one item per task, 8 ranks."""
import statistics

from harness.common import (Row, Section, error_of, futures_peer, interleave, mpi, peer,
                            run_json, samples)
from harness.items import numbered, write_items
from harness.prs import PrsWorkload, prs_missing, run_prs
from harness.settings import Settings

RANKS = 8
CHUNKS = (16, 64, 256, 1024)
LOOP = "mpi_loop (depth 8)"
POOL1 = "MPIPoolExecutor chunksize 1"


def contenders(cfg: Settings, listing: str) -> dict:
    t = cfg.timeout
    loop = lambda depth: lambda: run_json(
        mpi(RANKS, peer("mpi_loop.py", "--items", listing, "--depth", depth)), t)
    out = {
        "mpi_loop (depth 2)": loop(2),
        LOOP: loop(8),
        "MPIPoolExecutor": lambda: run_json(mpi(RANKS, futures_peer(
            "pool_futures.py", "--items", listing, "--chunksize", 1, *CHUNKS)), t),
        "ProcessPoolExecutor": lambda: run_json(peer("process_pool.py", "--workers", RANKS, "--items", listing,
                                                     "--chunksize", 1, *CHUNKS), t),
    }
    if not prs_missing():
        work = PrsWorkload("dispatch", "noop.py", listing, mini_batch_size=1)
        for iso in ("process", "none"):
            out[f"prs-mpi ({iso})"] = lambda iso=iso: run_prs(work, RANKS, iso, timeout=t)
    return out


def _pool_rows(name: str, records: list[dict]) -> list[Row]:
    ok = [r for r in records if "error" not in r]
    cs1 = [run["tasks_per_s"] for r in ok for run in r["runs"] if run["chunksize"] == 1]
    best = [r["tasks_per_s"] for r in ok]
    sizes = sorted({r["chunksize"] for r in ok})
    note = error_of(records)
    return [Row("dispatch", f"{name} chunksize 1", "tasks/s", cs1, note, (LOOP,)),
            Row("dispatch", f"{name} best chunksize", "tasks/s", best,
                note or f"best of {', '.join(map(str, CHUNKS))} (chosen: {sizes})", (LOOP,))]


def _prs_rows(results: dict) -> list[Row]:
    rows = []
    for name, records in results.items():
        if not name.startswith("prs-mpi"):
            continue
        span = samples(records, "span_items_per_s")
        wall = samples(records, "throughput")
        if error_of(records):
            note = error_of(records)
        elif span:
            note = f"job wall incl. start-up: median {statistics.median(wall):,.0f}/s"
        else:
            note = "job throughput incl. start-up (no processed_mini_batches.csv)"
        rows.append(Row("dispatch", name, "tasks/s", span or wall, note, (LOOP, POOL1)))
    return rows


def run(cfg: Settings) -> Section:
    n = cfg.size(5_000, 20_000)
    listing = str(write_items("dispatch_items", numbered(n)))
    results = interleave(contenders(cfg, listing), cfg.reps)
    section = Section(f"Dispatch overhead: {n:,} no-op tasks, mini_batch_size 1, {RANKS} ranks")
    for name in ("mpi_loop (depth 2)", LOOP):
        recs = results[name]
        section.rows.append(Row("dispatch", name, "tasks/s", samples(recs, "tasks_per_s"),
                                error_of(recs) or "7 workers, Iprobe + sleep(200 µs)"))
    section.rows += _pool_rows("MPIPoolExecutor", results["MPIPoolExecutor"])
    section.rows += _pool_rows("ProcessPoolExecutor (8 procs)", results["ProcessPoolExecutor"])
    section.rows += _prs_rows(results)
    if prs_missing():
        section.rows.append(Row("dispatch", "prs-mpi", "tasks/s", [], prs_missing()))
    section.facts.append("Peers time from the first task handed out to the last result "
                         "(pools booted and initialised first); prs-mpi from the first mini-batch's "
                         "start to the last one's end (processed_mini_batches.csv).")
    return section
