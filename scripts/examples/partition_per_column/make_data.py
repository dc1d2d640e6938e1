#!/usr/bin/env python3
"""Write the partition-per-column example's input: ``data/income.csv``.

    python scripts/examples/partition_per_column/make_data.py [--out DIR] [--rows 1000] [--seed 0]

Columns ``ID,STATE,YEAR,INCOME`` (like the seed's sample, which partitions a census-style
table by ``STATE``): states drawn unevenly from a few codes, incomes log-normal, rows in
random order so one state's rows are spread over the whole file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
STATES = ["CA", "NY", "TX", "WA", "FL"]
STATE_WEIGHTS = [0.35, 0.25, 0.2, 0.12, 0.08]


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A random income table with ``rows`` rows."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "ID": np.arange(rows),
        "STATE": rng.choice(STATES, size=rows, p=STATE_WEIGHTS),
        "YEAR": rng.integers(2015, 2025, size=rows),
        "INCOME": np.round(rng.lognormal(mean=10.8, sigma=0.5, size=rows), 2),
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    make_frame(args.rows, args.seed).to_csv(args.out / "income.csv", index=False)
    print(f"wrote {args.rows} rows to {args.out / 'income.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
