#!/usr/bin/env bash
# Runs the cluster simulator over many seeds in release mode.
#   scripts/sim.sh [SEEDS] [MS] [FIRST]
# SEEDS: how many seeds (default 100); MS: virtual milliseconds of faults per seed (default
# 8000); FIRST: the first seed (default 1). A failure prints the seed, the commit and the last
# events; replay it with: scripts/sim.sh 1 MS SEED (add FERRITE_SIM_LOG=1 for ferrite's logs).
# SIM_FAILOVER=1 runs the failover set instead (every seed fails over once).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-100}
ms=${2:-8000}
first=${3:-1}
test=fixed_seeds_lose_nothing
[[ -n "${SIM_FAILOVER:-}" ]] && test=failover_seeds_lose_nothing
export FERRITE_COMMIT
FERRITE_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
start=$(date +%s)
FERRITE_SIM_SEEDS=$seeds FERRITE_SIM_MS=$ms FERRITE_SIM_FIRST=$first \
  cargo test --release --test sim "${test}" -- --nocapture --test-threads=1
echo "sim: $seeds seeds of ${ms} ms from seed $first passed in $(( $(date +%s) - start )) s"
