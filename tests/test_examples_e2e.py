"""The examples end to end through the real runner, as a user runs them (copied to a temp dir)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobkit import launch

pytestmark = pytest.mark.mpi
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "scripts" / "examples"


def copy_example(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / name, dest, ignore=shutil.ignore_patterns("data", "models", "runs", "__pycache__"))
    return dest


def run_py(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_hello(tmp_path):
    ex = copy_example("hello", tmp_path)
    run_py(str(ex / "make_data.py"), cwd=ex)
    r = launch(3, ["run", str(ex / "job.toml")])
    assert r.returncode == 0, r.output
    res = (ex / "runs").rglob("job_result.json")
    import json
    result = json.loads(next(res).read_text())
    assert result["state"] == "succeeded" and result["items"]["failed"] == 0
    out = Path(result["output_file"]).read_text().splitlines()
    assert len(out) == result["items"]["total"] == len(set(out))


@pytest.mark.tensorflow
def test_mnist_tutorial_end_to_end(tmp_path):
    pytest.importorskip("tensorflow")
    ex = copy_example("mnist", tmp_path)
    run_py(str(ROOT / "scripts" / "make_mnist_data.py"), "--out", str(ex / "data"), "--count", "60")
    run_py(str(ROOT / "scripts" / "train_mnist.py"), "--out", str(ex / "models" / "mnist"), "--epochs", "3")
    r = launch(2, ["run", str(ex / "job.toml")], timeout=600)
    assert r.returncode == 0, r.output
    results = ex / "runs" / "mnist" / "mnist_outputs.txt"
    import pandas as pd
    df = pd.read_csv(results, delimiter=":", header=None)       # the seed's way of viewing the results
    df.columns = ["Filename", "Prediction"]
    assert len(df) == 60 and df.Filename.is_unique
    labels = pd.read_csv(ex / "data" / "labels.csv")
    merged = df.merge(labels, left_on="Filename", right_on="file")
    accuracy = (merged.Prediction == merged.label).mean()
    assert accuracy >= 0.9, accuracy
    check = run_py(str(ex / "check_results.py"), "--results", str(results), "--labels",
                   str(ex / "data" / "labels.csv"), "--min-accuracy", "0.9")
    assert "accuracy" in check.stdout.lower()
    # the seed's resubmission: one image, mini_batch_size 1, one process — one command line
    r = launch(1, ["run", str(ex / "job.toml"), "--input", str(ex / "data" / "7.png"), "--set", "mini_batch_size=1",
                   "--set", "process_count_per_node=1", "--set", "output_dir='runs/single'"], timeout=300)
    assert r.returncode == 0, r.output
    single = (ex / "runs" / "single" / "mnist_outputs.txt").read_text().splitlines()
    assert len(single) == 1 and single[0].startswith("7.png:")


def test_partition_per_folder(tmp_path):
    ex = copy_example("partition_per_folder", tmp_path)
    run_py(str(ex / "make_data.py"), cwd=ex)
    r = launch(2, ["run", str(ex / "job.toml")])
    assert r.returncode == 0, r.output
    assert "mini-batches" in r.stderr
    summaries = list((ex / "runs").rglob("partition_summaries/*.txt"))
    import json
    result = json.loads(next((ex / "runs").rglob("job_result.json")).read_text())
    assert len(summaries) == result["mini_batches"]["total"] >= 2


def job_output(ex: Path) -> tuple[dict, Path]:
    """The run's job_result.json and the append file it names."""
    import json
    result = json.loads(next((ex / "runs").rglob("job_result.json")).read_text())
    return result, Path(result["output_file"])


def test_iris_tabular(tmp_path):
    ex = copy_example("iris", tmp_path)
    run_py(str(ROOT / "scripts" / "train_iris.py"), "--model-dir", str(ex / "models" / "iris"),
           "--data-dir", str(ex / "data"))
    r = launch(2, ["run", str(ex / "job.toml")])
    assert r.returncode == 0, r.output
    result, output = job_output(ex)
    assert result["state"] == "succeeded" and result["mini_batches"]["total"] >= 2
    import pandas as pd
    lines = output.read_text().splitlines()
    assert lines[0] == "id,prediction" and lines.count(lines[0]) == 1
    predictions = pd.read_csv(output)
    inputs = pd.read_csv(ex / "data" / "iris.csv")
    assert len(predictions) == len(inputs) and predictions.id.is_unique
    assert set(predictions.id) == set(inputs.id)
    labels = pd.read_csv(ex / "data" / "iris_labels.csv")
    merged = predictions.merge(labels, on="id")
    accuracy = (merged.prediction == merged.species).mean()
    assert len(merged) == len(labels) and accuracy >= 0.9, accuracy


def test_partition_per_column(tmp_path):
    ex = copy_example("partition_per_column", tmp_path)
    run_py(str(ex / "make_data.py"), cwd=ex)
    r = launch(2, ["run", str(ex / "job.toml")])
    assert r.returncode == 0, r.output
    result, output = job_output(ex)
    import pandas as pd
    inputs = pd.read_csv(ex / "data" / "income.csv")
    expected = inputs.groupby("STATE").INCOME.agg(["size", "sum"])
    assert result["state"] == "succeeded" and result["mini_batches"]["total"] == len(expected)
    got = pd.read_csv(output)
    assert sorted(got.ID) == sorted(inputs.ID)
    per_state = got.groupby("STATE").agg(rows=("ID", "size"), state_rows=("state_rows", "unique"),
                                         total=("total_income", "unique"))
    assert sorted(per_state.index) == sorted(expected.index)
    for state, row in per_state.iterrows():
        assert row.rows == expected.loc[state, "size"] and list(row.state_rows) == [row.rows], state
        assert len(row.total) == 1 and row.total[0] == pytest.approx(expected.loc[state, "sum"],
                                                                     abs=0.01), state
