"""Baseline: one process runs the entry script over every task in a plain loop. One JSON line.

    python bench/peers/plain_loop.py --kind cpu_model --n 1000 --batch 8
"""
import argparse
import time

import tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tasks.add_task_args(parser)
    args = parser.parse_args()
    work = tasks.batches(tasks.load_items(args), args.batch)
    nitems = sum(len(b) for b in work)
    tasks.init_worker(args.kind)
    t0 = time.perf_counter()
    results = sum(tasks.run_batch(args.kind, batch) for batch in work)
    seconds = time.perf_counter() - t0
    tasks.check_count(nitems, results)
    tasks.emit({"peer": "plain_loop", "workers": 1, "tasks": len(work), "items": nitems,
                "seconds": seconds, "tasks_per_s": len(work) / seconds,
                "items_per_s": nitems / seconds})


if __name__ == "__main__":
    main()
