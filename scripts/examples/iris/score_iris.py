"""Entry script: predict the species of iris flowers in a tabular mini-batch.

``init()`` loads the scikit-learn model named by ``--model-name`` (default ``iris``, a
``[models]`` entry of the job file; ``arguments`` in job.toml reach ``sys.argv``).
``run(mini_batch)`` gets a pandas DataFrame with an ``id`` column and the four features and
returns a DataFrame with ``id`` and ``prediction``, one row per input row; rows with a missing
feature are item failures (left out and logged).
"""
from __future__ import annotations

import argparse
import os

import joblib
import pandas as pd

from prs_mpi import EntryScript, get_model_path

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MODEL_FILE = "model.joblib"

model = None


def init():
    """Load the model once per worker."""
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-name", default="iris")
    args, _ = parser.parse_known_args()
    path = get_model_path(args.model_name)
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    model = joblib.load(path)
    EntryScript().logger.info("loaded %s", path)


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    """Return ``id`` and predicted species for every row whose features are all present."""
    missing = [c for c in ["id", *FEATURES] if c not in mini_batch.columns]
    if missing:
        raise ValueError(f"input has no column(s) {missing}; expected id and {FEATURES} "
                         "(write the input with scripts/train_iris.py)")
    complete = mini_batch.dropna(subset=FEATURES)
    if len(complete) < len(mini_batch):
        skipped = mini_batch.loc[~mini_batch.index.isin(complete.index), "id"].tolist()
        EntryScript().logger.warning("skipping rows with missing features, ids %s", skipped)
    if complete.empty:
        return pd.DataFrame({"id": [], "prediction": []})
    return pd.DataFrame({"id": complete["id"].to_numpy(),
                         "prediction": model.predict(complete[FEATURES])})
