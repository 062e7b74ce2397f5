#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and CI: munged, slurmctld and slurmd, with
# every file (config, keys, sockets, logs, spool) under one state folder, on 127.0.0.1 only.
#
#   scripts/cluster/slurm.sh start [STATE_DIR]   start (or find running) and wait until the node is idle
#   scripts/cluster/slurm.sh stop  [STATE_DIR]   stop what start started; the folder is kept for its logs
#   scripts/cluster/slurm.sh status [STATE_DIR]  exit 0 when the cluster answers
#   scripts/cluster/slurm.sh env   [STATE_DIR]   the line to eval: export SLURM_CONF=...
#
# STATE_DIR defaults to $RNNLAB_SLURM_DIR, else /tmp/rnnlab-slurm. Clients (sbatch, squeue, scontrol,
# submitit) find this cluster through SLURM_CONF=<STATE_DIR>/slurm.conf; a job inherits it.
# Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) and root: slurmd runs jobs as
# their user, and this cluster has no other. Ports: $RNNLAB_SLURM_PORTS (default 6817,6818).
# The node has $RNNLAB_SLURM_CPUS CPUs (default 2) that up to 4 jobs share (OverSubscribe), so a
# test's several small jobs run side by side on a small machine.
set -euo pipefail

action=${1:-}
state=${2:-${RNNLAB_SLURM_DIR:-/tmp/rnnlab-slurm}}
cpus=${RNNLAB_SLURM_CPUS:-2}
IFS=, read -r ctld_port slurmd_port <<<"${RNNLAB_SLURM_PORTS:-6817,6818}"
conf="$state/slurm.conf"
node=$(hostname -s)
WAIT_S=60

die() { echo "slurm.sh: $*" >&2; exit 1; }

alive() {  # the process named in a pid file runs
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_config() {
  mkdir -p "$state"/{munge,spool/ctld,spool/d,log}
  chmod 700 "$state/munge"
  if [ ! -s "$state/munge/munge.key" ]; then
    (umask 077 && dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none)
  fi
  cat >"$conf" <<EOF
# written by scripts/cluster/slurm.sh: a one-node cluster on loopback for tests
ClusterName=rnnlab-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
# no systemd, no cgroups: processes tracked by their parent, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
# a requeued or ended job leaves quickly; SIGKILL 20 s after SIGTERM (time to save a checkpoint)
KillWait=20
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

start() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    || die "slurmctld, slurmd or munged not found: apt-get install slurm-wlm munge"
  [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts jobs as their user)"
  write_config
  if ! alive "$state/munge/munged.pid"; then
    munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
      --pid-file="$state/munge/munged.pid" --log-file="$state/log/munged.log" \
      --seed-file="$state/munge/munged.seed"
  fi
  export SLURM_CONF="$conf"
  alive "$state/slurmctld.pid" || slurmctld -f "$conf"
  alive "$state/slurmd.pid" || slurmd -f "$conf"
  local deadline=$((SECONDS + WAIT_S)) node_state=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    node_state=$(sinfo -h -N -o %T -n "$node" 2>/dev/null || true)
    case "$node_state" in
      idle|mixed|allocated) echo "slurm: node $node $node_state (SLURM_CONF=$conf)"; return 0 ;;
      down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  die "node $node not idle after ${WAIT_S}s (state '${node_state}'); logs in $state/log"
}

stop_pid() {  # SIGTERM, then SIGKILL after 10 s
  local file=$1 pid i
  alive "$file" || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  [ -d "$state" ] || return 0
  if alive "$state/slurmctld.pid"; then  # end the jobs, so none outlives the cluster
    SLURM_CONF="$conf" timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
  fi
  stop_pid "$state/slurmd.pid"
  stop_pid "$state/slurmctld.pid"
  stop_pid "$state/munge/munged.pid"
  echo "slurm: stopped ($state)"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF="$conf" sinfo -h -N -o %T -n "$node" 2>/dev/null | grep -Eq '^(idle|mixed|allocated)' ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) die "usage: $0 start|stop|status|env [STATE_DIR]" ;;
esac
