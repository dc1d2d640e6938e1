"""The MPI-IO append file: opened collectively, written with `Write_at` at offsets from rank 0.

Why not `Write_at_all` at `Exscan` offsets: collective writes make every rank wait for the
slowest, which is exactly the tail we avoid; workers finish mini-batches at different times.
Why not `Write_shared`/`Write_ordered`: shared file pointers serialise on lock files and
interleave. Rank 0 hands out disjoint byte ranges (a counter, no I/O), each worker writes its
own range independently, so rows are never merged or split and result bytes never pass rank 0.
"""
from __future__ import annotations

import os
import time
from typing import Any

from .errors import PrsError


class OutputError(PrsError):
    """The append file cannot be written (disk full, read-only, quota)."""


class OutputFile:
    """One shared file; every rank opens it (collective), writes its ranges, closes (collective)."""

    def __init__(self, comm: Any, path: str, fsync: bool = False) -> None:
        from mpi4py import MPI
        self.path = path
        self.fsync = fsync
        amode = MPI.MODE_WRONLY | MPI.MODE_CREATE
        try:
            self.fh = MPI.File.Open(comm, path, amode)
        except MPI.Exception as exc:
            raise OutputError(f"cannot open the append file {path}: {exc.Get_error_string()}; check that "
                              "output_dir is writable and on a file system every rank can reach") from None
        self.bytes_written = 0
        self.seconds = 0.0

    def write_at(self, offset: int, data: bytes) -> float:
        """Write `data` at `offset`; returns the seconds it took."""
        t0 = time.perf_counter()
        view = memoryview(data)
        try:
            while view:
                # MPI counts are C ints: write in chunks below 2 GiB
                chunk = view[: 1 << 30]
                self.fh.Write_at(offset, chunk)
                offset += len(chunk)
                view = view[len(chunk):]
            if self.fsync:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except Exception as exc:
            raise OutputError(f"writing {len(data)} result bytes to {self.path} at offset {offset} failed: {exc}; "
                              "free disk space or fix the permissions of output_dir, then run again with "
                              "--resume (committed results are kept)") from exc
        dt = time.perf_counter() - t0
        self.bytes_written += len(data)
        self.seconds += dt
        return dt

    def write_chunks(self, offset: int, chunks: list[bytes]) -> float:
        return self.write_at(offset, b"".join(chunks))

    def close(self) -> None:
        if self.fh is not None:
            self.fh.Close()
            self.fh = None


class ParquetParts:
    """append_row_format = "parquet": a Parquet dataset, one part file per flush.

    The byte range rank 0 hands out names the part (`part-<offset>.parquet`, written to a temporary
    name and renamed), so resume keeps exactly the committed parts: those below the cut-off offset.
    """

    def __init__(self, comm: Any, path: str, fsync: bool = False) -> None:
        self.path, self.fsync = path, fsync
        if comm.Get_rank() == 0:
            os.makedirs(path, exist_ok=True)
        comm.Barrier()
        self.bytes_written = 0
        self.seconds = 0.0

    @staticmethod
    def part_name(offset: int) -> str:
        return f"part-{offset:016d}.parquet"

    def write_chunks(self, offset: int, chunks: list[bytes]) -> float:
        import pyarrow as pa
        import pyarrow.parquet as pq
        t0 = time.perf_counter()
        final = os.path.join(self.path, self.part_name(offset))
        tmp = final + ".tmp"
        try:
            tables = [pa.ipc.open_stream(chunk).read_all() for chunk in chunks]
            pq.write_table(pa.concat_tables(tables, promote_options="default"), tmp)
            if self.fsync:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        except Exception as exc:
            raise OutputError(f"writing the Parquet part {final} failed: {exc}; check disk space and that "
                              "every mini-batch returns the same columns and dtypes, then --resume") from exc
        dt = time.perf_counter() - t0
        self.bytes_written += os.path.getsize(final)
        self.seconds += dt
        return dt

    def close(self) -> None:
        pass


def cut_parquet_parts(path: str, end: int) -> None:
    """Resume: remove part files at or past `end` (not committed) and temporary ones."""
    if not os.path.isdir(path):
        return
    for name in os.listdir(path):
        offset = name[len("part-"):].split(".")[0]
        if name.endswith(".tmp") or (name.startswith("part-") and offset.isdigit() and int(offset) >= end):
            os.unlink(os.path.join(path, name))


class NullOutput:
    """summary_only: nothing is written by prs-mpi."""

    path = None
    bytes_written = 0
    seconds = 0.0

    def write_at(self, offset: int, data: bytes) -> float:
        raise RuntimeError("summary_only jobs write no append file")

    write_chunks = write_at

    def close(self) -> None:
        pass
