"""Item files for every contender: empty files in ``bench/work/items/<name>/`` and a listing file.

prs-mpi checks that every listed input exists (it never opens them for these entry scripts),
so each fake item is a real empty file; peers read the same listing. Entry scripts decode
what they need from the file's name (an id, a duration, a row length).
"""
import os
from pathlib import Path

from harness.common import WORK


def write_items(name: str, names: list[str]) -> Path:
    """Create one empty file per name; return ``bench/work/<name>.txt`` listing their paths."""
    directory = WORK / "items" / name
    directory.mkdir(parents=True, exist_ok=True)
    for item in names:
        os.close(os.open(directory / item, os.O_CREAT | os.O_WRONLY, 0o644))
    listing = WORK / f"{name}.txt"
    listing.write_text("".join(f"{directory / item}\n" for item in names), encoding="utf-8")
    return listing


def numbered(count: int, prefix: str = "item") -> list[str]:
    """``count`` item names ending in their integer id."""
    return [f"{prefix}{i:08d}" for i in range(count)]
