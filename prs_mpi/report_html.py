"""report.html (one self-contained file: inline CSS + SVG, no network) and the PNG timeline.

Draws a :class:`prs_mpi.report.Report`: per-rank Gantt timeline of mini-batch attempts coloured
by status, throughput over time, the per-rank time split, failures, slowest mini-batches and
the resource curves of logs/perf. The PNG is the same timeline drawn with Pillow.
"""

from __future__ import annotations

import html
import logging
import math
import os
import string
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from prs_mpi.status import ATTEMPTS_CSV, PERF_GLOB, fmt_duration, fmt_time

if TYPE_CHECKING:
    from prs_mpi.report import Report

log = logging.getLogger(__name__)

STATUS_COLOURS = {"ok": "#3a9d5d", "partial": "#e6a23c", "failed": "#d9534f",
                  "timeout": "#9b59b6", "crashed": "#6e2c2c", "revoked": "#9aa0a6",
                  "running": "#4a90e2"}
THROUGHPUT_COLOURS = {"succeeded": "#2ca02c", "failed": "#d62728"}  # lines, unlike the bars
SPLIT_COLOURS = {"run()": "#3a9d5d", "input": "#4a90e2", "output": "#e6a23c", "init()": "#b39ddb",
                 "idle": "#d5d8dc"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
MAX_FAILURE_ROWS = 200


def first_line(text: str, width: int = 90) -> str:
    """The last non-blank line of an error (where Python puts the exception), cut to width."""
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:width]


def error_of(a: Any) -> str:
    """The attempt's error summary; for a partial result without one, what happened."""
    if a.error or a.status != "partial":
        return a.error
    return f"run() returned no result for {int(a.failed)} of {int(a.items)} items"


# ----------------------------------------------------------------------------- timeline geometry

@dataclass
class Bar:
    row: int
    x: float
    w: float
    status: str
    title: str
    count: int = 1  # attempts merged into this bar


def _attempt_title(a: Any) -> str:
    err = f"\n{first_line(a.error, 200)}" if a.status != "ok" and a.error else ""
    return (f"mini-batch {int(a.mini_batch_id)} attempt {int(a.attempt)} on rank {int(a.rank)}"
            f" ({a.host}, pid {int(a.pid)}): {a.status}, {int(a.items)} items, "
            f"{a.end - a.start:.2f}s (run() {a.run_seconds:.2f}s){err}")


def timeline_bars(report: Report, width: float, min_px: float = 3.0) -> list[Bar]:
    """Per-rank bars in pixels; runs of same-status bars narrower than ``min_px`` merge.

    "ok" bars come first so that failures, drawn later, stay visible on top of them."""
    scale = width / report.wall_seconds if report.wall_seconds else 0.0
    rows = {r.rank: i for i, r in enumerate(report.ranks)}
    bars: list[Bar] = []
    for rank, g in report.attempts.sort_values("start").groupby("rank"):
        run: list[Any] = []
        for a in g.itertuples(index=False):
            x = max(0.0, (a.start - report.started) * scale)  # an attempt begun before --resume
            w = max(1.0 if a.status == "ok" else 2.0, (a.end - report.started) * scale - x)
            prev = bars[-1] if run else None
            if (prev and prev.status == a.status and w < min_px and prev.w < 50
                    and x - (prev.x + prev.w) < 1.0):
                run.append(a)
                prev.w, prev.count = max(prev.w, x + w - prev.x), len(run)
                prev.title = (f"{len(run)} mini-batches {int(run[0].mini_batch_id)}.."
                              f"{int(a.mini_batch_id)} on rank {int(rank)}: {a.status}")
            else:
                run = [a]
                bars.append(Bar(rows[int(rank)], x, w, a.status, _attempt_title(a)))
    for wk in report.running:
        x = (wk["since"] - report.started) * scale
        bars.append(Bar(rows.get(int(wk["rank"]), 0), x, max(1.0, width - x), "running",
                        f"rank {wk['rank']}: mini-batch {wk['mini_batch']} running since "
                        f"{fmt_time(wk['since'])}"))
    return sorted(bars, key=lambda b: b.status != "ok")  # stable: time order within each


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)


