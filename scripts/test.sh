#!/usr/bin/env bash
# Quick start, second command (and what CI runs): install the test peers (mosquitto, PostgreSQL,
# GStreamer's RTSP server, socat, systemd-analyze) when missing, start the services, install
# Gatehouse with its test tools, lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# Debian packages the tests need: the core list plus each area's list in .ci/apt-packages-*.txt.
packages=(mosquitto postgresql socat systemd)
for list in .ci/apt-packages-*.txt; do
  [ -f "$list" ] || continue
  while read -r name; do
    [ -n "$name" ] && [ "${name#\#}" = "$name" ] && packages+=("$name")
  done <"$list"
done
missing=()
for name in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed" || missing+=("$name")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing test peers: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 1883; then
  echo "starting mosquitto on 127.0.0.1:1883"
  as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
if ! port_open 5432; then
  echo "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
for _ in $(seq 1 50); do port_open 1883 && port_open 5432 && break; sleep 0.2; done

scripts/setup.sh dev,broker
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
