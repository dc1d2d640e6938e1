"""report.py and results.py against synthetic runs written in the DESIGN.md schemas."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import time
from dataclasses import dataclass, field

import pandas as pd
import pytest
from PIL import Image

from prs_mpi import report, results
from prs_mpi.report import build_report, render_text, write_html, write_png
from prs_mpi.report_html import STATUS_COLOURS, timeline_bars

ATTEMPT_FIELDS = ["mini_batch_id", "attempt", "rank", "host", "pid", "items", "succeeded",
                  "failed", "start", "end", "run_seconds", "input_seconds", "write_seconds",
                  "status", "error"]
PERF_FIELDS = ["time", "rank", "host", "cpu_percent", "rss_supervisor", "rss_child",
               "read_bytes", "write_bytes", "gpu_util", "gpu_mem"]


@dataclass
class SyntheticRun:
    path: str
    started: float
    ended: float
    rows: list[dict] = field(default_factory=list)
    ranks: int = 4


def _attempt_outcomes(mb: int, items: int, failing: dict, retried: set, partial: dict,
                      max_try: int) -> list[tuple[str, int, str]]:
    """[(status, failed items, error)] for each attempt of one mini-batch."""
    if mb in failing:
        err = f"Traceback (most recent call last):\n  File \"score.py\", line 9\nValueError: bad mb {mb}"
        return [(failing[mb], items, err)] * max_try
    if mb in retried:
        return [("crashed", items, "child exited with signal 9 (SIGKILL)"), ("ok", 0, "")]
    if mb in partial:
        return [("partial", partial[mb], f"run() returned {items - partial[mb]} of {items}")]
    return [("ok", 0, "")]


def make_run(root, *, ranks=4, n_mb=24, items=5, failing=None, retried=(), partial=None,
             state="failed", write_result=True, status_state=None, perf=True, seed=1,
             max_try=3, now=None) -> SyntheticRun:
    """Write a run in ``root``: mini-batches dealt to ranks, each rank's clock advancing."""
    failing = {3: "failed", 7: "timeout"} if failing is None else failing
    partial = {9: 2} if partial is None else partial
    rng = random.Random(seed)
    started = (now or time.time()) - 100.0
    clocks = [started + 0.2] * ranks
    run = SyntheticRun(str(root), started, started, ranks=ranks)
    for mb in range(n_mb):
        for attempt, (status, nfail, err) in enumerate(
                _attempt_outcomes(mb, items, failing, set(retried), partial, max_try), 1):
            rank = min(range(ranks), key=lambda r: clocks[r])
            inp, runs, wr = rng.uniform(0.01, 0.2), rng.uniform(0.5, 3.0), rng.uniform(0.01, 0.1)
            start = clocks[rank]
            end = start + inp + runs + wr
            clocks[rank] = end + rng.uniform(0.0, 0.3)
            run.rows.append(dict(mini_batch_id=mb, attempt=attempt, rank=rank, host=f"n{rank % 2}",
                                 pid=1000 + rank, items=items, succeeded=items - nfail,
                                 failed=nfail, start=round(start, 3), end=round(end, 3),
                                 run_seconds=round(runs, 4), input_seconds=round(inp, 4),
                                 write_seconds=round(wr, 4), status=status, error=err))
    run.ended = max(clocks) + 0.5
    _write_files(run, n_mb, items, state, write_result, status_state, perf, max_try)
    return run


