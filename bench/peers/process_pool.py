"""``concurrent.futures.ProcessPoolExecutor.map`` over the same tasks (no MPI), one line of JSON.

    python bench/peers/process_pool.py --workers 8 --n 20000 --chunksize 1 64

Worker processes are started and initialised before timing starts; every chunksize is timed
in the same pool, in the order given.
"""
import argparse
import time
from concurrent.futures import ProcessPoolExecutor, wait

import tasks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tasks.add_task_args(parser)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--chunksize", type=int, nargs="+", default=[1])
    return parser.parse_args()


def warm_up(pool: ProcessPoolExecutor, workers: int) -> None:
    """Make the pool start (and initialise) all of its processes before anything is timed."""
    wait([pool.submit(time.sleep, 0.05) for _ in range(2 * workers)])


def main() -> None:
    args = parse_args()
    work = tasks.batches(tasks.load_items(args), args.batch)
    nitems = sum(len(b) for b in work)
    with ProcessPoolExecutor(args.workers, initializer=tasks.init_worker,
                             initargs=(args.kind,)) as pool:
        warm_up(pool, args.workers)
        runs = [tasks.time_map(pool, args.kind, work, cs) for cs in args.chunksize]
    for run in runs:
        tasks.check_count(nitems, run.pop("results"))
        run["items_per_s"] = nitems / run["seconds"]
    best = max(runs, key=lambda r: r["tasks_per_s"])
    tasks.emit({"peer": "process_pool", "workers": args.workers, "tasks": len(work),
                "items": nitems, "runs": runs, **best})


if __name__ == "__main__":
    main()
