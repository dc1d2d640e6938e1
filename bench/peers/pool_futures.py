"""``mpi4py.futures.MPIPoolExecutor.map`` over the same tasks, at one or more chunksizes.

Launch with the pool's own entry point so workers are the other ranks:

    mpiexec -n 8 python -m mpi4py.futures bench/peers/pool_futures.py --n 20000 --chunksize 1 64

Workers are booted (and the entry script's ``init()`` run) before timing starts; every
chunksize is timed in the same pool, in the order given. Prints one JSON line.
"""
import argparse

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor

import tasks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tasks.add_task_args(parser)
    parser.add_argument("--chunksize", type=int, nargs="+", default=[1])
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    work = tasks.batches(tasks.load_items(args), args.batch)
    nitems = sum(len(b) for b in work)
    with MPIPoolExecutor(initializer=tasks.init_worker, initargs=(args.kind,)) as pool:
        pool.bootup(wait=True)
        workers = pool.num_workers
        runs = [tasks.time_map(pool, args.kind, work, cs) for cs in args.chunksize]
    for run in runs:
        tasks.check_count(nitems, run.pop("results"))
        run["items_per_s"] = nitems / run["seconds"]
    best = max(runs, key=lambda r: r["tasks_per_s"])
    tasks.emit({"peer": "pool_futures", "ranks": MPI.COMM_WORLD.size, "workers": workers,
                "tasks": len(work), "items": nitems, "runs": runs, **best})


if __name__ == "__main__":
    main()
