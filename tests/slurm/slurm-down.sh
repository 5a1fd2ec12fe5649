#!/usr/bin/env bash
# Stop the daemons slurm-up.sh started, by their PID files, in reverse order.
for pf in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid; do
  if [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null; then
    p=$(cat "$pf"); kill "$p"; for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    echo "stopped $pf ($p)"
  fi
done
