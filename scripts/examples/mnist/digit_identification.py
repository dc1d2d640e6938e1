"""Entry script: identify handwritten digits in 28x28 grayscale PNG files with a Keras model.

The prs-mpi version of the seed tutorial's ``digit_identification.py``: ``init()`` loads the
model named ``mnist`` in the job file's ``[models]`` table once per worker; ``run()`` decodes
a mini-batch of PNGs with Pillow and predicts all of them in one call, returning one
``"<file name>: <digit>"`` line per readable image. An image that cannot be decoded is an
item failure: it is left out of the result and logged.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from prs_mpi import EntryScript, get_model_path

SIZE = 28
MODEL_FILE = "model.keras"
# What Pillow raises for missing, truncated, corrupt or oversized files.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

model = None


def init():
    """Load the model once per worker (on this rank's GPU if it was given one)."""
    global model
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        # Several workers may share a GPU: take memory as needed, not all of it up front.
        tf.config.experimental.set_memory_growth(gpu, True)
    import keras

    path = get_model_path("mnist")
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    model = keras.models.load_model(path)
    # Keras traces the predict function on the first call and again, shape-generic, on the
    # first call with another batch size (~0.3 s each): pay both here, not in run().
    for size in (1, 2):
        model.predict_on_batch(np.zeros((size, SIZE, SIZE), dtype=np.float32))
    EntryScript().logger.info("loaded %s (GPUs visible: %d)", path,
                              len(tf.config.list_physical_devices("GPU")))


def load_image(path: str) -> np.ndarray:
    """Decode one image as (28, 28) uint8 grayscale, resizing other sizes."""
    with Image.open(path) as image:
        gray = image.convert("L")
    if gray.size != (SIZE, SIZE):
        gray = gray.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def run(mini_batch):
    """Return ``"<file name>: <digit>"`` for every image in the mini-batch that decodes."""
    names, images = [], []
    for path in mini_batch:
        try:
            images.append(load_image(path))
        except DECODE_ERRORS as exc:
            EntryScript().logger.warning("skipping %s: cannot decode image: %s", path, exc)
            continue
        names.append(os.path.basename(path))
    if not images:
        return []
    probabilities = model.predict_on_batch(np.stack(images).astype(np.float32))
    digits = np.asarray(probabilities).argmax(axis=1)
    return [f"{name}: {digit}" for name, digit in zip(names, digits)]
