#!/usr/bin/env python3
"""Train the iris example's scikit-learn model and write its scoring input.

    python scripts/train_iris.py [--model-dir scripts/examples/iris/models/iris]
                                 [--data-dir scripts/examples/iris/data] [--repeat 1]

Uses the iris data set that ships with scikit-learn (150 flowers). The model (standard
scaling + logistic regression, predicting species names) is fitted on a stratified 75 %
split, its accuracy on the other 25 % is printed, and it is saved with joblib as
``MODEL_DIR/model.joblib``. The scoring input ``DATA_DIR/iris.csv`` holds an ``id`` column
and the four features of all 150 flowers (``--repeat K`` writes K copies with distinct ids,
for bigger runs); the true species go to ``DATA_DIR/iris_labels.csv`` (``id,species``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

EXAMPLE = Path(__file__).resolve().parent / "examples" / "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MODEL_FILE = "model.joblib"
SEED = 0


def load_iris_frame() -> pd.DataFrame:
    """Iris as a DataFrame with snake_case feature columns and a ``species`` name column."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=FEATURES)
    frame["species"] = np.asarray(iris.target_names)[iris.target]
    return frame


def train(frame: pd.DataFrame):
    """Fit scaling + logistic regression on 75 %; return (model, held-out accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, test_x, train_y, test_y = train_test_split(
        frame[FEATURES], frame["species"], test_size=0.25, random_state=SEED,
        stratify=frame["species"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train_x, train_y)
    return model, float(model.score(test_x, test_y))


def write_data(frame: pd.DataFrame, data_dir: Path, repeat: int = 1) -> Path:
    """Write ``iris.csv`` (id + features) and ``iris_labels.csv``; return the first's path."""
    if repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {repeat}")
    rows = pd.concat([frame] * repeat, ignore_index=True)
    rows.insert(0, "id", np.arange(len(rows)))
    data_dir.mkdir(parents=True, exist_ok=True)
    rows[["id", *FEATURES]].to_csv(data_dir / "iris.csv", index=False)
    rows[["id", "species"]].to_csv(data_dir / "iris_labels.csv", index=False)
    return data_dir / "iris.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=EXAMPLE / "models" / "iris")
    parser.add_argument("--data-dir", type=Path, default=EXAMPLE / "data")
    parser.add_argument("--repeat", type=int, default=1,
                        help="copies of the 150 flowers in iris.csv (default 1)")
    args = parser.parse_args(argv)
    frame = load_iris_frame()
    model, accuracy = train(frame)
    args.model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.model_dir / MODEL_FILE)
    data = write_data(frame, args.data_dir, args.repeat)
    print(f"held-out accuracy {accuracy:.3f}; saved {args.model_dir / MODEL_FILE}; "
          f"wrote {len(frame) * args.repeat} rows to {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
