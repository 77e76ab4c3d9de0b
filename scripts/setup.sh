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
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "" ]; then
  .venv/bin/python -m pip install --quiet -e .
else
  .venv/bin/python -m pip install --quiet -e ".[$1]"
fi
