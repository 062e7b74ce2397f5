#!/usr/bin/env bash
# A Slurm cluster on this machine, for tests and CI: munged, slurmctld and one slurmd per node, with
# every file (config, keys, sockets, logs, spool) under one state folder, on 127.0.0.1 only.
#
#   scripts/cluster/slurm.sh start [STATE_DIR]   start (or find running) and wait until every node is idle
#   scripts/cluster/slurm.sh stop  [STATE_DIR]   stop what start started; the folder is kept for its logs
#   scripts/cluster/slurm.sh status [STATE_DIR]  exit 0 when every node answers
#   scripts/cluster/slurm.sh env   [STATE_DIR]   the line to eval: export SLURM_CONF=...
#
# STATE_DIR defaults to $RNNLAB_SLURM_DIR, else /tmp/rnnlab-slurm. Clients (sbatch, squeue, scontrol,
# submitit) find this cluster through SLURM_CONF=<STATE_DIR>/slurm.conf; a job inherits it.
# Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) and root: slurmd runs jobs as
# their user, and this cluster has no other. Ports: $RNNLAB_SLURM_PORTS (default 6817,6818): the
# controller's, then the first node's (node i listens on the i-th from there).
# $RNNLAB_SLURM_NODES nodes (default 1), named n1 ... nN: slurmd processes of this machine, each with
# its own port, spool, pid and log (%n in their paths), so a job of two nodes runs here as on two
# machines. Each node has $RNNLAB_SLURM_CPUS CPUs (default 2) that up to 4 jobs share
# (OverSubscribe), so a test's several small jobs run side by side on a small machine.
set -euo pipefail

action=${1:-}
state=${2:-${RNNLAB_SLURM_DIR:-/tmp/rnnlab-slurm}}
cpus=${RNNLAB_SLURM_CPUS:-2}
nodes=${RNNLAB_SLURM_NODES:-1}
IFS=, read -r ctld_port slurmd_port <<<"${RNNLAB_SLURM_PORTS:-6817,6818}"
conf="$state/slurm.conf"
host=$(hostname -s)
WAIT_S=60

die() { echo "slurm.sh: $*" >&2; exit 1; }

[[ "$nodes" =~ ^[1-9][0-9]?$ ]] || die "RNNLAB_SLURM_NODES=$nodes: a number of nodes from 1 to 99"

alive() {  # the process named in a pid file runs
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_config() {
  mkdir -p "$state"/{munge,spool/ctld,log}
  chmod 700 "$state/munge"
  if [ ! -s "$state/munge/munge.key" ]; then
    (umask 077 && dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none)
  fi
  cat >"$conf" <<EOF
# written by scripts/cluster/slurm.sh: $nodes node(s) on loopback for tests
ClusterName=rnnlab-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd-%n.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
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
EOF
  local i
  for i in $(seq "$nodes"); do  # one slurmd each (slurmd -N n<i>), told apart by their ports
    echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((slurmd_port + i - 1)) CPUs=$cpus State=UNKNOWN"
  done >>"$conf"
  echo "PartitionName=debug Nodes=n[1-$nodes] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4" >>"$conf"
}

up() {  # every node of the config answers: idle, or running jobs
  local answering configured
  configured=$(grep -c '^NodeName=' "$conf" 2>/dev/null || true)
  answering=$(SLURM_CONF="$conf" sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated)$' || true)
  [ "${configured:-0}" -gt 0 ] && [ "$answering" -eq "$configured" ]
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
  local i name node_state
  for i in $(seq "$nodes"); do
    alive "$state/slurmd-n$i.pid" || slurmd -f "$conf" -N "n$i"
  done
  local deadline=$((SECONDS + WAIT_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if up; then echo "slurm: $nodes node(s) idle (SLURM_CONF=$conf)"; return 0; fi
    while read -r name node_state; do
      case "$node_state" in down*|drain*) scontrol update nodename="$name" state=resume 2>/dev/null || true ;; esac
    done < <(sinfo -h -N -o "%N %T" 2>/dev/null || true)
    sleep 1
  done
  die "not every node idle after ${WAIT_S}s ($(sinfo -h -N -o '%N=%T' 2>/dev/null | tr '\n' ' ')); logs in $state/log"
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
  local pid_file
  for pid_file in "$state"/slurmd-*.pid; do stop_pid "$pid_file"; done
  stop_pid "$state/slurmctld.pid"
  stop_pid "$state/munge/munged.pid"
  echo "slurm: stopped ($state)"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) up ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) die "usage: $0 start|stop|status|env [STATE_DIR]" ;;
esac