def _ticks(vmax: float, n: int = 8, time_axis: bool = False) -> list[float]:
    """Round tick values from 0 to vmax (1-2-5 steps; seconds/minutes/hours for time)."""
    if vmax <= 0:
        return [0.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if time_axis and raw > 1:
        step = next((s for s in _TIME_STEPS if s >= raw), step)
    return [i * step for i in range(int(vmax / step + 1e-9) + 1)]


def _tick_label(t: float) -> str:
    """Short time-axis label: 250ms, 1.5s, 30s, 15m00s, 2h00m."""
    if 0 < t < 1:
        return f"{round(t * 1000, 3):g}ms"
    return f"{round(t, 3):g}s" if t < 60 else fmt_duration(t)


# ----------------------------------------------------------------------------- HTML

def _svg_gantt(report: Report, width: int = 1100) -> str:
    left, plot_w = 110, width - 120
    row_h = max(4, min(22, 640 // max(1, len(report.ranks))))
    height = 24 + row_h * len(report.ranks) + 28
    parts = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">']
    for t in _ticks(report.wall_seconds, time_axis=True):
        x = left + t * plot_w / max(report.wall_seconds, 1e-9)
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="20" x2="{x:.1f}" '
                     f'y2="{height - 26}"/><text x="{x:.1f}" y="{height - 10}" '
                     f'text-anchor="middle">{_tick_label(t)}</text>')
    for i, r in enumerate(report.ranks):
        if row_h >= 10 or i % max(1, 12 // row_h) == 0:
            parts.append(f'<text x="{left - 6}" y="{24 + i * row_h + row_h * 0.7:.1f}" '
                         f'text-anchor="end">rank {r.rank} {html.escape(r.host[:10])}</text>')
    for b in timeline_bars(report, plot_w):
        stroke = ' stroke="#fff" stroke-width="0.6"' if b.w >= 4 and b.count == 1 else ""
        parts.append(f'<rect class="mb mb-{b.status}" x="{left + b.x:.1f}" '
                     f'y="{24 + b.row * row_h + 1}" width="{b.w:.1f}" height="{row_h - 2}" '
                     f'fill="{STATUS_COLOURS.get(b.status, "#333")}"{stroke}>'
                     f'<title>{html.escape(b.title)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_chart(series: dict[str, list[tuple[float, float]]], xmax: float, ylabel: str,
               width: int = 1100, height: int = 200, colours: dict[str, str] | None = None) -> str:
    left, right, top, bottom = 60, 150, 10, 28
    pw, ph = width - left - right, height - top - bottom
    ymax = max([y for pts in series.values() for _, y in pts if not math.isnan(y)] + [0]) * 1.1
    ymax = ymax or 1.0
    xmax = xmax or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    for t in _ticks(xmax, time_axis=True):
        x = left + t * pw / xmax
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" '
                     f'y2="{top + ph}"/><text x="{x:.1f}" y="{height - 8}" '
                     f'text-anchor="middle">{_tick_label(t)}</text>')
    for v in _ticks(ymax, 4):
        y = top + ph - v * ph / ymax
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + pw}" '
                     f'y2="{y:.1f}"/><text x="{left - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{v:g}</text>')
    parts.append(f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
                 f'text-anchor="middle">{html.escape(ylabel)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        colour = (colours or {}).get(name) or PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{left + x * pw / xmax:.1f},{top + ph - y * ph / ymax:.1f}"
                          for x, y in pts if not math.isnan(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{coords}"><title>{html.escape(name)}</title></polyline>')
        if i < 12:
            parts.append(f'<rect x="{left + pw + 12}" y="{top + i * 15}" width="10" height="10" '
                         f'fill="{colour}"/><text x="{left + pw + 26}" y="{top + i * 15 + 9}">'
                         f'{html.escape(name)}</text>')
    if len(series) > 12:
        parts.append(f'<text x="{left + pw + 12}" y="{top + 12 * 15 + 9}">'
                     f'+{len(series) - 12} more</text>')
    parts.append("</svg>")
    return "".join(parts)


def _perf_series(report: Report, column: str, scale: float = 1.0) -> dict[str, list]:
    """Per-rank (seconds since start, value / scale) within this run's time span."""
    perf = report.perf
    perf = perf[(perf["time"] >= report.started) & (perf["time"] <= report.ended + 1.0)]
    if column not in perf or perf[column].isna().all():
        return {}
    return {f"rank {int(r)}": [(t - report.started, v / scale) for t, v in
                               zip(g["time"], g[column]) if not math.isnan(v)]
            for r, g in perf.groupby("rank")}


def _html_table(header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="{"num" if i in numeric else ("err" if header[i] == "error" else "")}">'
        f"{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_ranks(report: Report) -> str:
    rows = []
    for r in report.ranks:
        w = r.wall_s or 1.0
        split = "".join(f'<span title="{k} {fmt_duration(v)}" style="width:{100 * v / w:.2f}%;'
                        f'background:{SPLIT_COLOURS[k]}"></span>' for k, v in r.split().items())
        rows.append([str(r.rank), html.escape(r.host), str(r.attempts), str(r.items),
                     f"{100 * r.utilisation:.1f}%", *map(fmt_duration, r.split().values()),
                     f'<div class="split">{split}</div>'])
    return _html_table(["rank", "host", "attempts", "items", "util", *SPLIT_COLOURS,
                        "time split"], rows, {0, *range(2, 10)})


def _html_failures(report: Report) -> str:
    fails = report.failures
    if not len(fails):
        return '<p class="muted">No failed attempts.</p>'
    rows = []
    for a in fails.head(MAX_FAILURE_ROWS).itertuples(index=False):
        logf = os.path.join("logs", "user", a.host, f"rank{int(a.rank)}.log")
        rows.append([str(int(a.mini_batch_id)), str(int(a.attempt)), str(int(a.rank)),
                     html.escape(a.host), str(int(a.pid)), str(int(a.failed)),
                     f'<span style="color:{STATUS_COLOURS.get(a.status, "#333")}">'
                     f"{html.escape(a.status)}</span>", html.escape(error_of(a)),
                     f'<a href="{html.escape(logf)}">log</a>'])
    more = (f'<p class="muted">Showing {MAX_FAILURE_ROWS} of {len(fails)}; all are in '
            f"{ATTEMPTS_CSV}.</p>" if len(fails) > MAX_FAILURE_ROWS else "")
    return _html_table(["mini-batch", "attempt", "rank", "host", "pid", "failed items",
                        "status", "error", ""], rows, {0, 1, 2, 4, 5}) + more


def _html_body(report: Report) -> str:
    it, mb = report.items, report.mini_batches
    kpis = [(fmt_duration(report.wall_seconds), "wall time"),
            (f"{report.throughput:.2f}", "items / s"), (it.get("succeeded", 0), "items succeeded"),
            (it.get("failed", 0), "items failed"), (f"{mb.get('succeeded', 0)} / "
                                                   f"{mb.get('failed', 0)}", "mini-batches ok / failed"),
            (mb.get("retried", 0), "retries"), (len(report.ranks), "ranks")]
    legend, split_legend = (
        '<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{s}</span>'
                                         for s, c in colours.items()) + "</div>"
        for colours in (STATUS_COLOURS, SPLIT_COLOURS))
    parts = [f'<h1>prs-mpi report <span class="state st-{html.escape(report.state)}">'
             f"{html.escape(report.state)}</span></h1>",
             f'<div class="muted">{html.escape(report.output_dir)} &middot; started '
             f"{fmt_time(report.started)}</div>"]
    if report.reason:
        parts.append(f"<p>{html.escape(report.reason)}</p>")
    parts += [f'<div class="note">{html.escape(n)}</div>' for n in report.notes]
    parts.append('<div class="kpis">' + "".join(f"<div class=kpi><b>{v}</b><span>{k}</span>"
                                                 "</div>" for v, k in kpis) + "</div>")
    parts += ["<h2>Timeline (mini-batches per rank)</h2>", legend,
              _svg_gantt(report), "<h2>Throughput (items / s)</h2>",
              _svg_chart({"succeeded": report.throughput_series(),
                          "failed": report.throughput_series(column="failed")},
                         report.wall_seconds, "items/s", colours=THROUGHPUT_COLOURS),
              "<h2>Per rank</h2>", split_legend,
              _html_ranks(report), f"<h2>Failures ({len(report.failures)} attempts)</h2>",
              _html_failures(report), "<h2>Slowest mini-batches</h2>", _html_slowest(report)]
    parts += _html_resources(report)
    return "\n".join(parts)


def _html_slowest(report: Report) -> str:
    rows = [[str(int(a.mini_batch_id)), str(int(a.attempt)), str(int(a.rank)),
             str(int(a.items)), fmt_duration(a.run_seconds), html.escape(a.status)]
            for a in report.slowest.itertuples(index=False)]
    return _html_table(["mini-batch", "attempt", "rank", "items", "run()", "status"], rows,
                       {0, 1, 2, 3, 4}) if rows else '<p class="muted">No mini-batches yet.</p>'


def _html_resources(report: Report) -> list[str]:
    charts = [("CPU (% of one core)", "cpu_percent", 1.0),
              ("Memory RSS, supervisor (MiB)", "rss_supervisor", 2**20),
              ("Memory RSS, child (MiB)", "rss_child", 2**20),
              ("Disk read, cumulative (MiB)", "read_bytes", 2**20),
              ("Disk written, cumulative (MiB)", "write_bytes", 2**20),
              ("GPU utilisation (%)", "gpu_util", 1.0), ("GPU memory (MiB)", "gpu_mem", 2**20)]
    out = ["<h2>Resources</h2>"]
    for title, col, scale in charts:
        series = _perf_series(report, col, scale)
        if series:
            out += [f"<h3>{html.escape(title)}</h3>",
                    _svg_chart(series, report.wall_seconds, title.split(" (")[0])]
    if len(out) == 1:
        out.append(f'<p class="muted">No samples in {PERF_GLOB} (resource_monitor_interval '
                   "= 0, or the job ended before the first sample).</p>")
    return out


def write_html(report: Report, path: str) -> None:
    """One self-contained HTML file: inline CSS and SVG, nothing fetched from the network."""
    template = resources.files("prs_mpi").joinpath("templates").joinpath("report.html")
    template = template.read_text(encoding="utf-8")
    page = string.Template(template).substitute(
        title=html.escape(f"prs-mpi report: {report.state} - {report.output_dir}"),
        body=_html_body(report))
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- PNG

def write_png(report: Report, path: str, width: int = 1400) -> None:
    """The per-rank timeline as a PNG, drawn with Pillow."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise RuntimeError("the PNG timeline needs Pillow: pip install pillow "
                           "(report.html has the same timeline without it)") from exc

    font = ImageFont.load_default(size=13)
    left, top, plot_w = 130, 48, width - 150
    row_h = max(4, min(24, 900 // max(1, len(report.ranks))))
    height = top + row_h * len(report.ranks) + 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), f"prs-mpi timeline: {report.state}, {fmt_duration(report.wall_seconds)}"
              f", {report.throughput:.2f} items/s - {report.output_dir}", fill="black",
              font=font)
    x = 10
    for status, colour in STATUS_COLOURS.items():
        draw.rectangle((x, 28, x + 11, 39), fill=colour)
        draw.text((x + 15, 26), status, fill="#333", font=font)
        x += 30 + int(draw.textlength(status, font=font))
    for t in _ticks(report.wall_seconds, time_axis=True):
        tx = left + t * plot_w / max(report.wall_seconds, 1e-9)
        draw.line((tx, top, tx, height - 34), fill="#eceff1")
        draw.text((tx, height - 30), _tick_label(t), fill="#444", font=font, anchor="ma")
    for i, r in enumerate(report.ranks):
        if row_h >= 12 or i % max(1, 14 // row_h) == 0:
            draw.text((left - 8, top + i * row_h + row_h / 2), f"rank {r.rank} {r.host[:10]}",
                      fill="#333", font=font, anchor="rm")
    bars = timeline_bars(report, plot_w)
    for b in bars:
        y0 = top + b.row * row_h + 1
        draw.rectangle((left + b.x, y0, left + b.x + b.w, y0 + row_h - 3),
                       fill=STATUS_COLOURS.get(b.status))
    for b in bars:  # after all bars, so back-to-back mini-batches stay apart
        if b.w >= 4 and b.count == 1:
            y0 = top + b.row * row_h + 1
            draw.line((left + b.x, y0, left + b.x, y0 + row_h - 3), fill="white")
    img.save(path, format="PNG")
