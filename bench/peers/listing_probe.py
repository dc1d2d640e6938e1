"""Big-listing baselines, measured in a fresh process; prints one JSON line.

    python bench/peers/listing_probe.py --listing paths.txt   # hold 1M path strings: time, RSS
    python bench/peers/listing_probe.py --dir DIR             # os.scandir over N empty files
"""
import argparse
import os
import resource
import time

import psutil

import tasks


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def probe_listing(path: str) -> dict:
    """Read every path into a list of str, sort it; report time and resident memory."""
    before = rss_mb()
    t0 = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        paths = [line.rstrip("\n") for line in fh]
    read_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    paths.sort()
    sort_s = time.perf_counter() - t1
    held = rss_mb() - before
    return {"probe": "listing", "paths": len(paths), "read_s": read_s, "sort_s": sort_s,
            "rss_before_mb": before, "rss_held_mb": held,
            "bytes_per_path": held * 2**20 / max(1, len(paths)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def probe_dir(path: str) -> dict:
    """Time to the first entry and to the end of one ``os.scandir`` pass, plus a sorted listing."""
    t0 = time.perf_counter()
    first_s = None
    count = 0
    with os.scandir(path) as it:
        for entry in it:
            if first_s is None:
                first_s = time.perf_counter() - t0
            count += entry.is_file()
    scan_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    names = sorted(os.listdir(path))
    sorted_s = time.perf_counter() - t1
    return {"probe": "scandir", "files": count, "first_entry_s": first_s, "scan_s": scan_s,
            "sorted_listdir_s": sorted_s, "listed": len(names),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--listing")
    group.add_argument("--dir")
    args = parser.parse_args()
    tasks.emit(probe_listing(args.listing) if args.listing else probe_dir(args.dir))


if __name__ == "__main__":
    main()
