"""One rank's life in a job: MPI start-up and layout, the polling loop, and every exit path.

Every rank runs `run_job`. Rank 0 prepares the output directory, then runs the dispatcher and
(with isolation = "process", or when it is alone) a worker of its own in the same loop. Any
unhandled exception on any rank ends the whole job with its reason on stderr — never a hang.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from . import placement as placement_mod
from .child import ChildSpec
from .config import JobConfig
from .errors import EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, PrsError
from .journal import StartLog
from .protocol import Fatal, Tag, tag_of
from .runlog import log_paths
from .transport import Backoff, Channel

log = logging.getLogger(__name__)
WORKER_TAGS = {Tag.ASSIGN, Tag.REVOKE, Tag.OFFSET, Tag.STOP, Tag.CANCEL}


@dataclass(frozen=True)
class RunOptions:
    resume: bool = False
    retry_failed: bool = False


@dataclass(frozen=True)
class Layout:
    rank: int
    size: int
    host: str
    local_rank: int
    local_size: int
    hosts: tuple[str, ...]          # host of every rank
    local_sizes: tuple[int, ...]    # ranks per host, in order of first appearance
    node_names: tuple[str, ...]


def discover_layout(comm: Any) -> Layout:
    from mpi4py import MPI
    host = socket.gethostname()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank, local_size = node.Get_rank(), node.Get_size()
    node.Free()
    hosts = tuple(comm.allgather(host))
    names: dict[str, int] = {}
    for h in hosts:
        names[h] = names.get(h, 0) + 1
    return Layout(comm.Get_rank(), comm.Get_size(), host, local_rank, local_size, hosts,
                  tuple(names.values()), tuple(names))


def runs_worker(cfg: JobConfig, layout: Layout, rank: int) -> bool:
    """Every rank works; with isolation = "none" rank 0 only dispatches (unless it is alone)."""
    return rank != 0 or cfg.isolation == "process" or layout.size == 1


def layout_warnings(cfg: JobConfig, layout: Layout) -> list[str]:
    out = placement_mod.allocation_mismatches(placement_mod.allocation_from_env(os.environ), cfg.node_count,
                                              cfg.process_count_per_node)
    if out:
        return out
    if cfg.node_count is not None and cfg.node_count != len(layout.node_names):
        out.append(f"node_count = {cfg.node_count} in {cfg.job_file} but the launcher started ranks on "
                   f"{len(layout.node_names)} node(s) ({', '.join(layout.node_names)}); running on those "
                   f"(launch on {cfg.node_count} nodes, or --set node_count={len(layout.node_names)})")
    if cfg.process_count_per_node is not None and any(n != cfg.process_count_per_node for n in layout.local_sizes):
        got = ", ".join(f"{h}: {n}" for h, n in zip(layout.node_names, layout.local_sizes))
        out.append(f"process_count_per_node = {cfg.process_count_per_node} in {cfg.job_file} but the launcher "
                   f"started {got} ranks; running with those (e.g. mpiexec -n "
                   f"{cfg.process_count_per_node * len(layout.node_names)}, or --set process_count_per_node="
                   f"{layout.local_sizes[0]})")
    return out


# ------------------------------------------------------------------ the worker side of a rank

def make_worker(cfg: JobConfig, layout: Layout, channel: Channel, output: Any) -> Any:
    from .monitor import ResourceMonitor
    from .supervisor import ChildProcess, InProcess, child_environment
    from .worker import Worker
    paths = log_paths(cfg.output_dir, layout.rank, layout.host)
    os.makedirs(paths["user_dir"], exist_ok=True)
    pcfg = cfg.placement
    penv = {**os.environ, **cfg.environment_variables}   # a CUDA_VISIBLE_DEVICES in the job file counts
    topo = placement_mod.local_topology(layout.local_rank, layout.local_size, penv)
    place = placement_mod.plan(layout.rank, topo, pcfg, penv)
    log.info("placement: %s", placement_mod.format_plan([place]).splitlines()[-1])
    models, sides = local_copies(cfg, dict(cfg.models)), local_copies(cfg, dict(cfg.side_inputs))
    ctx = context_env(cfg, layout, models, sides)
    spec = ChildSpec(entry_script_path=cfg.entry_script_path, source_directory=cfg.source_directory,
                     arguments=tuple(cfg.arguments) + side_input_arguments(cfg, sides),
                     output_action=cfg.output_action,
                     append_row_format=cfg.append_row_format, input_kind=cfg.input.kind,
                     input_options=_input_options(cfg), input_mode=cfg.input.input_mode,
                     scratch_dir=cfg.input.scratch_dir, compat=cfg.compat, rank=layout.rank,
                     state_dir=os.path.join(cfg.output_dir, ".prs"))
    env = child_environment(os.environ, {**place.env, **cfg.environment_variables, **ctx})
    if cfg.isolation == "none":
        os.environ.update({**cfg.environment_variables, **ctx})
        factory = lambda: InProcess(spec, cfg.run_invocation_timeout)  # noqa: E731
    else:
        cpus = place.cpus if pcfg.pin_cpus else ()
        factory = lambda: ChildProcess(spec, env, paths["user"], cfg.run_invocation_timeout,  # noqa: E731
                                       cpus, cfg.child_memory_limit)
    monitor = ResourceMonitor(paths["perf_file"], layout.rank, layout.host, cfg.resource_monitor_interval)
    send = lambda msg: channel.send(0, msg)  # noqa: E731
    start_log = StartLog(os.path.join(cfg.output_dir, ".prs"), layout.rank)
    start_log.run_begins()
    return Worker(layout.rank, layout.host, cfg, send, output, factory, monitor, start_log)


def _input_options(cfg: JobConfig) -> dict[str, Any]:
    opts = dict(cfg.input.options)
    if cfg.input.hdf5_dataset:
        opts["hdf5_dataset"] = cfg.input.hdf5_dataset
    return opts


def node_cache_dir(cfg: JobConfig) -> str:
    """Node-local cache for side inputs and models given as URLs (fetched once per node)."""
    import tempfile
    return os.path.join(cfg.input.scratch_dir or tempfile.gettempdir(), "prs-mpi-cache")


def local_copies(cfg: JobConfig, table: dict[str, str]) -> dict[str, str]:
    """URLs fetched once per node (cached by content/etag); local paths as they are."""
    if not table:
        return {}
    from .storage import fetch_once_per_node, is_url
    return {name: fetch_once_per_node(path, node_cache_dir(cfg)) if is_url(path) else path
            for name, path in table.items()}


def context_env(cfg: JobConfig, layout: Layout, models: dict[str, str], sides: dict[str, str]) -> dict[str, str]:
    from .entry import (ENV_HOST, ENV_LOG_DIR, ENV_LOG_LEVEL, ENV_MODELS, ENV_OUTPUT_DIR, ENV_RANK,
                        ENV_SIDE_INPUTS)
    return {ENV_RANK: str(layout.rank), ENV_HOST: layout.host, ENV_OUTPUT_DIR: cfg.output_dir,
            ENV_LOG_DIR: os.path.join(cfg.output_dir, "logs", "user", layout.host),
            ENV_MODELS: json.dumps(models), ENV_SIDE_INPUTS: json.dumps(sides), ENV_LOG_LEVEL: cfg.logging_level}


def side_input_arguments(cfg: JobConfig, sides: dict[str, str]) -> tuple[str, ...]:
    if not cfg.side_inputs_as_arguments:
        return ()
    out: list[str] = []
    for name, path in sides.items():
        out += [f"--{name}", path]
    return tuple(out)


# ------------------------------------------------------------------ the loop

RELAY_PATIENCE = 0.005       # a rank that answers others sleeps at most this long on its child's pipe ...
RANK0_MAX_PATIENCE = 0.05    # ... rank 0 up to this, as long as every worker holds enough work


class RankLoop:
    """Routes messages to the dispatcher (rank 0) and the worker, steps both, waits politely."""

    def __init__(self, channel: Channel, worker: Any, dispatcher: Any, progress: Any) -> None:
        self.channel, self.worker, self.dispatcher, self.progress = channel, worker, dispatcher, progress
        # a rank that answers others polls MPI at least every 2 ms, or every 5 ms while its own
        # child has work queued (workers then hold a mini-batch or more of slack: worker.py);
        # rank 0 up to 50 ms while every worker does (Dispatcher.patience)
        if dispatcher is not None:
            self.backoff = Backoff(max_sleep=0.002, max_patience=RANK0_MAX_PATIENCE)
        elif getattr(channel, "is_leader", False):
            self.backoff = Backoff(max_sleep=0.002, max_patience=RELAY_PATIENCE)
        else:
            self.backoff = Backoff(max_sleep=0.01)

    def run(self, interrupted: Any = None) -> None:
        inject = injected_fault(self.channel.rank)
        steps = 0
        while not self.done:
            steps += 1
            if inject and steps == 50:
                raise RuntimeError(f"injected fault (PRS_MPI_INJECT={os.environ['PRS_MPI_INJECT']})")
            progressed = self._route()
            if self.dispatcher is not None:
                if interrupted is not None and interrupted.pending():
                    self.dispatcher.begin_stop(interrupted.reason(), "interrupted")
                if self.dispatcher.fatal is not None:
                    return
                progressed |= self.dispatcher.step()
                self.progress.tick()
            if self.worker is not None and not self.worker.done:
                progressed |= self.worker.step()
            self.channel.flush()
            self._wait(progressed)

    def _wait(self, progressed: bool) -> None:
        worker = self.worker if self.worker is not None and not self.worker.done else None
        if progressed or worker is None:    # busy: no sleep, so no patience to work out
            self.backoff.wait(progressed)
            return
        patience = worker.patience
        if self.dispatcher is not None:
            patience = min(patience, max(RELAY_PATIENCE, self.dispatcher.patience))
        self.backoff.wait(progressed, worker.waitables, patience)

    @property
    def done(self) -> bool:
        if self.dispatcher is not None:
            return self.dispatcher.finished and (self.worker is None or self.worker.done)
        return self.worker.done and self.channel.relay_done

    def _route(self) -> bool:
        got = False
        for src, msg in self.channel.poll():
            got = True
            if tag_of(msg) in WORKER_TAGS:
                self.worker.handle(msg)
            else:
                self.dispatcher.handle(src, msg)
        return got


def injected_fault(rank: int) -> bool:
    """Fault injection for the test suite: PRS_MPI_INJECT=raise-on-rank=N makes rank N raise."""
    spec = os.environ.get("PRS_MPI_INJECT", "")
    return spec.startswith("raise-on-rank=") and spec.split("=", 1)[1] == str(rank)


# ------------------------------------------------------------------ signals (rank 0)

class SignalFlag:
    """SIGTERM/SIGINT/SIGUSR1 ask for a graceful stop; a second signal stops at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._reported = False
        for s in self.SIGNALS:
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if len(self.received) >= 2:
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): stopping at once")

    def pending(self) -> bool:
        if self.received and not self._reported:
            self._reported = True
            return True
        return False

    def reason(self) -> str:
        name = signal.Signals(self.received[0]).name
        return f"interrupted by {name}: in-flight mini-batches finished and were committed; resume with --resume"


