"""Failure accounting against the thresholds, and the end-of-run result (job_result.json/.txt)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

RESULT_VERSION = 1


@dataclass
class Accounting:
    """Counts items and mini-batches; says when a ParallelRunStep threshold is exceeded."""

    error_threshold: int = -1
    allowed_failed_count: int = -1
    allowed_failed_percent: float = 100.0
    items_ok: int = 0
    items_failed: int = 0
    batches_ok: int = 0
    batches_failed: int = 0
    batches_total: int | None = None    # known once the listing has finished
    items_total: int | None = None
    attempts: int = 0
    retries: int = 0
    reused: int = 0
    speculated: int = 0                 # copies of stragglers run at the tail ([dispatch] speculative)

    def committed(self, succeeded: int, failed: int) -> None:
        self.batches_ok += 1
        self.items_ok += succeeded
        self.items_failed += failed

    def failed(self, nitems: int) -> None:
        self.batches_failed += 1
        self.items_failed += max(nitems, 0)

    @property
    def batches_done(self) -> int:
        return self.batches_ok + self.batches_failed

    @property
    def items_done(self) -> int:
        return self.items_ok + self.items_failed

    def exceeded(self) -> str | None:
        """The reason the job must stop now, or None. Thresholds are 'above', as in ParallelRunStep."""
        if self.error_threshold != -1 and self.items_failed > self.error_threshold:
            return (f"error_threshold exceeded: {self.items_failed} items failed, more than "
                    f"error_threshold = {self.error_threshold}; fix the errors listed in logs/job_error.txt, "
                    "or raise error_threshold (-1 ignores item failures)")
        if self.allowed_failed_count != -1 and self.batches_failed > self.allowed_failed_count:
            return (f"allowed_failed_count exceeded: {self.batches_failed} mini-batches failed, more than "
                    f"allowed_failed_count = {self.allowed_failed_count}; see logs/job_error.txt, "
                    "or raise allowed_failed_count (-1 = no limit)")
        if self.batches_total and self.allowed_failed_percent < 100:
            pct = 100.0 * self.batches_failed / self.batches_total
            if pct > self.allowed_failed_percent:
                return (f"allowed_failed_percent exceeded: {self.batches_failed} of {self.batches_total} "
                        f"mini-batches failed ({pct:.1f}%), more than allowed_failed_percent = "
                        f"{self.allowed_failed_percent:g}; see logs/job_error.txt")
        return None

    def left(self) -> dict[str, int | None]:
        return {
            "error_threshold": None if self.error_threshold == -1 else self.error_threshold - self.items_failed,
            "allowed_failed_count": (None if self.allowed_failed_count == -1
                                     else self.allowed_failed_count - self.batches_failed),
        }


def atomic_write(path: str, text: str) -> None:
    import tempfile        # rank 0's (worker ranks leave tempfile and random unloaded)
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass
class RunResult:
    state: str                       # succeeded | failed | interrupted
    reason: str
    started: float
    ended: float = field(default_factory=time.time)

    def to_dict(self, acc: Accounting, cfg: Any, ranks: int, workers: int, hosts: list[str],
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        wall = max(self.ended - self.started, 1e-9)
        return {
            "version": RESULT_VERSION, "state": self.state, "reason": self.reason,
            "started": self.started, "ended": self.ended, "wall_seconds": round(wall, 4),
            "items": {"total": acc.items_total if acc.items_total is not None else acc.items_done,
                      "succeeded": acc.items_ok, "failed": acc.items_failed},
            "mini_batches": {"total": acc.batches_total if acc.batches_total is not None else acc.batches_done,
                             "succeeded": acc.batches_ok, "failed": acc.batches_failed,
                             "retried": acc.retries, "attempts": acc.attempts, "reused": acc.reused,
                             "speculated": acc.speculated},
            "throughput_items_per_s": round(acc.items_done / wall, 3),
            "ranks": ranks, "workers": workers, "hosts": hosts,
            "output_file": cfg.output_file if cfg.output_action == "append_row" else None,
            "output_action": cfg.output_action,
            "thresholds": {"error_threshold": cfg.error_threshold, "allowed_failed_count": cfg.allowed_failed_count,
                           "allowed_failed_percent": cfg.allowed_failed_percent},
            "config": redacted(cfg.to_dict()),
            **(extra or {}),
        }


def redacted(obj: Any) -> Any:
    """A config view with credentials and query tokens removed from every URL."""
    from .storage import redact
    if isinstance(obj, dict):
        return {k: redacted(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redacted(v) for v in obj]
    return redact(obj) if isinstance(obj, str) and "://" in obj else obj


def write_result(output_dir: str, result: dict[str, Any]) -> None:
    atomic_write(os.path.join(output_dir, "job_result.json"), json.dumps(result, indent=2, default=str) + "\n")
    atomic_write(os.path.join(output_dir, "logs", "job_result.txt"), result_paragraph(result) + "\n")


def result_paragraph(r: dict[str, Any]) -> str:
    items, mb = r["items"], r["mini_batches"]
    head = {"succeeded": "The job succeeded", "failed": "The job FAILED",
            "interrupted": "The job was INTERRUPTED (resume it with --resume)"}.get(r["state"], r["state"])
    text = (f"{head}: {items['succeeded']} of {items['total']} items succeeded, {items['failed']} failed; "
            f"{mb['succeeded']} of {mb['total']} mini-batches succeeded, {mb['failed']} failed "
            f"({mb['retried']} retries) in {r['wall_seconds']:.1f}s on {r['workers']} workers.")
    if r.get("reason"):
        text += f"\nReason: {r['reason']}"
    if r.get("output_file"):
        text += f"\nResults: {r['output_file']}"
    text += "\nErrors, first ones with tracebacks: logs/job_error.txt; every attempt: logs/sys/processed_mini_batches.csv."
    return text


def one_line(r: dict[str, Any]) -> str:
    items, mb = r["items"], r["mini_batches"]
    return (f"prs-mpi: {r['state']}: items {items['succeeded']} ok / {items['failed']} failed, "
            f"mini-batches {mb['succeeded']} ok / {mb['failed']} failed / {mb['retried']} retried, "
            f"{r['wall_seconds']:.2f}s, {r['throughput_items_per_s']:.1f} items/s, {r['workers']} workers"
            + (f" — {r['reason'].splitlines()[0]}" if r.get("reason") and r["state"] != "succeeded" else ""))
