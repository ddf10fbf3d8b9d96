#!/usr/bin/env bash
# The system services some tests need, installed from the OS packages when they are missing:
# redis-server (the shared verdict cache, tests/test_redis_cache.py) and podman + runc + debootstrap
# (the sidecar image, built and run by tests/test_container.py). Needs root (or sudo) and apt-get;
# elsewhere it says what is missing and those tests skip (under CI=true they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null || { [ ${#sudo[@]} -gt 0 ] && ! sudo -n true 2>/dev/null; }; then
    echo "==> not installed: ${need[*]} (no apt-get or no root): the tests that need them will skip" >&2
    exit 0
  fi
  echo "==> installing ${need[*]} from the OS packages (about a minute, once) ..." >&2
  mkdir -p build
  if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}"; } \
      >build/apt.log 2>&1; then
    tail -n 30 build/apt.log >&2
    exit 1
  fi
fi
if command -v podman >/dev/null && ! grep -qs default_ulimits /etc/containers/containers.conf; then
  # podman's default ulimits cannot be applied in some VMs (this machine kind among them)
  "${sudo[@]}" mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n' | "${sudo[@]}" tee -a /etc/containers/containers.conf >/dev/null
fi
