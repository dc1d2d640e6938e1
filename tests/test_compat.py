"""compat = "azureml": an unmodified ParallelRunStep-style entry script runs under prs-mpi."""
from __future__ import annotations

import subprocess
import sys

import pytest

from jobkit import launch

AZURE_STYLE = '''
import argparse
import os

import pandas as pd
from azureml.core.model import Model
from azureml.core import Model as CoreModel
from azureml_user.parallel_run import EntryScript


def init():
    global model_path, threshold
    parser = argparse.ArgumentParser()
    parser.add_argument("--threshold", type=float, default=0.5)
    args, _ = parser.parse_known_args()
    threshold = args.threshold
    model_path = Model.get_model_path("scorer")
    assert CoreModel.get_model_path("scorer") == model_path
    EntryScript().logger.info("init on %s with threshold %s", EntryScript().agent_name, threshold)


def run(mini_batch, mini_batch_context):
    logger = EntryScript().logger
    weight = float(open(os.path.join(model_path, "weight.txt")).read())
    logger.info("mini-batch %s of %d rows", mini_batch_context.minibatch_index, len(mini_batch))
    rows = []
    for path in mini_batch:
        value = float(open(path).read())
        rows.append({"file": os.path.basename(path), "score": value * weight,
                     "flag": value * weight > threshold})
    return pd.DataFrame(rows)
'''


@pytest.mark.mpi
def test_azure_style_entry_script_runs_unmodified(jobdir):
    jobdir.files(12, content=lambda i: f"{i / 10}\n")
    model = jobdir.root / "models" / "scorer"
    model.mkdir(parents=True)
    (model / "weight.txt").write_text("2.0\n")
    jobdir.script(AZURE_STYLE)
    job = jobdir.job(mini_batch_size=5, compat="azureml", arguments=["--threshold", "1.0"],
                     models={"scorer": "models/scorer"})
    r = launch(2, ["run", str(job)])
    assert r.returncode == 0, r.output
    import pandas as pd
    df = pd.read_csv(jobdir.out / "parallel_run_step.txt")
    assert len(df) == 12
    assert df.set_index("file").loc["f00007.txt", "score"] == pytest.approx(1.4)
    assert set(df[df.flag].file) == {f"f{i:05d}.txt" for i in range(6, 12)}
    user_logs = "".join(p.read_text() for p in (jobdir.out / "logs" / "user").rglob("*.log"))
    assert "threshold 1.0" in user_logs and "mini-batch 0 of 5 rows" in user_logs


def test_without_compat_the_azure_imports_fail_clearly(jobdir):
    jobdir.files(2, content=lambda i: "1\n")
    jobdir.script(AZURE_STYLE)
    (jobdir.root / "models").mkdir()
    r = launch(None, ["run", str(jobdir.job(models={"scorer": "models"}, run_max_try=1, init_max_try=1))])
    assert r.returncode == 1
    assert "No module named 'azureml'" in r.stderr


def test_compat_never_shadows_a_real_azureml(tmp_path, monkeypatch):
    fake = tmp_path / "site" / "azureml" / "core"
    fake.mkdir(parents=True)
    (tmp_path / "site" / "azureml" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("REAL = True\n")
    code = ("import sys; sys.path.insert(0, %r); from prs_mpi import compat; "
            "print(compat.install()); import azureml.core; print(azureml.core.REAL)") % str(tmp_path / "site")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "True"], out.stderr
