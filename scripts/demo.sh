#!/usr/bin/env bash
# The README's main command: set up (the first run builds llama-cpp-python, 5-6 minutes) and run the
# offline end-to-end demo: a local model behind `guard serve`, driven with the official openai client.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
exec .venv/bin/guard demo "$@"
