#!/usr/bin/env bash
# The README's test command: set up .venv with the test and demo extras, install the system services
# some tests need (redis-server, podman: scripts/system-deps.sh), and run the whole test suite, slow
# tests included. The first run builds llama-cpp-python (5-6 minutes) and the sidecar image's base
# (about 3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,demo
scripts/system-deps.sh
exec .venv/bin/python -m pytest "$@"