def _write_files(run, n_mb, items, state, write_result, status_state, perf, max_try):
    os.makedirs(os.path.join(run.path, "logs", "sys"), exist_ok=True)
    with open(os.path.join(run.path, report.ATTEMPTS_CSV), "w", newline="") as fh:
        w = csv.DictWriter(fh, ATTEMPT_FIELDS)
        w.writeheader()
        w.writerows(run.rows)
    exp = expected_counts(run)
    if write_result:
        with open(os.path.join(run.path, "job_result.json"), "w") as fh:
            json.dump({"version": 1, "state": state, "reason": "error_threshold exceeded"
                       if state == "failed" else "", "started": run.started, "ended": run.ended,
                       "wall_seconds": run.ended - run.started,
                       "items": {"total": n_mb * items, "succeeded": exp["items_ok"],
                                 "failed": exp["items_failed"]},
                       "mini_batches": {"total": n_mb, "succeeded": exp["mb_ok"],
                                        "failed": exp["mb_failed"], "retried": exp["retried"]},
                       "throughput_items_per_s": exp["items_ok"] / (run.ended - run.started),
                       "ranks": run.ranks, "workers": run.ranks, "hosts": ["n0", "n1"],
                       "output_file": os.path.join(run.path, "parallel_run_step.txt"),
                       "output_action": "append_row", "config": {},
                       "worker_stats": [{"rank": r, "init_seconds": 0.1 * r}
                                        for r in range(run.ranks)]}, fh)
    if status_state:
        with open(os.path.join(run.path, "status.json"), "w") as fh:
            json.dump({"version": 1, "state": status_state, "updated": time.time(),
                       "started": run.started, "interval": 5.0,
                       "items": {"total": None, "done": exp["items_ok"] + exp["items_failed"],
                                 "succeeded": exp["items_ok"], "failed": exp["items_failed"]},
                       "mini_batches": {"total": None, "done": n_mb, "failed": exp["mb_failed"],
                                        "in_flight": 1, "listing_done": False},
                       "rate_items_per_s": 1.0, "eta_seconds": None,
                       "workers": [{"rank": 1, "host": "n1", "state": "running",
                                    "mini_batch": n_mb, "since": run.ended - 1.0,
                                    "last_error": None}],
                       "thresholds_left": {"error_threshold": 3}}, fh)
    if perf:
        os.makedirs(os.path.join(run.path, "logs", "perf"), exist_ok=True)
        for rank in range(run.ranks):
            with open(os.path.join(run.path, "logs", "perf", f"rank{rank}.csv"), "w",
                      newline="") as fh:
                w = csv.writer(fh)
                w.writerow(PERF_FIELDS)
                t = run.started
                while t < run.ended:
                    w.writerow([t, rank, f"n{rank % 2}", 50 + 10 * rank, 80 * 2**20,
                                200 * 2**20 + rank, int(t - run.started) * 1000, 0, "", ""])
                    t += 2.0


def expected_counts(run: SyntheticRun) -> dict:
    """Counts from the rows, computed without the code under test."""
    last = {}
    for r in run.rows:
        if r["mini_batch_id"] not in last or r["attempt"] > last[r["mini_batch_id"]]["attempt"]:
            last[r["mini_batch_id"]] = r
    return {"items_ok": sum(r["succeeded"] for r in last.values()),
            "items_failed": sum(r["failed"] for r in last.values()),
            "mb_ok": sum(r["status"] in ("ok", "partial") for r in last.values()),
            "mb_failed": sum(r["status"] not in ("ok", "partial") for r in last.values()),
            "retried": len(run.rows) - len(last),
            "bad_attempts": sum(r["status"] != "ok" for r in run.rows)}


# ----------------------------------------------------------------------------- report


def test_report_counts_and_split_match_the_rows(tmp_path):
    run = make_run(tmp_path, failing={3: "failed", 7: "timeout"}, retried={5}, partial={9: 2})
    exp = expected_counts(run)
    rep = build_report(str(tmp_path))
    assert rep.state == "failed"
    assert rep.items["failed"] == exp["items_failed"] == 5 + 5 + 2
    assert rep.mini_batches["retried"] == exp["retried"] == 2 + 2 + 1
    assert rep.throughput == pytest.approx(24 * 5 / (run.ended - run.started))
    assert len(rep.failures) == exp["bad_attempts"] == 3 + 3 + 1 + 1
    assert set(rep.failures["status"]) == {"failed", "timeout", "crashed", "partial"}
    assert rep.notes == []
    wall = run.ended - run.started
    assert rep.wall_seconds == pytest.approx(wall)
    for rs in rep.ranks:
        mine = [r for r in run.rows if r["rank"] == rs.rank]
        busy = sum(r["run_seconds"] for r in mine)
        assert rs.attempts == len(mine)
        assert rs.utilisation == pytest.approx(busy / wall)
        other = sum(r["input_seconds"] + r["write_seconds"] for r in mine)
        assert rs.init_s == pytest.approx(0.1 * rs.rank)
        assert rs.idle_s == pytest.approx(wall - busy - other - 0.1 * rs.rank)
        assert sum(rs.split().values()) == pytest.approx(wall)
    slowest = max(run.rows, key=lambda r: r["run_seconds"])
    assert rep.slowest.iloc[0]["mini_batch_id"] == slowest["mini_batch_id"]
    series = rep.throughput_series(nbins=30)
    assert len(series) == 30
    width = series[1][0] - series[0][0]
    assert width == pytest.approx(wall / 30)
    assert sum(rate for _, rate in series) * width == pytest.approx(
        sum(r["succeeded"] for r in run.rows))
    # the busiest bin cannot exceed all ranks finishing items back to back
    fastest = max(r["succeeded"] / (r["end"] - r["start"]) for r in run.rows)
    assert max(rate for _, rate in series) <= fastest * run.ranks + 1e-9


