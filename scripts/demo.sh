#!/usr/bin/env bash
# Quick start, first command: install into .venv and run the demo (simulated devices, local
# SQLite store, an MQTT broker found or started locally). Extra arguments go to `gatehouse demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh broker
exec .venv/bin/gatehouse demo "$@"
