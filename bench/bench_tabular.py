"""Tabular scoring benchmark: prs-mpi (N ranks) vs a single-process pandas loop, same files, same run.

    .venv/bin/python bench/bench_tabular.py [--gb 1.0] [--ranks 2] [--formats csv,parquet]
                                            [--mini-batch-size 8MB] [--repeat 1]
                                            [--peers pandas,pandas-pyarrow]

Generates (once, cached under ``$TMPDIR/prs-mpi-bench-tabular``) at least ``--gb`` GB of CSV and of
Parquet holding an ``id`` and 16 float features, then, per format, scores every row with a
linear numpy model and writes ``id,score`` rows as CSV: once with a plain pandas loop in one
process (``read_csv``/``iter_batches`` in chunks of the same size as the mini-batches, written
with ``to_csv``), once with ``mpiexec -n RANKS prs-mpi job.toml`` (``append_row`` output).  Both
run with BLAS and Arrow on one thread, after the files were read once (warm page cache), and
wall-clock times include start-up.  More peers (``--peers``): ``pandas-pyarrow`` (CSV only) reads
each file whole with ``read_csv(engine="pyarrow")`` and Arrow's thread pool on every core
(pandas' pyarrow engine reads no chunks); ``pandas-numeric`` is the pandas loop writing its rows
with prs-mpi's numeric CSV encoder (``prs_mpi.framecsv``: the bytes of ``to_csv``, about twice
as fast), so prs-mpi's speed-up over it is the parallel part alone.  The outputs are checked
against each other (row count and score sum), then GB/s of input (bytes on disk), CPU seconds
(the contender and all its descendants) and prs-mpi's wall-clock speed-up over each peer are
printed, with the load average: on a shared machine, compare CPU seconds too.

This file is also the prs-mpi jobs' entry script (``init``/``run`` below).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
# Not under bench/work, which other harness runs clean out; override with PRS_BENCH_TABULAR_DIR.
WORK = Path(os.environ.get("PRS_BENCH_TABULAR_DIR",
                           os.path.join(tempfile.gettempdir(), "prs-mpi-bench-tabular")))
VENV_BIN = Path(sys.executable).parent
FEATURES = [f"f{i:02d}" for i in range(16)]
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "ARROW_NUM_THREADS")}
_model: tuple[np.ndarray, float] | None = None


# ---------------------------------------------------------------------------- the model


def _weights() -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(20261123)
    return rng.standard_normal(len(FEATURES)), float(rng.standard_normal())


def score(frame: pd.DataFrame) -> pd.DataFrame:
    """``id`` and the linear model's score for every row."""
    weights, bias = _model or _weights()
    values = frame[FEATURES].to_numpy(dtype=np.float64) @ weights + bias
    return pd.DataFrame({"id": frame["id"].to_numpy(), "score": values})


def init() -> None:
    global _model
    _model = _weights()


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    return score(mini_batch)


# ---------------------------------------------------------------------------- data


