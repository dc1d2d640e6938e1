"""Per-rank CPU/GPU placement: a pure planner (topology + config + env -> plan) and discovery helpers.

Nothing here imports MPI.  The worker calls::

    topo = local_topology(local_rank, local_size, os.environ)
    p = plan(rank, topo, cfg, os.environ)

and starts its child with ``p.env`` merged into the child's environment and, when
``cfg.pin_cpus``, ``psutil.Process(child_pid).cpu_affinity(list(p.cpus))``.

Rules (see ``docs/DESIGN.md`` and slurm/README.md):

* CPUs: the node's cpuset is split into disjoint contiguous blocks, one per node-local
  worker (``cpus_per_worker`` cores each, or an even split when 0; Slurm's
  ``SRUN_CPUS_PER_TASK`` / ``SLURM_CPUS_PER_TASK`` is used when the job file says 0).  More
  workers than cores: cores are shared round-robin and the placement says so.  When Slurm
  has already bound this task to its own cpuset, the whole cpuset is used as is.
* GPUs: chosen only from the GPUs this process may see (``CUDA_VISIBLE_DEVICES``, else
  ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``, else everything found); never widened.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import psutil

log = logging.getLogger(__name__)

DEVICES = ("auto", "gpu", "cpu")
SHARING = ("round_robin", "exclusive")
# thread-pool knobs set to the worker's core count unless the user set them
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# values of CUDA_VISIBLE_DEVICES that mean "no GPU"
NO_GPU_VALUES = ("", "-1", "none", "nodevfiles")
# Slurm --cpu-bind types that give each task its own cpuset
_TASK_BIND = re.compile(r"(mask_cpu|map_cpu|mask_ldom|map_ldom|cores|threads|sockets|ldoms|rank)")


class PlacementError(ValueError):
    """The requested placement cannot be satisfied; the message says how to fix it."""


@dataclass(frozen=True)
class Topology:
    host: str
    local_rank: int
    local_size: int
    cpus: tuple[int, ...]  # cpuset this process may use (psutil.Process().cpu_affinity())
    gpus: tuple[str, ...]  # GPU ids visible to the job, as they go into CUDA_VISIBLE_DEVICES


@dataclass(frozen=True)
class PlacementConfig:
    device: str = "auto"  # auto | gpu | cpu
    gpus_per_worker: int = 1
    gpu_sharing: str = "round_robin"  # round_robin | exclusive (extra workers get no GPU, run on CPU)
    cpus_per_worker: int = 0  # 0 = split the cpuset evenly (or Slurm's cpus-per-task)
    pin_cpus: bool = True

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise PlacementError(f"device = {self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.gpu_sharing not in SHARING:
            raise PlacementError(
                f"gpu_sharing = {self.gpu_sharing!r}: expected one of {', '.join(SHARING)}")
        if self.gpus_per_worker < 1:
            raise PlacementError(f"gpus_per_worker = {self.gpus_per_worker}: expected >= 1 "
                                 "(use device = \"cpu\" for no GPU)")
        if self.cpus_per_worker < 0:
            raise PlacementError(f"cpus_per_worker = {self.cpus_per_worker}: expected >= 0 "
                                 "(0 splits the cpuset evenly)")


@dataclass(frozen=True)
class Placement:
    rank: int
    host: str
    local_rank: int
    cpus: tuple[int, ...]
    gpus: tuple[str, ...]
    env: Mapping[str, str]  # to set in the child
    cpus_shared: bool = False  # another worker on this node runs on (some of) these cores
    gpus_shared: bool = False  # another worker on this node uses (some of) these GPUs
    notes: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- parsing helpers

def _int_env(env: Mapping[str, str], *names: str) -> int | None:
    """First of ``names`` that holds an integer (Slurm values like '4(x2)' use the head)."""
    for name in names:
        m = re.match(r"\s*(\d+)", env.get(name, ""))
        if m:
            return int(m.group(1))
    return None


def _id_list(value: str | None) -> tuple[str, ...] | None:
    """'0,1, 2' -> ('0','1','2'); None when unset; () for the 'no GPU' spellings."""
    if value is None:
        return None
    if value.strip().lower() in NO_GPU_VALUES:
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def expand_counts(spec: str) -> list[int]:
    """Slurm's compressed count list: '4(x2),3' -> [4, 4, 3]."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if not m:
            raise ValueError(f"cannot parse Slurm count list {spec!r} at {part!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def format_cpus(cpus: Iterable[int]) -> str:
    """(0,1,2,5,7,8) -> '0-2,5,7-8'."""
    ranges: list[list[int]] = []
    for c in sorted(set(cpus)):
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) or "-"


