"""A whole job across ranks: prepare output_dir (fresh / resume / reuse), run the loop, write the result."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .config import JobConfig
from .errors import EXIT_OK, PrsError, RunStateError
from .job import (Layout, RankLoop, RunOptions, SignalFlag, discover_layout, exit_code_for, ignore_stop_signals,
                  layout_warnings, make_worker, report_fatal_and_abort, runs_worker)
from .journal import Journal, JournalState, replay
from .runlog import AttemptLog, log_paths, setup_logging
from .summary import Accounting, RunResult, one_line, write_result
from .transport import Channel, polite_barrier

log = logging.getLogger(__name__)
STATE_DIR = ".prs"


@dataclass
class Prepared:
    mode: str                                   # fresh | resume | retry_failed | reused
    run_id: str
    fingerprint: str
    skip_ids: set[int] = field(default_factory=set)
    digests: dict[int, str] = field(default_factory=dict)
    started: dict[int, int] = field(default_factory=dict)   # id → attempts begun in earlier runs
    end: int = 0
    header_written: bool = False
    acc: Accounting = field(default_factory=Accounting)
    reused_result: dict | None = None
    note: str = ""
    input: Any = None                           # dataset.InputFingerprint this run's listing feeds


# keys that change how the input is cut or how the output looks: --resume/--retry-failed need them equal
LAYOUT_KEYS = ("input", "mini_batch_size", "partition_keys", "output_action", "append_row_file_name",
               "append_row_format", "output_dir")
# keys that change nothing in the results: ignored by allow_reuse
NEUTRAL_KEYS = {"logging_level", "allow_reuse", "status_interval", "progress_interval", "resource_monitor_interval",
                "grace_period", "process_count_per_node", "node_count", "prefetch", "flush_bytes", "flush_interval",
                "placement", "fsync", "job_file", "ranks_per_leader", "speculative"}


def _digest(obj: Any) -> str:
    import hashlib      # here and below: rank 0's business; a worker rank stays without OpenSSL
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_fingerprint(cfg: JobConfig) -> str:
    """The entry script and the source directory's small text files."""
    import hashlib
    h = hashlib.sha256()
    for root, dirs, files in os.walk(cfg.source_directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__"
                         and not os.path.join(root, d).startswith(cfg.output_dir))
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.endswith((".py", ".toml", ".json", ".yaml", ".yml", ".cfg")) and os.path.getsize(path) <= 1 << 20:
                with open(path, "rb") as f:
                    h.update(path.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def job_fingerprint(cfg: JobConfig) -> str:
    """layout:config:code — compared part by part (see prepare_output_dir)."""
    conf = cfg.to_dict()
    layout = _digest({k: conf[k] for k in LAYOUT_KEYS})
    config = _digest({k: v for k, v in conf.items() if k not in NEUTRAL_KEYS})
    return f"{layout}:{config}:{code_fingerprint(cfg)}"


# ------------------------------------------------------------------ output_dir states

def prepare_output_dir(cfg: JobConfig, opts: RunOptions) -> Prepared:
    """Decide what this run does with output_dir: fresh, resume, retry_failed or reuse."""
    st = replay(os.path.join(cfg.output_dir, STATE_DIR))
    fp = job_fingerprint(cfg)
    if st.runs == 0:
        prep = _fresh(cfg, fp)
        if opts.resume or opts.retry_failed:
            prep.note = f"nothing to continue in {cfg.output_dir}: starting a new run"
        return prep
    unfinished = st.end_state in (None, "interrupted")
    if not (opts.resume or opts.retry_failed):
        if unfinished:
            raise RunStateError(f"{cfg.output_dir} holds an unfinished run; continue it with "
                                f"`prs-mpi run {cfg.job_file} --resume`, or pick another output_dir "
                                "(or delete that directory) to start over")
        reused = _reusable(cfg, st, fp)
        return reused if reused is not None else _fresh(cfg, fp)
    old_layout = (st.fingerprint or "::").split(":")[0]
    if old_layout != fp.split(":")[0]:
        raise RunStateError(f"the input, mini_batch_size or output settings changed since the run in "
                            f"{cfg.output_dir}; --resume/--retry-failed continue the same job only: undo the "
                            "change, or start a new run in another output_dir")
    if opts.resume and not opts.retry_failed and st.end_state == "succeeded":
        result = _read_result(cfg) or {"items": {"succeeded": "all"}}
        return Prepared("reused", result.get("run_id", ""), fp, reused_result=result,
                        note="that run already finished; nothing to resume")
    prep = _continue(cfg, st, fp, "retry_failed" if opts.retry_failed else "resume")
    if st.fingerprint != fp:
        prep.note = "the entry script or config changed since the earlier run; continuing with the new one"
    return prep


def new_run_id() -> str:
    return os.urandom(6).hex()


def _fresh(cfg: JobConfig, fp: str) -> Prepared:
    _clear(cfg)
    return Prepared("fresh", new_run_id(), fp)


def _reusable(cfg: JobConfig, st: JournalState, fp: str) -> Prepared | None:
    if not (cfg.allow_reuse and st.end_state == "succeeded" and st.fingerprint == fp):
        return None
    result = _read_result(cfg)
    from .dataset import input_fingerprint
    if result is None or result.get("input_fingerprint") != input_fingerprint(cfg):
        return None
    return Prepared("reused", result.get("run_id", ""), fp, reused_result=result)


def _read_result(cfg: JobConfig) -> dict | None:
    try:
        with open(os.path.join(cfg.output_dir, "job_result.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _clear(cfg: JobConfig) -> None:
    """A fresh run: earlier results in output_dir are replaced."""
    for name in ("job_result.json", "status.json", "report.html", cfg.append_row_file_name):
        try:
            os.unlink(os.path.join(cfg.output_dir, name))
        except FileNotFoundError:
            pass
    import shutil
    for sub in (STATE_DIR, "logs"):
        shutil.rmtree(os.path.join(cfg.output_dir, sub), ignore_errors=True)
    if cfg.append_row_format == "parquet":
        shutil.rmtree(cfg.output_file, ignore_errors=True)


def _continue(cfg: JobConfig, st: JournalState, fp: str, mode: str) -> Prepared:
    """Keep the contiguous committed prefix of the output; everything else runs again."""
    end = st.kept_end()
    header = any(hdr > 0 for off, length, hdr in st.regions if off + length <= end)
    prep = Prepared(mode, new_run_id(), fp, end=end, header_written=header)
    for bid, (attempt, ok, failed, digest, off, length) in st.committed.items():
        if off + length <= end:
            prep.skip_ids.add(bid)
            prep.digests[bid] = digest
            prep.acc.committed(ok, failed)
    for bid, (attempt, nitems, digest, error) in st.failed.items():
        if mode == "resume" and bid not in prep.skip_ids:
            prep.skip_ids.add(bid)
            prep.digests[bid] = digest
            prep.acc.failed(nitems)
    if mode == "resume":
        prep.started = {bid: n for bid, n in st.started.items() if bid not in prep.skip_ids}
    if cfg.output_action == "append_row" and cfg.append_row_format == "parquet":
        from .writer import cut_parquet_parts
        cut_parquet_parts(cfg.output_file, end)
    elif cfg.output_action == "append_row":
        path = cfg.output_file
        if os.path.exists(path) and os.path.getsize(path) > end:
            os.truncate(path, end)
            log.info("resume: cut %s back to its last commit (%d bytes)", path, end)
    return prep


# ------------------------------------------------------------------ every rank

def run_job(cfg: JobConfig, opts: RunOptions, flag: SignalFlag | None = None) -> int:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    layout = discover_layout(comm)
    setup_logging(cfg.logging_level, layout.rank, layout.host, None)
    prepared: Prepared | None = None
    error: str | None = None
    if layout.rank == 0:
        try:
            prepared = prepare_output_dir(cfg, opts)
            os.makedirs(os.path.join(cfg.output_dir, "logs", "sys"), exist_ok=True)
        except (PrsError, OSError) as exc:
            error = str(exc) if isinstance(exc, PrsError) else f"cannot prepare output_dir {cfg.output_dir}: {exc}"
    polite_barrier(comm)
    error, mode = comm.bcast((error, prepared.mode if prepared else None), root=0)
    if error:
        if layout.rank == 0:
            import sys
            sys.stderr.write(f"prs-mpi: error: {error}\n")
        return RunStateError.exit_code
    if mode == "reused":
        return _reused(cfg, prepared) if layout.rank == 0 else EXIT_OK
    polite_barrier(comm)
    setup_logging(cfg.logging_level, layout.rank, layout.host, log_paths(cfg.output_dir, layout.rank,
                                                                           layout.host)["sys_log"])
    if layout.rank != 0:
        ignore_stop_signals()     # rank 0 decides how to stop; it tells the others
    try:
        code = _run_ranks(cfg, opts, comm, layout, prepared, flag or SignalFlag())
    except BaseException as exc:  # noqa: BLE001 — every exit path is explicit
        report_fatal_and_abort(comm, layout, exc)
        raise
    polite_barrier(comm)              # rank 0 writes the result while the others wait
    return comm.bcast(code, root=0)


def _reused(cfg: JobConfig, prepared: Prepared) -> int:
    r = prepared.reused_result
    import sys
    sys.stderr.write(f"prs-mpi: reused: an identical job already succeeded in {cfg.output_dir} "
                     f"({r['items']['succeeded']} items); nothing to do (--set allow_reuse=false runs it again)\n")
    return EXIT_OK


def _run_ranks(cfg: JobConfig, opts: RunOptions, comm: Any, layout: Layout, prepared: Prepared | None,
               flag: SignalFlag) -> int:
    from .writer import NullOutput, OutputFile, ParquetParts
    from .leader import make_router
    channel = make_router(Channel(comm), layout.hosts, cfg.ranks_per_leader)
    if cfg.output_action != "append_row":
        output = NullOutput()
    elif cfg.append_row_format == "parquet":
        output = ParquetParts(comm, cfg.output_file, cfg.fsync)
    else:
        output = OutputFile(comm, cfg.output_file, cfg.fsync)
    worker = make_worker(cfg, layout, channel, output) if runs_worker(cfg, layout, layout.rank) else None
    if layout.rank != 0:
        RankLoop(channel, worker, None, None).run()
        channel.drain(10.0)
        polite_barrier(comm)
        output.close()
        return EXIT_OK
    return _run_rank0(cfg, opts, comm, layout, prepared, channel, output, worker, flag)


def _run_rank0(cfg: JobConfig, opts: RunOptions, comm: Any, layout: Layout, prepared: Prepared,
               channel: Channel, output: Any, worker: Any, flag: SignalFlag) -> int:
    from .dataset import InputFingerprint, iter_mini_batches
    from .dispatcher import Dispatcher
    from .progress import Progress
    for warning in layout_warnings(cfg, layout):
        log.warning("%s", warning)
    started = time.time()
    journal = Journal(os.path.join(cfg.output_dir, STATE_DIR), cfg.fsync)
    journal.begin(prepared.run_id, prepared.fingerprint, prepared.mode, ranks=layout.size)
    attempts_log = AttemptLog(cfg.output_dir)
    acc = prepared.acc
    acc.error_threshold, acc.allowed_failed_count = cfg.error_threshold, cfg.allowed_failed_count
    acc.allowed_failed_percent = cfg.allowed_failed_percent
    peers = {r: layout.hosts[r] for r in range(layout.size) if runs_worker(cfg, layout, r)}
    admit = _admitter(prepared, cfg.run_max_try)
    prepared.input = InputFingerprint() if cfg.allow_reuse else None     # fed by the listing
    d = Dispatcher(cfg, iter_mini_batches(cfg, prepared.input), peers, channel.send, journal, attempts_log, acc,
                   admit)
    d.end, d.header_written = prepared.end, prepared.header_written
    progress = Progress(cfg, d)
    if prepared.note:
        log.warning("%s", prepared.note)
    log.info("job started: %d ranks on %d node(s), %d workers, mode %s, output %s", layout.size,
             len(layout.node_names), len(peers), prepared.mode, cfg.output_dir)
    loop = RankLoop(channel, worker, d, progress)
    loop.run(flag)
    if d.fatal is not None:
        reason = f"rank {d.fatal.rank} on {d.fatal.host} failed:\n{d.fatal.error}"
        _finish(cfg, layout, d, journal, attempts_log, progress, started, "failed", reason, prepared)
        comm.Abort(1)
    channel.drain(10.0)
    polite_barrier(comm)
    output.close()
    state = d.stop_state or "failed"
    reason = "" if state == "succeeded" else d.stop_reason
    return _finish(cfg, layout, d, journal, attempts_log, progress, started, state, reason, prepared)


def _admitter(prepared: Prepared, run_max_try: int) -> Any:
    """For resume: 0 = done already, n = run as attempt n, -1 = it killed the job run_max_try times."""
    if not prepared.skip_ids and not prepared.started:
        return None

    def admit(spec: Any) -> int:
        if spec.id in prepared.skip_ids:
            if prepared.digests.get(spec.id) not in ("", None, spec.digest()):
                raise PrsError(f"mini-batch {spec.id} holds different input than in the earlier run "
                               "(files added, removed or renamed): --resume needs the same input; "
                               "start a new run in another output_dir")
            return 0
        begun = prepared.started.get(spec.id, 0)
        return -1 if begun >= run_max_try else begun + 1
    return admit


def _finish(cfg: JobConfig, layout: Layout, d: Any, journal: Journal, attempts_log: AttemptLog, progress: Any,
            started: float, state: str, reason: str, prepared: Prepared) -> int:
    import sys
    progress.tick(force=True, state=state)
    progress.close()
    attempts_log.flush()
    if attempts_log.first_error and state == "failed" and "job_error" in reason:
        reason += f"\nFirst error: {attempts_log.first_error}"
    result = RunResult(state, reason, started).to_dict(
        d.acc, cfg, layout.size, len(d.peers), list(layout.node_names),
        {"run_id": prepared.run_id, "mode": prepared.mode,
         "input_fingerprint": (prepared.input.hexdigest() if state == "succeeded" and prepared.input and d.listing_done
                               else None),
         "worker_stats": [p.stats for p in d.peers.values()], "bytes_written": d.end})
    write_result(cfg.output_dir, result)
    journal.end(state, reason)
    journal.close()
    attempts_log.close()
    sys.stderr.write(one_line(result) + "\n")
    if state == "failed" and reason:
        sys.stderr.write(f"prs-mpi: reason: {reason}\n")
    sys.stderr.flush()
    return exit_code_for(state)
