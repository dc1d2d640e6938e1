#!/usr/bin/env bash
# Stop the single-node Slurm started by start-slurm.sh: cancel our jobs, then slurmd,
# slurmctld and munged, each by the PID in its pid file (TERM, then KILL after a deadline).
# Idempotent: daemons that are not running are skipped.  --keep-munge leaves munged up.
set -euo pipefail

KEEP_MUNGE=0
[[ ${1:-} == --keep-munge ]] && KEEP_MUNGE=1
say() { echo "stop-slurm: $*" >&2; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE
    local name=$1 file=$2 pid deadline
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    if ! kill -0 "$pid" 2>/dev/null; then rm -f "$file"; return 0; fi
    kill -TERM "$pid"
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored TERM for 15 s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
    say "stopped $name (pid $pid)"
}

cancel_jobs() {
    command -v squeue >/dev/null && [[ -s /run/slurm/slurmctld.pid ]] || return 0
    local ids deadline
    ids=$(squeue -h -o %A 2>/dev/null || true)
    [[ -n $ids ]] || return 0
    for id in $ids; do scancel "$id" 2>/dev/null || true; done
    deadline=$((SECONDS + 20))
    while [[ -n $(squeue -h -o %A 2>/dev/null || true) ]] && ((SECONDS < deadline)); do
        sleep 0.2
    done
    say "cancelled job(s): $(echo $ids)"
}

cancel_jobs
stop_pidfile slurmd /run/slurm/slurmd.pid
stop_pidfile slurmctld /run/slurm/slurmctld.pid
((KEEP_MUNGE)) || stop_pidfile munged /run/munge/munged.pid