def test_render_text_names_failures_and_ranks(tmp_path):
    run = make_run(tmp_path, failing={4: "crashed"}, retried=(), partial={})
    text = render_text(build_report(str(tmp_path)))
    assert "FAILED" in text and "error_threshold exceeded" in text
    assert "3 attempts not ok" in text
    assert "ValueError: bad mb 4" in text
    for rank in range(4):
        n = sum(r["rank"] == rank for r in run.rows)
        assert re.search(rf"^ +{rank} +n{rank % 2} +{n} +{5 * n} +\d+%", text, re.M), text


def test_partial_attempt_without_error_says_what_happened(tmp_path):
    make_run(tmp_path, failing={}, partial={4: 3})
    path = tmp_path / report.ATTEMPTS_CSV
    path.write_text(path.read_text().replace("run() returned 2 of 5", ""))
    text = render_text(build_report(str(tmp_path)))
    assert "run() returned no result for 3 of 5 items" in text


def test_report_flags_job_result_that_disagrees_with_csv(tmp_path):
    make_run(tmp_path)
    path = tmp_path / "job_result.json"
    data = json.loads(path.read_text())
    data["items"]["failed"] += 1
    path.write_text(json.dumps(data))
    rep = build_report(str(tmp_path))
    assert any("failed items" in n for n in rep.notes)


def test_report_on_running_job_uses_status_and_draws_running_bar(tmp_path):
    run = make_run(tmp_path, write_result=False, status_state="running")
    doc = json.loads((tmp_path / "status.json").read_text())
    doc["items"] = {"total": None, "done": 999, "succeeded": 990, "failed": 9}
    (tmp_path / "status.json").write_text(json.dumps(doc))
    rep = build_report(str(tmp_path), now=run.ended)
    assert rep.state == "running"
    assert rep.items == {"total": None, "succeeded": 990, "failed": 9}  # live counts win
    assert len(rep.attempts) == len(run.rows)  # while the timeline comes from the CSV
    assert any("running" in n for n in rep.notes)
    bars = timeline_bars(rep, 1000)
    assert [b.status for b in bars].count("running") == 1
    assert "?" in render_text(rep)  # total unknown while listing


def test_report_on_interrupted_job_without_perf(tmp_path):
    make_run(tmp_path, state="interrupted", perf=False)
    rep = build_report(str(tmp_path))
    assert rep.state == "interrupted" and rep.perf.empty
    page = tmp_path / "r.html"
    write_html(rep, str(page))
    assert "No samples in" in page.read_text()


def test_report_from_csv_alone_and_missing_run(tmp_path):
    run = make_run(tmp_path, write_result=False, failing={1: "failed"}, partial={2: 1})
    rep = build_report(str(tmp_path))
    exp = expected_counts(run)
    assert rep.state == "unknown"
    assert rep.items["succeeded"] == exp["items_ok"] and rep.items["failed"] == 5 + 1
    assert rep.mini_batches["failed"] == exp["mb_failed"] == 1  # partial counts as done
    assert rep.mini_batches["succeeded"] == exp["mb_ok"] == 23
    assert report.report_main(str(tmp_path / "nope"), png=False) == 2


def test_report_rejects_csv_of_another_schema(tmp_path, capsys):
    make_run(tmp_path)
    (tmp_path / report.ATTEMPTS_CSV).write_text("id,start\n1,2\n")
    assert report.report_main(str(tmp_path), png=False) == 1
    assert "lacks columns" in capsys.readouterr().err


