"""Discrete-event model of prs-mpi's dispatch at 1k-10k ranks: predicted efficiency.

Efficiency = useful work / (workers x makespan). It models what prs_mpi does:

workers       as prs_mpi.worker: from a mean of ``LONG_RUN`` (50 ms) on, ``RESERVE`` (1)
              mini-batch waits behind the running one (the next request rides on the Report of
              the one that ends); shorter ones keep ``prefetch`` (k) queued, asking for
              ``k - queued`` when ``b`` fit.
rank 0        as prs_mpi.job.RankLoop: a loop pass takes every message that has arrived, handles
              them, then sends the replies; a pass costs ``c_in`` per MPI message received,
              ``c_req`` per logical request, ``c_batch`` per descriptor dealt (the dispatcher's
              work for a mini-batch: its attempt, commit, journal line, csv row) and ``c_out``
              per MPI message sent.
flat          a long mini-batch is one message each way (protocol.py): the worker's Report of
              the one it finished asks for the next (and carries the previous Commit), rank 0's
              Offset carries the Assign. So each request is one MPI message in, one out.
hierarchical  prs_mpi.leader: ``node_size`` workers per leader. A worker's request reaches its
              leader (``node_latency`` + ``relay_delay``, the leader's idle back-off); the leader's
              pass costs ``leader_c`` per request (relaying the Report up, the Offset down). It
              sends what it holds at the end of a pass in which an idle worker asked, else ``hold``
              (``HOLD``, prs_mpi.leader.MAX_DELAY) after the oldest arrived; then
              one Bundle of the pass's requests goes to rank 0, which pays ``c_in`` once per bundle,
              ``c_req`` per request in it and ``c_out`` once per leader it replies to in a pass.
              Rank 0 still deals every descriptor and does the same dispatcher work (``c_batch``).

Mini-batch durations are log-normal with mean ``duration`` and log-sigma ``sigma``. ``ideal``
is the zero-cost greedy schedule of the same durations (the tail alone). Costs come from
bench/harness/scale.py's measurement (``--costs FILE``) or the command line; see ``--help``.

    python bench/scale_model.py --costs costs.json --workers 1000 4000 10000
"""
import argparse
import heapq
import json
import math
import sys
from collections import deque
from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Costs:
    """Seconds at rank 0 (per MPI message in/out, per request, per descriptor), at a leader (per
    relayed request), and one-way latencies."""

    c_msg: float = 20e-6     # flat: per Request (c_in + c_req + c_out); kept for --c-msg
    c_batch: float = 5e-6
    latency: float = 10e-6
    node_latency: float = 5e-6
    c_in: float | None = None    # None: c_msg / 2
    c_out: float | None = None   # None: c_msg / 2
    c_req: float = 0.0
    leader_c: float = 0.0
    relay_delay: float = 0.0
    # hierarchical: rank 0's costs with bundles (None = the flat ones)
    h_c_in: float | None = None
    h_c_out: float | None = None
    h_c_req: float | None = None
    h_c_batch: float | None = None

    def flat(self) -> "Costs":
        return replace(self, c_in=self.c_msg / 2 if self.c_in is None else self.c_in,
                       c_out=self.c_msg / 2 if self.c_out is None else self.c_out)

    def bundled(self) -> "Costs":
        f = self.flat()
        pick = lambda h, v: v if h is None else h  # noqa: E731
        return replace(f, c_in=pick(self.h_c_in, f.c_in), c_out=pick(self.h_c_out, f.c_out),
                       c_req=pick(self.h_c_req, f.c_req), c_batch=pick(self.h_c_batch, f.c_batch))


LONG_RUN = 0.05    # prs_mpi.worker.LONG_RUN: from this mean duration on ...
RESERVE = 1        # ... only one in reserve (prs_mpi.worker: reserve)
HOLD = 0.05        # prs_mpi.leader.MAX_DELAY: how long a leader holds requests of busy workers


