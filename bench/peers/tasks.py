"""What the peers run: an entry-script module from ``bench/workloads`` over items cut into batches.

Every peer uses the same entry scripts as prs-mpi (``init()`` once per worker process,
``run(mini_batch)`` per task), so the contenders differ only in how they schedule.
Peers need ``bench/`` on ``PYTHONPATH`` (the harness sets it) so that pickled references to
``workloads.*`` resolve in every worker process.
"""
import argparse
import importlib
import json
import sys
from types import ModuleType

KINDS = ("noop", "sleep_items", "cpu_model")


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by every peer: which entry script, which items, how many per task."""
    parser.add_argument("--kind", choices=KINDS, default="noop", help="entry script in bench/workloads")
    parser.add_argument("--items", help="text file with one item string per line")
    parser.add_argument("--n", type=int, default=0, help="generate N items named 0..N-1 instead")
    parser.add_argument("--batch", type=int, default=1, help="items per task (mini_batch_size)")


def entry_module(kind: str) -> ModuleType:
    """The entry-script module for a task kind."""
    return importlib.import_module(f"workloads.{kind}")


def load_items(args: argparse.Namespace) -> list[str]:
    """Item strings from ``--items`` or ``--n``."""
    if args.items:
        with open(args.items, encoding="utf-8") as fh:
            return [line.rstrip("\n") for line in fh if line.strip()]
    if args.n > 0:
        return [str(i) for i in range(args.n)]
    raise SystemExit("give --items FILE or --n N")


def batches(items: list[str], size: int) -> list[list[str]]:
    """Consecutive mini-batches of ``size`` items (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_batch(kind: str, batch: list[str]) -> int:
    """Run one task and return how many results it produced (module-level, so it pickles)."""
    return len(entry_module(kind).run(batch))


def init_worker(kind: str) -> None:
    """Per-process initialisation hook for pools."""
    entry_module(kind).init()


def emit(record: dict) -> None:
    """Print the peer's one JSON line in a single write (lines from ranks must not merge)."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def check_count(expected: int, got: int) -> None:
    """Fail loudly if a peer lost or duplicated results."""
    if got != expected:
        raise SystemExit(f"result count mismatch: expected {expected} results, got {got}")


def time_map(pool, kind: str, work: list[list[str]], chunksize: int) -> dict:
    """Seconds for one executor ``map`` over every task, and the number of results it produced."""
    import functools
    import time
    fn = functools.partial(run_batch, kind)
    t0 = time.perf_counter()
    results = sum(pool.map(fn, work, chunksize=chunksize))
    seconds = time.perf_counter() - t0
    return {"chunksize": chunksize, "seconds": seconds, "results": results,
            "tasks_per_s": len(work) / seconds}

