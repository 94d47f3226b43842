#!/usr/bin/env bash
# Make a Docker engine answer on this Debian host: install Debian's docker.io if dockerd is
# missing, start dockerd in the background when no init system runs it, wait for its socket.
# Idempotent: an engine that already answers is left alone.
set -euo pipefail

SOCKET=/var/run/docker.sock
LOG=/var/log/dockerd-testbed.log
WAIT_S=60

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if engine_answers; then
  echo "docker engine: running ($(docker version --format '{{.Server.Version}}'))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "error: no Docker engine answers at $SOCKET; run this script as root (or start Docker yourself)" >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker engine: installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl start docker
else
  # no init system (a container or a bare CI machine): run the daemon ourselves, detached, unless
  # one is already starting (its pid file names a live process)
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    rm -f /var/run/docker.pid
    nohup dockerd --host "unix://$SOCKET" >"$LOG" 2>&1 </dev/null &
  fi
fi

for _ in $(seq 1 $((WAIT_S * 2))); do
  if engine_answers; then
    echo "docker engine: running ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 0.5
done
echo "error: the Docker engine did not answer within ${WAIT_S} s; see $LOG" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
