#!/usr/bin/env bash
# test.sh — ferrite's whole test suite, as README.md and .ci/run call it.
#
# 1. installs what the suite needs (scripts/install-deps.sh: fio, SPDK's rpc.py, the Linux
#    guest used as a real NVMe/TCP initiator);
# 2. cargo fmt --check and cargo clippy --all-targets -D warnings;
# 3. unit and integration tests (tests that need absent hardware skip with a message);
# 4. the guest tests, through the stock Linux nvme-tcp initiator in qemu.
# Knobs: SKIP_GUEST=1 skips building and running the guest tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "installing dependencies"
scripts/install-deps.sh
export FERRITE_SPDK_RPC=${FERRITE_SPDK_RPC:-${FERRITE_VENV:-/var/tmp/ferrite-venv}/bin/spdk-rpc}

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --all-targets -- -D warnings

step "unit and integration tests"
cargo test --workspace -- --test-threads=2

if [ -z "${SKIP_GUEST:-}" ]; then
  step "Linux guest tests (nvme-tcp initiator in qemu)"
  FERRITE_GUEST=1 cargo test --test guest -- --test-threads=1 --nocapture
  FERRITE_GUEST=1 cargo test --test perf_initiator guest -- --test-threads=1 --nocapture
fi
step "all tests passed"
