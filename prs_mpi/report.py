"""``prs-mpi report OUTPUT_DIR``: what a run did: the figures, as text (HTML/PNG: report_html).

Reads ``job_result.json`` (or ``status.json`` while running),
``logs/sys/processed_mini_batches.csv`` and ``logs/perf/rank*.csv`` (schemas in docs/DESIGN.md);
works on finished, interrupted and running jobs. Per rank, the wall time splits into ``run()``,
waiting for input, writing output, ``init()`` and idle (the rest: start-up, waiting for work,
the tail); utilisation is ``run()`` time / wall.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prs_mpi.monitor import FIELDS as PERF_FIELDS
from prs_mpi.report_html import error_of, first_line, write_html, write_png
from prs_mpi.status import (ATTEMPTS_CSV, LIVE_STATES, PERF_GLOB, NoRunError, fmt_duration,
                            fmt_time, load_status)

log = logging.getLogger(__name__)

ATTEMPT_COLUMNS = ("mini_batch_id", "attempt", "rank", "host", "pid", "items", "succeeded",
                   "failed", "start", "end", "run_seconds", "input_seconds", "write_seconds",
                   "status", "error")
NUMERIC = tuple(c for c in ATTEMPT_COLUMNS if c not in ("host", "status", "error"))
TOP_SLOWEST = 10
SPLIT_KEYS = ("run()", "input", "output", "init()", "idle")


@dataclass
class RankStats:
    """Where one rank's wall time went."""

    rank: int
    host: str
    attempts: int
    items: int
    run_s: float
    input_s: float
    write_s: float
    wall_s: float
    init_s: float = 0.0  # child start-up + init(), from job_result.json's worker_stats

    @property
    def idle_s(self) -> float:
        return max(0.0, self.wall_s - self.run_s - self.input_s - self.write_s - self.init_s)

    def split(self) -> dict[str, float]:
        """Seconds per SPLIT_KEYS entry."""
        return dict(zip(SPLIT_KEYS, (self.run_s, self.input_s, self.write_s, self.init_s,
                                     self.idle_s)))

    @property
    def utilisation(self) -> float:
        return self.run_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Report:
    output_dir: str
    state: str
    reason: str
    started: float
    ended: float
    items: dict[str, Any]
    mini_batches: dict[str, Any]
    ranks: list[RankStats]
    attempts: pd.DataFrame
    perf: pd.DataFrame
    running: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        return max(0.0, self.ended - self.started)

    @property
    def throughput(self) -> float:
        """Items processed (succeeded + failed) per second, as in job_result.json."""
        done = self.items.get("succeeded", 0) + self.items.get("failed", 0)
        return done / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def failures(self) -> pd.DataFrame:
        return self.attempts[self.attempts["status"] != "ok"]

    @property
    def slowest(self) -> pd.DataFrame:
        return self.attempts.sort_values("run_seconds", ascending=False).head(TOP_SLOWEST)

    def throughput_series(self, nbins: int = 60,
                          column: str = "succeeded") -> list[tuple[float, float]]:
        """(bin midpoint in s since start, items/s) of ``column`` ("succeeded" or "failed");
        each attempt's items are spread evenly over its [start, end]."""
        wall = self.wall_seconds
        if wall <= 0:
            return []
        edges = np.linspace(0.0, wall, nbins + 1)
        start = self.attempts["start"].to_numpy(float) - self.started
        end = np.maximum(self.attempts["end"].to_numpy(float) - self.started, start + 1e-6)
        overlap = np.clip(np.minimum(end[:, None], edges[None, 1:])
                          - np.maximum(start[:, None], edges[None, :-1]), 0.0, None)
        ok = self.attempts[column].to_numpy(float)
        per_bin = (overlap * (ok / (end - start))[:, None]).sum(axis=0)
        width = wall / nbins
        return [(float(m), float(v)) for m, v in zip(edges[:-1] + width / 2, per_bin / width)]


# ----------------------------------------------------------------------------- reading

