"""Sleep entry script: each item names its own duration, e.g. ``d000042-0.012345`` sleeps 12.345 ms.

Used by the load-balance workload: sleeping keeps the 2 cores out of the measurement, so the
makespan reflects scheduling only. Item names come from :mod:`workloads.durations`.

A slow node: with ``BENCH_SLOW_RANK=r`` and ``BENCH_SLOW_FACTOR=f`` every item run by MPI rank
``r`` sleeps ``f`` times longer (the rank from ``PRS_MPI_RANK`` under prs-mpi, whose children do
not see the launcher's variables, else from ``PMI_RANK``/``OMPI_COMM_WORLD_RANK``).
"""
import os
import time


def _slowdown() -> float:
    slow = os.environ.get("BENCH_SLOW_RANK")
    if slow is None:
        return 1.0
    rank = (os.environ.get("PRS_MPI_RANK") or os.environ.get("PMI_RANK")
            or os.environ.get("OMPI_COMM_WORLD_RANK"))
    return float(os.environ.get("BENCH_SLOW_FACTOR", "4")) if rank == slow else 1.0


SLOWDOWN = _slowdown()


def item_seconds(item: str) -> float:
    """Duration encoded in an item name (the part after the last ``-`` of its basename)."""
    name = os.path.basename(item)
    try:
        return float(name.rsplit("-", 1)[1])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"item {item!r} does not end in '-<seconds>'; "
                         "generate items with bench/workloads/durations.py") from exc


def init() -> None:
    """Nothing to load."""


def run(mini_batch: list[str]) -> list[str]:
    """Sleep for each item's duration in turn and return one element per item."""
    for item in mini_batch:
        time.sleep(item_seconds(item) * SLOWDOWN)
    return list(mini_batch)
