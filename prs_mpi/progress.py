"""Rank 0's live view: a tqdm bar on a terminal, plain lines otherwise, and status.json."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from .status import write_status

BAR_REFRESH = 0.5


class Progress:
    def __init__(self, cfg: Any, dispatcher: Any, stream: Any = None) -> None:
        self.cfg, self.d = cfg, dispatcher
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        self.started = time.time()
        self.next_bar = 0.0
        self.next_line = time.monotonic() + min(cfg.progress_interval, 5.0)
        self.next_status = 0.0
        self.status_path = os.path.join(cfg.output_dir, "status.json")
        self.window: list[tuple[float, int]] = []

    # -------------------------------------------------------------- numbers
    def rate(self, now: float) -> float:
        done = self.d.acc.items_done
        self.window.append((now, done))
        while len(self.window) > 2 and now - self.window[0][0] > 30:
            self.window.pop(0)
        t0, d0 = self.window[0]
        if now - t0 > 1e-3 and done > d0:
            return (done - d0) / (now - t0)
        elapsed = now - self.started
        return done / elapsed if elapsed > 0 else 0.0

    def eta(self, rate: float) -> float | None:
        total = self.d.acc.items_total
        if total is None or rate <= 0:
            return None
        return max(0.0, (total - self.d.acc.items_done) / rate)

    # -------------------------------------------------------------- ticking
    def tick(self, force: bool = False, state: str | None = None) -> None:
        """Refresh what is due (everything when `force`); `state` overrides status.json's state."""
        mono, now = time.monotonic(), time.time()
        if self.tty and (force or mono >= self.next_bar):
            self.next_bar = mono + BAR_REFRESH
            self._bar()
        elif not self.tty and (force or mono >= self.next_line):
            self.next_line = mono + self.cfg.progress_interval
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
        if force or mono >= self.next_status:
            self.next_status = mono + self.cfg.status_interval
            write_status(self.status_path, {**self.status(now), **({"state": state} if state else {})})
            self.d.attempts_log.flush()      # `prs-mpi report` on a running job sees the attempts so far

    def line(self, now: float) -> str:
        acc = self.d.acc
        rate = self.rate(now)
        eta = self.eta(rate)
        total = "?" if acc.items_total is None else acc.items_total
        ready = sum(p.ready for p in self.d.peers.values())
        starting = f"{ready}/{len(self.d.peers)} workers ready, " if ready < len(self.d.peers) else ""
        return (f"prs-mpi: {starting}{acc.items_done}/{total} items ({acc.items_failed} failed), "
                f"{acc.batches_done} mini-batches done, {self.d.in_flight()} in flight, {rate:.1f} items/s"
                + (f", ETA {eta:.0f}s" if eta is not None else ""))

    def _bar(self) -> None:
        acc = self.d.acc
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=acc.items_total, unit="item", file=self.stream, dynamic_ncols=True,
                            desc="prs-mpi")
        if acc.items_total is not None and self.bar.total != acc.items_total:
            self.bar.total = acc.items_total
        self.bar.n = acc.items_done
        ready = sum(p.ready for p in self.d.peers.values())
        starting = f"ready={ready}/{len(self.d.peers)} " if ready < len(self.d.peers) else ""
        self.bar.set_postfix_str(f"{starting}failed={acc.items_failed} mb={acc.batches_done} "
                                 f"inflight={self.d.in_flight()}", refresh=False)
        self.bar.refresh()

    def status(self, now: float) -> dict[str, Any]:
        acc, d = self.d.acc, self.d
        rate = self.rate(now)
        workers = []
        for p in d.peers.values():
            state = "left" if not p.alive else ("done" if p.said_goodbye else
                                                  ("running" if p.running is not None else "idle"))
            if not p.ready and state == "idle":
                state = "starting"
            workers.append({"rank": p.rank, "host": p.host, "state": state, "mini_batch": p.running,
                            "queued": len(p.outstanding), "since": p.current_since if p.running is not None else None,
                            "last_error": p.last_error})
        return {
            "version": 1, "state": "running" if not d.stop_sent else "stopping", "updated": now,
            "started": self.started, "interval": self.cfg.status_interval,
            "items": {"total": acc.items_total, "done": acc.items_done, "succeeded": acc.items_ok,
                      "failed": acc.items_failed},
            "mini_batches": {"total": acc.batches_total, "done": acc.batches_done, "failed": acc.batches_failed,
                             "in_flight": d.in_flight(), "listing_done": d.listing_done,
                             "listed": d.listed_batches, "retried": acc.retries},
            "rate_items_per_s": round(rate, 3), "eta_seconds": self.eta(rate),
            "workers": workers, "thresholds_left": acc.left(),
            "output_dir": self.cfg.output_dir,
            "output_file": self.cfg.output_file if self.cfg.output_action == "append_row" else None,
        }

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
