#!/usr/bin/env python3
"""Write small text files for the hello example: ``data/hello_000.txt`` … (random words).

    python scripts/examples/hello/make_data.py [--out DIR] [--count 100] [--seed 0]

Also writes ``DIR/expected_output.lst`` (not matched by the job's ``*.txt`` glob): the sorted
``"<name>: <word count>"`` lines the job must produce, for comparison with a run's output
(sort it too: output order is not guaranteed).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = ("hello world batch inference mpi rank worker mini batch file "
         "result line output node process python").split()


def write_files(out: Path, count: int, seed: int = 0) -> list[str]:
    """Write ``count`` files of 1–40 random words; return their expected output lines."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    expected = []
    for index in range(count):
        words = rng.choices(WORDS, k=rng.randint(1, 40))
        name = f"hello_{index:03d}.txt"
        (out / name).write_text(" ".join(words) + "\n")
        expected.append(f"{name}: {len(words)}")
    return expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    expected = write_files(args.out, args.count, args.seed)
    (args.out / "expected_output.lst").write_text("\n".join(sorted(expected)) + "\n")
    print(f"wrote {args.count} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