@dataclass(frozen=True)
class Scenario:
    """One simulated job."""

    workers: int
    duration: float  # mean mini-batch duration (s)
    sigma: float = 0.5
    per_worker: int = 50  # mini-batches per worker: job length
    prefetch: int = -1  # -1: as prs-mpi (from LONG_RUN on RESERVE, else 2)
    batch: int = 1
    node_size: int = 0  # 0 = flat; else workers per node leader
    seed: int = 0
    hold: float = HOLD  # a leader holds a busy worker's request at most this long

    @property
    def depth(self) -> int:
        if self.prefetch >= 0:
            return self.prefetch
        if self.duration >= LONG_RUN:
            return RESERVE
        return 2


def durations(s: Scenario) -> np.ndarray:
    count = s.workers * s.per_worker
    mu = math.log(s.duration) - s.sigma ** 2 / 2
    return np.random.default_rng(s.seed).lognormal(mu, s.sigma, count)


def ideal_makespan(work: np.ndarray, workers: int) -> float:
    """Greedy list schedule in order with zero overhead: each task to the first free worker."""
    free = [0.0] * workers
    for d in work.tolist():
        heapq.heapreplace(free, free[0] + d)
    return max(free)


class Sim:
    """Event loop: ``at(t, fn, *args)`` schedules; ``run()`` drains in time order."""

    def __init__(self):
        self.now = 0.0
        self._heap: list = []
        self._seq = 0

    def at(self, t: float, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def run(self) -> None:
        heap = self._heap
        while heap:
            self.now, _, fn, args = heapq.heappop(heap)
            fn(*args)


class Server:
    """A single-threaded loop: each pass takes every message arrived, then replies (see the
    module docstring). A handler returns (requests, descriptors, reply key or None, callbacks);
    replies to one key in one pass are one MPI message."""

    def __init__(self, sim: Sim, costs: Costs, per_request: float | None = None):
        self.sim, self.costs = sim, costs
        self.per_request = per_request          # a leader: its relay cost per request
        self.inbox: list = []
        self.busy = False
        self.busy_time = 0.0

    def deliver(self, handler, *args) -> None:
        self.inbox.append((handler, args))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.inbox:
            self.busy = False
            return
        self.busy = True
        batch, self.inbox = self.inbox, []
        c = self.costs
        service, keys, later = 0.0, set(), []
        for handler, args in batch:
            requests, descs, key, callbacks = handler(*args)
            if self.per_request is not None:
                service += self.per_request * requests
            else:
                service += c.c_in + c.c_req * requests + c.c_batch * descs
                if key is not None:
                    keys.add(key)
            later += callbacks
        service += c.c_out * len(keys) if self.per_request is None else 0.0
        self.busy_time += service
        done = self.sim.now + service
        for delay, fn, fargs in later:
            self.sim.at(done + delay, fn, *fargs)
        self.sim.at(done, self._next)


class Workers:
    """All workers: a prefetch queue each, one mini-batch running at a time.

    ``holders[g]`` are the workers of group ``g`` (all of them when flat, a node otherwise)
    holding descriptors they have not started: the ones a dispatcher can revoke from.
    """

    def __init__(self, sim: Sim, work: np.ndarray, s: Scenario, upstream, nudge=None):
        self.sim, self.work, self.upstream = sim, work.tolist(), upstream
        self.nudge = nudge          # behind a leader: an idle worker whose request is held asks again,
                                    # urgently (prs_mpi.worker), so the leader sends what it holds
        self.k = s.depth
        self.b = min(s.batch, self.k) if self.k else 1
        n = s.workers
        self.group_size = s.node_size or n
        self.holders: list[set] = [set() for _ in range(math.ceil(n / self.group_size))]
        self.queue = [deque() for _ in range(n)]
        self.running, self.inflight, self.dry = [False] * n, [False] * n, [False] * n
        self.only_idle = [False] * n  # the dispatcher is empty: ask again only when idle
        self.useful, self.end = 0.0, 0.0

    def idle(self, w: int) -> bool:
        return not self.running[w] and not self.queue[w]

    def request(self, w: int) -> None:
        if self.inflight[w] or self.dry[w] or (self.k and len(self.queue[w]) > self.k - self.b):
            return
        if (self.only_idle[w] or self.k == 0) and not self.idle(w):   # k = 0: ask only when idle
            return
        self.inflight[w] = True
        self.upstream(w, max(1, self.k - len(self.queue[w])))

    def receive(self, w: int, ids, final: bool = False) -> None:
        """Descriptors for ``w``; an empty reply means "ask again when idle", or with
        ``final`` "nothing is left to run or steal"."""
        self.inflight[w] = False
        if not ids:
            self.dry[w] = final
            self.only_idle[w] = True
        self.queue[w].extend(ids)
        if not self.running[w]:
            self._start(w)
        self._track(w)
        self.request(w)

    def victim(self, thief: int) -> int | None:
        """A worker of the thief's group with a descriptor it has not started, if any."""
        group = self.holders[thief // self.group_size]
        for w in group:
            if w != thief:
                return w
        return None

    def any_holder(self) -> int | None:
        """Any worker, in any group, holding a descriptor it has not started."""
        return next((next(iter(g)) for g in self.holders if g), None)

    def revoke(self, w: int, reply) -> None:
        """Give back the last queued descriptor (``reply([id])``), or ``reply([])`` if none."""
        ids = [self.queue[w].pop()] if self.queue[w] else []
        self._track(w)
        reply(ids)
        self.request(w)

    def _track(self, w: int) -> None:
        group = self.holders[w // self.group_size]
        if self.queue[w]:
            group.add(w)
        else:
            group.discard(w)

    def _start(self, w: int) -> None:
        if self.queue[w]:
            i = self.queue[w].popleft()
            self.running[w] = True
            self._track(w)
            self.sim.at(self.sim.now + self.work[i], self._finish, w, i)

    def _finish(self, w: int, i: int) -> None:
        self.running[w] = False
        self.useful += self.work[i]
        self.end = self.sim.now
        self._start(w)
        if self.nudge is not None and self.inflight[w] and self.idle(w):
            self.nudge(w)
        self.request(w)


def steal_for(thief: int, workers: Workers, server: Server, latency: float, retry) -> list:
    """Callbacks for a dispatcher with nothing left: revoke a prefetched descriptor from a
    worker of the thief's group and hand it over, or tell the thief it is done."""
    if not workers.idle(thief):
        return [(latency, workers.receive, (thief, [], False))]
    victim = workers.victim(thief)
    if victim is None:
        return [(latency, workers.receive, (thief, [], True))]

    def handover(ids: list):
        if not ids:
            return retry(thief, 1)
        return 0, len(ids), thief, [(latency, workers.receive, (thief, ids))]

    def reply(ids: list) -> None:
        server.sim.at(server.sim.now + latency, server.deliver, handover, ids)

    return [(latency, workers.revoke, (victim, reply))]


class Source:
    """Rank 0's not-yet-dispatched mini-batches, handed out in id order."""

    def __init__(self, total: int):
        self.next, self.total = 0, total

    def take(self, n: int) -> range:
        n = max(0, min(n, self.total - self.next))
        self.next += n
        return range(self.next - n, self.next)


class Dispatch:
    """Rank 0's answer to one request: descriptors, else stealing (as prs_mpi.dispatcher)."""

    def __init__(self, server: Server, source: Source, latency: float):
        self.server, self.source, self.latency = server, source, latency
        self.workers: Workers | None = None

    def one(self, w: int, amount: int) -> tuple[int, list]:
        ids = self.source.take(amount)
        if ids:
            return len(ids), [(self.latency, self.workers.receive, (w, ids))]
        return 0, steal_for(w, self.workers, self.server, self.latency, self.request)

    def request(self, w: int, amount: int):
        """A handler: one Request in its own MPI message (flat)."""
        descs, later = self.one(w, amount)
        return 1, descs, w, later


def run_flat(s: Scenario, costs: Costs, work: np.ndarray) -> tuple[Workers, Server]:
    sim = Sim()
    root = Server(sim, costs.flat())
    dispatch = Dispatch(root, Source(len(work)), costs.latency)

    def upstream(w: int, amount: int) -> None:
        sim.at(sim.now + costs.latency, root.deliver, dispatch.request, w, amount)

    workers = dispatch.workers = Workers(sim, work, s, upstream)
    for w in range(s.workers):
        workers.request(w)
    sim.run()
    return workers, root


class Relay:
    """A leader (prs_mpi.leader.Router): what it holds goes to rank 0 as one Bundle at the end of
    a pass in which an idle worker asked for work, else once the oldest is ``hold`` old."""

    def __init__(self, sim: Sim, costs: Costs, index: int, root: Server, dispatch: "Dispatch", hold: float):
        self.sim, self.costs, self.index, self.root, self.dispatch = sim, costs, index, root, dispatch
        self.server = Server(sim, costs, per_request=costs.leader_c)
        self.pending: list = []
        self.hold_for, self.bundles = hold, 0

    def from_worker(self, w: int, amount: int, waiting: bool) -> None:
        hop = self.costs.node_latency + self.costs.relay_delay
        self.sim.at(self.sim.now + hop, self.server.deliver, self.hold, w, amount, waiting)

    def hold(self, w: int, amount: int, waiting: bool):
        first = not self.pending
        self.pending.append((w, amount))
        if waiting:                                 # an idle worker: the bundle goes this pass
            return 1, 0, None, [(0.0, self.flush, (self.bundles,))]
        return 1, 0, None, [(self.hold_for, self.flush, (self.bundles,))] if first else []

    def nudged(self, w: int) -> None:
        """An idle worker's urgent request: whatever is held goes at the end of the leader's pass."""
        hop = self.costs.node_latency + self.costs.relay_delay
        self.sim.at(self.sim.now + hop, self.server.deliver,
                    lambda: (1, 0, None, [(0.0, self.flush, (self.bundles,))]))

    def flush(self, bundle_no: int) -> None:
        if bundle_no != self.bundles or not self.pending:
            return                                  # already sent by an earlier flush
        bundle, self.pending = self.pending, []
        self.bundles += 1
        self.sim.at(self.sim.now + self.costs.latency, self.root.deliver, self.at_root, bundle)

    def at_root(self, bundle: list):
        """Rank 0's handler for one Bundle: every request in it, one reply Bundle."""
        descs, later = 0, []
        for w, amount in bundle:
            n, callbacks = self.dispatch.one(w, amount)
            descs += n
            later += callbacks
        return len(bundle), descs, ("leader", self.index), later


def run_hierarchical(s: Scenario, costs: Costs, work: np.ndarray) -> tuple[Workers, Server]:
    sim = Sim()
    rc = costs.bundled()
    root = Server(sim, rc)
    down = rc.latency + rc.relay_delay + rc.node_latency      # rank 0 -> leader -> worker
    dispatch = Dispatch(root, Source(len(work)), down)
    nodes = math.ceil(s.workers / s.node_size)
    relays = [Relay(sim, rc, i, root, dispatch, s.hold) for i in range(nodes)]
    workers = dispatch.workers = Workers(
        sim, work, s, lambda w, a: relays[w // s.node_size].from_worker(w, a, workers.idle(w)),
        lambda w: relays[w // s.node_size].nudged(w))
    for w in range(s.workers):
        workers.request(w)
    sim.run()
    return workers, root


def simulate(s: Scenario, costs: Costs) -> dict:
    """Predicted efficiency of one scenario, next to the zero-overhead schedule of the same work."""
    work = durations(s)
    run = run_hierarchical if s.node_size else run_flat
    workers, root = run(s, costs, work)
    if workers.useful < work.sum() * (1 - 1e-9):
        raise RuntimeError(f"simulation lost work: {workers.useful} of {work.sum()} s done ({s})")
    makespan = workers.end
    ideal = ideal_makespan(work, s.workers)
    return {**asdict(s), "topology": "hierarchical" if s.node_size else "flat",
            "makespan_s": makespan, "efficiency": workers.useful / (s.workers * makespan),
            "ideal_efficiency": work.sum() / (s.workers * ideal),
            "root_utilisation": root.busy_time / makespan,
            "root_capacity_per_s": capacity(costs, s)}


def capacity(costs: Costs, s: Scenario) -> float:
    """Mini-batches per second rank 0 can deal, one descriptor per request; with leaders, at
    one request per bundle and per reply (the worst case for bundling)."""
    c = costs.bundled() if s.node_size else costs.flat()
    per = (c.c_in + c.c_req + c.c_out) / max(1, s.batch) + c.c_batch
    return 1 / per if per > 0 else math.inf


def load_costs(path: str | None, overrides: dict) -> Costs:
    """Costs from a ``measure_costs.py`` JSON file (its ``model_costs`` entry), then overrides."""
    costs = Costs()
    if path:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        data = data.get("model_costs", data)
        costs = replace(costs, **{k: None if v is None else float(v)
                                  for k, v in data.items() if k in asdict(costs)})
    return replace(costs, **{k: v for k, v in overrides.items() if v is not None})


def grid(costs: Costs, workers: list[int], means: list[float], base: Scenario,
         node_sizes: list[int]) -> list[dict]:
    """Simulate every (topology, workers, duration) combination."""
    return [simulate(replace(base, workers=n, duration=d, node_size=g), costs)
            for g in node_sizes for n in workers for d in means]


def format_table(results: list[dict]) -> str:
    """Markdown table of a grid's results."""
    head = ("| topology | workers | mini-batch mean | efficiency | zero-overhead | "
            "ratio | rank-0 busy | rank-0 capacity |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        topo = r["topology"] + (f" ({r['node_size']}/node)" if r["node_size"] else "")
        lines.append(f"| {topo} | {r['workers']} | {r['duration'] * 1000:g} ms | "
                     f"{r['efficiency']:.1%} | {r['ideal_efficiency']:.1%} | "
                     f"{r['efficiency'] / r['ideal_efficiency']:.3f} | "
                     f"{r['root_utilisation']:.0%} | {r['root_capacity_per_s']:,.0f}/s |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--costs", help="JSON written by bench/measure_costs.py --out")
    for name in ("c-msg", "c-batch", "latency", "node-latency", "c-in", "c-out", "c-req", "leader-c",
                 "relay-delay"):
        p.add_argument(f"--{name}", type=float, help="seconds; overrides --costs")
    p.add_argument("--workers", type=int, nargs="+", default=[1000, 4000, 10000])
    p.add_argument("--durations", type=float, nargs="+", default=[0.05, 0.2, 1.0])
    p.add_argument("--sigma", type=float, default=0.5, help="log-normal sigma of durations")
    p.add_argument("--per-worker", type=int, default=50, help="mini-batches per worker")
    p.add_argument("--prefetch", type=int, default=-1,
                   help="k: descriptors queued per worker (-1: as prs-mpi, none from 50 ms on)")
    p.add_argument("--batch", type=int, default=1, help="b: descriptors per request")
    p.add_argument("--node-size", type=int, nargs="+", default=[0, 64],
                   help="0 = flat; N = hierarchical with N workers per node leader")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = ("c_msg", "c_batch", "latency", "node_latency", "c_in", "c_out", "c_req", "leader_c", "relay_delay")
    costs = load_costs(args.costs, {k: getattr(args, k) for k in names})
    base = Scenario(workers=1, duration=1.0, sigma=args.sigma, per_worker=args.per_worker,
                    prefetch=args.prefetch, batch=args.batch)
    results = grid(costs, args.workers, args.durations, base, args.node_size)
    if args.json:
        sys.stdout.write(json.dumps({"costs": asdict(costs), "results": results}) + "\n")
    else:
        print(f"costs: {asdict(costs)}")
        print(format_table(results))


if __name__ == "__main__":
    main()
