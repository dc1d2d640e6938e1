#!/usr/bin/env bash
# Start a real single-node Slurm (munged, slurmctld, slurmd) on this machine, without systemd.
#
#   sudo scripts/slurm/start-slurm.sh      # installs slurm-wlm + munge with apt-get if missing
#   scripts/slurm/stop-slurm.sh            # stops the daemons again, by PID
#
# Idempotent: daemons already running are left alone; the config is rewritten only if it
# changed.  Exit codes: 0 up, 3 cannot run here (not root / no apt-get / install failed),
# 1 started but the node did not come up (daemon logs are printed).
# Settings (environment): PRS_SLURM_CPUS (default 8: an 8-task job fits on a 2-core machine
# thanks to SlurmdParameters=config_overrides), PRS_SLURM_TIMEOUT (seconds, default 60),
# PRS_SLURM_CRED_EXPIRE (default 5: how soon a requeued job may start again).
set -euo pipefail

CPUS=${PRS_SLURM_CPUS:-8}
TIMEOUT=${PRS_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARK="# written by prs-mpi scripts/slurm/start-slurm.sh"
HOST=$(hostname -s)

say() { echo "start-slurm: $*" >&2; }
cannot() { say "cannot start Slurm here: $*"; exit 3; }

running() {  # running PIDFILE -> 0 when the PID in it is alive
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    command -v apt-get >/dev/null || cannot "slurmctld/munged missing and no apt-get to install slurm-wlm munge"
    say "installing slurm-wlm munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null; } \
        || cannot "apt-get install -y slurm-wlm munge failed"
}

write_conf() {
    local mem tmp
    mem=$(awk '/MemTotal/ {m = int($2 / 1024 * 0.8); print (m > 20000 ? 20000 : m)}' /proc/meminfo)
    tmp=$(mktemp)
    cat >"$tmp" <<CONF
$MARK
ClusterName=prs
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again after cred_expire seconds (Slurm's default: 120)
AuthInfo=cred_expire=${PRS_SLURM_CRED_EXPIRE:-5}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    if [[ -e $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
        rm -f "$tmp"
        cannot "$CONF exists and was not written by this script; move it away first"
    fi
    mkdir -p /etc/slurm
    if ! cmp -s "$tmp" "$CONF"; then
        mv "$tmp" "$CONF" && chmod 644 "$CONF"
        say "wrote $CONF (CPUs=$CPUS)"
        CONF_CHANGED=1
    else
        rm -f "$tmp"
    fi
}

prepare_dirs() {
    mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /run/munge
    chown munge:munge /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
}

start_daemons() {
    if ! running /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged
    fi
    if [[ ${CONF_CHANGED:-0} == 1 ]] && running /run/slurm/slurmctld.pid; then
        say "config changed: restarting the Slurm daemons"
        "$(dirname "$0")/stop-slurm.sh" --keep-munge
    fi
    running /run/slurm/slurmctld.pid || slurmctld -i
    running /run/slurm/slurmd.pid || slurmd
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -n1 || true)
        case $state in
            idle | mix | alloc | comp) say "node $HOST is $state (CPUs=$CPUS)"; return 0 ;;
            down* | drain* | drng*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    say "node $HOST not up after ${TIMEOUT}s (sinfo state: '${state:-none}'); daemon logs:"
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
}

[[ $(id -u) == 0 ]] || cannot "needs root (starts daemons, writes $CONF); run it with sudo"
install_packages
prepare_dirs
write_conf
start_daemons
wait_idle
