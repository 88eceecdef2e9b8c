#!/usr/bin/env bash
# A one-node SLURM cluster (slurmctld + slurmd + munge) on 127.0.0.1, without systemd.
#
#   scripts/slurm-local.sh start    install slurm-wlm + munge if missing, write the config, start the
#                                   daemons, wait for the node to be idle (idempotent)
#   scripts/slurm-local.sh stop     stop what `start` started (by pid file), leave config and packages
#   scripts/slurm-local.sh status   say what runs; exit 0 only when the node is ready for jobs
#
# Needs root (daemons, /etc/slurm). Exit codes of start: 0 ready; 3 SLURM is not installed and
# apt-get could not install it (the `slurm` tests then skip); 1 anything else (see the logs named).
# Settings (environment): SKYBATCH_SLURM_DIR (state, logs, pid files; default /var/lib/skybatch-slurm),
# SKYBATCH_SLURM_CPUS (CPUs the node advertises; default max(4, real CPUs)),
# SKYBATCH_SLURM_CTLD_PORT / SKYBATCH_SLURM_D_PORT (default 6817 / 6818).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${SKYBATCH_SLURM_DIR:-/var/lib/skybatch-slurm}
CONF=/etc/slurm/slurm.conf
MARK="skybatch slurm-local (scripts/slurm-local.sh)"
MUNGE_PID=/run/munge/munged.pid

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit "${2:-1}"; }

alive() {  # alive PIDFILE: the process named in the pid file runs (a zombie does not count)
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it starts daemons and writes $CONF)" 1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
      && command -v munged >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null || die "slurmctld/munged are not installed and there is no apt-get" 3
  say "installing slurm-wlm and munge (apt-get, no recommends)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1; then
    apt-get update -q >>"$STATE/apt.log" 2>&1 || true
    apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$STATE/apt.log" 2>&1 \
      || die "apt-get could not install slurm-wlm munge (see $STATE/apt.log)" 3
  fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  local force=""
  [ -S /run/munge/munge.socket.2 ] && force="--force"   # a stale socket after a kill -9
  runuser -u munge -- /usr/sbin/munged $force
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && { touch "$STATE/munged.ours"; return 0; }
    sleep 0.1
  done
  die "munged did not come up (munge -n | unmunge fails)"
}

write_conf() {
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script: this machine has its own SLURM; use it instead" 1
  fi
  local node cpus real mem
  node=$(hostname -s)
  getent hosts "$node" >/dev/null || die "hostname '$node' does not resolve (add it to /etc/hosts); slurmd needs it"
  real=$(nproc)
  cpus=${SKYBATCH_SLURM_CPUS:-$(( real > 4 ? real : 4 ))}
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)   # a value above the real one drains the node
  install -d -m 0755 /etc/slurm "$STATE" "$STATE/ctld" "$STATE/d"
  sed -e "s|@MARK@|$MARK|" -e "s|@STATE@|$STATE|g" -e "s|@NODE@|$node|g" -e "s|@CPUS@|$cpus|" \
      -e "s|@MEM@|$mem|" -e "s|@CTLD_PORT@|${SKYBATCH_SLURM_CTLD_PORT:-6817}|" \
      -e "s|@D_PORT@|${SKYBATCH_SLURM_D_PORT:-6818}|" "$HERE/slurm.conf.in" >"$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

node_state() { sinfo -h -N -o %t 2>/dev/null | head -1; }

start() {
  need_root
  install -d -m 0755 "$STATE"
  install_packages
  start_munge
  write_conf
  if ! alive "$STATE/slurmctld.pid"; then
    rm -f "$STATE/slurmctld.pid"
    slurmctld -c -f "$CONF" || die "slurmctld did not start (see $STATE/slurmctld.log)"
  fi
  if ! alive "$STATE/slurmd.pid"; then
    rm -f "$STATE/slurmd.pid"
    slurmd -f "$CONF" || die "slurmd did not start (see $STATE/slurmd.log)"
  fi
  local st=""
  for _ in $(seq 150); do
    st=$(node_state || true)
    case "$st" in
      idle|mix|alloc|comp) say "ready: node $(hostname -s) ($st) on 127.0.0.1, $(sinfo -h -o '%c CPUs, partition %P')"; return 0 ;;
      drain*|down*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "the node did not become idle in 30 s (state '$st'; see $STATE/slurmctld.log and $STATE/slurmd.log)"
}

stop_one() {  # stop_one NAME PIDFILE
  if alive "$2"; then
    local pid
    pid=$(cat "$2")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$2"
}

stop() {
  need_root
  stop_one slurmd "$STATE/slurmd.pid"
  stop_one slurmctld "$STATE/slurmctld.pid"
  if [ -e "$STATE/munged.ours" ]; then   # only a munged this script started
    stop_one munged "$MUNGE_PID"
    rm -f "$STATE/munged.ours"
  fi
}

status() {
  local ok=0
  for d in slurmctld slurmd; do
    if alive "$STATE/$d.pid"; then say "$d running (pid $(cat "$STATE/$d.pid"))"; else say "$d not running"; ok=1; fi
  done
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then say "munge ok"; else say "munge not running"; ok=1; fi
  if [ $ok = 0 ]; then
    local st
    st=$(node_state || true)
    say "node $(hostname -s): ${st:-unknown}"
    case "$st" in idle|mix|alloc|comp) ;; *) ok=1 ;; esac
  fi
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
