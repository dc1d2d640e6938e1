"""Rank 0's own cost per mini-batch: prs_mpi's Dispatcher driven in-process, no MPI.

    python bench/dispatch_costs.py [--peers 64 1000 10000] [--items 1 16] [--out FILE]

The real Dispatcher writes the real journal, processed_mini_batches.csv and accounting to a
temporary directory while fake workers go through the protocol of a mini-batch too long to be
prefetched (the case at 200 ms), as prs_mpi.worker speaks it: Report(1 attempt, bytes, credits=1,
commit=<the previous flush's Commit>) -> Offset(assign=<the next mini-batch>). Each pass hands the
dispatcher ``burst`` workers' Reports, then calls ``step()`` once, as the rank loop does after
draining its arrived messages; the last flushes' Commits come alone. Sends go to a list: the MPI
side (receive + unpickle, pickle + isend) is measured by ``measure_costs.py``.

batch_s     handler time per mini-batch (1 message in, 1 out, journal line, writing the csv row;
            the worker formats the row and computes the digest, as prs_mpi.worker does)
pass_s      one ``step()`` of a dispatcher with nothing to do, per peer count: a fixed cost per
            loop pass
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prs_mpi.dataset import MiniBatchSpec  # noqa: E402
from prs_mpi.dispatcher import Dispatcher  # noqa: E402
from prs_mpi.journal import Journal  # noqa: E402
from prs_mpi.protocol import Assign, Attempt, Commit, Offset, Report, Request  # noqa: E402
from prs_mpi.runlog import AttemptLog, committed_rows  # noqa: E402
from prs_mpi.summary import Accounting  # noqa: E402

IN_PER_BATCH, OUT_PER_BATCH = 1, 1     # Report (carrying credits and a Commit) | Offset (carrying an Assign)


def specs(items: int, count: int = 20_000) -> list[MiniBatchSpec]:
    """Made up front, so that the timing holds the dispatcher's work, not the generator's."""
    return [MiniBatchSpec(id=i, nitems=items, items=tuple(
            f"/data/inputs/shard-{i // 1000:04d}/image_{i:08d}_{j}.png" for j in range(items)))
            for i in range(count)]


def prefill(d: Dispatcher) -> None:
    """List ahead before the clock starts (listing has its own workload in bench/run.py)."""
    while True:
        before = len(d.fresh)
        d.step()
        if len(d.fresh) == before:
            return


def make(tmp: str, peers: int, items: int) -> tuple[Dispatcher, list]:
    cfg = SimpleNamespace(run_max_try=3, grace_period=10.0, init_max_try=3, speculative=False)
    sent: list = []
    d = Dispatcher(cfg, iter(specs(items)), {r: f"node{r // 64:04d}" for r in range(1, peers + 1)},
                   lambda dest, msg: sent.append((dest, msg)), Journal(tmp), AttemptLog(tmp), Accounting())
    return d, sent


def attempt(spec: MiniBatchSpec, n: int, rank: int) -> Attempt:
    """What a worker reports, with the digest it computes for rank 0 (prs_mpi.worker)."""
    now = time.time()
    return Attempt(spec.id, n, rank, f"node{rank // 64:04d}", 1000 + rank, spec.nitems, spec.nitems, 0,
                   now - 0.2, now, 0.2, 0.001, "ok", None, 120 * spec.nitems, 0.0, spec.digest())


def commit(flush: int, a: Attempt) -> Commit:
    """The Commit a worker sends for flush ``flush`` (its csv row formatted there)."""
    return Commit(flush, 0.0001, committed_rows([a], 0.0001))


def reports(ranks: list[int], held: dict[int, MiniBatchSpec], flush: int, last: dict[int, Attempt]) -> list:
    """One pass: every rank of ``ranks`` reports the mini-batch it holds, asks for the next and
    commits its previous flush (``last``: its attempt). Built before the clock starts."""
    out = []
    for r in ranks:
        a = attempt(held[r], 1, r)
        out.append((r, Report(flush, (a,), a.nbytes, None, 1, commit(flush - 1, last[r]) if flush else None)))
        last[r] = a
    return out


def dealt(sent: list) -> dict[int, MiniBatchSpec]:
    """rank -> the mini-batch the pass dealt it (in a plain Assign or riding on an Offset)."""
    out = {}
    for dest, m in sent:
        assign = m.assign if isinstance(m, Offset) else m
        if isinstance(assign, Assign):
            out[dest] = assign.batches[0]
    return out


def timed_pass(d: Dispatcher, msgs: list) -> float:
    t0 = time.perf_counter()
    for src, msg in msgs:
        d.handle(src, msg)
    d.step()
    return time.perf_counter() - t0


def per_batch(peers: int, items: int, burst: int, rounds: int) -> float:
    """Seconds of dispatcher time per mini-batch, step() passes amortised over ``burst``."""
    with tempfile.TemporaryDirectory(prefix="prs-dispatch-costs-") as tmp:
        d, sent = make(tmp, peers, items)
        prefill(d)
        ranks = list(range(1, peers + 1))
        for r in ranks:                    # the first Requests (a worker's first message)
            d.handle(r, Request(1))
        d.step()
        held = dealt(sent)
        sent.clear()
        groups = [ranks[i:i + burst] for i in range(0, len(ranks), burst)]
        took, n, last = 0.0, 0, {}
        for flush in range(rounds):
            for g in groups:
                took += timed_pass(d, reports(g, held, flush, last))
                n += len(g)
                got = dealt(sent)
                assert all(type(m) is Offset and m.assign for _, m in sent) and sorted(got) == g, \
                    "expected one Offset carrying the next mini-batch per Report"
                held.update(got)
                sent.clear()
        took += timed_pass(d, [(r, commit(rounds - 1, last[r])) for r in ranks])
        assert d.acc.batches_ok == n and not d.flushes, "the cycle lost a mini-batch"
        d.journal.close()
        d.attempts_log.close()
    return took / n


def idle_pass(peers: int, reps: int = 200) -> float:
    """Seconds per step() with every peer busy and nothing arrived: the per-pass floor."""
    with tempfile.TemporaryDirectory(prefix="prs-dispatch-costs-") as tmp:
        d, sent = make(tmp, peers, 1)
        prefill(d)
        for r in d.peers:
            d.handle(r, Request(1))
        d.step()
        t0 = time.perf_counter()
        for _ in range(reps):
            d.step()
        return (time.perf_counter() - t0) / reps


def measure(peers: list[int], items: list[int], reps: int) -> dict:
    out: dict = {"in_per_batch": IN_PER_BATCH, "out_per_batch": OUT_PER_BATCH, "batch_s": {}, "pass_s": {}}
    for n in items:
        # 256 mini-batches per pass: the pass cost is negligible next to them
        out["batch_s"][str(n)] = statistics.median(per_batch(1024, n, 256, 4) for _ in range(reps))
    for p in peers:
        out["pass_s"][str(p)] = statistics.median(idle_pass(p) for _ in range(reps))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[64, 1000, 10000])
    parser.add_argument("--items", type=int, nargs="+", default=[1, 16], help="items per mini-batch")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    line = json.dumps(measure(args.peers, args.items, args.reps))
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
    print(line, flush=True)


if __name__ == "__main__":
    main()
