"""``status.json`` writing/reading and ``prs-mpi status OUTPUT_DIR`` (render + exit code).

Exit codes of ``prs-mpi status``:

====  ==========================================================================
 0    succeeded
 1    failed (a threshold was exceeded or the job aborted)
 2    no such run: neither ``job_result.json`` nor ``status.json`` in OUTPUT_DIR
 3    running (or stopping: finishing the mini-batches in flight)
 4    lost: ``status.json`` says running but has not been rewritten for more than
      3 × its interval and there is no ``job_result.json`` (the job was probably
      killed; check the scheduler, then resume it with --resume)
 75   interrupted (resumable; EX_TEMPFAIL)
====  ==========================================================================

``job_result.json`` (written at the end) wins over ``status.json`` when its state is final.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from prs_mpi.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
RESULT_FILE = "job_result.json"
ATTEMPTS_CSV = os.path.join("logs", "sys", "processed_mini_batches.csv")
PERF_GLOB = os.path.join("logs", "perf", "rank*.csv")
DEFAULT_STATUS_INTERVAL = 5.0  # JobConfig.status_interval's default, for files without "interval"
STALE_FACTOR = 3.0
FINAL_STATES = ("succeeded", "failed", "interrupted")
LIVE_STATES = ("running", "stopping")  # "stopping": rank 0 told the workers to finish
EXIT_RUNNING = 3
EXIT_LOST = 4
EXIT_NO_RUN = EXIT_USAGE
EXIT_CODES = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "running": EXIT_RUNNING,
              "stopping": EXIT_RUNNING, "lost": EXIT_LOST, "interrupted": EXIT_INTERRUPTED}


class NoRunError(FileNotFoundError):
    """OUTPUT_DIR holds neither job_result.json nor status.json."""


def write_status(path: str, status: dict[str, Any]) -> None:
    """Write ``status`` as JSON to ``path`` atomically (temp file in the same dir + os.replace)."""
    from prs_mpi.summary import atomic_write
    atomic_write(os.path.abspath(path), json.dumps(status, indent=1, default=str))


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    for attempt in range(3):  # a shared file system may show a file mid-replace
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except json.JSONDecodeError as exc:
            if attempt == 2:
                raise ValueError(f"{path} is not valid JSON ({exc}); it was written by another "
                                 "tool or is damaged: delete it or re-run the job") from exc
            time.sleep(0.05)
    return None


def load_status(output_dir: str, now: float | None = None) -> dict[str, Any]:
    """The run's state as one dict: ``job_result.json`` if final, else ``status.json``.

    Adds ``source`` ("job_result" or "status") and ``output_dir``; a running ``status.json``
    older than 3 × its ``interval`` gets ``state = "lost"`` and ``reported_state``.
    Raises :class:`NoRunError` when neither file exists.
    """
    now = time.time() if now is None else now
    result = _read_json(os.path.join(output_dir, RESULT_FILE))
    status = _read_json(os.path.join(output_dir, STATUS_FILE))
    if result is None and status is None:
        raise NoRunError(f"no run in {output_dir!r}: neither {RESULT_FILE} nor {STATUS_FILE} "
                         "found; pass the job's output_dir (see its job.toml)")
    if result is not None and (result.get("state") in FINAL_STATES or status is None):
        merged = dict(result, source="job_result")
    else:
        merged = dict(status, source="status")
        merged.setdefault("interval", DEFAULT_STATUS_INTERVAL)
        age = now - float(merged.get("updated") or 0)
        if merged.get("state") in LIVE_STATES and age > STALE_FACTOR * float(merged["interval"]):
            merged["reported_state"], merged["state"] = merged["state"], "lost"
            merged["stale_seconds"] = age
    merged["output_dir"] = os.path.abspath(output_dir)
    return merged


def fmt_duration(seconds: float | None) -> str:
    """0.8ms, 42ms, 3.25s, 12.5s, 4m05s, 2h03m, 3d04h; '-' for None."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds == 0:
        return "0s"
    if seconds < 0.1:
        return f"{seconds * 1000:.{1 if seconds < 0.01 else 0}f}ms"
    if seconds < 60:
        return f"{seconds:.{2 if seconds < 10 else 1}f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def fmt_time(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch)))


def _of(done: Any, total: Any) -> str:
    if total in (None, -1):
        return f"{done} (total not known yet)"
    pct = f" ({100.0 * done / total:.1f} %)" if total else ""
    return f"{done} / {total}{pct}"


def _threshold_text(left: dict[str, Any] | None) -> str:
    if not left:
        return "-"
    return ", ".join(f"{k} {'off' if v is None else v}" for k, v in left.items())


