#!/usr/bin/env python3
"""View the MNIST job's results with pandas, as the seed tutorial does, and score them.

    python scripts/examples/mnist/check_results.py [--results FILE] [--labels FILE]
                                                   [--min-accuracy 0.9]

Reads ``mnist_outputs.txt`` (``"<file>: <digit>"`` lines) with
``pandas.read_csv(result_file, delimiter=":", header=None)``, joins it with ``labels.csv``
from ``make_mnist_data.py``, prints the first rows and the accuracy, and exits 1 when the
accuracy is below ``--min-accuracy`` or a file appears twice.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def read_results(result_file: str | Path) -> pd.DataFrame:
    """The seed's view of the append file: columns ``Filename`` and ``Prediction``."""
    df = pd.read_csv(result_file, delimiter=":", header=None)
    df.columns = ["Filename", "Prediction"]
    return df


def score(results: pd.DataFrame, labels_file: str | Path) -> tuple[float, pd.DataFrame]:
    """Join predictions with the true labels; return (accuracy, joined table)."""
    labels = pd.read_csv(labels_file).rename(columns={"file": "Filename", "label": "Label"})
    joined = results.merge(labels, on="Filename", how="left", validate="one_to_one")
    if joined["Label"].isna().any():
        missing = joined.loc[joined["Label"].isna(), "Filename"].head(3).tolist()
        raise ValueError(f"{labels_file} has no label for result files such as {missing}; "
                         "were the results made from another data set?")
    return float((joined["Prediction"] == joined["Label"]).mean()), joined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(HERE / "runs/mnist/mnist_outputs.txt"))
    parser.add_argument("--labels", default=str(HERE / "data/labels.csv"))
    parser.add_argument("--min-accuracy", type=float, default=0.9)
    args = parser.parse_args(argv)
    results = read_results(args.results)
    if results["Filename"].duplicated().any():
        print(f"error: {args.results} lists some files more than once", file=sys.stderr)
        return 1
    accuracy, joined = score(results, args.labels)
    print(joined.head(10).to_string(index=False))
    print(f"{len(joined)} predictions, accuracy {accuracy:.4f}")
    if accuracy < args.min_accuracy:
        print(f"error: accuracy {accuracy:.4f} is below --min-accuracy {args.min_accuracy}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
