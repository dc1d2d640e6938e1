"""Output-path baseline: one process writes the same rows with plain ``open().write``. One JSON line.

    python bench/peers/seq_write.py --path out.txt --total-mb 100 --writers 7
Writes ``writers`` x ``rounds`` blocks, exactly the bytes ``mpiio_write.py`` writes, then fsyncs
inside the timed region; the file is checked and deleted.
"""
import argparse
import math
import os
import time

import rows
import tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True)
    parser.add_argument("--total-mb", type=float, default=100.0)
    parser.add_argument("--block-kb", type=int, default=1024)
    parser.add_argument("--writers", type=int, default=7, help="how many writers' blocks to write")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    blocks = [rows.row_block(w, args.block_kb * 1024) for w in range(1, args.writers + 1)]
    rounds = math.ceil(args.total_mb * 1e6 / (args.writers * len(blocks[0])))
    t0 = time.perf_counter()
    with open(args.path, "wb") as fh:
        for _ in range(rounds):
            for block in blocks:
                fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - t0
    nbytes = rounds * sum(len(b) for b in blocks)
    rows.check_rows(args.path, nbytes)
    if not args.keep:
        os.remove(args.path)
    tasks.emit({"peer": "seq_write", "bytes": nbytes, "block_bytes": len(blocks[0]),
                "writes": rounds * args.writers, "seconds": seconds,
                "mb_per_s": nbytes / seconds / 1e6})


if __name__ == "__main__":
    main()