def ignore_stop_signals() -> None:
    for s in SignalFlag.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def report_fatal_and_abort(comm: Any, layout: Layout, exc: BaseException) -> None:
    """Last resort on any rank: the real reason on stderr, then end every rank of the job."""
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write(f"prs-mpi: {exc or 'interrupted'}; the journal is consistent: resume with --resume\n")
        sys.stderr.flush()
        comm.Abort(EXIT_INTERRUPTED)
    text = "".join(traceback.format_exception(exc))
    msg = f"prs-mpi: rank {layout.rank} on {layout.host} (pid {os.getpid()}) failed:\n{text}"
    sys.stderr.write(msg if msg.endswith("\n") else msg + "\n")
    sys.stderr.flush()
    code = exc.exit_code if isinstance(exc, PrsError) else EXIT_INTERNAL
    if layout.rank != 0 and layout.size > 1:
        try:
            req = comm.isend(Fatal(layout.rank, layout.host, text), dest=0, tag=int(Tag.FATAL))
            deadline = time.monotonic() + 5.0
            while not req.Test() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(2.0)    # give rank 0 a moment to write the result and abort first
        except Exception:
            pass
    comm.Abort(code)


def exit_code_for(state: str) -> int:
    return {"succeeded": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(state, EXIT_FAILED)