def test_resumed_run_leaves_out_attempts_of_the_earlier_run(tmp_path):
    run = make_run(tmp_path)
    path = tmp_path / "job_result.json"
    data = json.loads(path.read_text())
    cut = sorted(r["end"] for r in run.rows)[len(run.rows) // 2]
    data["started"] = cut  # as if the job was resumed at `cut`
    path.write_text(json.dumps(data))
    rep = build_report(str(tmp_path))
    earlier = sum(r["end"] < cut for r in run.rows)
    assert len(rep.attempts) == len(run.rows) - earlier
    assert any(f"{earlier} attempts from before" in n for n in rep.notes)
    assert all(b.x >= 0 for b in timeline_bars(rep, 1000))
    from prs_mpi.report_html import _perf_series
    curves = _perf_series(rep, "cpu_percent")
    assert curves and all(t >= 0 for pts in curves.values() for t, _ in pts)


def test_half_written_last_line_is_ignored(tmp_path):
    run = make_run(tmp_path, write_result=False, status_state="running")
    with open(tmp_path / report.ATTEMPTS_CSV, "a") as fh:
        fh.write("99,1,0,n0,12")
    assert len(build_report(str(tmp_path), now=run.ended).attempts) == len(run.rows)


def test_html_is_self_contained_and_has_every_attempt(tmp_path):
    run = make_run(tmp_path, failing={2: "failed"}, retried={6}, partial={})
    rep = build_report(str(tmp_path))
    page = tmp_path / "report.html"
    write_html(rep, str(page))
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert "url(" not in text
    assert text.count('class="mb mb-') == len(run.rows)
    assert text.count('class="mb mb-failed"') == 3 and text.count('class="mb mb-crashed"') == 1
    assert "ValueError: bad mb 2" in text
    assert "CPU" in text and "Memory RSS, child" in text and "GPU" not in text
    assert "Disk read, cumulative" in text


def test_tiny_bars_merge_but_keep_their_count(tmp_path):
    run = make_run(tmp_path, n_mb=400, failing={}, partial={}, ranks=2)
    rep = build_report(str(tmp_path))
    bars = timeline_bars(rep, 200)
    assert len(bars) < len(run.rows) / 2
    assert sum(b.count for b in bars) == len(run.rows)
    assert all(f"{b.count} mini-batches" in b.title for b in bars if b.count > 1)


def test_failures_stay_visible_among_many_tiny_bars(tmp_path):
    run = make_run(tmp_path, n_mb=3000, failing={1500: "failed"}, partial={}, ranks=2)
    bars = timeline_bars(build_report(str(tmp_path)), 300)
    failed = [b for b in bars if b.status == "failed"]
    assert sum(b.count for b in failed) == sum(r["status"] == "failed" for r in run.rows)
    assert all(b.w >= 2 for b in failed)
    assert bars.index(failed[0]) > max(i for i, b in enumerate(bars) if b.status == "ok")


def test_time_ticks_are_round():
    from prs_mpi.report_html import _ticks
    assert _ticks(6400, time_axis=True)[:3] == [0, 900, 1800]
    assert _ticks(2.0, time_axis=True) == [0, 0.5, 1.0, 1.5, 2.0]
    assert _ticks(100)[:3] == [0, 20, 40]
    from prs_mpi.report_html import _tick_label
    assert [_tick_label(t) for t in (0, 0.25, 2.0, 900)] == ["0s", "250ms", "2s", "15m00s"]


def test_png_timeline_shows_status_colours(tmp_path):
    make_run(tmp_path, failing={1: "failed"}, partial={}, retried={})
    png = tmp_path / "t.png"
    write_png(build_report(str(tmp_path)), str(png))
    img = Image.open(png).convert("RGB")
    assert img.width == 1400
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    rgb = lambda h: tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))  # noqa: E731
    assert rgb(STATUS_COLOURS["ok"]) in colours and rgb(STATUS_COLOURS["failed"]) in colours
    plot = img.crop((140, 60, img.width - 30, img.height - 40))
    ok_px = sum(n for n, c in plot.getcolors(maxcolors=1 << 20) if c == rgb(STATUS_COLOURS["ok"]))
    assert ok_px > 0.2 * plot.width * plot.height  # bars fill most of each rank's row


