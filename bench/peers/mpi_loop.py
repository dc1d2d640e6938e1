"""Minimal hand-written mpi4py master/worker loop: the practical dispatch limit on this machine.

Rank 0 hands task indices to ranks 1..P-1 and keeps ``--depth`` tasks outstanding per worker;
every rank waits with ``Iprobe`` + ``sleep(--poll)`` instead of a blocking receive (MPICH
busy-waits in blocking calls on an oversubscribed node). ``--static`` instead gives each
worker a contiguous 1/P block of the tasks up front. Prints one JSON line from rank 0.

    mpiexec -n 8 python bench/peers/mpi_loop.py --kind noop --n 20000
"""
import argparse
import time

from mpi4py import MPI

import tasks

TASK, RESULT, STOP = 1, 2, 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tasks.add_task_args(parser)
    parser.add_argument("--depth", type=int, default=2, help="tasks outstanding per worker")
    parser.add_argument("--poll", type=float, default=200e-6, help="sleep between empty polls (s)")
    parser.add_argument("--static", action="store_true", help="static partitioning, no dispatch")
    return parser.parse_args()


def wait_message(comm: MPI.Comm, source: int, tag: int, poll: float) -> MPI.Status:
    """Poll until a message matching (source, tag) is ready; return its status."""
    status = MPI.Status()
    while not comm.iprobe(source=source, tag=tag, status=status):
        time.sleep(poll)
    return status


def master_dynamic(comm: MPI.Comm, ntasks: int, depth: int, poll: float) -> int:
    """Deal tasks on demand; return the number of results reported by workers."""
    next_task = 0
    for _ in range(depth):
        for worker in range(1, comm.size):
            if next_task < ntasks:
                comm.send(next_task, dest=worker, tag=TASK)
                next_task += 1
    results = 0
    for _ in range(ntasks):
        status = wait_message(comm, MPI.ANY_SOURCE, RESULT, poll)
        worker = status.Get_source()
        results += comm.recv(source=worker, tag=RESULT)
        if next_task < ntasks:
            comm.send(next_task, dest=worker, tag=TASK)
            next_task += 1
    for worker in range(1, comm.size):
        comm.send(None, dest=worker, tag=STOP)
    return results


def worker_dynamic(comm: MPI.Comm, kind: str, work: list[list[str]], poll: float) -> int:
    """Run tasks until STOP; return how many tasks this rank ran."""
    done = 0
    while True:
        status = wait_message(comm, 0, MPI.ANY_TAG, poll)
        index = comm.recv(source=0, tag=status.Get_tag())
        if status.Get_tag() == STOP:
            return done
        comm.send(tasks.run_batch(kind, work[index]), dest=0, tag=RESULT)
        done += 1


def static_block(ntasks: int, nworkers: int, worker: int) -> range:
    """Contiguous block of task indices for worker ``worker`` (0-based) out of ``nworkers``."""
    base, extra = divmod(ntasks, nworkers)
    start = worker * base + min(worker, extra)
    return range(start, start + base + (1 if worker < extra else 0))


def master_static(comm: MPI.Comm, poll: float) -> int:
    results = 0
    for _ in range(1, comm.size):
        status = wait_message(comm, MPI.ANY_SOURCE, RESULT, poll)
        results += comm.recv(source=status.Get_source(), tag=RESULT)
    return results


def worker_static(comm: MPI.Comm, kind: str, work: list[list[str]]) -> int:
    block = static_block(len(work), comm.size - 1, comm.rank - 1)
    comm.send(sum(tasks.run_batch(kind, work[i]) for i in block), dest=0, tag=RESULT)
    return len(block)


def main() -> None:
    args = parse_args()
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        raise SystemExit("mpi_loop needs at least 2 ranks (1 master + workers)")
    items = tasks.load_items(args)
    work = tasks.batches(items, args.batch)
    if comm.rank > 0:
        tasks.init_worker(args.kind)
    comm.Barrier()
    t0, cpu0 = MPI.Wtime(), time.process_time()
    if comm.rank == 0:
        results = (master_static(comm, args.poll) if args.static
                   else master_dynamic(comm, len(work), args.depth, args.poll))
        seconds, cpu = MPI.Wtime() - t0, time.process_time() - cpu0
    elif args.static:
        mine = worker_static(comm, args.kind, work)
    else:
        mine = worker_dynamic(comm, args.kind, work, args.poll)
    per_worker = comm.gather(0 if comm.rank == 0 else mine, root=0)
    if comm.rank == 0:
        tasks.check_count(len(items), results)
        tasks.emit({"peer": "mpi_loop", "mode": "static" if args.static else "dynamic",
                    "ranks": comm.size, "workers": comm.size - 1, "tasks": len(work),
                    "items": len(items), "seconds": seconds, "tasks_per_s": len(work) / seconds,
                    "items_per_s": len(items) / seconds, "master_cpu_s": cpu,
                    "per_worker_tasks": per_worker[1:]})


if __name__ == "__main__":
    main()
