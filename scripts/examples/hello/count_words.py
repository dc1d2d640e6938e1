"""Entry script: return ``"<file name>: <word count>"`` for every text file in the mini-batch."""
import os


def init():
    """Nothing to load: a real script would load its model here, once per worker."""


def run(mini_batch):
    """One line per input file; a file that cannot be read raises and fails the mini-batch."""
    results = []
    for path in mini_batch:
        with open(path, encoding="utf-8") as handle:
            results.append(f"{os.path.basename(path)}: {len(handle.read().split())}")
    return results
