"""CPU-bound stand-in for model inference: a small MLP scoring 28x28 inputs with numpy.

Entry script contract (``init()`` once per worker, ``run(mini_batch)`` per mini-batch). An item
is any string whose basename ends in an integer id (``"123"``, ``"/data/img_000123.png"``); the
input image is generated from that id, so results are deterministic and no files are read.
Each item is scored as ``AUGMENTATIONS`` noisy copies (test-time augmentation), which makes it
a few milliseconds of single-threaded BLAS work. BLAS is limited to one thread so that one
worker process uses one core, whichever launcher runs it.
"""
import os
import re

import numpy as np

LAYERS = (784, 512, 512, 10)
AUGMENTATIONS = 64
WEIGHT_SEED = 20261123
_ID = re.compile(r"(\d+)\D*$")

_weights: list[tuple[np.ndarray, np.ndarray]] = []
_thread_limit = None


def _limit_blas_threads() -> None:
    global _thread_limit
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # env vars set by the harness still apply
        return
    _thread_limit = threadpool_limits(limits=1)


def init() -> None:
    """Build the deterministic weights and pin BLAS to one thread."""
    _limit_blas_threads()
    rng = np.random.default_rng(WEIGHT_SEED)
    _weights.clear()
    for fan_in, fan_out in zip(LAYERS[:-1], LAYERS[1:]):
        w = rng.standard_normal((fan_in, fan_out), dtype=np.float32) / np.float32(np.sqrt(fan_in))
        _weights.append((w, np.zeros(fan_out, dtype=np.float32)))


def item_id(item: str) -> int:
    """Integer id at the end of an item's basename."""
    match = _ID.search(os.path.basename(item))
    if match is None:
        raise ValueError(f"item {item!r} has no integer id at the end of its name")
    return int(match.group(1))


def _inputs(ident: int) -> np.ndarray:
    rng = np.random.default_rng(ident)
    image = rng.random(LAYERS[0], dtype=np.float32)
    noise = rng.standard_normal((AUGMENTATIONS, LAYERS[0]), dtype=np.float32)
    return image + np.float32(0.1) * noise


def predict(ident: int) -> int:
    """Class predicted for the input with this id (mean logits over the augmentations)."""
    if not _weights:
        raise RuntimeError("cpu_model.predict() called before init()")
    x = _inputs(ident)
    for i, (w, b) in enumerate(_weights):
        x = x @ w + b
        if i < len(_weights) - 1:
            np.maximum(x, 0, out=x)
    return int(np.argmax(x.mean(axis=0)))


def run(mini_batch: list[str]) -> list[str]:
    """One ``"<item>,<class>"`` line per item."""
    return [f"{item},{predict(item_id(item))}" for item in mini_batch]
