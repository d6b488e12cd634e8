#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, with accounting (sacct), to run the study's stages through sbatch.
#
#   sudo bash tests/slurm/cluster.sh install   # Debian: munge, slurm-wlm, slurmdbd, mariadb-server (a few minutes)
#   sudo bash tests/slurm/cluster.sh start     # writes /etc/slurm/{slurm,slurmdbd}.conf, starts the five daemons
#   sudo bash tests/slurm/cluster.sh stop      # cancels every job and stops the daemons
#
# One node (this machine, all its cores, no GPU), one partition `debug`, cluster `acla`, jobs run as root.
# proctrack/linuxproc and task/none need no cgroups (containers have none to give). KillWait=5: a requeued or
# cancelled job is killed 5 s after its SIGTERM (submitit ignores SIGTERM and waits for SIGKILL).
# It is a test bed, not a production cluster: on a real cluster only `ACLA_LAUNCHER` changes (README.md).
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "cluster.sh: run as root (it writes /etc/slurm and starts daemons)" >&2; exit 2; }
NODE="$(hostname -s)"
DB_PASSWORD="acla-test-cluster"   # a local test database reachable only through its socket

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q munge slurm-wlm slurmdbd mariadb-server
}

write_configs() {
  local cpus memory
  cpus="$(nproc)"
  memory="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=acla
SlurmctldHost=${NODE}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
NodeName=${NODE} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASSWORD}
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
}

wait_for() {  # wait_for <seconds> <what> <command...>
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq "$seconds"); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "cluster.sh: $what did not answer within ${seconds} s (logs: /var/log/slurm/, /var/log/mysql/)" >&2
  exit 1
}

start() {
  for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
    command -v "$daemon" > /dev/null || [ -x "/usr/sbin/$daemon" ] || {
      echo "cluster.sh: $daemon is not installed; run: sudo bash $0 install" >&2; exit 2; }
  done
  write_configs
  mkdir -p /run/munge && chown munge:munge /run/munge
  pgrep -x munged > /dev/null || runuser -u munge -- /usr/sbin/munged
  wait_for 20 munge munge -n
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  pgrep -x mariadbd > /dev/null || (nohup /usr/sbin/mariadbd --user=mysql > /var/log/slurm/mariadb.log 2>&1 &)
  wait_for 60 mariadb mariadb -e "select 1"
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  pgrep -x slurmdbd > /dev/null || /usr/sbin/slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster acla > /dev/null 2>&1 || true
  pgrep -x slurmctld > /dev/null || /usr/sbin/slurmctld
  pgrep -x slurmd > /dev/null || /usr/sbin/slurmd
  wait_for 60 "slurmctld and slurmd" bash -c "sinfo -h -o %T | grep -qx idle"
  wait_for 30 sacct sacct -n -X
  echo "cluster.sh: SLURM is up: $(sinfo -h -o '%P %D nodes %c CPUs %T')"
}

stop() {
  scancel --user=root 2> /dev/null || true
  for daemon in slurmd slurmctld slurmdbd; do pkill -x "$daemon" 2> /dev/null || true; done
  if command -v mariadb-admin > /dev/null; then mariadb-admin shutdown 2> /dev/null || true; fi
  pkill -x munged 2> /dev/null || true
  echo "cluster.sh: stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: sudo bash $0 install|start|stop" >&2; exit 2 ;;
esac
