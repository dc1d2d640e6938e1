"""Where and with what the benchmark ran: hardware, OS, Python, MPI and library versions."""
import datetime
import os
import platform
import subprocess
from importlib import metadata

import psutil

from harness.common import PYTHON, peer_env

LIBRARIES = ("prs-mpi", "mpi4py", "mpich", "numpy", "psutil", "ray")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mpi_library() -> str:
    """First line of ``MPI.Get_library_version()``, from a subprocess (importing MPI here
    would initialise it in the harness)."""
    code = "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"
    try:
        out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                             env=peer_env())
        return out.stdout.strip() or f"unknown ({out.stderr.strip()[-200:]})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"


def versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe() -> dict[str, str]:
    """Facts about this machine and run, in display order."""
    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model()}, {psutil.cpu_count(logical=True)} logical cores "
               f"({psutil.cpu_count(logical=False)} physical)",
        "memory": f"{mem:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "mpi": mpi_library(),
        "load average at start": load,
    }
    info.update({f"{k} version": v for k, v in versions().items()})
    return info