def make_data(fmt: str, gb: float, files: int) -> list[Path]:
    """At least ``gb`` GB of ``fmt`` files under WORK/<fmt>-<gb>GB (reused when present)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    root = WORK / f"{fmt}-{gb:g}GB-{files}"
    done = root / "COMPLETE"
    if done.exists():
        return sorted(root.glob(f"*.{fmt}"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    per_file, rows, rng, next_id = gb * 1e9 / files, 200_000, np.random.default_rng(1), 0
    start = time.perf_counter()
    for n in range(files):
        path = root / f"part-{n:03d}.{fmt}"
        writer = None
        while not path.exists() or path.stat().st_size < per_file:
            table = pa.table({"id": np.arange(next_id, next_id + rows),
                              **{name: rng.standard_normal(rows) for name in FEATURES}})
            next_id += rows
            if writer is None:
                writer = (pacsv.CSVWriter(path, table.schema) if fmt == "csv" else
                          pq.ParquetWriter(path, table.schema))
            if fmt == "csv":
                writer.write_table(table)
            else:  # 65,536-row groups, about 8.5 MB each, reach the disk as they are written
                writer.write_table(table, row_group_size=65_536)
        writer.close()
    done.write_text(f"generated in {time.perf_counter() - start:.0f} s\n")
    return sorted(root.glob(f"*.{fmt}"))


# ---------------------------------------------------------------------------- contenders


def baseline(mode: str, paths: list[Path], batch_bytes: int, out: Path) -> None:
    """The single-process pandas loop (run in a child process: ``--baseline``).  ``mode`` is
    the format, "csv-pyarrow" (each CSV file read whole by pandas' pyarrow engine), or the
    format + "-numeric" (rows written by prs-mpi's own CSV encoder instead of ``to_csv``)."""
    out.unlink(missing_ok=True)
    fmt, numeric = mode.removesuffix("-numeric"), mode.endswith("-numeric")
    with open(out, "wb") as f:
        for n, chunk in enumerate(c for path in paths for c in _chunks(fmt, path, batch_bytes)):
            scores = score(chunk)
            if numeric:
                from prs_mpi.framecsv import numeric_body

                f.write(scores.iloc[:0].to_csv(index=False).encode() if n == 0 else b"")
                f.write(numeric_body(scores))
            else:
                scores.to_csv(f, header=n == 0, index=False)


def _chunks(fmt: str, path: Path, batch_bytes: int) -> Iterable[pd.DataFrame]:
    """DataFrames of about ``batch_bytes`` of ``path`` (a whole file for "csv-pyarrow")."""
    import pyarrow.parquet as pq

    if fmt == "csv-pyarrow":
        import pyarrow

        pyarrow.set_cpu_count(os.cpu_count() or 1)
        return [pd.read_csv(path, engine="pyarrow")]
    if fmt == "csv":
        return pd.read_csv(path, chunksize=max(1, batch_bytes // _csv_row_bytes(path)))
    pf = pq.ParquetFile(path)
    rows = max(1, int(batch_bytes / (path.stat().st_size / pf.metadata.num_rows)))
    return (batch.to_pandas() for batch in pf.iter_batches(batch_size=rows))


def _csv_row_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        sample = f.read(1 << 20)
    return max(1, len(sample) // max(1, sample.count(b"\n")))


def timed(cmd: list[str], threads: dict | None = None
          ) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd`` with ``threads`` (default: one thread everywhere) in its environment;
    (result, wall seconds, CPU seconds of it and all its descendants)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, **(ONE_THREAD if threads is None else threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc, wall, cpu


# peer: its --baseline mode; pandas-numeric isolates the parallel speed-up from prs-mpi's encoder
PEERS = {"pandas": "{fmt}", "pandas-pyarrow": "{fmt}-pyarrow", "pandas-numeric": "{fmt}-numeric"}


def run_baseline(mode: str, paths: list[Path], batch_bytes: int) -> tuple[float, float, Path]:
    """One peer, ``mode`` as ``--baseline`` takes it; the pyarrow reader keeps all its threads."""
    out = WORK / f"baseline-{mode}.csv"
    threads = {k: v for k, v in ONE_THREAD.items() if "ARROW" not in k and "OMP" not in k}
    _, wall, cpu = timed([sys.executable, __file__, "--baseline", mode, "--batch-bytes",
                          str(batch_bytes), "--out", str(out), *map(str, paths)],
                         threads if mode.endswith("-pyarrow") else None)
    return wall, cpu, out


def run_prs(fmt: str, paths: list[Path], ranks: int,
            mini_batch_size: str) -> tuple[float, float, Path]:
    output_dir = WORK / f"runs-{fmt}"
    shutil.rmtree(output_dir, ignore_errors=True)
    job = WORK / f"job-{fmt}.toml"
    env_lines = "\n".join(f'{k} = "{v}"' for k, v in ONE_THREAD.items())
    job.write_text(f"""entry_script = "{Path(__file__).name}"
source_directory = "{BENCH}"
mini_batch_size = "{mini_batch_size}"
output_action = "append_row"
append_row_file_name = "scores.csv"
output_dir = "{output_dir}"

[input]
kind = "tabular"
format = "{fmt}"
paths = {json.dumps([str(p) for p in paths])}

[environment_variables]
{env_lines}
""")
    _, wall, cpu = timed([str(VENV_BIN / "mpiexec"), "-n", str(ranks),
                          str(VENV_BIN / "prs-mpi"), str(job)])
    result = json.loads((output_dir / "job_result.json").read_text())
    if result["state"] != "succeeded":
        raise SystemExit(f"prs-mpi job {result['state']}: {result.get('reason')}")
    return wall, cpu, output_dir / "scores.csv"


def checksum(path: Path) -> tuple[int, float]:
    rows, total = 0, 0.0
    for chunk in pd.read_csv(path, chunksize=1_000_000, usecols=["score"]):
        rows, total = rows + len(chunk), total + float(chunk["score"].sum())
    return rows, total


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="GB of input per format")
    parser.add_argument("--files", type=int, default=4, help="files per format")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--mini-batch-size", default="8MB")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--peers", default="pandas,pandas-pyarrow",
                        help="single-process peers: pandas, pandas-pyarrow (CSV only), "
                        "pandas-numeric (written by prs-mpi's CSV encoder, not to_csv)")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    parser.add_argument("--batch-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline:
        return baseline(args.baseline, [Path(p) for p in args.paths], args.batch_bytes,
                        Path(args.out))
    unknown = set(args.peers.split(",")) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")
    print(f"ranks={args.ranks} mini_batch_size={args.mini_batch_size} cores={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}\n{'format':8} {'GB':>5} {'contender':16} {'s':>6} "
          f"{'GB/s':>6} {'cpu s':>6} {'prs-mpi speed-up':>16}", flush=True)
    for fmt in args.formats.split(","):
        paths = make_data(fmt, args.gb, args.files)
        peers = [p for p in args.peers.split(",") if fmt == "csv" or p != "pandas-pyarrow"]
        warm(paths)
        for _ in range(args.repeat):
            compare(fmt, paths, peers, args)


def compare(fmt: str, paths: list[Path], peers: list[str], args) -> None:
    """One repetition: every peer, then prs-mpi; outputs checked, one line per contender."""
    from prs_mpi.config import parse_size

    size = sum(p.stat().st_size for p in paths) / 1e9
    runs = {peer: run_baseline(PEERS[peer].format(fmt=fmt), paths, parse_size(args.mini_batch_size))
            for peer in peers}
    prs = runs[f"prs-mpi x{args.ranks}"] = run_prs(fmt, paths, args.ranks, args.mini_batch_size)
    rows, total = checksum(prs[2])
    for name, (_, _, out) in runs.items():
        other_rows, other_total = checksum(out)
        if other_rows != rows or not np.isclose(other_total, total, rtol=1e-9, atol=1e-6):
            raise SystemExit(f"{fmt}: outputs differ: {name} {other_rows} rows sum {other_total}, "
                             f"prs-mpi {rows} rows sum {total}")
    for name, (wall, cpu, _) in runs.items():
        speedup = f"{wall / prs[0]:16.2f}" if name in peers else f"{'':16}  ({rows:,} rows checked)"
        print(f"{fmt:8} {size:5.2f} {name:16} {wall:6.1f} {size / wall:6.3f} {cpu:6.1f} "
              f"{speedup}  load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
