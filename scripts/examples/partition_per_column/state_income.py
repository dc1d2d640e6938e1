"""Entry script: income aggregates per state (the seed's tabular partition-per-column sample).

With ``partition_keys = ["STATE"]`` every mini-batch holds all rows of one state and
``mini_batch_context.partition_key_value`` is e.g. ``{"STATE": "CA"}``. ``run`` returns one
row per input row, ``ID,STATE,INCOME`` plus the state's ``state_rows``, ``total_income`` and
``mean_income``.
"""
import pandas as pd

from prs_mpi import EntryScript


def init():
    """Nothing to load."""


def run(mini_batch: pd.DataFrame, mini_batch_context) -> pd.DataFrame:
    """Attach the partition's aggregates to each of its rows."""
    state = mini_batch_context.partition_key_value["STATE"]
    stray = mini_batch.loc[mini_batch["STATE"] != state, "STATE"].unique()
    if len(stray):
        raise ValueError(f"mini-batch for STATE={state} also holds rows of {list(stray)}: "
                         "the input was not partitioned by STATE")
    total = round(float(mini_batch["INCOME"].sum()), 2)
    result = mini_batch[["ID", "STATE", "INCOME"]].copy()
    result["state_rows"] = len(mini_batch)
    result["total_income"] = total
    result["mean_income"] = round(total / len(mini_batch), 2) if len(mini_batch) else 0.0
    EntryScript().logger.info("STATE=%s: %d rows, total income %.2f", state, len(result), total)
    return result