def _read_csv_complete(path: str) -> pd.DataFrame | None:
    """Read a CSV that another process may be appending to: ignore a half-written last line."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    data = data[: data.rfind(b"\n") + 1]
    if not data.strip():
        return None
    return pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values={c: [""] for c in NUMERIC})


def read_attempts(output_dir: str) -> pd.DataFrame:
    """processed_mini_batches.csv as a DataFrame (empty, with the right columns, if absent)."""
    df = _read_csv_complete(os.path.join(output_dir, ATTEMPTS_CSV))
    if df is None:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in NUMERIC else "object")
                             for c in ATTEMPT_COLUMNS})
    missing = [c for c in ATTEMPT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{ATTEMPTS_CSV} lacks columns {missing}: it was written by another "
                         "version of prs-mpi; re-run the job or use that version's report")
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0)
    for col in ("host", "status", "error"):
        df[col] = df[col].astype(str)
    return df


def read_perf(output_dir: str) -> pd.DataFrame:
    frames = [f for f in (_read_csv_complete(p) for p in
                          sorted(glob.glob(os.path.join(output_dir, PERF_GLOB)))) if f is not None]
    if not frames:
        return pd.DataFrame(columns=list(PERF_FIELDS))
    perf = pd.concat(frames, ignore_index=True)
    for col in perf.columns:
        if col != "host":
            perf[col] = pd.to_numeric(perf[col], errors="coerce")
    return perf.sort_values(["rank", "time"], ignore_index=True)


def _final_counts(attempts: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Item and mini-batch counts from each mini-batch's last attempt."""
    last = attempts.sort_values("attempt").groupby("mini_batch_id").tail(1)
    last = last[last["status"] != "revoked"]
    done = last["status"].isin(("ok", "partial"))  # partial: item failures, mini-batch done
    items = {"total": int(last["items"].sum()), "succeeded": int(last["succeeded"].sum()),
             "failed": int(last["failed"].sum())}
    mbs = {"total": int(attempts["mini_batch_id"].nunique()),
           "succeeded": int(done.sum()), "failed": int((~done).sum()),
           "retried": int(len(attempts) - attempts["mini_batch_id"].nunique())}
    return items, mbs


def _worker_states(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """status.json's per-worker list (job_result.json's "workers" is a count)."""
    workers = meta.get("workers")
    return workers if meta.get("source") == "status" and isinstance(workers, list) else []


def _rank_stats(attempts: pd.DataFrame, perf: pd.DataFrame, meta: dict[str, Any],
                wall: float) -> list[RankStats]:
    """One entry per rank that exists (job_result "ranks"), worked, sampled or is working."""
    hosts = {int(w["rank"]): w.get("host", "?") for w in _worker_states(meta)}
    for df in (perf, attempts):
        last = df.dropna(subset=["rank"]).drop_duplicates("rank", keep="last")
        hosts.update(zip(last["rank"].astype(int), last["host"].astype(str)))
    ranks = sorted(set(range(int(meta.get("ranks") or 0))) | set(hosts))
    grouped = {int(k): g for k, g in attempts.groupby("rank")}
    init = {int(w["rank"]): float(w.get("init_seconds") or 0) for w in
            meta.get("worker_stats") or [] if isinstance(w, dict) and "rank" in w}
    out = []
    for rank in ranks:
        g = grouped.get(rank, attempts.iloc[0:0])
        out.append(RankStats(rank=rank, host=str(hosts.get(rank, "?")), attempts=len(g),
                             items=int(g["items"].sum()),
                             run_s=float(g["run_seconds"].sum()),
                             input_s=float(g["input_seconds"].sum()),
                             write_s=float(g["write_seconds"].sum()), wall_s=wall,
                             init_s=init.get(rank, 0.0)))
    return out


def _counts(meta: dict[str, Any], attempts: pd.DataFrame, notes: list[str],
            check: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headline counts: job_result.json's when final (checked against the CSV), status.json's
    while running (the CSV may lag behind), else the CSV's."""
    items, mbs = _final_counts(attempts)
    if meta.get("source") == "job_result":
        final_items = meta.get("items") or items
        if check and final_items.get("failed") != items["failed"]:
            notes.append(f"job_result.json counts {final_items.get('failed')} failed items but "
                         f"{ATTEMPTS_CSV} has {items['failed']} in last attempts")
        return final_items, meta.get("mini_batches") or mbs
    if meta.get("source") == "status":
        live_items, live_mbs = meta.get("items") or {}, meta.get("mini_batches") or {}
        items = {k: live_items.get(k, items[k]) for k in ("total", "succeeded", "failed")}
        done, failed = live_mbs.get("done", mbs["total"]), live_mbs.get("failed", mbs["failed"])
        mbs = {"total": live_mbs.get("total"), "succeeded": done - failed, "failed": failed,
               "retried": live_mbs.get("retried", mbs["retried"])}
    return items, mbs


def _time_span(meta: dict[str, Any], attempts: pd.DataFrame, now: float,
               notes: list[str]) -> tuple[float, float]:
    started = float(meta.get("started") or (attempts["start"].min() if len(attempts) else now))
    state = meta.get("state")
    if meta.get("source") == "job_result" and meta.get("ended"):
        return started, float(meta["ended"])
    if state in (*LIVE_STATES, "lost"):
        ended = now if state in LIVE_STATES else float(meta.get("updated") or now)
        notes.append(f"the job is {state}: figures cover the first "
                     f"{fmt_duration(ended - started)}")
        return started, ended
    return started, float(attempts["end"].max()) if len(attempts) else started


def build_report(output_dir: str, now: float | None = None) -> Report:
    """Gather everything the text/HTML/PNG views show. Raises NoRunError if nothing is there."""
    now = time.time() if now is None else now
    attempts = read_attempts(output_dir)
    perf = read_perf(output_dir)
    try:
        meta = load_status(output_dir, now=now)
    except NoRunError:
        if attempts.empty:
            raise
        meta = {"state": "unknown", "source": "csv"}
    notes: list[str] = []
    started, ended = _time_span(meta, attempts, now, notes)
    earlier = attempts["end"] < started  # attempts of a run before --resume
    items, mbs = _counts(meta, attempts, notes, check=not earlier.any())
    if earlier.any():
        notes.append(f"{int(earlier.sum())} attempts from before this run resumed are left out "
                     f"of the figures below; all are in {ATTEMPTS_CSV}")
        attempts = attempts[~earlier].reset_index(drop=True)
    running = [w for w in _worker_states(meta)
               if w.get("mini_batch") is not None and w.get("since")]
    return Report(output_dir=os.path.abspath(output_dir), state=str(meta.get("state", "unknown")),
                  reason=str(meta.get("reason") or ""), started=started, ended=ended,
                  items=items, mini_batches=mbs,
                  ranks=_rank_stats(attempts, perf, meta, ended - started),
                  attempts=attempts, perf=perf, running=running, notes=notes)


# ----------------------------------------------------------------------------- text

def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                             for i, c in enumerate(r)).rstrip() for r in rows]