def _workers_table(workers: list[dict[str, Any]], now: float) -> list[str]:
    rows = [("rank", "host", "state", "mini-batch", "for", "last error")]
    for w in sorted(workers, key=lambda w: w.get("rank", 0)):
        since = w.get("since")
        err = (w.get("last_error") or "-").splitlines() or ["-"]
        rows.append((str(w.get("rank", "?")), str(w.get("host", "?")), str(w.get("state", "?")),
                     "-" if w.get("mini_batch") is None else str(w["mini_batch"]),
                     fmt_duration(now - since) if since else "-", err[-1][:70]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:5])) + "  " + r[5]
            for r in rows]


def _render_live(st: dict[str, Any], now: float) -> list[str]:
    items, mbs = st.get("items", {}), st.get("mini_batches", {})
    listing = "" if mbs.get("listing_done", True) else ", still listing inputs"
    lines = [
        f"items:        {_of(items.get('done', 0), items.get('total'))}, "
        f"{items.get('succeeded', 0)} succeeded, {items.get('failed', 0)} failed",
        f"mini-batches: {_of(mbs.get('done', 0), mbs.get('total'))}, {mbs.get('failed', 0)} "
        f"failed, {mbs.get('in_flight', 0)} in flight{listing}",
        f"rate:         {st.get('rate_items_per_s') or 0:.2f} items/s   "
        f"ETA: {fmt_duration(st.get('eta_seconds'))}",
        f"thresholds left: {_threshold_text(st.get('thresholds_left'))}",
    ]
    if st.get("workers"):
        lines += ["workers:"] + _workers_table(st["workers"], now)
    return lines


def _render_final(res: dict[str, Any]) -> list[str]:
    items, mbs = res.get("items", {}), res.get("mini_batches", {})
    hosts = res.get("hosts") or []
    lines = [
        f"started {fmt_time(res.get('started'))}, ended {fmt_time(res.get('ended'))}, "
        f"wall {fmt_duration(res.get('wall_seconds'))}, {res.get('ranks', '?')} ranks on "
        f"{len(hosts)} host(s) {', '.join(hosts[:4])}{' ...' if len(hosts) > 4 else ''}",
        f"items:        {items.get('succeeded', 0)} succeeded, {items.get('failed', 0)} failed "
        f"of {items.get('total', '?')}",
        f"mini-batches: {mbs.get('succeeded', 0)} succeeded, {mbs.get('failed', 0)} failed of "
        f"{mbs.get('total', '?')} ({mbs.get('retried', 0)} retried)",
        f"throughput:   {res.get('throughput_items_per_s') or 0:.2f} items/s",
    ]
    if res.get("output_file"):
        lines.append(f"output:       {res['output_file']} ({res.get('output_action', '?')})")
    return lines


def render_status(status: dict[str, Any], now: float | None = None) -> str:
    """Human-readable text for a dict from :func:`load_status`."""
    now = time.time() if now is None else now
    state = str(status.get("state", "unknown"))
    where = status.get("output_dir", "")
    head = f"run {where}: {state.upper()}"
    if status.get("reason"):
        head += f" - {status['reason']}"
    lines = [head]
    if status.get("source") == "job_result":
        lines += _render_final(status)
    else:
        lines.append(f"started {fmt_time(status.get('started'))}, elapsed "
                     f"{fmt_duration(now - status['started']) if status.get('started') else '-'}"
                     f", status updated {fmt_duration(now - float(status.get('updated') or now))}"
                     " ago")
        if state == "lost":
            lines.append(f"WARNING: status.json says {status.get('reported_state')!r} but was "
                         f"last rewritten {fmt_duration(status.get('stale_seconds'))} ago "
                         f"(expected every {status.get('interval')}s) and there is no "
                         f"{RESULT_FILE}: the job was probably killed. Check the scheduler "
                         "(squeue/sacct), then resume it: the same command with --resume.")
        lines += _render_live(status, now)
    logs = os.path.join(where, "logs")
    lines.append(f"details:      {logs}/job_result.txt, {logs}/job_error.txt; "
                 f"`prs-mpi report {where}` for the timeline")
    return "\n".join(lines)


def status_main(output_dir: str, as_json: bool) -> int:
    """``prs-mpi status``: print the run's state; exit code per the module docstring."""
    try:
        status = load_status(output_dir)
    except NoRunError as exc:
        print(f"prs-mpi status: {exc}", file=sys.stderr)
        return EXIT_NO_RUN
    except ValueError as exc:
        print(f"prs-mpi status: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(render_status(status))
    return EXIT_CODES.get(str(status.get("state")), EXIT_FAILED)
