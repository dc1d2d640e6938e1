#!/usr/bin/env python3
"""Train the MNIST example's small Keras CNN on CPU in seconds and save it.

    python scripts/train_mnist.py [--out scripts/examples/mnist/models/mnist] [--epochs 4]

Trains on the 1,347 training digits of ``make_mnist_data.load_split()`` (plus augmented
copies made like the data generator's, so the model copes with shifted and rotated
inputs), reports the accuracy on the 450 held-out digits and on augmented variants of them
(the images ``make_mnist_data.py`` writes), and saves ``OUT/model.keras`` plus
``OUT/metadata.json``. The model takes raw (n, 28, 28) uint8 images: scaling is inside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_mnist_data as data  # noqa: E402  (sibling script)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_OUT = Path(__file__).resolve().parent / "examples" / "mnist" / "models" / "mnist"
MODEL_FILE = "model.keras"
TRAIN_SEED = 1000  # augmentation seed for training copies; the data generator defaults to 0


def build_model():
    """A two-convolution CNN over raw 28x28 uint8 images, softmax over the ten digits."""
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(shape=(data.SIZE, data.SIZE), dtype="float32"),
        layers.Rescaling(1.0 / 255),
        layers.Reshape((data.SIZE, data.SIZE, 1)),
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def with_augmented(x: np.ndarray, y: np.ndarray, copies: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Return the images plus ``copies`` augmented variants of each, with their labels."""
    total = len(x) * (1 + copies)
    pairs = [data.variant(x, y, index, seed) for index in range(total)]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def train(out: str | Path = DEFAULT_OUT, epochs: int = 4, augment_copies: int = 4,
          seed: int = 0, verbose: int = 0) -> dict:
    """Train, evaluate on held-out digits, save ``out/model.keras``; return the metrics."""
    import keras

    keras.utils.set_random_seed(seed)
    split = data.load_split()
    train_x, train_y = with_augmented(split.train_x, split.train_y, augment_copies, TRAIN_SEED)
    test_x, test_y = with_augmented(split.test_x, split.test_y, 1, seed=0)
    started = time.perf_counter()
    model = build_model()
    model.fit(train_x, train_y, epochs=epochs, batch_size=32, shuffle=True, verbose=verbose)
    seconds = round(time.perf_counter() - started, 2)
    held = len(split.test_x)
    metrics = {
        "held_out_accuracy": _accuracy(model, test_x[:held], test_y[:held]),
        "held_out_augmented_accuracy": _accuracy(model, test_x[held:], test_y[held:]),
        "train_images": len(train_x), "held_out_images": held, "epochs": epochs,
        "train_seconds": seconds,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    (out / "metadata.json").write_text(json.dumps(
        {**metrics, "input": "uint8 (n, 28, 28), white digit on black", "classes": 10},
        indent=2) + "\n")
    return metrics


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of images whose most probable class is the label."""
    predicted = model.predict(x, batch_size=256, verbose=0).argmax(axis=1)
    return round(float(np.mean(predicted == y)), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="model directory (default: the MNIST example's models/mnist)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--augment-copies", type=int, default=4,
                        help="augmented copies of each training digit (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--verbose", action="store_true", help="show Keras progress")
    args = parser.parse_args(argv)
    metrics = train(args.out, args.epochs, args.augment_copies, args.seed, int(args.verbose))
    print(f"trained on {metrics['train_images']} images in {metrics['train_seconds']} s; "
          f"held-out accuracy {metrics['held_out_accuracy']:.4f} "
          f"({metrics['held_out_images']} digits), on augmented held-out variants "
          f"{metrics['held_out_augmented_accuracy']:.4f}; saved {Path(args.out) / MODEL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
