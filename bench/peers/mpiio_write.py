"""Output path: ranks 1..P-1 append rows to one file with MPI-IO; one JSON line from rank 0.

Strategies (rank 0 writes nothing; it dispatches in prs-mpi):
  rank0    writers ask rank 0 for an offset (``offset = end; end += n``), then ``Write_at``
  exscan   each round: ``Exscan`` of sizes + ``Allreduce`` of the total, then ``Write_at_all``
  ordered  each round: ``Write_ordered`` (MPI's shared pointer, rank order)

    mpiexec -n 8 python bench/peers/mpiio_write.py --strategy rank0 --path out.txt --total-mb 100
The file is closed after ``File.Sync`` inside the timed region, then checked and deleted.
"""
import argparse
import math
import os
import time

import numpy as np
from mpi4py import MPI

import rows
import tasks

RESERVE, OFFSET = 11, 12


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=("rank0", "exscan", "ordered"), required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--total-mb", type=float, default=100.0)
    parser.add_argument("--block-kb", type=int, default=1024, help="bytes per write (flush)")
    parser.add_argument("--poll", type=float, default=200e-6)
    parser.add_argument("--keep", action="store_true", help="do not delete the file")
    return parser.parse_args()


def poll_recv(comm: MPI.Comm, source: int, tag: int, poll: float):
    status = MPI.Status()
    while not comm.iprobe(source=source, tag=tag, status=status):
        time.sleep(poll)
    return comm.recv(source=status.Get_source(), tag=tag), status.Get_source()


def serve_offsets(comm: MPI.Comm, requests: int, poll: float) -> None:
    """Rank 0: hand out ``requests`` offsets in arrival order."""
    end = 0
    for _ in range(requests):
        nbytes, writer = poll_recv(comm, MPI.ANY_SOURCE, RESERVE, poll)
        comm.send(end, dest=writer, tag=OFFSET)
        end += nbytes


def write_rank0(comm, fh, block: bytes, rounds: int, poll: float) -> None:
    if comm.rank == 0:
        serve_offsets(comm, rounds * (comm.size - 1), poll)
        return
    for _ in range(rounds):
        comm.send(len(block), dest=0, tag=RESERVE)
        offset, _ = poll_recv(comm, 0, OFFSET, poll)
        fh.Write_at(offset, block)


def write_exscan(comm, fh, block: bytes, rounds: int) -> None:
    mine = np.array([len(block)], dtype=np.int64)
    before, total = np.zeros(1, np.int64), np.zeros(1, np.int64)
    base = 0
    for _ in range(rounds):
        comm.Exscan(mine, before)
        if comm.rank == 0:
            before[0] = 0  # MPI leaves rank 0's Exscan result undefined
        comm.Allreduce(mine, total)
        fh.Write_at_all(base + int(before[0]), block)
        base += int(total[0])


def write_ordered(comm, fh, block: bytes, rounds: int) -> None:
    for _ in range(rounds):
        fh.Write_ordered(block)


def timed_write(comm: MPI.Comm, args: argparse.Namespace, block: bytes, rounds: int) -> float:
    if comm.rank == 0 and os.path.exists(args.path):
        os.remove(args.path)
    comm.Barrier()
    t0 = MPI.Wtime()
    fh = MPI.File.Open(comm, args.path, MPI.MODE_CREATE | MPI.MODE_WRONLY)
    if args.strategy == "rank0":
        write_rank0(comm, fh, block, rounds, args.poll)
    elif args.strategy == "exscan":
        write_exscan(comm, fh, block, rounds)
    else:
        write_ordered(comm, fh, block, rounds)
    fh.Sync()
    fh.Close()
    comm.Barrier()
    return MPI.Wtime() - t0


def main() -> None:
    args = parse_args()
    comm = MPI.COMM_WORLD
    writers = comm.size - 1
    if writers < 1:
        raise SystemExit("mpiio_write needs at least 2 ranks (rank 0 does not write)")
    full = rows.row_block(comm.rank, args.block_kb * 1024)
    rounds = math.ceil(args.total_mb * 1e6 / (writers * len(full)))
    block = b"" if comm.rank == 0 else full
    seconds = timed_write(comm, args, block, rounds)
    if comm.rank == 0:
        nbytes = rounds * writers * len(full)
        rows.check_rows(args.path, nbytes)
        if not args.keep:
            os.remove(args.path)
        tasks.emit({"peer": "mpiio_write", "strategy": args.strategy, "writers": writers,
                    "bytes": nbytes, "block_bytes": len(full), "writes": rounds * writers,
                    "seconds": seconds, "mb_per_s": nbytes / seconds / 1e6})


if __name__ == "__main__":
    main()
