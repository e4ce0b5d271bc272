#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying `hydra/launcher=slurm` and for tests/test_slurm.py.
#
#   scripts/slurm-local.sh start    # writes slurm.conf, starts munge, slurmctld, slurmd; waits until the node is idle
#   scripts/slurm-local.sh status   # sinfo and squeue
#   scripts/slurm-local.sh stop     # stops slurmd and slurmctld (and munged, if this script started it)
#
# Needs root and Debian's packages: apt-get install -y slurm-wlm munge (Debian 12: SLURM 22.05, munge 0.5.15).
# Everything lives under $SLURM_LOCAL_DIR (default /tmp/archbench-slurm); the config is $SLURM_LOCAL_DIR/slurm.conf,
# so the SLURM commands need `export SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf` (start prints it). No cgroups: process
# tracking by /proc (proctrack/linuxproc) and no task plugin, so it runs in a container. No slurmdbd either: sacct,
# which submitit polls to learn that a job ended, is answered from slurmctld by scripts/slurm-local-sacct, linked as
# $SLURM_LOCAL_DIR/bin/sacct (start prints the PATH to set).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/archbench-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
NODE=$(hostname -s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "slurm-local: $*" >&2; exit 1; }

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(free -m | awk '/^Mem:/ {print $2}')
  mkdir -p "$DIR/ctld" "$DIR/d" "$DIR/log"
  cat > "$CONF" <<EOF
# written by scripts/slurm-local.sh: one node, this machine ($cpus CPUs, $mem MB)
ClusterName=archbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once its credential expired: 10 s instead of 120
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
# schedule every 2 s, not 60: a requeued job starts again soon after its credential expired
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  [[ -s /etc/munge/munge.key ]] || die "no /etc/munge/munge.key (apt-get install -y munge creates it)"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key 2>/dev/null || true
  if id munge >/dev/null 2>&1; then runuser -u munge -- munged; else munged --force; fi
  touch "$DIR/munged.ours"
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.2
  done
  die "munged did not start"
}

wait_idle() {
  local state=""
  for _ in $(seq "${1:-60}"); do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
    [[ $state == idle ]] && return 0
    sleep 1
  done
  die "node $NODE is '${state:-unreachable}', not idle (logs: $DIR/log/)"
}

start() {
  [[ $(id -u) == 0 ]] || die "needs root (the daemons run as root here)"
  for bin in munged slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null || die "$bin not found: apt-get install -y slurm-wlm munge"
  done
  mkdir -p "$DIR/bin"
  ln -sf "$HERE/slurm-local-sacct" "$DIR/bin/sacct"
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then wait_idle 30; env_lines; return; fi
  stop >/dev/null 2>&1 || true
  write_conf
  start_munge
  slurmctld -c -i || die "slurmctld did not start (log: $DIR/log/slurmctld.log)"
  slurmd -N "$NODE" || die "slurmd did not start (log: $DIR/log/slurmd.log)"
  wait_idle 90
  env_lines
}

env_lines() {
  echo "export SLURM_CONF=$CONF"
  echo "export PATH=$DIR/bin:\$PATH"
}

stop() {
  if alive "$DIR/slurmctld.pid"; then timeout 20 scancel --quiet --full -u root 2>/dev/null || true; fi
  local pidfile pid
  for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    if alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$pidfile"
  done
  if [[ -f $DIR/munged.ours ]]; then
    pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    rm -f "$DIR/munged.ours"
  fi
}

status() {
  sinfo
  squeue
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
