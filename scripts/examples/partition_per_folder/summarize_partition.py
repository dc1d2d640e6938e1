"""Entry script: word counts of the text files of one (user, genres) partition.

``run(mini_batch, mini_batch_context)`` gets every file of one partition; the keys are in
``mini_batch_context.partition_key_value`` (e.g. ``{"user": "bob", "genres": "piano"}``).
It returns one CSV line per file, as the seed's ``total_file_size.py`` does:
``user,genres,file,words,share_of_partition,partition_words``, and writes one summary line
per partition to ``<output_dir>/partition_summaries/user=<u>,genres=<g>.txt``.
"""
import os

from prs_mpi import EntryScript


def init():
    """Nothing to load."""


def _count_words(path):
    with open(path, encoding="utf-8") as handle:
        return len(handle.read().split())


def _write_summary(keys, files, words):
    """Write (atomically, so a retry never leaves half a file) the partition's summary."""
    folder = os.path.join(EntryScript().output_dir, "partition_summaries")
    os.makedirs(folder, exist_ok=True)
    name = ",".join(f"{key}={value}" for key, value in keys.items())
    path = os.path.join(folder, f"{name}.txt")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(f"{name} files={files} words={words}\n")
    os.replace(path + ".tmp", path)


def run(mini_batch, mini_batch_context):
    """One line per file, with the partition's keys and total."""
    keys = mini_batch_context.partition_key_value
    counts = {path: _count_words(path) for path in mini_batch}
    total = sum(counts.values())
    _write_summary(keys, len(counts), total)
    EntryScript().logger.info("partition %s: %d files, %d words", keys, len(counts), total)
    return [f"{keys['user']},{keys['genres']},{os.path.basename(path)},{words},"
            f"{words / total if total else 0.0:.4f},{total}"
            for path, words in counts.items()]
