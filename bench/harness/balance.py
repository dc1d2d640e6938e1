"""Workload 2, load balance: log-normal sleeps on 7 workers, makespan over the lower bound."""
import os
import statistics
import time
from dataclasses import replace

from harness.common import (Row, Section, error_of, futures_peer, interleave, mpi, peer,
                            run_json)
from harness.items import write_items
from harness.prs import PrsWorkload, prs_missing, run_prs
from harness.settings import Settings
from workloads.durations import Durations, lognormal

WORKERS = 7
SEED = 20261123
SLOW_RANK = 1                      # the slow-node variants: MPI rank 1 sleeps `slow` times longer


def contenders(cfg: Settings, listing: str, tag: str, slow: float = 0) -> dict:
    t = cfg.timeout
    task = ("--kind", "sleep_items", "--items", listing)
    out = {
        "mpi_loop dynamic (depth 1)": lambda: run_json(
            mpi(WORKERS + 1, peer("mpi_loop.py", *task, "--depth", 1)), t),
        "mpi_loop dynamic (depth 2)": lambda: run_json(
            mpi(WORKERS + 1, peer("mpi_loop.py", *task, "--depth", 2)), t),
        "MPIPoolExecutor chunksize 1": lambda: run_json(
            mpi(WORKERS + 1, futures_peer("pool_futures.py", *task, "--chunksize", 1)), t),
    }
    if slow <= 4:      # a 20x slower node would keep the static partition busy for minutes
        out["static partition (1/P up front)"] = lambda: run_json(
            mpi(WORKERS + 1, peer("mpi_loop.py", *task, "--static")), t)
    if prs_missing():
        return out
    work = PrsWorkload(f"balance{tag}", "sleep_items.py", listing, mini_batch_size=1)
    if not slow:
        out[f"prs-mpi (process, {WORKERS} ranks)"] = lambda: run_prs(work, WORKERS, "process", timeout=t)
        out[f"prs-mpi (none, {WORKERS + 1} ranks)"] = lambda: run_prs(work, WORKERS + 1, "none", timeout=t)
    # with and without speculation: append_row both (speculation needs it; see protocol.py)
    rows = replace(work, name=f"balance{tag}-rows", output_action="append_row")
    spec = replace(rows, name=f"balance{tag}-spec", extra={"dispatch": {"speculative": True}})
    out[f"prs-mpi (process, {WORKERS} ranks, append_row)"] = lambda: run_prs(rows, WORKERS, "process", timeout=t)
    out[f"prs-mpi (process, {WORKERS} ranks, append_row, speculative)"] = lambda: run_prs(
        spec, WORKERS, "process", timeout=t)
    return out


def ratio_to_bound(record: dict, durations: Durations) -> float | None:
    """Makespan / max(total/P, longest) with P the workers the contender actually used."""
    if "error" in record:
        return None
    makespan = record.get("makespan_s", record.get("seconds"))
    workers = record.get("workers") or WORKERS
    bound = durations.lower_bound(workers)
    if record.get("ready_skew_s"):   # staggered worker start: capacity lost before each was ready
        bound = max(bound, (durations.total + record["ready_skew_s"]) / workers)
    return makespan / bound if makespan else None


def sleep_overshoot(mean: float, budget: float = 1.0) -> float:
    """Median seconds ``time.sleep(mean)`` overruns by in this process right now (machine load
    inflates every contender's makespan by about this much per task)."""
    runs = []
    for _ in range(max(5, int(budget / mean))):
        t0 = time.perf_counter()
        time.sleep(mean)
        runs.append(time.perf_counter() - t0 - mean)
    return statistics.median(runs)


def run_mean(cfg: Settings, mean: float, count: int, seed: int, slow: float = 0) -> tuple[list[Row], str]:
    durations = lognormal(count, mean, seed=seed)
    tag = f"{mean * 1000:g}ms" + (f", one node {slow:g}x slower" if slow else "")
    listing = str(write_items(f"durations_{mean * 1000:g}ms", durations.item_names()))
    env = {"BENCH_SLOW_RANK": str(SLOW_RANK), "BENCH_SLOW_FACTOR": str(slow)} if slow else {}
    os.environ.update(env)        # inherited by mpiexec, its ranks and prs-mpi's children
    try:
        results = interleave(contenders(cfg, listing, f"{mean * 1000:g}ms-slow{slow:g}" if slow else tag, slow),
                             cfg.reps)
    finally:
        for k in env:
            os.environ.pop(k, None)
    rows = []
    if not slow:       # what an ideal dynamic scheduler gets: greedy in listing order, no overhead
        greedy = durations.greedy_makespan(WORKERS) / durations.lower_bound(WORKERS)
        rows.append(Row("balance", f"{tag}: greedy list schedule, zero overhead (simulated)", "x bound",
                        [greedy], "computed, not run: the same durations, each free worker takes the next",
                        lower_is_better=True))
    for name, records in results.items():
        values = [v for v in (ratio_to_bound(r, durations) for r in records) if v is not None]
        rows.append(Row("balance", f"{tag}: {name}", "x bound", values, error_of(records),
                        lower_is_better=True))
    fact = (f"{tag}: {count} durations, log-normal mean {mean * 1000:g} ms, sigma {durations.sigma}, "
            f"seed {seed} (workloads.durations.lognormal({count}, {mean}, seed={seed})): total "
            f"{durations.total:.2f} s, longest {durations.longest * 1000:.1f} ms, lower bound on "
            f"{WORKERS} workers {durations.lower_bound(WORKERS):.3f} s; time.sleep({mean:g}) "
            f"overran by {sleep_overshoot(mean) * 1e6:,.0f} µs (median) on this machine just after.")
    if slow:
        fact += (f" One slow node: MPI rank {SLOW_RANK} sleeps {slow:g}x longer (every contender has "
                 f"a worker on rank {SLOW_RANK}); the bound is still the nominal one, as if no node were "
                 "slow, so 1.00 is out of reach: compare the rows with each other.")
    return rows, fact


def run(cfg: Settings) -> Section:
    section = Section(f"Load balance: heavy-tailed sleeps on {WORKERS} workers, "
                      "makespan / max(total/P, longest) (1.00 is perfect)")
    plan = ((0.1, cfg.size(100, 400), 0), (0.01, cfg.size(700, 3000), 0),
            (0.1, cfg.size(100, 400), 4), (0.1, cfg.size(100, 400), 20))
    for mean, count, slow in plan:
        rows, fact = run_mean(cfg, mean, count, SEED + (mean < 0.1), slow)
        section.rows += rows
        section.facts.append(fact)
    section.facts.append("Peers: makespan from the first task handed out to the last result; "
                         "prs-mpi: first mini-batch start to last end (processed_mini_batches.csv), "
                         "its bound counting the time each worker was not yet ready (init() finished "
                         "later than the first): max((total + sum of start skews)/P, longest).")
    section.facts.append("Greedy list schedule (simulated): each free worker takes the next duration in "
                         "listing order, with no overhead at all: what a perfect dynamic scheduler that "
                         "cannot know durations in advance gets on this very instance. No row here can be "
                         "expected below it except by timing luck (it is not a strict lower bound).")
    section.facts.append("Speculative: `[dispatch] speculative = true`; at the tail an idle worker re-runs "
                         "the mini-batch that has run longest once it is past 1.5 median run times; the "
                         "first result is written, the other copy is cancelled (protocol.py). It needs "
                         "append_row, so its twin without speculation runs append_row too.")
    if prs_missing():
        section.rows.append(Row("balance", "prs-mpi", "x bound", [], prs_missing()))
    return section
