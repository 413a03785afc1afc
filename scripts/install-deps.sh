#!/usr/bin/env bash
# install-deps.sh — what ferrite's test suite needs on a fresh Debian machine that has only
# Rust, gcc, python3 and git: fio (baseline benchmarks), iproute2 (network namespaces for the
# multi-node tests), util-linux (losetup), SPDK's rpc.py (PyPI `spdk`, in a venv)
# and the Linux guest harness (qemu, a Debian kernel, nvme-cli, fio; scripts/guest/build.sh).
# Idempotent. Knobs: FERRITE_VENV (default /var/tmp/ferrite-venv), SKIP_GUEST=1.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${FERRITE_VENV:-/var/tmp/ferrite-venv}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "install-deps: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq || true
  for _ in 1 2 3; do
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null && return 0
  done
  return 1
}

apt_install fio python3-venv iproute2 util-linux
if [ ! -x "$VENV/bin/spdk-rpc" ]; then
  echo "install-deps: pip install spdk (rpc.py) into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q spdk
fi
if [ -z "${SKIP_GUEST:-}" ]; then
  scripts/guest/build.sh
fi
