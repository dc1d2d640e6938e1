"""The examples' data generators, trained models and entry scripts, called directly (no MPI)."""
from __future__ import annotations

import importlib.util
import json
import logging
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from prs_mpi import EntryScript

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
EXAMPLES = SCRIPTS / "examples"


def load_script(path: Path, name: str):
    """Import a script or entry script from its file, as a fresh module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mnist_data():
    """scripts/make_mnist_data.py imported by name (its process pool pickles by name)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import make_mnist_data
        yield make_mnist_data
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def split(mnist_data):
    return mnist_data.load_split()


@pytest.fixture
def user_log():
    """Records what entry scripts log through EntryScript().logger."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = EntryScript().logger
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def read_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (28, 28), path
        return np.asarray(image)


# --- MNIST data -------------------------------------------------------------------------------

def test_split_holds_out_a_stratified_quarter(split):
    assert len(split.train_x) + len(split.test_x) == 1797
    assert len(split.test_x) == 450
    assert split.test_x.shape[1:] == (28, 28) and split.test_x.dtype == np.uint8
    assert set(np.unique(split.test_y)) == set(range(10))
    # Every digit's share of the held-out set is within one image of a quarter.
    for digit in range(10):
        total = np.sum(split.train_y == digit) + np.sum(split.test_y == digit)
        assert abs(np.sum(split.test_y == digit) - total / 4) <= 1


def test_generator_writes_distinct_labelled_pngs_from_held_out_digits(mnist_data, split, tmp_path):
    count = 520  # the 450 held-out digits, then 70 augmented variants of them
    labels = mnist_data.write_dataset(tmp_path, count, seed=3, jobs=1)
    table = pd.read_csv(labels)
    assert list(table.columns) == ["file", "label"]
    assert table["file"].tolist() == [f"{i}.png" for i in range(count)]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(table["file"])
    pixels = np.stack([read_pixels(tmp_path / name) for name in table["file"]])
    assert len({image.tobytes() for image in pixels}) == count
    held = len(split.test_x)
    np.testing.assert_array_equal(pixels[:held], split.test_x)
    expected = [int(split.test_y[i % held]) for i in range(count)]
    assert table["label"].tolist() == expected
    # The augmented variants stay close to the digit they come from.
    diff = np.abs(pixels[held:].astype(int) - split.test_x[:count - held].astype(int))
    assert 0 < diff.mean() < 60


def test_generator_is_deterministic_and_parallel_equals_serial(mnist_data, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_data, "PARALLEL_FROM", 1)
    count = 480
    serial = mnist_data.write_dataset(tmp_path / "serial", count, seed=5, jobs=1)
    parallel = mnist_data.write_dataset(tmp_path / "parallel", count, seed=5, jobs=2)
    other_seed = mnist_data.write_dataset(tmp_path / "other", count, seed=6, jobs=1)
    assert serial.read_text() == parallel.read_text() == other_seed.read_text()
    for name in ("0.png", "449.png", "450.png", "479.png"):
        np.testing.assert_array_equal(read_pixels(serial.parent / name),
                                      read_pixels(parallel.parent / name))
    assert (read_pixels(serial.parent / "479.png")
            != read_pixels(other_seed.parent / "479.png")).any()
    np.testing.assert_array_equal(read_pixels(serial.parent / "449.png"),
                                  read_pixels(other_seed.parent / "449.png"))


def test_generator_refuses_to_mix_with_an_earlier_data_set(mnist_data, tmp_path):
    mnist_data.write_dataset(tmp_path, 5, jobs=1)
    with pytest.raises(SystemExit, match="--overwrite"):
        mnist_data.write_dataset(tmp_path, 3, jobs=1)
    mnist_data.write_dataset(tmp_path, 3, overwrite=True, jobs=1)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["0.png", "1.png", "2.png"]
    assert len(pd.read_csv(tmp_path / "labels.csv")) == 3


# --- MNIST model and entry script (TensorFlow) ------------------------------------------------

@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    """A quickly trained model (few epochs): its directory and its training metrics."""
    pytest.importorskip("tensorflow", reason="the MNIST example needs tensorflow-cpu")
    train_mnist = load_script(SCRIPTS / "train_mnist.py", "train_mnist_under_test")
    out = tmp_path_factory.mktemp("models") / "mnist"
    with warnings.catch_warnings():  # Keras' own numpy-2 DeprecationWarning while training
        warnings.simplefilter("ignore", DeprecationWarning)
        metrics = train_mnist.train(out, epochs=3, augment_copies=1)
    return out, metrics


@pytest.fixture
def digit_script(mnist_model, monkeypatch):
    model_dir, _ = mnist_model
    monkeypatch.setenv("PRS_MPI_MODELS", json.dumps({"mnist": str(model_dir)}))
    script = load_script(EXAMPLES / "mnist" / "digit_identification.py", "digit_identification")
    script.init()
    return script


@pytest.mark.tensorflow
def test_trained_model_is_saved_with_its_metrics(mnist_model):
    model_dir, metrics = mnist_model
    assert (model_dir / "model.keras").stat().st_size > 0
    assert json.loads((model_dir / "metadata.json").read_text())["held_out_accuracy"] == \
        metrics["held_out_accuracy"]
    assert metrics["held_out_accuracy"] >= 0.9
    assert metrics["held_out_images"] == 450


@pytest.mark.tensorflow
def test_digit_run_identifies_held_out_images_and_skips_corrupt_ones(
        digit_script, mnist_data, tmp_path, user_log):
    labels = mnist_data.write_dataset(tmp_path, 120, jobs=1)
    (tmp_path / "garbage.png").write_bytes(b"this is not a PNG file" * 4)
    whole = (tmp_path / "7.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    good = [str(tmp_path / f"{i}.png") for i in range(120)]
    batch = (good[:50] + [str(tmp_path / "garbage.png")] + good[50:]
             + [str(tmp_path / "truncated.png")])

    calls = []
    predict = digit_script.model.predict_on_batch
    digit_script.model.predict_on_batch = lambda x: calls.append(len(x)) or predict(x)
    lines = digit_script.run(batch)

    assert calls == [120], "the whole mini-batch is predicted in one call"
    assert [line.split(":")[0] for line in lines] == [f"{i}.png" for i in range(120)]
    skipped = [r.getMessage() for r in user_log if r.levelno == logging.WARNING]
    assert len(skipped) == 2 and "garbage.png" in skipped[0] and "truncated.png" in skipped[1]

    # The seed's "view the results" with pandas, and the accuracy against the true labels.
    result_file = tmp_path / "mnist_outputs.txt"
    result_file.write_text("\n".join(lines) + "\n")
    check = load_script(EXAMPLES / "mnist" / "check_results.py", "check_results")
    results = check.read_results(result_file)
    assert list(results.columns) == ["Filename", "Prediction"]
    accuracy, _ = check.score(results, labels)
    assert accuracy >= 0.9
    assert check.main(["--results", str(result_file), "--labels", str(labels)]) == 0


@pytest.mark.tensorflow
def test_digit_run_of_only_unreadable_files_returns_nothing(digit_script, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert digit_script.run([str(tmp_path / "empty.png"), str(tmp_path / "missing.png")]) == []


def test_check_results_scores_against_labels_and_rejects_duplicates(tmp_path):
    check = load_script(EXAMPLES / "mnist" / "check_results.py", "check_results")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{i}.png,{i % 10}\n" for i in range(10)))
    predictions = [i % 10 if i not in (3, 7) else 0 for i in range(10)]
    results = tmp_path / "mnist_outputs.txt"
    results.write_text("".join(f"{i}.png: {predictions[i]}\n" for i in reversed(range(10))))
    accuracy, joined = check.score(check.read_results(results), labels)
    assert accuracy == pytest.approx(0.8) and len(joined) == 10
    args = ["--results", str(results), "--labels", str(labels)]
    assert check.main(args + ["--min-accuracy", "0.8"]) == 0
    assert check.main(args + ["--min-accuracy", "0.9"]) == 1
    with results.open("a") as handle:
        handle.write("0.png: 0\n")
    assert check.main(args + ["--min-accuracy", "0.5"]) == 1


# --- iris (tabular) ---------------------------------------------------------------------------

@pytest.fixture
def iris(tmp_path, monkeypatch):
    """A trained iris model, its input table and labels, and the initialised entry script."""
    train_iris = load_script(SCRIPTS / "train_iris.py", "train_iris_under_test")
    assert train_iris.main(["--model-dir", str(tmp_path / "model"),
                            "--data-dir", str(tmp_path / "data")]) == 0
    monkeypatch.setenv("PRS_MPI_MODELS", json.dumps({"iris": str(tmp_path / "model")}))
    monkeypatch.setattr(sys, "argv", ["score_iris.py", "--model-name", "iris", "--other", "1"])
    script = load_script(EXAMPLES / "iris" / "score_iris.py", "score_iris")
    script.init()
    return SimpleNamespace(script=script, data=pd.read_csv(tmp_path / "data" / "iris.csv"),
                           labels=pd.read_csv(tmp_path / "data" / "iris_labels.csv"))


def test_iris_run_returns_one_prediction_per_row(iris):
    chunk = iris.data.iloc[37:83]
    result = iris.script.run(chunk)
    assert list(result.columns) == ["id", "prediction"]
    assert result["id"].tolist() == chunk["id"].tolist()
    scored = iris.script.run(iris.data).merge(iris.labels, on="id")
    assert len(scored) == 150
    assert (scored["prediction"] == scored["species"]).mean() >= 0.9


def test_iris_rows_with_missing_features_are_item_failures(iris, user_log):
    chunk = iris.data.iloc[:6].copy()
    chunk.loc[2, "petal_width"] = np.nan
    result = iris.script.run(chunk)
    assert result["id"].tolist() == [0, 1, 3, 4, 5]
    assert any("[2]" in r.getMessage() for r in user_log)
    with pytest.raises(ValueError, match="petal_length"):
        iris.script.run(chunk.drop(columns=["petal_length"]))


# --- hello and the partition samples ----------------------------------------------------------

def test_hello_counts_words_of_every_file(tmp_path):
    make = load_script(EXAMPLES / "hello" / "make_data.py", "hello_make_data")
    assert make.main(["--out", str(tmp_path), "--count", "30"]) == 0
    script = load_script(EXAMPLES / "hello" / "count_words.py", "count_words")
    script.init()
    lines = script.run(sorted(str(p) for p in tmp_path.glob("*.txt")))
    expected = (tmp_path / "expected_output.lst").read_text().splitlines()
    assert len(lines) == 30 and sorted(lines) == expected
    name, count = lines[0].split(": ")
    assert int(count) == len((tmp_path / name).read_text().split())


def test_partition_per_folder_summarises_each_partition(tmp_path, monkeypatch):
    make = load_script(EXAMPLES / "partition_per_folder" / "make_data.py", "ppf_make_data")
    counts = make.write_files(tmp_path / "data")
    monkeypatch.setattr(EntryScript(), "output_dir", str(tmp_path / "out"))
    script = load_script(EXAMPLES / "partition_per_folder" / "summarize_partition.py", "ppf")
    script.init()
    for (user, genres), words in counts.items():
        files = sorted(str(p) for p in (tmp_path / "data" / user / genres).glob("*.txt"))
        context = SimpleNamespace(partition_key_value={"user": user, "genres": genres})
        lines = script.run(files, context)
        assert len(lines) == len(files) == len(words)
        fields = [line.split(",") for line in lines]
        assert {(f[0], f[1], f[5]) for f in fields} == {(user, genres, str(sum(words)))}
        assert sorted(int(f[3]) for f in fields) == sorted(words)
        summary = tmp_path / "out" / "partition_summaries" / f"user={user},genres={genres}.txt"
        assert summary.read_text() == \
            f"user={user},genres={genres} files={len(words)} words={sum(words)}\n"


def test_partition_per_column_attaches_state_aggregates(tmp_path):
    make = load_script(EXAMPLES / "partition_per_column" / "make_data.py", "ppc_make_data")
    table = make.make_frame(300, seed=1)
    script = load_script(EXAMPLES / "partition_per_column" / "state_income.py", "ppc")
    script.init()
    for state, rows in table.groupby("STATE"):
        result = script.run(rows, SimpleNamespace(partition_key_value={"STATE": state}))
        assert result["ID"].tolist() == rows["ID"].tolist()
        assert set(result["state_rows"]) == {len(rows)}
        assert result["total_income"].iloc[0] == pytest.approx(rows["INCOME"].sum(), abs=0.01)
    with pytest.raises(ValueError, match="not partitioned by STATE"):
        script.run(table, SimpleNamespace(partition_key_value={"STATE": "CA"}))
