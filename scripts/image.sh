#!/usr/bin/env bash
# Build the sidecar image localhost/deliberative-guard:latest (adapters/sidecar/Containerfile).
#
#   scripts/image.sh                                   # no container registry needed (below)
#   scripts/image.sh --build-arg BASE=python:3.12-slim # the usual build, where a registry is at hand
#
# With no BASE given, the base image is made from the OS package archive: a Debian bookworm root
# filesystem (debootstrap --variant=minbase, Python 3.11) imported as localhost/guard-base:bookworm,
# made once and reused. The project and every dependency are installed into the image from wheels
# built here on the host (same Python and platform), so the build itself reaches no network.
# Podman is used when present (docker otherwise); on a machine without either, run as root with
# GUARD_INSTALL_PODMAN=1 to apt-get install podman, runc and debootstrap first.
# One progress line per step; the tools' own output goes to build/image.log, shown on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/deliberative-guard:latest}
BASE_IMAGE=localhost/guard-base:bookworm
LOG=build/image.log
mkdir -p build
: > "$LOG"
t_start=$(date +%s)

step() { printf '==> %s\n' "$*"; }
quietly() {  # run a command with its output in the log; on failure show the log's tail and stop
  if ! "$@" >>"$LOG" 2>&1; then
    echo "failed: $*  (last lines of $LOG:)" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
}

# ---------------------------------------------------------------- the container engine
engine=""
if command -v podman >/dev/null; then
  engine=podman
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=docker
elif [ "${GUARD_INSTALL_PODMAN:-}" = 1 ] && [ "$(id -u)" = 0 ]; then
  step "installing podman, runc and debootstrap (apt-get)"
  quietly apt-get update -qq
  DEBIAN_FRONTEND=noninteractive quietly apt-get install -y -qq podman runc debootstrap
  engine=podman
else
  echo "no container engine: install podman (apt-get install podman runc debootstrap), or set GUARD_INSTALL_PODMAN=1 as root" >&2
  exit 2
fi
run_engine() {
  if [ "$engine" = podman ]; then
    # crun's defaults fail inside some VMs; runc works wherever podman does here
    podman ${PODMAN_RUNTIME:+--runtime "$PODMAN_RUNTIME"} "$@"
  else
    docker "$@"
  fi
}
if [ "$engine" = podman ]; then
  command -v runc >/dev/null && export PODMAN_RUNTIME=${PODMAN_RUNTIME:-runc}
  # containers.conf's default ulimits cannot be raised inside an unprivileged VM: use the host's
  if [ "$(id -u)" = 0 ] && ! grep -qs default_ulimits /etc/containers/containers.conf; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' >> /etc/containers/containers.conf
  fi
fi

# ---------------------------------------------------------------- the base image
base_from_registry=0
for a in "$@"; do [[ "$a" == BASE=* || "$a" == --build-arg=BASE=* ]] && base_from_registry=1; done
if [ "$base_from_registry" = 0 ] && ! run_engine image exists "$BASE_IMAGE" 2>/dev/null \
    && ! run_engine image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "debootstrap is needed to make the base image (apt-get install debootstrap)" >&2; exit 2; }
  mirror=${DEBIAN_MIRROR:-$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
            | grep -v security | awk '{print $2; exit}' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  step "making the base image from Debian packages (debootstrap bookworm from $mirror; once, a few minutes)"
  t=$(date +%s)
  root=$(mktemp -d /tmp/guard-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  quietly debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
  # only what a Python service needs: no apt lists, caches, docs or locales
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
         "$root"/usr/share/locale/* "$root"/usr/share/info/*
  tar -C "$root" -c . | quietly run_engine import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE"
  rm -rf "$root"
  trap - EXIT
  step "base image ready in $(( $(date +%s) - t )) s"
fi

# ---------------------------------------------------------------- wheels, built on the host
ctx=build/image-context
rm -rf "$ctx"
mkdir -p "$ctx/wheels/deps" "$ctx/wheels/guard"
cp adapters/sidecar/Containerfile "$ctx/Containerfile"
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
t=$(date +%s)
if [ "$base_from_registry" = 1 ]; then
  step "building the guard's wheel (dependencies come from the registry during the image build)"
  quietly "$python" -m pip wheel --no-deps --disable-pip-version-check -w "$ctx/wheels/guard" .
else
  step "building wheels for the guard and its dependencies (pip's cache makes this fast after the first time)"
  # async-timeout: redis needs it on Python < 3.11.3 (bookworm has 3.11.2), which the host may not be
  quietly "$python" -m pip wheel --disable-pip-version-check -w "$ctx/wheels/deps" ".[redis]" "async-timeout>=4.0.3"
  mv "$ctx"/wheels/deps/deliberative_guard-*.whl "$ctx/wheels/guard/"
  touch "$ctx/wheels/deps/.complete"  # the image build installs from these only (--no-index)
fi
step "wheels ready in $(( $(date +%s) - t )) s: $(find "$ctx/wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$ctx/wheels" | cut -f1)"

# ---------------------------------------------------------------- the image
step "building $IMAGE with $engine"
t=$(date +%s)
build_args=()
[ "$base_from_registry" = 0 ] && build_args+=(--build-arg "BASE=$BASE_IMAGE")
[ "$engine" = podman ] && build_args+=(--format docker)  # the OCI format has no HEALTHCHECK
quietly run_engine build "${build_args[@]}" "$@" -t "$IMAGE" -f "$ctx/Containerfile" "$ctx"
size=$(run_engine image inspect "$IMAGE" --format '{{.Size}}')
step "built $IMAGE in $(( $(date +%s) - t )) s: $(( size / 1000000 )) MB; total $(( $(date +%s) - t_start )) s"
echo "    run it: $engine run --rm --read-only --tmpfs /tmp -p 8000:8000 -e GUARD_UPSTREAM=https://api.openai.com/v1 $IMAGE"
