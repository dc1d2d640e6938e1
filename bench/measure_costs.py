"""Measure the dispatch costs the scale model needs, with a 2-rank mpi4py exchange.

    mpiexec -n 2 python bench/measure_costs.py [--out costs.json]

latency      one-way time of a small pickled message (half a blocking ping-pong round trip)
c_msg        rank 0's time per request it serves when requests are always waiting
             (probe + receive + unpickle a request, pickle + send a reply of 1 descriptor)
per_desc     extra rank-0 time per additional descriptor in a reply (from replies of 1 and 16)
pickle_*     pickle.dumps + loads of a descriptor message alone
``model_costs`` is what ``scale_model.py --costs`` reads: c_batch = per_desc + ``--bookkeeping``,
rank 0's per-mini-batch state keeping, an assumption until prs-mpi's own cost is plugged in.
"""
import argparse
import json
import pickle
import statistics
import time
from dataclasses import dataclass

from mpi4py import MPI

REQ, REPLY = 21, 22


@dataclass(frozen=True)
class Descriptor:
    """Mirror of prs_mpi's MiniBatchSpec (docs/DESIGN.md) for a one-file mini-batch."""

    id: int
    items: tuple
    nitems: int
    slice: object = None
    partition: object = None


def descriptors(n: int) -> list[Descriptor]:
    return [Descriptor(i, (f"/data/inputs/shard-{i // 1000:04d}/image_{i:08d}.png",), 1)
            for i in range(n)]


def pickle_cost(n: int, reps: int = 20000) -> float:
    """Seconds for dumps + loads of one ``("assign", [n descriptors])`` message."""
    msg = ("assign", descriptors(n))
    t0 = time.perf_counter()
    for _ in range(reps):
        pickle.loads(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
    return (time.perf_counter() - t0) / reps


def ping_pong(comm: MPI.Comm, reps: int) -> float | None:
    """One-way latency (rank 0's view) of a small request/reply pair: half the median round
    trip, so that other processes' bursts on a shared machine do not dominate."""
    msg = ("request", 1, 2)
    trips = []
    comm.Barrier()
    for _ in range(reps):
        t0 = MPI.Wtime()
        if comm.rank == 0:
            comm.send(msg, dest=1, tag=REQ)
            comm.recv(source=1, tag=REPLY)
        else:
            comm.recv(source=0, tag=REQ)
            comm.send(msg, dest=0, tag=REPLY)
        trips.append(MPI.Wtime() - t0)
    return statistics.median(trips) / 2 if comm.rank == 0 else None


def service(comm: MPI.Comm, window: int, per_reply: int, rounds: int) -> float | None:
    """Rank 0's seconds per request served while ``window`` requests are always queued."""
    reply = ("assign", descriptors(per_reply))
    status = MPI.Status()
    times = []
    for _ in range(rounds):
        comm.Barrier()
        if comm.rank == 1:
            reqs = [comm.isend(("request", i, per_reply), dest=0, tag=REQ) for i in range(window)]
            MPI.Request.waitall(reqs)
            for _ in range(window):
                comm.recv(source=0, tag=REPLY)
            continue
        comm.probe(source=1, tag=REQ)  # the first request has arrived: start the clock
        t0 = MPI.Wtime()
        for _ in range(window):
            while not comm.iprobe(source=1, tag=REQ, status=status):
                pass
            comm.recv(source=1, tag=REQ)
            comm.send(reply, dest=1, tag=REPLY)
        times.append((MPI.Wtime() - t0) / window)
    return statistics.median(times) if comm.rank == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--reps", type=int, default=5000)
    parser.add_argument("--bookkeeping", type=float, default=5e-6,
                        help="assumed rank-0 state-keeping seconds per mini-batch")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if comm.size != 2:
        raise SystemExit("run measure_costs.py with exactly 2 ranks: mpiexec -n 2 ...")
    ping_pong(comm, 200)  # warm-up
    latency = ping_pong(comm, args.reps)
    one = service(comm, 200, 1, 9)
    many = service(comm, 200, 16, 9)
    if comm.rank != 0:
        return
    p1, p16 = pickle_cost(1), pickle_cost(16)
    per_desc = max(0.0, (many - one) / 15)
    out = {"latency_s": latency, "c_msg_s": one, "per_desc_s": per_desc,
           "pickle_msg_s": p1, "pickle_per_desc_s": (p16 - p1) / 15,
           "bookkeeping_assumed_s": args.bookkeeping, "mpi": MPI.Get_library_version().splitlines()[0],
           "model_costs": {"c_msg": one, "c_batch": per_desc + args.bookkeeping,
                           "latency": latency, "node_latency": latency}}
    line = json.dumps(out)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
