"""Per-rank resource sampler: appends one row to ``logs/perf/rank<N>.csv`` every ``interval`` s.

Columns (see docs/DESIGN.md): ``time,rank,host,cpu_percent,rss_supervisor,rss_child,
read_bytes,write_bytes,gpu_util,gpu_mem``.

* ``cpu_percent``: supervisor + child (and the child's descendants) since the previous sample,
  100 = one core busy.
* ``rss_*``: resident set size in bytes; ``rss_child`` is empty while no child runs.
* ``read_bytes``/``write_bytes``: cumulative disk bytes of every process this monitor has
  seen (supervisor and each child, summed over child restarts); empty where the platform
  has no per-process IO counters.
* ``gpu_util`` (%) and ``gpu_mem`` (bytes used) of the rank's GPU, from NVML (``pynvml``) if
  importable, else ``nvidia-smi``; empty when there is no GPU.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
from typing import Any

import psutil

log = logging.getLogger(__name__)

FIELDS = ("time", "rank", "host", "cpu_percent", "rss_supervisor", "rss_child",
          "read_bytes", "write_bytes", "gpu_util", "gpu_mem")
_NVIDIA_SMI_ARGS = ("--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits")


def _default_gpu_index() -> int:
    """First entry of CUDA_VISIBLE_DEVICES when it is a plain index, else device 0."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


class GpuProbe:
    """Reads utilisation (%) and memory used (bytes) of one GPU; ``(None, None)`` without one."""

    def __init__(self, index: int | None = None):
        self.index = _default_gpu_index() if index is None else index
        self._nvml: Any = None
        self._handle: Any = None
        self._smi = shutil.which("nvidia-smi")
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self._nvml = pynvml
        except Exception as exc:  # ImportError, NVMLError (no driver/GPU), IndexError
            log.debug("NVML unavailable (%s); using nvidia-smi=%s", exc, self._smi)

    def read(self) -> tuple[float | None, int | None]:
        if self._nvml is not None:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
                mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used
                return float(util), int(mem)
            except Exception as exc:
                log.warning("NVML query failed (%s); GPU columns will be empty from now on", exc)
                self._nvml = None
                self._smi = None
        if self._smi:
            return self._read_smi()
        return None, None

    def _read_smi(self) -> tuple[float | None, int | None]:
        try:
            out = subprocess.run([self._smi, *_NVIDIA_SMI_ARGS], capture_output=True,
                                 text=True, timeout=10, check=True).stdout
            lines = [ln for ln in out.splitlines() if ln.strip()]
            util, mem_mib = (field.strip() for field in lines[self.index].split(","))
            return float(util), int(float(mem_mib) * 2**20)
        except Exception as exc:  # missing driver, timeout, odd output, no such index
            log.warning("nvidia-smi failed (%s); GPU columns will be empty from now on", exc)
            self._smi = None
            return None, None

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # shutting down a library that may already be gone
                pass
            self._nvml = None


class ResourceMonitor:
    """Samples this rank's supervisor and child at most once per ``interval`` seconds.

    ``interval <= 0`` disables sampling (no file is created).
    """

    def __init__(self, path: str, rank: int, host: str, interval: float,
                 gpu_index: int | None = None):
        self.path, self.rank, self.host, self.interval = path, rank, host, float(interval)
        self._next = float("-inf")
        self._file = None
        self._writer: Any = None
        self._gpu: GpuProbe | None = None
        self._gpu_index = gpu_index
        self._procs: dict[int, psutil.Process] = {}
        self._io_last: dict[int, tuple[int, int]] = {}
        self._io_total = [0, 0]
        self._io_ok = True
        self._self = psutil.Process()

    def maybe_sample(self, child_pid: int | None, now: float) -> bool:
        """Append a row if ``interval`` seconds passed since the last one; True if sampled."""
        if self.interval <= 0 or now < self._next:
            return False
        self._next = now + self.interval
        try:
            self._write(self._sample(child_pid, now))
        except OSError as exc:
            log.warning("resource monitor cannot write %s (%s); sampling stops", self.path, exc)
            self.interval = 0.0
        return True

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(FIELDS)
        self._gpu = GpuProbe(self._gpu_index)

    def _write(self, row: list[Any]) -> None:
        if self._file is None:
            self._open()
        assert self._gpu is not None
        gpu_util, gpu_mem = self._gpu.read()
        self._writer.writerow(row + ["" if gpu_util is None else f"{gpu_util:g}",
                                     "" if gpu_mem is None else gpu_mem])
        self._file.flush()

    def _proc(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
            proc.cpu_percent(None)  # first call only primes the counter
        return proc

    def _sample(self, child_pid: int | None, now: float) -> list[Any]:
        supervisor = self._proc(self._self.pid)
        cpu = supervisor.cpu_percent(None)
        rss_sup = supervisor.memory_info().rss
        rss_child: int | str = ""
        seen = [supervisor]
        if child_pid is not None:
            try:
                child = self._proc(child_pid)
                family = [child] + [self._proc(p.pid) for p in child.children(recursive=True)]
                cpu += sum(p.cpu_percent(None) for p in family)
                rss_child = sum(p.memory_info().rss for p in family)
                seen += family
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                rss_child = ""
        self._forget_gone({p.pid for p in seen})
        read_b, write_b = self._io(seen)
        return [f"{now:.3f}", self.rank, self.host, f"{cpu:.1f}", rss_sup, rss_child,
                read_b, write_b]

    def _forget_gone(self, alive: set[int]) -> None:
        for pid in [p for p in self._procs if p not in alive]:
            del self._procs[pid]
            self._io_last.pop(pid, None)

    def _io(self, procs: list[psutil.Process]) -> tuple[int | str, int | str]:
        if not self._io_ok:
            return "", ""
        for proc in procs:
            try:
                io = proc.io_counters()
            except AttributeError:  # platform without per-process IO counters
                self._io_ok = False
                return "", ""
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            last_r, last_w = self._io_last.get(proc.pid, (0, 0))
            self._io_total[0] += max(0, io.read_bytes - last_r)
            self._io_total[1] += max(0, io.write_bytes - last_w)
            self._io_last[proc.pid] = (io.read_bytes, io.write_bytes)
        return self._io_total[0], self._io_total[1]

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()
            self._gpu = None
        if self._file is not None:
            self._file.close()
            self._file = None
