"""The run's log layout: per-rank system logs, processed_mini_batches.csv, job_error.txt, README."""
from __future__ import annotations

import csv
import io
import logging
import os
import sys
from typing import Any

PROCESSED_COLUMNS = ["mini_batch_id", "attempt", "rank", "host", "pid", "items", "succeeded", "failed", "start",
                     "end", "run_seconds", "input_seconds", "write_seconds", "status", "error"]
MAX_LOGGED_ERRORS = 50

LOGS_README = """\
prs-mpi run logs (laid out like ParallelRunStep's)

job_result.txt                 one paragraph: succeeded or why not, and where to look
job_error.txt                  the first errors: mini-batch id, attempt, rank, host, pid and the user's traceback
sys/processed_mini_batches.csv one row per attempt at a mini-batch (timings, counts, status, error summary)
sys/rank<N>.log                prs-mpi's own log of each rank (dispatching, retries, placement)
user/<host>/rank<N>.log        EntryScript().logger records and stdout/stderr of the entry script on that rank
perf/rank<N>.csv               CPU, memory, I/O and GPU samples per rank (resource_monitor_interval)
../job_result.json             machine-readable result; ../status.json live state while running
"""


def log_paths(output_dir: str, rank: int, host: str) -> dict[str, str]:
    logs = os.path.join(output_dir, "logs")
    return {"logs": logs, "sys": os.path.join(logs, "sys"), "user_dir": os.path.join(logs, "user", host),
            "user": os.path.join(logs, "user", host, f"rank{rank}.log"),
            "sys_log": os.path.join(logs, "sys", f"rank{rank}.log"), "perf": os.path.join(logs, "perf"),
            "perf_file": os.path.join(logs, "perf", f"rank{rank}.csv")}


class _RankFilter(logging.Filter):
    def __init__(self, rank: int, host: str) -> None:
        super().__init__()
        self.rank, self.host = rank, host

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank, record.host = self.rank, self.host
        return True


def setup_logging(level: str, rank: int, host: str, sys_log: str | None, stderr_level: str | None = None) -> None:
    """Rank and host in every record; the rank's file gets `level`, stderr only warnings (rank 0: level)."""
    root = logging.getLogger("prs_mpi")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s [rank %(rank)s %(host)s] %(name)s: %(message)s")
    flt = _RankFilter(rank, host)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(stderr_level or (level if rank == 0 else "WARNING"))
    console.setFormatter(fmt)
    console.addFilter(flt)
    root.addHandler(console)
    if sys_log:
        os.makedirs(os.path.dirname(sys_log), exist_ok=True)
        fh = logging.FileHandler(sys_log)
        fh.setLevel(level)
        fh.setFormatter(fmt)
        fh.addFilter(flt)
        root.addHandler(fh)


_ROW = "%d,%d,%d,%s,%d,%d,%d,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%s,\r\n"   # csv.writer's default line end
_plain_cache: dict[str, bool] = {}


def _plain(text: str) -> bool:
    """True when csv.writer would write `text` as it is (QUOTE_MINIMAL: no delimiter, quote or
    line break in it, not empty); cached: hosts and statuses are a handful of strings."""
    known = _plain_cache.get(text)
    if known is None:
        known = type(text) is str and text != "" and not any(c in text for c in ',"\r\n')
        if len(_plain_cache) < 4096:
            _plain_cache[text] = known
    return known


def attempt_row(a: Any, write_seconds: float = 0.0, status: str | None = None) -> str:
    """One processed_mini_batches.csv row, as csv.writer writes it."""
    status = status or a.status
    if (not a.error and _plain(a.host) and _plain(status) and type(a.batch_id) is type(a.attempt) is type(a.rank)
            is type(a.pid) is type(a.nitems) is type(a.succeeded) is type(a.failed) is int):
        # the common row: nothing to quote, formatted in one go
        return _ROW % (a.batch_id, a.attempt, a.rank, a.host, a.pid, a.nitems, a.succeeded, a.failed, a.start,
                       a.end, a.run_seconds, a.input_seconds, write_seconds, status)
    summary = (a.error or "").strip().splitlines()[-1:] if a.error else []
    _line.seek(0)
    _line.truncate()
    _line_writer.writerow([a.batch_id, a.attempt, a.rank, a.host, a.pid, a.nitems, a.succeeded, a.failed,
                           f"{a.start:.6f}", f"{a.end:.6f}", f"{a.run_seconds:.6f}", f"{a.input_seconds:.6f}",
                           f"{write_seconds:.6f}", status, summary[0][:300] if summary else ""])
    return _line.getvalue()


_line = io.StringIO()
_line_writer = csv.writer(_line)


def committed_rows(ok: list[Any], write_seconds: float) -> str:
    """The rows of a flush's successful attempts; the flush's write time is shared by bytes."""
    total = sum(a.nbytes for a in ok) or 1
    return "".join([attempt_row(a, write_seconds * a.nbytes / total) for a in ok])


class AttemptLog:
    """Rank 0's writer of processed_mini_batches.csv and job_error.txt."""

    def __init__(self, output_dir: str) -> None:
        sys_dir = os.path.join(output_dir, "logs", "sys")
        os.makedirs(sys_dir, exist_ok=True)
        with open(os.path.join(output_dir, "logs", "README.txt"), "w") as f:
            f.write(LOGS_README)
        path = os.path.join(sys_dir, "processed_mini_batches.csv")
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self.csv_file = open(path, "a", newline="")
        if new:
            csv.writer(self.csv_file).writerow(PROCESSED_COLUMNS)
        self.error_path = os.path.join(output_dir, "logs", "job_error.txt")
        self.errors_logged = 0
        self.first_error: str | None = None

    def attempt(self, a: Any, write_seconds: float = 0.0, status: str | None = None) -> None:
        self.csv_file.write(attempt_row(a, write_seconds, status))
        if a.error:
            self._attempt_error(a)

    def committed(self, ok: list[Any], write_seconds: float, rows: str | None = None) -> None:
        """Rows of the successful attempts of one flush; `rows` is `committed_rows(ok, ...)`
        when the worker formatted them (it did on rank 0's behalf: see protocol.Commit)."""
        self.csv_file.write(committed_rows(ok, write_seconds) if rows is None else rows)
        for a in ok:
            if a.error:            # partial: some items failed
                self._attempt_error(a)

    def _attempt_error(self, a: Any) -> None:
        self.error(f"mini-batch {a.batch_id} attempt {a.attempt} {a.status} on rank {a.rank} "
                   f"({a.host}, pid {a.pid})", a.error)

    def error(self, where: str, text: str) -> None:
        if self.first_error is None:
            self.first_error = f"{where}: {text.strip().splitlines()[-1] if text.strip() else ''}"
        if self.errors_logged >= MAX_LOGGED_ERRORS:
            return
        self.errors_logged += 1
        buf = io.StringIO()
        buf.write(f"=== {where}\n{text.rstrip()}\n\n")
        with open(self.error_path, "a") as f:
            f.write(buf.getvalue())

    def flush(self) -> None:
        self.csv_file.flush()

    def close(self) -> None:
        self.csv_file.close()
