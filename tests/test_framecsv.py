"""The fast numeric CSV encoder writes exactly what pandas' to_csv writes, or declines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prs_mpi.child import encode_frame
from prs_mpi.framecsv import numeric_body

EDGES = [0.0, -0.0, 1e-5, 1e-4, 0.0001234, 1e15, 1e16, 9999999999999998.0, 1e22, 5e-324,
         1.7976931348623157e308, np.inf, -np.inf, np.nan, 0.1, 1 / 3, 100.0, -1.5e-7, 2.0 ** 70]


def _pandas(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, header=False, lineterminator="\n").encode()


@pytest.mark.parametrize("seed", range(6))
def test_numeric_frames_match_pandas_byte_for_byte(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    floats = rng.standard_normal(n) * 10.0 ** rng.integers(-320, 308, n)
    floats[rng.random(n) < 0.05] = np.nan
    floats[: min(n, len(EDGES))] = EDGES[:n]
    df = pd.DataFrame({"f": floats, "i": rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64),
                       "u": rng.integers(0, 2**64 - 1, n, dtype=np.uint64),
                       "s": rng.integers(-128, 127, n).astype(np.int8), "b": rng.random(n) < 0.5})
    order = list(rng.permutation(df.columns))[: int(rng.integers(1, 6))]
    frame = df[order]
    if order == ["f"]:
        frame = frame.dropna()
    assert numeric_body(frame) == _pandas(frame)


def test_other_frames_are_left_to_pandas():
    assert numeric_body(pd.DataFrame({"x": [1.0, np.nan]})) is None  # pandas writes '""'
    assert numeric_body(pd.DataFrame({"x": [1.0, np.nan], "y": [1, 2]})) == b"1.0,1\n,2\n"
    for column in (["a", "b"], np.array([0.1, 0.2], dtype=np.float32),
                   pd.array([1, None], dtype="Int64"), pd.date_range("2020-01-01", periods=2)):
        assert numeric_body(pd.DataFrame({"id": [1, 2], "x": column})) is None
    assert numeric_body(pd.DataFrame({"x": np.array([], dtype=float)})) is None
    assert numeric_body(pd.DataFrame(index=range(3))) is None


def test_encode_frame_csv_same_bytes_on_both_paths():
    df = pd.DataFrame([[1, 2.5], [3, np.nan]], columns=["id", "id"])  # duplicate names too
    assert encode_frame(df, "csv") == (b"1,2.5\n3,\n", b"id,id\n")
    text = pd.DataFrame({"id": [1], "note": ['say "hi", ok']})
    assert encode_frame(text, "csv") == (b'1,"say ""hi"", ok"\n', b"id,note\n")
