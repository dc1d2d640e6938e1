"""``prs-mpi results OUTPUT_DIR [--head N] [--to out.csv|out.parquet]``: the append file as a table.

Reads it with pandas the way ParallelRunStep users do, choosing the parser from the first lines:

* JSON Lines (``append_row_format = "jsonl"``)            → ``pd.read_json(lines=True)``
* ``name: value`` lines                                   → ``read_csv(sep=":", header=None)``
* delimited text (``,`` tab ``;`` ``|`` space), header if the first line looks like one
  (a DataFrame returned by ``run()`` is written with its header once at the top)
* anything else                                           → one column named ``value``

Works while the job runs: bytes reserved but not yet written (NUL holes) are skipped.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import re
import sys
from typing import Any, BinaryIO

import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_FILE = "parallel_run_step.txt"
SAMPLE_BYTES = 64 * 1024
SAMPLE_LINES = 50
_NAME_VALUE = re.compile(r"^[^:]+:\s")


class _NulStripper(io.RawIOBase):
    """A binary reader that drops NUL bytes (holes a running job has not written yet)."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while True:
            chunk = self._raw.read(len(buf))
            if not chunk:
                return 0
            chunk = chunk.replace(b"\0", b"")
            if chunk:
                buf[: len(chunk)] = chunk
                return len(chunk)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_text(path: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedReader(_NulStripper(open(path, "rb"))), encoding="utf-8",
                            errors="replace", newline="")


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def locate_output(output_dir: str) -> tuple[str, str, bool | None]:
    """(append file path, output_action, whether it starts with a header line or None if not
    recorded) from job_result.json/status.json or defaults."""
    meta = _read_json(os.path.join(output_dir, "job_result.json")) or \
        _read_json(os.path.join(output_dir, "status.json"))
    cfg = meta.get("config") or {}
    action = meta.get("output_action") or cfg.get("output_action") or "append_row"
    path = meta.get("output_file") or os.path.join(
        output_dir, cfg.get("append_row_file_name") or DEFAULT_FILE)
    header = meta.get("output_header")
    return path, action, header if isinstance(header, bool) else None


def sniff(sample_lines: list[str]) -> dict[str, Any]:
    """How to parse the file, from its first lines: {"kind": "jsonl"|"csv"|"lines", ...}."""
    lines = [ln for ln in sample_lines if ln.strip()]
    if not lines:
        return {"kind": "lines"}
    if all(ln.lstrip().startswith("{") and ln.rstrip().endswith("}") for ln in lines):
        return {"kind": "jsonl"}
    if all(_NAME_VALUE.match(ln) for ln in lines):
        return {"kind": "csv", "sep": ":", "header": None, "skipinitialspace": True}
    text = "\n".join(lines) + "\n"
    try:
        dialect = csv.Sniffer().sniff(text, delimiters=",\t;| ")
    except csv.Error:
        return {"kind": "lines"}
    try:
        header = csv.Sniffer().has_header(text) if len(lines) > 1 else False
    except csv.Error:
        header = False
    sep = dialect.delimiter
    return {"kind": "csv", "sep": r"\s+" if sep == " " else sep, "header": 0 if header else None,
            "skipinitialspace": sep != " "}


def _sample(path: str) -> list[str]:
    with _open_text(path) as fh:
        return [ln.rstrip("\r\n") for ln in itertools.islice(fh, SAMPLE_LINES)]


def read_results(path: str, head: int | None = None,
                 header: bool | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The append file as a DataFrame (first ``head`` rows only if given) and how it was read.

    ``header``: whether the first line is a header, when the run recorded it (else sniffed).
    A directory is an ``append_row_format = "parquet"`` dataset (committed part files)."""
    if os.path.isdir(path):
        parts = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".parquet"))
        df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
        return (df.head(head) if head else df), {"kind": "parquet"}
    fmt = sniff(_sample(path))
    if header is not None and fmt["kind"] == "csv":
        fmt["header"] = 0 if header else None
    with _open_text(path) as fh:
        if fmt["kind"] == "jsonl":
            df = pd.read_json(fh, lines=True, nrows=head)
        elif fmt["kind"] == "csv":
            df = pd.read_csv(fh, sep=fmt["sep"], header=fmt["header"], nrows=head,
                             skipinitialspace=fmt["skipinitialspace"], engine="python"
                             if len(fmt["sep"]) > 1 else "c")
        else:
            rows = (ln.rstrip("\r\n") for ln in fh if ln.strip())
            df = pd.DataFrame({"value": list(itertools.islice(rows, head))})
    return df, fmt


def _write(df: pd.DataFrame, to: str, header: bool) -> None:
    if to.endswith(".parquet"):
        df.set_axis([str(c) for c in df.columns], axis=1).to_parquet(to, index=False)
    elif to.endswith((".csv", ".txt")):
        df.to_csv(to, index=False, header=header)
    else:
        raise ValueError(f"--to {to!r}: use a name ending in .csv or .parquet")


def results_main(output_dir: str, head: int | None, to: str | None) -> int:
    """``prs-mpi results``. Exit codes: 0 ok, 1 unreadable or bad --to, 2 no append file."""
    path, action, header = locate_output(output_dir)
    if action == "summary_only":
        print(f"prs-mpi results: the job in {output_dir} ran with output_action = "
              "'summary_only', so it wrote no append file", file=sys.stderr)
        return 2
    if not os.path.exists(path):
        print(f"prs-mpi results: no append file {path}: pass the job's output_dir, or wait "
              "until the job has committed its first mini-batch", file=sys.stderr)
        return 2
    try:
        df, fmt = read_results(path, None if to else head, header)
        if to:
            _write(df, to, header=fmt.get("header") == 0 or fmt["kind"] != "csv")
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        print(f"prs-mpi results: cannot read {path} ({exc}); read it yourself with pandas, "
              "e.g. pd.read_csv(path, sep=..., header=None)", file=sys.stderr)
        return 1
    if head is not None:
        print(df.head(head).to_string())
    elif not to:
        print(df)
    if to:
        print(f"wrote {len(df)} rows from {path} to {to}")
    return 0
