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

    def close(self) -> None:
        if self.fh is not None:
            self.fh.Close()
            self.fh = None


class NullOutput:
    """summary_only: nothing is written by prs-mpi."""

    path = None
    bytes_written = 0
    seconds = 0.0

    def write_at(self, offset: int, data: bytes) -> float:
        raise RuntimeError("summary_only jobs write no append file")

    def close(self) -> None:
        pass
