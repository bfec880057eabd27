#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for the tests: munged, slurmctld and
# slurmd started directly (no systemd), all state under one directory.
#
#   tests/slurm/cluster.sh start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
#   tests/slurm/cluster.sh stop DIR
#
# Needs Debian's slurm-wlm and munge (`make slurm` installs them) and root
# (slurmd runs jobs as their user; SlurmUser=root). The node is this machine
# with its real CPU count and memory; one partition `debug`; no cgroups
# (proctrack/linuxproc, task/none), so it runs in a plain container.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")

stop() {
  for name in slurmd slurmctld munged; do
    if [[ -f "$dir/$name.pid" ]]; then
      pid=$(cat "$dir/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

fail() { echo "slurm cluster: $*" >&2; stop; exit 1; }

if [[ $cmd == stop ]]; then stop; exit 0; fi
[[ $cmd == start ]] || { echo "usage: cluster.sh start|stop DIR" >&2; exit 2; }

for tool in munged slurmctld slurmd sinfo srun sbatch; do
  command -v "$tool" >/dev/null || fail "$tool not installed (apt-get install slurm-wlm munge, or make slurm)"
done
[[ $(id -u) == 0 ]] || fail "needs root (SlurmUser=root), running as $(id -un)"

stop  # leftovers of an earlier run in the same DIR
mkdir -p "$dir"/{munge,state,spool,log}
chmod 700 "$dir/munge"
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
ctl_port=${SLURM_TEST_CTLD_PORT:-6817}
d_port=${SLURM_TEST_SLURMD_PORT:-6818}

# munge: a fresh key, its own socket (no clash with a system munged).
head -c 1024 /dev/urandom > "$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
  --seed-file="$dir/munge/munged.seed" 2>>"$dir/log/munged.log" \
  || fail "munged did not start (see $dir/log/munged.log)"

cat > "$dir/slurm.conf" <<CONF
ClusterName=adanet-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# A requeued job waits cred_expire (default 120 s) before it may start
# again, then for the next scheduling pass: both short for the tests.
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$dir/slurm.conf

slurmctld -f "$SLURM_CONF" -i 2>>"$dir/log/slurmctld.log" || fail "slurmctld did not start (see $dir/log/slurmctld.log)"
slurmd -f "$SLURM_CONF" 2>>"$dir/log/slurmd.log" || fail "slurmd did not start (see $dir/log/slurmd.log)"

for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null || true)
  if [[ $state == idle ]]; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
fail "node $host not idle after 30 s (sinfo: ${state:-no answer}; logs in $dir/log)"
