#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests marked `slurm` (tests/test_launch_slurm.py).
#
# Idempotent: does nothing when `sinfo` already answers.  Needs root (it installs Debian's
# slurmctld, slurmd, munge and slurm-client when they are missing, writes /etc/slurm/slurm.conf
# and starts munged, slurmctld and slurmd as plain daemons: no systemd, no cgroups).  On failure
# it says why and exits non-zero; the SLURM tests then skip, naming the reason.
set -euo pipefail

log() { echo "slurm_up: $*" >&2; }

answers() { timeout 10 sinfo -h >/dev/null 2>&1; }

if command -v sinfo >/dev/null 2>&1 && answers; then
    log "a SLURM controller already answers; nothing to do"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    log "not root: cannot install or start SLURM (the slurm tests will skip)"
    exit 1
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 \
        || ! command -v sbatch >/dev/null 2>&1; then
    log "installing slurmctld slurmd munge slurm-client"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q slurmctld slurmd munge slurm-client >/dev/null
fi

# munge: a key, its folders, and the daemon (--force: it runs as root here)
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null 2>&1; then
    munged --force
fi

# slurm.conf for this host: one node with its CPUs and memory, one partition
host="$(hostname -s)"
node="$(slurmd -C | head -n 1)"   # NodeName=<host> CPUs=... RealMemory=...
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<EOF
# written by biqabench .ci/slurm_up.sh: a one-node test cluster
ClusterName=biqabench
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
KillWait=10
MinJobAge=600
${node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null 2>&1 || slurmctld
pgrep -x slurmd >/dev/null 2>&1 || slurmd

for _ in $(seq 1 30); do
    if answers && sinfo -h -o %T | grep -qv -e down -e unk; then
        log "cluster up: $(sinfo -h -o '%P %D %T %c CPUs %m MB' | head -n 1)"
        exit 0
    fi
    sleep 1
done
log "slurmctld/slurmd did not come up within 30 s; see /var/log/slurm/slurmctld.log and slurmd.log"
exit 1
