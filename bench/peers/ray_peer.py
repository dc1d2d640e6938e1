"""Optional peer: Ray Data ``map_batches`` running the CPU entry script (only if ``ray`` imports).

    python bench/peers/ray_peer.py --kind cpu_model --n 1000 --batch 8 --workers 2

Not installed by the project; the harness skips this peer when ``import ray`` fails.
Untested here for that reason: it follows Ray Data's documented class-based UDF pattern.
"""
import argparse
import time

import tasks


class EntryScriptUDF:
    """Ray actor wrapper: ``init()`` once per actor, ``run()`` per batch of items."""

    def __init__(self, kind: str):
        self.kind = kind
        tasks.init_worker(kind)

    def __call__(self, batch: dict) -> dict:
        out = tasks.entry_module(self.kind).run([str(x) for x in batch["item"]])
        return {"result": out}


def main() -> None:
    import ray  # imported here so that --help works without ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tasks.add_task_args(parser)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    items = tasks.load_items(args)
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_items([{"item": i} for i in items])
    t0 = time.perf_counter()
    results = ds.map_batches(EntryScriptUDF, fn_constructor_args=(args.kind,),
                             batch_size=args.batch, concurrency=args.workers).count()
    seconds = time.perf_counter() - t0
    tasks.check_count(len(items), results)
    tasks.emit({"peer": "ray", "version": ray.__version__, "workers": args.workers,
                "items": len(items), "seconds": seconds, "items_per_s": len(items) / seconds})


if __name__ == "__main__":
    main()
