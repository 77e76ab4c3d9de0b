#!/usr/bin/env bash
# Creates the virtual environment (.venv) and installs Gatehouse into it.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh dev,broker   (test tools, embedded broker)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Gatehouse needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  echo "On Debian 12 / Raspberry Pi OS (bookworm): sudo apt-get install python3 python3-venv" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv; then
    echo "Could not create a virtual environment: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi
# pip's and the build backend's notices (an editable install's advice, index warnings) go to a
# log that is shown only when the install fails.
log=.venv/install.log
target=.
[ "${1:-}" = "" ] || target=".[$1]"
echo "installing Gatehouse into .venv (log: $log)" >&2
if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e "$target"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "installing Gatehouse failed: the lines above say why (also in $log)" >&2
  exit 1
fi
