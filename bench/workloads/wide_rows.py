"""Output-path entry script: each item ``r<id>-<bytes>`` returns one row that long (newline
included once the runner writes it), so prs-mpi's append path moves a known number of bytes."""
import os


def row_bytes(item: str) -> int:
    """Bytes the item's row occupies in the output file, newline included."""
    try:
        return int(os.path.basename(item).rsplit("-", 1)[1])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"item {item!r} does not end in '-<bytes>'") from exc


def init() -> None:
    """Nothing to load."""


def run(mini_batch: list[str]) -> list[str]:
    """One row per item: the item's basename padded with ``x`` to its length minus the newline."""
    out = []
    for item in mini_batch:
        name = os.path.basename(item)
        out.append(name + "," + "x" * (row_bytes(item) - len(name) - 2))
    return out