def test_report_main_writes_files(tmp_path, capsys):
    make_run(tmp_path)
    assert report.report_main(str(tmp_path), png=True) == 0
    assert (tmp_path / "report.html").stat().st_size > 5000
    assert Image.open(tmp_path / "report_timeline.png").format == "PNG"
    assert "report.html" in capsys.readouterr().out


# ----------------------------------------------------------------------------- results


def _append_file(tmp_path, text: bytes) -> str:
    path = tmp_path / "parallel_run_step.txt"
    path.write_bytes(text)
    return str(path)


def test_results_name_value_lines(tmp_path, capsys):
    _append_file(tmp_path, b"a.png: 7\nb.png: 3\nc.png: 1\n")
    df, fmt = results.read_results(str(tmp_path / "parallel_run_step.txt"))
    assert fmt["sep"] == ":" and fmt["header"] is None
    assert df[0].tolist() == ["a.png", "b.png", "c.png"] and df[1].tolist() == [7, 3, 1]
    assert results.results_main(str(tmp_path), head=2, to=None) == 0
    out = capsys.readouterr().out
    assert "b.png" in out and "c.png" not in out


def test_results_dataframe_csv_with_header_to_parquet_and_csv(tmp_path):
    rows = [f"f{i}.csv,{i},{i / 10}" for i in range(30)]
    _append_file(tmp_path, ("file,label,score\n" + "\n".join(rows) + "\n").encode())
    out = tmp_path / "out.parquet"
    assert results.results_main(str(tmp_path), head=None, to=str(out)) == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == ["file", "label", "score"] and len(df) == 30
    assert df["label"].sum() == sum(range(30))
    assert results.results_main(str(tmp_path), head=None, to=str(tmp_path / "o.csv")) == 0
    assert pd.read_csv(tmp_path / "o.csv").equals(df)


def test_results_header_recorded_by_the_run_beats_sniffing(tmp_path):
    _append_file(tmp_path, b"file,label\nf1.png,cat\nf2.png,dog\n")  # all text: sniffing guesses
    (tmp_path / "job_result.json").write_text(json.dumps({"state": "succeeded",
                                                          "output_header": True}))
    assert results.results_main(str(tmp_path), head=None, to=str(tmp_path / "o.parquet")) == 0
    df = pd.read_parquet(tmp_path / "o.parquet")
    assert list(df.columns) == ["file", "label"] and df["label"].tolist() == ["cat", "dog"]
    (tmp_path / "job_result.json").write_text(json.dumps({"output_header": False}))
    df, _ = results.read_results(str(tmp_path / "parallel_run_step.txt"), header=False)
    assert df.iloc[0].tolist() == ["file", "label"]


def test_results_skips_unwritten_holes_of_running_job(tmp_path):
    _append_file(tmp_path, b"x: 1\n" + b"\0" * 12 + b"y: 2\n" + b"\0" * 5)
    df, _ = results.read_results(str(tmp_path / "parallel_run_step.txt"))
    assert df[0].tolist() == ["x", "y"] and df[1].tolist() == [1, 2]


def test_results_jsonl_and_single_column(tmp_path):
    _append_file(tmp_path, b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
    df, _ = results.read_results(str(tmp_path / "parallel_run_step.txt"))
    assert df["a"].tolist() == [1, 2]
    _append_file(tmp_path, b"7\n3\n")
    df, fmt = results.read_results(str(tmp_path / "parallel_run_step.txt"))
    assert fmt["kind"] == "lines" and df["value"].tolist() == ["7", "3"]


def test_results_finds_file_named_in_job_result_and_reports_missing(tmp_path, capsys):
    make_run(tmp_path)
    assert results.results_main(str(tmp_path), head=None, to=None) == 2
    assert "no append file" in capsys.readouterr().err
    data = json.loads((tmp_path / "job_result.json").read_text())
    data["output_file"] = str(tmp_path / "preds.txt")
    (tmp_path / "job_result.json").write_text(json.dumps(data))
    (tmp_path / "preds.txt").write_text("a 1\nb 2\n")
    assert results.results_main(str(tmp_path), head=None, to=str(tmp_path / "x.json")) == 1
    assert "use a name ending in .csv or .parquet" in capsys.readouterr().err
    data["output_action"] = "summary_only"
    (tmp_path / "job_result.json").write_text(json.dumps(data))
    assert results.results_main(str(tmp_path), head=None, to=None) == 2
