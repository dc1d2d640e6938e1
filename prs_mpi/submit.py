"""`prs-mpi submit`: render an sbatch script for a job file, submit it, follow it to its end.

Accounting is usually off on small clusters (and on CI), so the job is followed with
``scontrol show job -o`` (state) and the run's own ``status.json`` / ``job_result.json``
(progress and result), never ``sacct``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Sequence

from prs_mpi.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PrsError
from prs_mpi.status import RESULT_FILE, STATUS_FILE, fmt_duration

log = logging.getLogger(__name__)

SCRIPT_NAME = "submit.sbatch"
LAUNCHERS = ("srun", "mpiexec")
# scontrol JobState values after which the job will not run again by itself
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                      "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"})
_SAFE_VALUE = re.compile(r"[\w.,:+@%/=-]+")


class SubmitError(PrsError):
    """sbatch/scontrol missing or refusing; the message carries Slurm's own words."""


# ---------------------------------------------------------------- rendering

def _check(name: str, value: str) -> str:
    if not _SAFE_VALUE.fullmatch(value):
        raise SubmitError(f"{name} {value!r}: only letters, digits and . , : + @ % / = - "
                          "can go into an #SBATCH line; rename it or edit the script by hand")
    return value


def _extra_lines(extra_args: Sequence[str]) -> list[str]:
    """['--mem=4G', '--qos', 'high'] -> ['#SBATCH --mem=4G', '#SBATCH --qos high']."""
    groups: list[list[str]] = []
    for tok in extra_args:
        if "\n" in tok or '"' in tok:
            raise SubmitError(f"extra sbatch argument {tok!r}: newlines and double quotes "
                              "cannot go into an #SBATCH line")
        tok = f'"{tok}"' if re.search(r"\s", tok) else tok
        if tok.startswith("-") or not groups:
            if not tok.startswith("-"):
                raise SubmitError(f"extra sbatch argument {tok!r} does not start with '-': "
                                  "pass sbatch options after '--', e.g. -- --mem=4G")
            groups.append([tok])
        else:
            groups[-1].append(tok)
    return ["#SBATCH " + " ".join(g) for g in groups]


def _launch_line(launcher: str, python: str, srun_mpi: str) -> str:
    if launcher == "srun":
        return f"srun --mpi={_check('--srun-mpi', srun_mpi)} --kill-on-bad-exit=1"
    mpiexec = Path(python).with_name("mpiexec")  # the MPI that came with this environment
    exe = str(mpiexec) if mpiexec.exists() else "mpiexec"
    return f'{shlex.quote(exe)} -n "$SLURM_NTASKS"'


_BODY = """\
set -u
# Slurm >= 22.05: srun no longer inherits --cpus-per-task from sbatch; pass it on explicitly.
if [[ -n ${{SLURM_CPUS_PER_TASK:-}} ]]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
RESUME=()
if (( ${{SLURM_RESTART_COUNT:-0}} > 0 )); then RESUME=(--resume); fi  # requeued: carry on

# --signal=B:USR1 reaches this shell only: hand it on to the job step, which then stops
# cleanly (in-flight mini-batches finish and commit) and exits 75.
forward_usr1() {{
    GOT=1; SEEN=1
    echo "prs-mpi: USR1 received, asking the job step to stop" >&2
    if [[ -n $STEP ]]; then kill -USR1 "$STEP" 2>/dev/null; else EARLY=1; fi
}}
STEP="" SEEN=0 EARLY=0
trap forward_usr1 USR1

{launch} {command} "${{RESUME[@]}}" &
STEP=$!
if (( EARLY )); then kill -USR1 "$STEP" 2>/dev/null; fi  # USR1 came before the step had a PID
# a trapped signal interrupts `wait` (status > 128): wait again for the step's real status
while :; do GOT=0; wait "$STEP"; RC=$?; (( GOT && RC > 128 )) || break; done

# 75: stopped cleanly; > 128 after USR1: the signal came before prs-mpi could catch it
if (( (RC == 75 || (SEEN && RC > 128)) && ${{SLURM_RESTART_COUNT:-0}} < {max_requeue} )); then
    echo "prs-mpi: interrupted (exit $RC): requeueing job $SLURM_JOB_ID to resume" >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$RC"
"""


