"""Measure the dispatch costs the scale model needs, with a 2-rank mpi4py exchange.

    mpiexec -n 2 python bench/measure_costs.py [--out costs.json]

latency      one-way time of a small pickled message (half a blocking ping-pong round trip)
c_msg        rank 0's time per request it serves when requests are always waiting
             (probe + receive + unpickle a request, pickle + send a reply of 1 descriptor)
per_desc     extra rank-0 time per additional descriptor in a reply (from replies of 1 and 16)
pickle_*     pickle.dumps + loads of a descriptor message alone
prs_*        prs-mpi's own messages through its own Channel/Router (prs_mpi.transport/leader):
             prs_recv_s / prs_send_s per logical message received / sent by rank 0 alone;
             prs_bundle_s + prs_bundled_s x k: rank 0's time to receive a leader's Bundle of k
             messages (fitted from k = 1 and 32); prs_bundle_send_s per Bundle sent
``model_costs`` is what ``scale_model.py --costs`` reads: c_batch = per_desc + ``--bookkeeping``,
rank 0's per-mini-batch state keeping, an assumption until prs-mpi's own cost is plugged in
(bench/harness/scale.py plugs in bench/dispatch_costs.py's measurement of the real dispatcher).
"""
import argparse
import json
import pickle
import statistics
import sys
import time
from pathlib import Path
from dataclasses import dataclass

from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prs_mpi.dataset import MiniBatchSpec  # noqa: E402
from prs_mpi.leader import Router  # noqa: E402
from prs_mpi.protocol import Assign, Attempt, Bundle, Commit, Offset, Report  # noqa: E402
from prs_mpi.runlog import committed_rows  # noqa: E402
from prs_mpi.transport import Channel  # noqa: E402

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


def worker_messages(n: int) -> list:
    """What rank 0 receives per long mini-batch (prs_mpi.worker): one Report of 1 attempt that
    asks for the next one and carries the previous flush's Commit (with its csv row)."""
    out = []
    prev = None
    for i in range(n):
        a = Attempt(i, 1, 1, "node0001", 4242, 1, 1, 0, 1.7e9, 1.7e9 + 0.2, 0.2, 0.001, "ok", None, 120, 0.0,
                    "0123456789abcdef")
        held = Commit(i - 1, 0.0001, committed_rows([prev], 0.0001)) if prev else None
        out.append(Report(i, (a,), 120, None, 1, held))
        prev = a
    return out


def rank0_messages(n: int) -> list:
    """What rank 0 sends per long mini-batch: an Offset carrying the Assign of 1 descriptor."""
    out = []
    for i in range(n):
        spec = MiniBatchSpec(i, (f"/data/inputs/shard-{i // 1000:04d}/image_{i:08d}.png",), 1)
        out.append(Offset(i, 120 * i, None, Assign((spec,), (1,))))
    return out


def prs_receive(comm: MPI.Comm, msgs: list, rounds: int, wrap: int = 0) -> float | None:
    """Rank 0's seconds per logical message through prs-mpi's Channel (``wrap`` = k: the
    messages come as Bundles of k through a Router, as from a leader)."""
    channel = Channel(comm)
    router = Router(channel, (0, 1))
    payload = msgs if not wrap else [Bundle(tuple((1, m) for m in msgs[i:i + wrap]))
                                     for i in range(0, len(msgs), wrap)]
    times = []
    for _ in range(rounds):
        comm.Barrier()
        if comm.rank == 1:
            for m in payload:
                channel.send(0, m)
            channel.drain(30.0)
            continue
        comm.probe(source=1)
        t0, got = MPI.Wtime(), 0
        while got < len(msgs):
            for _ in (router.poll() if wrap else channel.poll()):
                got += 1
        times.append((MPI.Wtime() - t0) / len(msgs))
    comm.Barrier()
    return statistics.median(times) if comm.rank == 0 else None


def prs_send(comm: MPI.Comm, msgs: list, rounds: int, bundle: bool = False) -> float | None:
    """Rank 0's seconds per Channel.send (isend + pickle, lazy completion) of ``msgs``, or per
    Bundle when ``bundle`` (the whole list in bundles of 32)."""
    channel = Channel(comm)
    payload = msgs if not bundle else [Bundle(tuple((1, m) for m in msgs[i:i + 32]))
                                       for i in range(0, len(msgs), 32)]
    times = []
    for _ in range(rounds):
        comm.Barrier()
        if comm.rank == 1:
            for _ in payload:
                comm.recv(source=0)
            continue
        t0 = MPI.Wtime()
        for m in payload:
            channel.send(1, m)
        channel.progress()
        times.append((MPI.Wtime() - t0) / len(payload))
        channel.drain(30.0)
    comm.Barrier()
    return statistics.median(times) if comm.rank == 0 else None


def prs_costs(comm: MPI.Comm) -> dict | None:
    ins, outs = worker_messages(256), rank0_messages(256)
    recv = prs_receive(comm, ins, 7)
    b1 = prs_receive(comm, ins, 7, wrap=1)
    b32 = prs_receive(comm, ins, 7, wrap=32)
    send = prs_send(comm, outs, 7)
    bsend = prs_send(comm, outs, 7, bundle=True)
    if comm.rank != 0:
        return None
    per_logical = max(0.0, (b1 - b32) * 32 / 31)       # b1 = a + b, b32 = a / 32 + b per message
    bundled = max(0.0, b1 - per_logical)
    return {"prs_recv_s": recv, "prs_send_s": send, "prs_bundle_s": per_logical,
            "prs_bundled_s": bundled, "prs_bundle_send_s": bsend}


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
    prs = prs_costs(comm)
    if comm.rank != 0:
        return
    p1, p16 = pickle_cost(1), pickle_cost(16)
    per_desc = max(0.0, (many - one) / 15)
    out = {"latency_s": latency, "c_msg_s": one, "per_desc_s": per_desc,
           "pickle_msg_s": p1, "pickle_per_desc_s": (p16 - p1) / 15,
           "bookkeeping_assumed_s": args.bookkeeping, **prs, "mpi": MPI.Get_library_version().splitlines()[0],
           "model_costs": {"c_msg": one, "c_batch": per_desc + args.bookkeeping,
                           "latency": latency, "node_latency": latency}}
    line = json.dumps(out)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
