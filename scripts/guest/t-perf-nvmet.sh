#!/usr/bin/env bash
# scripts/guest/t-perf-nvmet.sh - `ferrite perf` (ferrite's NVMe/TCP initiator) against the Linux
# kernel target (nvmet-tcp), inside the test guest.
#
# Run it in the guest:  scripts/guest/run.sh scripts/guest/t-perf-nvmet.sh FERRITE_BIN
# (tests/perf_initiator.rs does, with the ferrite binary cargo built). Loads nvmet, nvmet-tcp and
# a memory-backed null_blk (4 KiB blocks), exports it through configfs on 127.0.0.1:PORT, then
# runs the host's ferrite binary: randrw --verify; 128 KiB writes (R2T/H2CData, C2HData) with
# header and data digests; two cores with two I/O queues; the discovery service; --ack-log
# followed by --check-ack-log. Prints "PASS: step (time)" / "FAIL: step" lines and
# "t-perf-nvmet: PASS" at the end.
#
# Knobs (environment, pass with VM_PASSENV="PERF_TIME ..."):
#   PERF_TIME=2      seconds per perf run
#   PERF_PORT=4420   TCP port of the in-guest target
set -euo pipefail

if [[ ${VM_GUEST:-0} != 1 ]]; then
    echo "t-perf-nvmet.sh: runs inside the guest: scripts/guest/run.sh $0 FERRITE_BIN" >&2
    exit 2
fi
BIN=${1:?usage: t-perf-nvmet.sh FERRITE_BIN}
[[ -x $BIN ]] || { echo "FAIL: no ferrite binary at $BIN"; exit 1; }

TIME=${PERF_TIME:-2}
PORT=${PERF_PORT:-4420}
ADDR=127.0.0.1
NQN=nqn.2024-01.io.ferrite:perf-nvmet
CFG=/sys/kernel/config/nvmet
SUB=$CFG/subsystems/$NQN
PRT=$CFG/ports/1
TRID="trtype:tcp adrfam:ipv4 traddr:$ADDR trsvcid:$PORT subnqn:$NQN"
OUT=/tmp/perf-nvmet
mkdir -p "$OUT"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
T0=$(now)
fail() {
    echo "FAIL: $*"
    echo "t-perf-nvmet: FAIL"
    exit 1
}
step() {
    local name=$1 t rc
    shift
    t=$(now)
    set +e
    (set -e; "$@") >"$OUT/step.out" 2>&1
    rc=$?
    set -e
    sed 's/^/    /' "$OUT/step.out"
    ((rc == 0)) || fail "$name (status $rc)"
    printf 'PASS: %-44s (%ss)\n' "$name" "$(since "$t")"
}

target_setup() {
    mkdir "$SUB"
    echo 1 >"$SUB/attr_allow_any_host"
    mkdir "$SUB/namespaces/1"
    echo -n /dev/nullb0 >"$SUB/namespaces/1/device_path"
    echo 1 >"$SUB/namespaces/1/enable"
    mkdir "$PRT"
    echo tcp >"$PRT/addr_trtype"
    echo ipv4 >"$PRT/addr_adrfam"
    echo "$ADDR" >"$PRT/addr_traddr"
    echo "$PORT" >"$PRT/addr_trsvcid"
    ln -s "$SUB" "$PRT/subsystems/$NQN"
}

target_teardown() {
    rm -f "$PRT/subsystems/$NQN"
    rmdir "$PRT"
    echo 0 >"$SUB/namespaces/1/enable"
    rmdir "$SUB/namespaces/1"
    rmdir "$SUB"
}

# perf NAME ARGS...: runs ferrite perf --json, keeps the report, fails on a non-zero exit or
# on errors / verification failures in the report.
perf() {
    local name=$1
    shift
    "$BIN" perf "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err" || {
        cat "$OUT/$name.json" "$OUT/$name.err"
        return 1
    }
    grep -E '"(iops|errors|verified_blocks)"' "$OUT/$name.json" | head -3 | tr -s ' \n' ' '
    echo
    grep -q '"errors": 0' "$OUT/$name.json" || return 1
    grep -q '"verify_failures": \[\]' "$OUT/$name.json" || return 1
}

perf_verified() { # as perf, and the report verified some blocks
    perf "$@" || return 1
    grep -Eq '"verified_blocks": [1-9]' "$OUT/$1.json" || { echo "no blocks verified"; return 1; }
}

check_log() {
    "$BIN" perf --check-ack-log "$OUT/ack.log" -r "$TRID" -c 0x1 --json >"$OUT/check.json" 2>"$OUT/check.err" || {
        cat "$OUT/check.json" "$OUT/check.err"
        return 1
    }
    grep -E '"(records|blocks_exact|blocks_lost)"' "$OUT/check.json" | tr -s ' \n' ' '
    echo
    grep -Eq '"blocks_exact": [1-9]' "$OUT/check.json"
}

echo "t-perf-nvmet: kernel $(uname -r), $(nproc) vCPUs, ferrite at $BIN"
step "modprobe nvmet nvmet-tcp" modprobe -a nvmet nvmet-tcp
step "modprobe null_blk (1 GiB, 4 KiB blocks)" modprobe null_blk nr_devices=1 gb=1 bs=4096 memory_backed=1
[[ -b /dev/nullb0 ]] || fail "/dev/nullb0 missing"
step "nvmet-tcp target on $ADDR:$PORT" target_setup
step "randrw 4k QD8 --verify" \
    perf_verified randrw -r "$TRID" -c 0x1 -q 8 -w randrw -t "$TIME" --size-mb 4 --verify
step "128k randrw QD4 --verify, header+data digests" \
    perf_verified big -r "$TRID" -c 0x1 -q 4 -o 131072 -w randrw -t "$TIME" --size-mb 4 --verify --hdr-digest --data-digest
step "two cores, two I/O queues, --verify" \
    perf_verified two -r "$TRID" -c 0x3 -q 8 -w randrw -t "$TIME" --size-mb 4 --verify
step "through the discovery service" \
    perf disc -r "trtype:tcp traddr:$ADDR trsvcid:$PORT" -c 0x1 -q 4 -w randwrite -t 1
step "randwrite QD8 --ack-log" \
    perf acklog -r "$TRID" -c 0x1 -q 8 -w randwrite -t "$TIME" --size-mb 16 --ack-log "$OUT/ack.log"
step "--check-ack-log" check_log
step "target teardown" target_teardown
echo "t-perf-nvmet: PASS ($(since "$T0")s)"
