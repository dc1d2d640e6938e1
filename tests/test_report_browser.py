"""report.html opened in headless Chromium (Debian's `chromium` package): the timeline is drawn."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageStat

from prs_mpi.report import build_report, write_html
from prs_mpi.report_html import STATUS_COLOURS
from test_report import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed: apt-get install -y chromium")]


def screenshot(html_path, png_path, profile) -> Image.Image:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
           f"--screenshot={png_path}", "--window-size=1200,900", f"file://{html_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and png_path.exists(), proc.stderr[-2000:]
    return Image.open(png_path).convert("RGB")


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _pixels_of(img: Image.Image, hex_colour: str) -> list[tuple[int, int]]:
    """(x, y) of every pixel exactly this colour (SVG rect fills render without blending)."""
    ys, xs = np.nonzero((np.asarray(img) == np.array(_rgb(hex_colour))).all(axis=2))
    return list(zip(xs.tolist(), ys.tolist()))


def test_report_timeline_renders_in_chromium(tmp_path):
    make_run(tmp_path / "run", failing={2: "failed"}, retried={6}, partial={})
    page = tmp_path / "run" / "report.html"
    write_html(build_report(str(tmp_path / "run")), str(page))
    img = screenshot(page, tmp_path / "shot.png", tmp_path / "profile")
    assert img.size == (1200, 900)
    stat = ImageStat.Stat(img.convert("L"))
    assert stat.stddev[0] > 20, "screenshot is (nearly) uniform: the page did not render"
    failed = _pixels_of(img, STATUS_COLOURS["failed"])
    crashed = _pixels_of(img, STATUS_COLOURS["crashed"])
    # three failed attempts of ~1-3 s each, ~60 px/s and ~20 px high, plus the legend swatch
    assert len(failed) > 1000 and len(crashed) > 200, (len(failed), len(crashed))
    ok = _pixels_of(img, STATUS_COLOURS["ok"])
    ys = sorted({y for _, y in failed})
    band = (ys[0], ys[-1])
    ok_in_band = sum(band[0] <= y <= band[1] for _, y in ok)
    assert ok_in_band > 20000, "the timeline band holds few ok bars"
    assert band[1] < 600, f"timeline drawn too low on the page: rows {band}"


def test_running_job_shows_running_bar_in_chromium(tmp_path):
    run = make_run(tmp_path / "run", write_result=False, status_state="running")
    page = tmp_path / "run" / "report.html"
    write_html(build_report(str(tmp_path / "run"), now=run.ended + 2.0), str(page))
    img = screenshot(page, tmp_path / "shot.png", tmp_path / "profile")
    running = _pixels_of(img, STATUS_COLOURS["running"])
    assert len(running) > 150 + 12 * 12, "no running bar besides the legend swatch"
