#!/usr/bin/env python3
"""Make MNIST-like 28x28 PNG digits offline from scikit-learn's bundled handwritten digits.

    python scripts/make_mnist_data.py --out DIR --count N [--seed S] [--overwrite]

writes ``DIR/0.png … DIR/<N-1>.png`` (28x28, 8-bit grayscale, white ink on black like MNIST)
and ``DIR/labels.csv`` (``file,label``).

Source and split. scikit-learn ships 1,797 real handwritten digits (8x8, values 0..16).
They are split once, stratified by digit, with a fixed seed (``SPLIT_SEED``, independent of
``--seed``): 75 % train (1,347 digits, used by ``train_mnist.py``) and 25 % held out
(450 digits). Every PNG this script writes comes from a held-out digit, so the model
never saw it: images ``0 … 449`` are the held-out digits themselves, and any further images
are augmented variants of them (random rotation of up to ±12°, shift of up to ±2 px and
Gaussian pixel noise), cycling through the held-out digits. ``--seed`` only changes the
augmentation. Each image is drawn from its own generator seeded by ``(seed, index)``, so
the output is identical however it is produced.

Upscaling follows MNIST's construction: the digit is resized to 20x20 and centred in a
28x28 black canvas.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_SEED = 0
TEST_FRACTION = 0.25
SIZE = 28
INNER = 20
PARALLEL_FROM = 4000  # below this, starting worker processes costs more than it saves
_PNG_NAME = re.compile(r"^\d+\.png$")


@dataclass(frozen=True)
class Split:
    """Train and held-out digits as 28x28 uint8 images with integer labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def upscale(digits: np.ndarray) -> np.ndarray:
    """Turn (n, 8, 8) digits with values 0..16 into (n, 28, 28) uint8 MNIST-style images."""
    out = np.zeros((len(digits), SIZE, SIZE), dtype=np.uint8)
    pad = (SIZE - INNER) // 2
    for i, digit in enumerate(digits):
        small = Image.fromarray(np.clip(digit * (255 / 16), 0, 255).astype(np.uint8), "L")
        big = small.resize((INNER, INNER), Image.Resampling.BICUBIC)
        out[i, pad:pad + INNER, pad:pad + INNER] = np.asarray(big)
    return out


def load_split() -> Split:
    """Load scikit-learn's digits, upscale them and split them (fixed, stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = upscale(digits.images)
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=digits.target)
    return Split(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64))


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a lightly rotated, shifted and noisy copy of a 28x28 uint8 image."""
    angle = rng.uniform(-12.0, 12.0)
    shift = tuple(int(v) for v in rng.integers(-2, 3, size=2))
    moved = Image.fromarray(image, "L").rotate(
        angle, resample=Image.Resampling.BILINEAR, translate=shift, fillcolor=0)
    noisy = np.asarray(moved, dtype=np.float32) + rng.normal(0.0, 8.0, size=image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def variant(base_x: np.ndarray, base_y: np.ndarray, index: int,
            seed: int) -> tuple[np.ndarray, int]:
    """Image ``index`` of a stream over base images: originals first, then augmented copies."""
    k = index % len(base_x)
    if index < len(base_x):
        return base_x[k], int(base_y[k])
    return augment(base_x[k], np.random.default_rng([seed, index])), int(base_y[k])


def _clear_previous(out: Path, overwrite: bool) -> None:
    """Refuse to mix with an earlier data set, or remove its numbered PNGs and labels."""
    old = [p for p in out.iterdir() if _PNG_NAME.match(p.name)] if out.exists() else []
    if old and not overwrite:
        raise SystemExit(
            f"error: {out} already holds {len(old)} numbered PNG files from an earlier run; "
            "pass --overwrite to replace them or choose an empty --out directory")
    for path in old:
        path.unlink()
    (out / "labels.csv").unlink(missing_ok=True)


def _write_range(out: Path, start: int, stop: int, seed: int, base_x: np.ndarray,
                 base_y: np.ndarray) -> list[str]:
    """Write images ``start … stop-1``; return their ``file,label`` rows."""
    rows = []
    for index in range(start, stop):
        image, label = variant(base_x, base_y, index, seed)
        name = f"{index}.png"
        Image.fromarray(image, "L").save(out / name, format="PNG", compress_level=1)
        rows.append(f"{name},{label}")
    return rows


def _write_all(out: Path, count: int, seed: int, split: Split, jobs: int) -> list[str]:
    """Write every image, in ``jobs`` processes when the count makes that worth it."""
    if jobs <= 1 or count < PARALLEL_FROM:
        return _write_range(out, 0, count, seed, split.test_x, split.test_y)
    chunk = max(500, -(-count // (jobs * 8)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_write_range, out, start, min(start + chunk, count), seed,
                               split.test_x, split.test_y)
                   for start in range(0, count, chunk)]
        return [row for future in futures for row in future.result()]


def write_dataset(out: str | Path, count: int, seed: int = 0, overwrite: bool = False,
                  jobs: int | None = None) -> Path:
    """Write ``count`` PNGs and ``labels.csv`` under ``out``; return the labels file path."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = Path(out)
    _clear_previous(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    rows = _write_all(out, count, seed, load_split(), jobs or os.cpu_count() or 1)
    labels = out / "labels.csv"
    labels.write_text("file,label\n" + "\n".join(rows) + "\n")
    return labels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for the PNGs and labels.csv")
    parser.add_argument("--count", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace numbered PNGs already in --out")
    parser.add_argument("--jobs", type=int, default=None,
                        help=f"worker processes for counts of {PARALLEL_FROM} or more "
                             "(default: CPU count)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    labels = write_dataset(args.out, args.count, args.seed, args.overwrite, args.jobs)
    print(f"wrote {args.count} images and {labels} in {time.perf_counter() - started:.1f} s "
          "(all from held-out digits; see --help)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
