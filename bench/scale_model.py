"""Discrete-event model of prs-mpi's dispatch at 1k-10k ranks: predicted efficiency.

Efficiency = useful work / (workers x makespan). Two topologies:

flat          rank 0 serves every worker. A worker keeps up to ``prefetch`` (k) mini-batch
              descriptors queued; when its queue has room for ``batch`` (b) more and no request
              is in flight it asks for ``k - queued`` in one message. Rank 0 serves messages
              one at a time (FIFO), each costing ``c_msg + c_batch x descriptors``; replies
              arrive ``latency`` later. Completions ride on the next request (their accounting
              is inside ``c_batch``).
hierarchical  workers talk to their node leader with the same protocol (``node_latency``);
              a leader keeps a queue of up to ``chunk`` descriptors, asking rank 0 for
              ``chunk - queued`` when it drops to half. Once rank 0 is empty, a leader that runs
              dry asks rank 0, which forwards the request to the leader with the longest queue;
              that leader sends half of its queue straight to the thief (stealing between nodes).
              When no leader has two queued, rank 0 revokes a descriptor a worker on any node
              prefetched but has not started and sends it to the thief. Leaders pay the same
              per-message and per-descriptor costs as rank 0 (``root_c_batch`` can set rank 0's
              per-descriptor cost for chunks separately).

Mini-batch durations are log-normal with mean ``duration`` and log-sigma ``sigma``. ``ideal``
is the zero-cost greedy schedule of the same durations (the tail alone). Costs come from
``bench/measure_costs.py`` (``--costs FILE``) or the command line; see ``--help``.

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
    """Seconds: per message and per descriptor at a dispatcher, one-way message latencies."""

    c_msg: float = 20e-6
    c_batch: float = 5e-6
    latency: float = 10e-6
    node_latency: float = 5e-6
    root_c_batch: float | None = None  # rank 0's per-descriptor cost when dealing chunks to
    # leaders (hierarchical); None = c_batch. Handing out id ranges would make it much smaller.


@dataclass(frozen=True)
class Scenario:
    """One simulated job."""

    workers: int
    duration: float  # mean mini-batch duration (s)
    sigma: float = 0.5
    per_worker: int = 50  # mini-batches per worker: job length
    prefetch: int = 2
    batch: int = 1
    node_size: int = 0  # 0 = flat; else workers per node leader
    chunk: int = 0  # leader queue target; 0 = node_size x prefetch
    seed: int = 0


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
    """A single-threaded dispatcher: FIFO messages, each with a handler returning its cost."""

    def __init__(self, sim: Sim, costs: Costs):
        self.sim, self.costs = sim, costs
        self.inbox: deque = deque()
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
        handler, args = self.inbox.popleft()
        cost = handler(*args)  # returns (descriptors handled, callbacks after service)
        service = self.costs.c_msg + cost[0] * self.costs.c_batch
        self.busy_time += service
        done = self.sim.now + service
        for delay, fn, fargs in cost[1]:
            self.sim.at(done + delay, fn, *fargs)
        self.sim.at(done, self._next)


class Workers:
    """All workers: a prefetch queue each, one mini-batch running at a time.

    ``holders[g]`` are the workers of group ``g`` (all of them when flat, a node otherwise)
    holding descriptors they have not started: the ones a dispatcher can revoke from.
    """

    def __init__(self, sim: Sim, work: np.ndarray, s: Scenario, upstream):
        self.sim, self.work, self.upstream = sim, work.tolist(), upstream
        self.k, self.b = s.prefetch, min(s.batch, s.prefetch)
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
        if self.inflight[w] or self.dry[w] or len(self.queue[w]) > self.k - self.b:
            return
        if self.only_idle[w] and not self.idle(w):
            return
        self.inflight[w] = True
        self.upstream(w, self.k - len(self.queue[w]))

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
        return len(ids), [(latency, workers.receive, (thief, ids))]

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


def run_flat(s: Scenario, costs: Costs, work: np.ndarray) -> tuple[Workers, Server]:
    sim = Sim()
    root = Server(sim, costs)
    source = Source(len(work))

    def serve(w: int, amount: int):
        ids = source.take(amount)
        if ids:
            return len(ids), [(costs.latency, workers.receive, (w, ids))]
        return 0, steal_for(w, workers, root, costs.latency, serve)

    def upstream(w: int, amount: int) -> None:
        sim.at(sim.now + costs.latency, root.deliver, serve, w, amount)

    workers = Workers(sim, work, s, upstream)
    for w in range(s.workers):
        workers.request(w)
    sim.run()
    return workers, root


class Leader:
    """A node leader: its own dispatcher loop between rank 0 and its node's workers."""

    def __init__(self, sim: Sim, costs: Costs, chunk: int, root: "Root"):
        self.sim, self.costs, self.chunk, self.root = sim, costs, chunk, root
        self.server = Server(sim, costs)
        self.queue: deque = deque()
        self.parked: deque = deque()  # worker requests waiting for descriptors
        self.asking = False  # a request to rank 0 is in flight
        self.root_empty = False  # rank 0 has nothing left: only stealing remains
        self.done = False  # nothing left anywhere: answer workers with empty replies
        self.workers: Workers | None = None

    def from_worker(self, w: int, amount: int) -> None:
        self.sim.at(self.sim.now + self.costs.node_latency, self.server.deliver,
                    self.serve_worker, w, amount)

    def serve_worker(self, w: int, amount: int):
        if not self.queue:
            if self.done:
                return 0, steal_for(w, self.workers, self.server, self.costs.node_latency,
                                    self.serve_worker)
            if self.root_empty and not self.workers.idle(w):  # only idle workers may steal
                return 0, [(self.costs.node_latency, self.workers.receive, (w, [], False))]
            self.parked.append((w, amount))
            return 0, self._refill()
        ids = [self.queue.popleft() for _ in range(min(amount, len(self.queue)))]
        return len(ids), [(self.costs.node_latency, self.workers.receive, (w, ids))] + self._refill()

    def _refill(self) -> list:
        low = (not self.queue and self.parked) if self.root_empty else len(self.queue) <= self.chunk // 2
        if self.asking or self.done or not low:
            return []
        self.asking = True
        amount = self.chunk - len(self.queue)
        return [(self.costs.latency, self.root.server.deliver, (self.root.serve, self, amount))]

    def receive_chunk(self, ids, stolen: bool, final: bool):
        """Descriptors from rank 0 or from a victim leader; ``final``: nothing left anywhere."""
        self.asking = False
        self.root_empty |= stolen or final
        self.done = final and not ids
        self.queue.extend(ids)
        again = [(0.0, self.server.deliver, (self.serve_worker, w, a)) for w, a in self.parked]
        self.parked.clear()
        return len(ids), again + self._refill()

    def serve_steal(self, thief: "Leader"):
        half = [self.queue.pop() for _ in range(len(self.queue) // 2)]
        return len(half), [(self.costs.latency, thief.server.deliver,
                            (thief.receive_chunk, half, True, False))]


class Root:
    """Rank 0 in the hierarchical topology: deals chunks to leaders, then brokers steals."""

    def __init__(self, sim: Sim, costs: Costs, total: int):
        per_desc = costs.c_batch if costs.root_c_batch is None else costs.root_c_batch
        self.server = Server(sim, replace(costs, c_batch=per_desc))
        self.sim, self.costs, self.source = sim, costs, Source(total)
        self.leaders: list[Leader] = []
        self.workers: Workers | None = None

    def serve(self, leader: Leader, amount: int):
        ids = self.source.take(amount)
        lat = self.costs.latency
        if ids:
            return len(ids), [(lat, leader.server.deliver, (leader.receive_chunk, ids, False, False))]
        victim = max(self.leaders, key=lambda v: len(v.queue) if v is not leader else -1)
        if len(victim.queue) >= 2:
            return 0, [(lat, victim.server.deliver, (victim.serve_steal, leader))]
        holder = self.workers.any_holder()
        if holder is not None:  # last resort: a descriptor prefetched by a worker on any node
            def reply(ids: list) -> None:
                self.sim.at(self.sim.now + lat, leader.server.deliver,
                            leader.receive_chunk, ids, True, False)
            return 0, [(lat, self.workers.revoke, (holder, reply))]
        return 0, [(lat, leader.server.deliver, (leader.receive_chunk, [], True, True))]


def run_hierarchical(s: Scenario, costs: Costs, work: np.ndarray) -> tuple[Workers, Server]:
    sim = Sim()
    root = Root(sim, costs, len(work))
    nodes = math.ceil(s.workers / s.node_size)
    chunk = s.chunk or s.node_size * s.prefetch
    root.leaders = [Leader(sim, costs, chunk, root) for _ in range(nodes)]
    workers = Workers(sim, work, s, lambda w, a: root.leaders[w // s.node_size].from_worker(w, a))
    root.workers = workers
    for leader in root.leaders:
        leader.workers = workers
    for w in range(s.workers):
        workers.request(w)
    sim.run()
    return workers, root.server


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
    """Mini-batches per second one dispatcher can hand out, requests carrying ``batch`` each."""
    per = costs.c_msg / max(1, s.batch) + costs.c_batch
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
    for name in ("c-msg", "c-batch", "latency", "node-latency", "root-c-batch"):
        p.add_argument(f"--{name}", type=float, help="seconds; overrides --costs")
    p.add_argument("--workers", type=int, nargs="+", default=[1000, 4000, 10000])
    p.add_argument("--durations", type=float, nargs="+", default=[0.05, 0.2, 1.0])
    p.add_argument("--sigma", type=float, default=0.5, help="log-normal sigma of durations")
    p.add_argument("--per-worker", type=int, default=50, help="mini-batches per worker")
    p.add_argument("--prefetch", type=int, default=2, help="k: descriptors queued per worker")
    p.add_argument("--batch", type=int, default=1, help="b: descriptors per request")
    p.add_argument("--node-size", type=int, nargs="+", default=[0, 64],
                   help="0 = flat; N = hierarchical with N workers per node leader")
    p.add_argument("--chunk", type=int, default=0, help="leader queue target (0: node_size x k)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    costs = load_costs(args.costs, {"c_msg": args.c_msg, "c_batch": args.c_batch,
                                    "latency": args.latency, "node_latency": args.node_latency,
                                    "root_c_batch": args.root_c_batch})
    base = Scenario(workers=1, duration=1.0, sigma=args.sigma, per_worker=args.per_worker,
                    prefetch=args.prefetch, batch=args.batch, chunk=args.chunk)
    results = grid(costs, args.workers, args.durations, base, args.node_size)
    if args.json:
        sys.stdout.write(json.dumps({"costs": asdict(costs), "results": results}) + "\n")
    else:
        print(f"costs: {asdict(costs)}")
        print(format_table(results))


if __name__ == "__main__":
    main()