def render_text(report: Report) -> str:
    """The summary `prs-mpi report` prints."""
    it, mb = report.items, report.mini_batches
    out = [f"run {report.output_dir}: {report.state.upper()}"
           + (f" - {report.reason}" if report.reason else ""),
           f"wall {fmt_duration(report.wall_seconds)} (started {fmt_time(report.started)}), "
           f"throughput {report.throughput:.2f} items/s",
           f"items: {it.get('succeeded', 0)} succeeded, {it.get('failed', 0)} failed of "
           f"{it.get('total') if it.get('total') not in (None, -1) else '?'}; mini-batches: "
           f"{mb.get('succeeded', 0)} succeeded, {mb.get('failed', 0)} failed "
           f"({mb.get('retried', 0)} retried)"]
    out += [f"note: {n}" for n in report.notes]
    rows = [["rank", "host", "attempts", "items", "util", *SPLIT_KEYS]]
    for r in report.ranks:
        rows.append([str(r.rank), r.host, str(r.attempts), str(r.items),
                     f"{100 * r.utilisation:.0f}%", *map(fmt_duration, r.split().values())])
    out += ["", "per rank (time split of the wall time):"] + _table(rows, set(range(2, 10)))
    if len(report.attempts):
        rows = [["mini-batch", "attempt", "rank", "items", "run()", "status"]]
        for a in report.slowest.itertuples(index=False):
            rows.append([str(int(a.mini_batch_id)), str(int(a.attempt)), str(int(a.rank)),
                         str(int(a.items)), fmt_duration(a.run_seconds), a.status])
        out += ["", f"slowest {len(rows) - 1} mini-batches:"] + _table(rows, {0, 1, 2, 3, 4})
    fails = report.failures
    if len(fails):
        rows = [["mini-batch", "attempt", "rank", "host", "status", "error"]]
        for a in fails.head(20).itertuples(index=False):
            rows.append([str(int(a.mini_batch_id)), str(int(a.attempt)), str(int(a.rank)),
                         a.host, a.status, first_line(error_of(a))])
        more = f" (first 20; all in {ATTEMPTS_CSV})" if len(fails) > 20 else ""
        out += ["", f"{len(fails)} attempts not ok{more}:"] + _table(rows, {0, 1, 2})
    else:
        out += ["", "no failed attempts"]
    return "\n".join(out)


# ----------------------------------------------------------------------------- command

def report_main(output_dir: str, png: bool) -> int:
    """``prs-mpi report``: print the summary, write report.html (+ report_timeline.png).

    Exit codes: 0 written, 2 no run in OUTPUT_DIR, 1 unreadable files.
    """
    try:
        report = build_report(output_dir)
    except NoRunError as exc:
        print(f"prs-mpi report: {exc}", file=sys.stderr)
        return 2
    except (ValueError, pd.errors.ParserError) as exc:
        print(f"prs-mpi report: {exc}", file=sys.stderr)
        return 1
    print(render_text(report))
    html_path = os.path.join(output_dir, "report.html")
    png_path = os.path.join(output_dir, "report_timeline.png")
    try:
        write_html(report, html_path)
        print(f"\nreport: {html_path}")
        if png:
            write_png(report, png_path)
            print(f"timeline: {png_path}")
    except OSError as exc:
        print(f"prs-mpi report: cannot write into {output_dir} ({exc}); copy the run "
              "directory somewhere writable and report on the copy", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # Pillow missing
        print(f"prs-mpi report: {exc}", file=sys.stderr)
        return 1
    return 0