def render_sbatch(config_path: str | os.PathLike, output_dir: str | os.PathLike, nodes: int = 1,
                  ntasks_per_node: int = 1, gpus_per_node: int | None = None,
                  time: str | None = None, partition: str | None = None,
                  account: str | None = None, extra_args: Sequence[str] = (),
                  launcher: str = "srun", *, run_args: Sequence[str] = (),
                  job_name: str | None = None, signal_grace: int = 120, srun_mpi: str = "pmi2",
                  python: str = sys.executable, max_requeue: int = 5) -> str:
    """The sbatch script that runs ``prs-mpi run CONFIG`` into ``output_dir`` (pure: no Slurm).

    ``run_args`` are passed to ``prs-mpi run`` (e.g. ``--set`` overrides); ``output_dir`` is
    always pinned with ``--set output_dir=...`` so :func:`wait` knows where to look.
    """
    if launcher not in LAUNCHERS:
        raise SubmitError(f"launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    for name, n in (("nodes", nodes), ("ntasks-per-node", ntasks_per_node)):
        if int(n) < 1:
            raise SubmitError(f"--{name} {n}: expected an integer >= 1")
    config, out = Path(config_path).resolve(), Path(output_dir).resolve()
    name = job_name or f"prs-{config.stem}"
    head = ["#!/bin/bash", f"#SBATCH --job-name={_check('job name', name)}",
            f"#SBATCH --nodes={int(nodes)}", f"#SBATCH --ntasks-per-node={int(ntasks_per_node)}"]
    if gpus_per_node:
        head.append(f"#SBATCH --gpus-per-node={int(gpus_per_node)}")
    for opt, val in (("time", time), ("partition", partition), ("account", account)):
        if val:
            head.append(f"#SBATCH --{opt}={_check('--' + opt, val)}")
    # not under logs/: a fresh run clears output_dir/logs, and the file would vanish mid-job
    head += [f"#SBATCH --output={_check('output_dir', str(out))}/slurm-%j.out",
             "#SBATCH --open-mode=append",
             f"#SBATCH --signal=B:USR1@{int(signal_grace)}", "#SBATCH --requeue"]
    head += _extra_lines(extra_args)
    command = shlex.join([python, "-m", "prs_mpi", "run", str(config),
                          "--set", f"output_dir={out}", *run_args])
    body = _BODY.format(launch=_launch_line(launcher, python, srun_mpi), command=command,
                        max_requeue=int(max_requeue))
    return "\n".join(head) + f"\n# written by prs-mpi submit for {config}\n\n" + body


def write_script(text: str, output_dir: str | os.PathLike) -> Path:
    """Write the script to ``output_dir/submit.sbatch`` (creating ``output_dir``)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".submit.", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out / SCRIPT_NAME)
    return out / SCRIPT_NAME


# ---------------------------------------------------------------- Slurm commands

def _slurm(cmd: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise SubmitError(f"{cmd[0]} not found: run prs-mpi submit on a Slurm login node "
                          "(or put Slurm's bin directory on PATH)")
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def submit(script_path: str | os.PathLike) -> str:
    """``sbatch --parsable SCRIPT``; returns the job id."""
    res = _slurm(["sbatch", "--parsable", str(script_path)])
    job_id = res.stdout.strip().split(";")[0]
    if res.returncode != 0 or not job_id.isdigit():
        raise SubmitError(f"sbatch {script_path} failed (exit {res.returncode}): "
                          f"{(res.stderr or res.stdout).strip()}")
    return job_id


def parse_scontrol(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` line -> {key: value} (values may contain spaces)."""
    keys = list(re.finditer(r"(?:^|\s)([A-Za-z][\w:/]*)=", line))
    return {m.group(1): line[m.end():(keys[i + 1].start() if i + 1 < len(keys) else None)].strip()
            for i, m in enumerate(keys)}


def job_info(job_id: str) -> dict[str, str] | None:
    """The job's scontrol record, or None once Slurm has forgotten it (MinJobAge)."""
    res = _slurm(["scontrol", "show", "job", "-o", str(job_id)], timeout=30)
    if res.returncode != 0:
        if "Invalid job id" in res.stderr:
            return None
        raise SubmitError(f"scontrol show job {job_id} failed: {res.stderr.strip()}")
    first = res.stdout.strip().splitlines()[:1]
    return parse_scontrol(first[0]) if first else None


# ---------------------------------------------------------------- following a job

def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, or caught mid-replace: try again next poll
        return None


def _epoch(slurm_time: str | None) -> float | None:
    try:
        return datetime.fromisoformat(slurm_time or "").timestamp()
    except ValueError:  # "Unknown", "None", ""
        return None


def progress_line(job_id: str, status: Mapping) -> str:
    """One live progress line from a ``status.json`` document."""
    items, mbs = status.get("items") or {}, status.get("mini_batches") or {}
    total = items.get("total")
    done = f"{items.get('done', 0)}/{total if total is not None else '?'}"
    rate = status.get("rate_items_per_s")
    parts = [f"items {done} ({items.get('succeeded', 0)} ok, {items.get('failed', 0)} failed)",
             f"mini-batches {mbs.get('done', 0)} done, {mbs.get('in_flight', 0)} in flight",
             f"{rate:.1f} items/s" if isinstance(rate, (int, float)) else "- items/s",
             f"eta {fmt_duration(status.get('eta_seconds'))}"]
    return f"job {job_id} {status.get('state', '?')}: " + " | ".join(parts)


def result_code(output_dir: str | os.PathLike, since: float | None = None) -> tuple[int, str]:
    """Exit code (0 succeeded, 75 interrupted, 1 otherwise) and a line saying why."""
    path = Path(output_dir) / RESULT_FILE
    result = _read_json(path)
    if result is None:
        return EXIT_FAILED, (f"no {path}: the job ended before prs-mpi finished; "
                             f"see {output_dir}/slurm-*.out")
    if since is not None and path.stat().st_mtime < since - 1:
        return EXIT_FAILED, (f"{path} is older than this job, which did not finish; "
                             f"see {output_dir}/slurm-*.out")
    state = result.get("state")
    code = {"succeeded": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(state, EXIT_FAILED)
    reason = f" ({result['reason']})" if result.get("reason") else ""
    return code, f"prs-mpi run {state}{reason}"


def wait(job_id: str, output_dir: str | os.PathLike, poll: float = 2.0,
         out: Callable[[str], None] | None = None, timeout: float | None = None) -> int:
    """Follow ``job_id`` until Slurm says it ended, printing progress; return its exit code.

    Requeued jobs (PENDING again after an interruption) are followed through to the end.
    """
    out = out or (lambda line: sys.stdout.write(line + "\n"))
    out_dir, deadline = Path(output_dir), None if timeout is None else time.monotonic() + timeout
    last_state = last_line = None
    while True:
        info = job_info(job_id)
        state = info.get("JobState") if info else "GONE"
        started = _epoch(info.get("StartTime")) if info else None
        if state != last_state:
            why = f" ({info['Reason']})" if info and info.get("Reason") not in (None, "None") else ""
            out(f"job {job_id} {state}{why}")
            last_state = state
        status = _read_json(out_dir / STATUS_FILE)
        if status and state == "RUNNING" and (started is None or
                                              float(status.get("updated", 0)) >= started - 1):
            line = progress_line(job_id, status)
            if line != last_line:
                out(line)
                last_line = line
        if info is None or state in TERMINAL:
            code, why = result_code(out_dir, started)
            out(f"job {job_id} ended: {why}; exit code {code}")
            return code
        if deadline is not None and time.monotonic() > deadline:
            raise SubmitError(f"job {job_id} still {state} after {timeout:.0f} s; it keeps "
                              f"running: follow it with prs-mpi status {out_dir}")
        time.sleep(poll)