# ---------------------------------------------------------------- GPU visibility

def visible_gpu_ids(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """GPU ids the environment restricts this process to, or None when it does not.

    ``CUDA_VISIBLE_DEVICES`` wins (Slurm sets it for a step with GPUs); else
    ``SLURM_STEP_GPUS`` then ``SLURM_JOB_GPUS`` (physical indices).
    """
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        ids = _id_list(env.get(name))
        if ids is not None:
            return ids
    return None


def _narrow(gpus: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """Keep only the GPUs the environment allows (never adds one)."""
    allowed = visible_gpu_ids(env)
    if allowed is None:
        return tuple(gpus)
    return tuple(g for g in gpus if g in allowed)


def _gpus_task_bound(env: Mapping[str, str]) -> bool:
    """Slurm already gave this task its own GPUs (--gpus-per-task or a per-task --gpu-bind)."""
    bind = env.get("SLURM_GPU_BIND", "").lower()
    return bool(env.get("SLURM_GPUS_PER_TASK")) or any(
        k in bind for k in ("per_task", "map_gpu", "mask_gpu", "single"))


# ---------------------------------------------------------------- CPU planning

def slurm_cpus_per_task(env: Mapping[str, str]) -> int | None:
    """Cores Slurm gives each task; Slurm >= 22.05 srun reads SRUN_CPUS_PER_TASK, not the sbatch value."""
    return _int_env(env, "SRUN_CPUS_PER_TASK", "SLURM_CPUS_PER_TASK")


def _cpus_task_bound(n_cpus: int, local_size: int, env: Mapping[str, str]) -> bool:
    """True when srun bound this task to a cpuset of its own (so splitting it again is wrong)."""
    if local_size <= 1 or "SLURM_STEP_ID" not in env:
        return False
    bind = env.get("SLURM_CPU_BIND_TYPE", "") or env.get("SLURM_CPU_BIND", "")
    if bind and "none" not in bind.lower() and _TASK_BIND.search(bind.lower()):
        return True
    cpt = slurm_cpus_per_task(env)
    return cpt is not None and n_cpus <= cpt


def _cpu_block(cpus: Sequence[int], local_rank: int, local_size: int,
               per: int) -> tuple[tuple[int, ...], bool]:
    """This worker's cores and whether they are shared with another worker on the node."""
    n = len(cpus)
    if per == 0:  # even split, remainder to the first workers
        if local_size <= n:
            base, extra = divmod(n, local_size)
            start = local_rank * base + min(local_rank, extra)
            return tuple(cpus[start:start + base + (local_rank < extra)]), False
        per = 1
    per = min(per, n)
    if per * local_size <= n:
        return tuple(cpus[local_rank * per:(local_rank + 1) * per]), False
    start = (local_rank * per) % n  # oversubscribed: round-robin over the cpuset
    return tuple(sorted(cpus[(start + i) % n] for i in range(per))), True


def _plan_cpus(topo: Topology, cfg: PlacementConfig,
               env: Mapping[str, str]) -> tuple[tuple[int, ...], bool, list[str]]:
    cpus = tuple(sorted(set(topo.cpus)))
    notes: list[str] = []
    if not cpus:
        return (), False, ["empty cpuset: not pinned"]
    if _cpus_task_bound(len(cpus), topo.local_size, env):
        notes.append("cpuset bound per task by Slurm: used as is")
        keep = cfg.cpus_per_worker or len(cpus)
        return cpus[:keep], False, notes
    per = cfg.cpus_per_worker or slurm_cpus_per_task(env) or 0
    mine, shared = _cpu_block(cpus, topo.local_rank, topo.local_size, per)
    if shared:
        want = per or 1
        notes.append(f"{topo.local_size} workers x {want} core(s) on {len(cpus)} core(s): "
                     "cores shared round-robin")
    return mine, shared, notes


# ---------------------------------------------------------------- GPU planning

def _gpu_block(gpus: Sequence[str], local_rank: int, local_size: int,
               cfg: PlacementConfig) -> tuple[tuple[str, ...], bool]:
    g, k = len(gpus), cfg.gpus_per_worker
    if cfg.gpu_sharing == "exclusive":
        if (local_rank + 1) * k <= g:
            return tuple(gpus[local_rank * k:(local_rank + 1) * k]), False
        return (), False
    if k >= g:
        return tuple(gpus), local_size > 1
    mine = tuple(gpus[(local_rank * k + j) % g] for j in range(k))
    return mine, local_size * k > g


def _plan_gpus(topo: Topology, cfg: PlacementConfig,
               env: Mapping[str, str]) -> tuple[tuple[str, ...], bool, list[str]]:
    if cfg.device == "cpu":
        return (), False, []
    gpus = _narrow(topo.gpus, env)
    notes: list[str] = []
    if not gpus:
        if cfg.device == "gpu":
            raise PlacementError(
                f"device = \"gpu\" but no GPU found on {topo.host} (CUDA_VISIBLE_DEVICES="
                f"{env.get('CUDA_VISIBLE_DEVICES', '<unset>')}); request GPUs from the scheduler "
                "(e.g. sbatch --gpus-per-node) or set device = \"auto\" or \"cpu\"")
        return (), False, ["no GPU found: running on CPU"]
    if _gpus_task_bound(env):
        return tuple(gpus[:cfg.gpus_per_worker]), False, ["GPUs bound per task by Slurm"]
    mine, shared = _gpu_block(gpus, topo.local_rank, topo.local_size, cfg)
    if not mine:
        if cfg.device == "gpu":
            raise PlacementError(
                f"device = \"gpu\", gpu_sharing = \"exclusive\": local worker {topo.local_rank} "
                f"has no free GPU ({len(gpus)} GPU(s), {cfg.gpus_per_worker} per worker); lower "
                "process_count_per_node or use gpu_sharing = \"round_robin\"")
        notes.append("exclusive GPUs all taken: running on CPU")
    elif shared:
        notes.append(f"{topo.local_size} workers share {len(gpus)} GPU(s) round-robin")
    return mine, shared, notes


# ---------------------------------------------------------------- the planner

def _child_env(cpus: tuple[int, ...], cpus_shared: bool, gpus: tuple[str, ...],
               env: Mapping[str, str]) -> dict[str, str]:
    out = {"CUDA_VISIBLE_DEVICES": ",".join(gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    threads = "1" if cpus_shared or not cpus else str(len(cpus))
    for name in THREAD_VARS:
        if name not in env:
            out[name] = threads
    return out


def plan(rank: int, topo: Topology, cfg: PlacementConfig, env: Mapping[str, str]) -> Placement:
    """Where global ``rank`` (node-local rank ``topo.local_rank``) runs: cores, GPUs, child env.

    Pure: the same inputs always give the same plan, and the node-local workers'
    plans are disjoint whenever the node has enough cores / GPUs.
    """
    if not 0 <= topo.local_rank < topo.local_size:
        raise PlacementError(f"local rank {topo.local_rank} outside 0..{topo.local_size - 1} "
                             f"on {topo.host}: the launcher's node-local layout is inconsistent")
    cpus, cpus_shared, cpu_notes = _plan_cpus(topo, cfg, env)
    gpus, gpus_shared, gpu_notes = _plan_gpus(topo, cfg, env)
    return Placement(rank=rank, host=topo.host, local_rank=topo.local_rank, cpus=cpus, gpus=gpus,
                     env=_child_env(cpus, cpus_shared, gpus, env), cpus_shared=cpus_shared,
                     gpus_shared=gpus_shared, notes=tuple(cpu_notes + gpu_notes))


def plan_node(host: str, local_size: int, cpus: Sequence[int], gpus: Sequence[str],
              cfg: PlacementConfig, env: Mapping[str, str], first_rank: int = 0) -> list[Placement]:
    """Plans for every worker of one node (block rank order), for ``prs-mpi plan``."""
    return [plan(first_rank + i, Topology(host, i, local_size, tuple(cpus), tuple(gpus)), cfg, env)
            for i in range(local_size)]


def format_plan(placements: Iterable[Placement]) -> str:
    """A table rank -> host, local rank, cores, GPU (for ``prs-mpi plan`` and the logs).

    With several ranks, notes that hold for every rank are printed once under the table.
    """
    placements = sorted(placements, key=lambda p: p.rank)
    common = set.intersection(*(set(p.notes) for p in placements)) if len(placements) > 1 else set()
    rows = [("rank", "host", "local", "cores", "gpu", "notes")]
    for p in placements:
        cores = format_cpus(p.cpus) + (" (shared)" if p.cpus_shared else "")
        gpu = (",".join(p.gpus) or "-") + (" (shared)" if p.gpus_shared else "")
        own = "; ".join(n for n in p.notes if n not in common)
        rows.append((str(p.rank), p.host, str(p.local_rank), cores, gpu, own))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    ordered = [n for n in placements[0].notes if n in common] if common else []
    return "\n".join([ln.rstrip() for ln in lines] + [f"note: {n}" for n in ordered]) + "\n"


# ---------------------------------------------------------------- discovery

Probe = Callable[[], list[tuple[str, str]]]


def _nvml_probe() -> list[tuple[str, str]]:
    import pynvml  # optional dependency (nvidia-ml-py)

    pynvml.nvmlInit()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append((str(i), uuid.decode() if isinstance(uuid, bytes) else str(uuid)))
        return out
    finally:
        pynvml.nvmlShutdown()


def _smi_probe() -> list[tuple[str, str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    res = subprocess.run([exe, "--query-gpu=index,uuid", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20, check=True)
    rows = [tuple(c.strip() for c in line.split(",")) for line in res.stdout.splitlines()]
    return [(r[0], r[1]) for r in rows if len(r) == 2 and r[0].isdigit()]


def physical_gpus(probes: Sequence[Probe] | None = None) -> list[tuple[str, str]]:
    """(index, uuid) of every GPU the driver shows; [] when none or nothing can tell."""
    for probe in probes if probes is not None else (_nvml_probe, _smi_probe):
        try:
            found = probe()
        except Exception as exc:  # noqa: BLE001 - discovery must never fail the job
            log.debug("GPU probe %s failed: %s", getattr(probe, "__name__", probe), exc)
            continue
        if found:
            return found
    return []


def discover_gpus(env: Mapping[str, str], probes: Sequence[Probe] | None = None) -> tuple[str, ...]:
    """GPU ids this process may use, spelled as they go into CUDA_VISIBLE_DEVICES; () if none.

    With CUDA_VISIBLE_DEVICES (or SLURM_STEP_GPUS / SLURM_JOB_GPUS) set, its entries are kept
    verbatim (indices, UUIDs or MIG ids) when a GPU is present at all; otherwise every GPU
    the driver shows, by index.  Never raises.
    """
    found = physical_gpus(probes)
    if not found:
        log.info("no GPU found (neither NVML nor nvidia-smi reports one)")
        return ()
    allowed = visible_gpu_ids(env)
    if allowed is None:
        return tuple(idx for idx, _ in found)
    if env.get("CUDA_VISIBLE_DEVICES") is None:  # Slurm physical indices: keep real ones only
        known = {idx for idx, _ in found} | {uuid for _, uuid in found}
        return tuple(g for g in allowed if g in known)
    return allowed


def _local_rank_from_env(env: Mapping[str, str]) -> int | None:
    return _int_env(env, "SLURM_LOCALID", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK",
                    "PMI_LOCAL_RANK", "PALS_LOCAL_RANKID")


def _local_size_from_env(env: Mapping[str, str]) -> int | None:
    size = _int_env(env, "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_LOCAL_SIZE")
    if size is not None:
        return size
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    node = _int_env(env, "SLURM_NODEID")
    if spec:
        counts = expand_counts(spec)
        return counts[node] if node is not None and node < len(counts) else counts[0]
    return None


def local_topology(local_rank: int | None, local_size: int | None,
                   env: Mapping[str, str], probes: Sequence[Probe] | None = None) -> Topology:
    """This process's topology; a None local rank/size is read from the launcher's env vars."""
    if local_rank is None:
        local_rank = _local_rank_from_env(env) or 0
    if local_size is None:
        local_size = _local_size_from_env(env) or 1
    try:
        cpus = tuple(sorted(psutil.Process().cpu_affinity()))
    except (AttributeError, psutil.Error, OSError):  # platforms without affinity
        cpus = tuple(range(psutil.cpu_count() or 1))
    return Topology(host=socket.gethostname(), local_rank=local_rank, local_size=local_size,
                    cpus=cpus, gpus=discover_gpus(env, probes))


# ---------------------------------------------------------------- Slurm allocation

def allocation_from_env(env: Mapping[str, str]) -> dict:
    """What Slurm allocated, from SLURM_* variables; ``under_slurm`` False outside a job."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
    tasks = expand_counts(spec) if spec else []
    per_node = _int_env(env, "SLURM_NTASKS_PER_NODE")
    if per_node is None and tasks and len(set(tasks)) == 1:
        per_node = tasks[0]
    return {
        "under_slurm": "SLURM_JOB_ID" in env,
        "job_id": env.get("SLURM_JOB_ID"),
        "step_id": env.get("SLURM_STEP_ID"),
        "nodes": _int_env(env, "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES"),
        "nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
        "ntasks": _int_env(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"),
        "tasks_per_node": tasks,
        "ntasks_per_node": per_node,
        "cpus_per_task": slurm_cpus_per_task(env),
        "gpus_on_node": _int_env(env, "SLURM_GPUS_ON_NODE"),
        "partition": env.get("SLURM_JOB_PARTITION"),
        "restart_count": _int_env(env, "SLURM_RESTART_COUNT") or 0,
    }


def allocation_mismatches(alloc: Mapping, node_count: int | None,
                          process_count_per_node: int | None) -> list[str]:
    """Human-readable differences between the job file's layout and Slurm's allocation."""
    if not alloc.get("under_slurm"):
        return []
    out = []
    nodes = alloc.get("nodes")
    if node_count is not None and nodes is not None and nodes != node_count:
        out.append(f"node_count = {node_count} in the job file but Slurm job {alloc['job_id']} "
                   f"has {nodes} node(s); use sbatch --nodes={node_count} or "
                   f"--set node_count={nodes}")
    tasks = alloc.get("tasks_per_node") or []
    per = alloc.get("ntasks_per_node")
    if process_count_per_node is not None and tasks and any(t != process_count_per_node
                                                            for t in tasks):
        got = per if per is not None else "/".join(map(str, tasks))
        out.append(f"process_count_per_node = {process_count_per_node} in the job file but "
                   f"Slurm job {alloc['job_id']} runs {got} task(s) per node; use sbatch "
                   f"--ntasks-per-node={process_count_per_node} or "
                   f"--set process_count_per_node={got}")
    return out
