"""No-op entry script: returns one element per item without touching it (dispatch overhead)."""


def init() -> None:
    """Nothing to load."""


def run(mini_batch: list[str]) -> list[str]:
    """Return the item strings unchanged: one element per input, all successful."""
    return list(mini_batch)
