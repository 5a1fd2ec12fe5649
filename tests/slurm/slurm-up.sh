#!/usr/bin/env bash
# Idempotent single-node SLURM cluster on localhost for the workflow tests. Run as root.
# Installs Debian's slurmctld/slurmd/munge when missing, writes slurm.conf with one node
# advertising a fake `gpu:1` GRES (gres.conf points at /dev/null, so GPU requests schedule
# without hardware), starts the daemons and waits until the node is idle.
# WITH_DBD=1 also runs slurmdbd+MariaDB so `sacct` works; the default (0) has no accounting,
# and Snakemake must then poll with `--slurm-status-command squeue` (sacct would fail and the
# plugin's default status check would wait forever).
# Adapted from a measured reference (Debian 12, SLURM 22.05): fresh ~20 s + apt, re-run ~1.5 s.
set -euo pipefail
WITH_DBD=${WITH_DBD:-0}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/{print int($2/1024*0.9)}' /proc/meminfo)
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
waitfor() { local n=0; until eval "$1" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 150 ] && { echo "timeout waiting for: $1" >&2; exit 1; }; sleep 0.2; done; }

pkgs="slurmctld slurmd slurm-client munge"
[ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
missing=""; for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || { echo "no apt-get: cannot install$missing" >&2; exit 3; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
[ -s /etc/munge/munge.key ] || mungekey -c -f -k /etc/munge/munge.key
chown -R munge:munge /etc/munge /run/munge; chmod 600 /etc/munge/munge.key

if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi
cat > /etc/slurm/slurm.conf.new <<CONF
ClusterName=ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
$ACCT
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
printf 'AutoDetect=off\nNodeName=%s Name=gpu File=/dev/null\n' "$HOST" > /etc/slurm/gres.conf
changed=0; cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf || { mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf; changed=1; }
rm -f /etc/slurm/slurm.conf.new

alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
waitfor 'munge -n | unmunge'

if [ "$WITH_DBD" = 1 ]; then
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    setsid nohup /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid >/var/log/slurm/mariadbd.log 2>&1 < /dev/null &
    waitfor 'mariadb-admin ping'
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  alive /run/slurmdbd.pid || /usr/sbin/slurmdbd
  waitfor 'sacctmgr -n list cluster'
fi

if alive /run/slurmctld.pid; then
  [ $changed = 1 ] && { kill "$(cat /run/slurmctld.pid)"; sleep 1; /usr/sbin/slurmctld; }
else
  /usr/sbin/slurmctld
fi
waitfor 'scontrol ping | grep -q UP'
if alive /run/slurmd.pid; then [ $changed = 1 ] && scontrol reconfigure; else /usr/sbin/slurmd; fi
waitfor "sinfo -h -n $HOST -o %T | grep -qx idle"
if [ "$WITH_DBD" = 1 ]; then
  sacctmgr -i -Q add account ci Description=ci Organization=ci >/dev/null 2>&1 || true
  sacctmgr -i -Q add user root Account=ci DefaultAccount=ci >/dev/null 2>&1 || true
fi
sinfo -N -o "%N %T %C %m %G"
