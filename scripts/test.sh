#!/usr/bin/env bash
# Set up .venv with the test and demo extras and run the whole test suite (slow tests included;
# the first run builds llama-cpp-python for the demo test, 5-6 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,demo
exec .venv/bin/python -m pytest "$@"
