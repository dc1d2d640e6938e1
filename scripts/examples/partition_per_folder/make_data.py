#!/usr/bin/env python3
"""Write the partition-per-folder example's input: ``data/<user>/<genres>/track_<n>.txt``.

    python scripts/examples/partition_per_folder/make_data.py [--out DIR] [--seed 0]

Mirrors the seed's sample layout (files grouped in folders by user and genre; the job's
``partition_format = "{user}/{genres}/*.txt"`` turns the folders into partition keys, one
mini-batch per (user, genres)). Each file holds 5–60 random words.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTITIONS = [("alice", "disco"), ("alice", "orchestra"), ("bob", "piano"),
              ("carol", "spirituality"), ("dave", "piano"), ("dave", "disco")]
WORDS = "la da dum ta ti do re mi fa sol si bass drum string horn voice".split()


def write_files(out: Path, seed: int = 0) -> dict[tuple[str, str], list[int]]:
    """Write 2–6 files per partition; return the word count of each file per partition."""
    rng = random.Random(seed)
    counts: dict[tuple[str, str], list[int]] = {}
    for user, genres in PARTITIONS:
        folder = out / user / genres
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("track_*.txt"):  # from an earlier run with another seed
            stale.unlink()
        counts[(user, genres)] = []
        for index in range(rng.randint(2, 6)):
            words = rng.choices(WORDS, k=rng.randint(5, 60))
            (folder / f"track_{index}.txt").write_text(" ".join(words) + "\n")
            counts[(user, genres)].append(len(words))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = write_files(args.out, args.seed)
    files = sum(len(v) for v in counts.values())
    print(f"wrote {files} files in {len(counts)} partitions under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
