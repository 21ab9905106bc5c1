#!/bin/bash
# A one-node Slurm cluster from Debian's packages (slurmctld, slurmd, slurm-client, munge), for the
# batch tests. Debian's package scripts start no services in a container, so this starts them:
#   tests/slurm-cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd;
#                                      # returns when the node is idle; prints `export SLURM_CONF=…`
#   tests/slurm-cluster.sh stop DIR    # scontrol shutdown, munged stopped
# Needs root (SlurmUser=root, munge's key). Ports 6817/6818 on 127.0.0.1.
set -u
cmd=${1:?start or stop}
dir=${2:?a working directory}
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"
host=$(hostname -s)

wait_for() {  # a hang watchdog (60 s), not a speed assumption
  for _ in $(seq 1 600); do "$@" > /dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir/ctld" "$dir/d" /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
  if [ ! -s /etc/munge/munge.key ]; then
    (mungekey -c -f -k /etc/munge/munge.key || create-munge-key -f) > /dev/null 2>&1
    chown munge:munge /etc/munge/munge.key 2>/dev/null; chmod 400 /etc/munge/munge.key
  fi
  if ! munge -n > /dev/null 2>&1; then
    if id munge > /dev/null 2>&1; then
      runuser -u munge -- munged --force > "$dir/munged.out" 2>&1 || munged --force > "$dir/munged.out" 2>&1
    else
      munged --force > "$dir/munged.out" 2>&1
    fi
  fi
  wait_for munge -n || { echo "munged did not start: $(cat "$dir/munged.out")" >&2; exit 1; }
  cat > "$conf" <<CONF
ClusterName=moire-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -c -i -f "$conf" || { echo "slurmctld did not start: $(tail -3 "$dir/slurmctld.log")" >&2; exit 1; }
  wait_for scontrol ping || { echo "slurmctld does not answer: $(tail -3 "$dir/slurmctld.log")" >&2; exit 1; }
  slurmd -f "$conf" || { echo "slurmd did not start: $(tail -3 "$dir/slurmd.log")" >&2; exit 1; }
  idle() { sinfo --noheader --format=%T | grep -q idle; }
  wait_for idle || { echo "the node did not come up: $(sinfo 2>&1; tail -3 "$dir/slurmd.log")" >&2; exit 1; }
  echo "export SLURM_CONF=$conf"
  ;;
stop)
  scontrol shutdown > /dev/null 2>&1
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2> /dev/null
  done
  true
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2; exit 2
  ;;
esac
