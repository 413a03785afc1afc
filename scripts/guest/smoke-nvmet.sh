#!/usr/bin/env bash
# scripts/guest/smoke-nvmet.sh - guest script proving the harness: Linux NVMe/TCP end to end.
#
# Run it in the guest:  scripts/guest/run.sh scripts/guest/smoke-nvmet.sh
# Loads nvmet, nvmet-tcp, nvme-tcp and a memory-backed null_blk, configures a kernel nvmet-tcp
# target on 127.0.0.1:4420 through configfs, then as the initiator: nvme discover, connect,
# list, an fio randwrite with crc32c verification, disconnect, target teardown.
# Prints one "PASS: step (time)" / "FAIL: step" line per step, and "smoke-nvmet: PASS" at the end.
#
# Knobs (environment, pass with VM_PASSENV="SMOKE_SIZE ..."):
#   SMOKE_SIZE=8m      fio data size
#   SMOKE_PORT=4420    TCP port of the in-guest target
set -euo pipefail

if [[ ${VM_GUEST:-0} != 1 ]]; then
    echo "smoke-nvmet.sh: runs inside the guest: scripts/guest/run.sh $0" >&2
    exit 2
fi

SIZE=${SMOKE_SIZE:-8m}
PORT=${SMOKE_PORT:-4420}
ADDR=127.0.0.1
NQN=nqn.2024-01.io.ferrite:smoke
CFG=/sys/kernel/config/nvmet
SUB=$CFG/subsystems/$NQN
PRT=$CFG/ports/1
CONNECTED=0

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
T0=$(now)
fail() {
    echo "FAIL: $*"
    echo "smoke-nvmet: FAIL"
    exit 1
}
# step NAME CMD...: run CMD (in a subshell, errexit on), print PASS/FAIL with its duration and
# its output indented.
step() {
    local name=$1 t rc
    shift
    t=$(now)
    set +e
    (set -e; "$@") >/tmp/smoke-step.out 2>&1
    rc=$?
    set -e
    sed 's/^/    /' /tmp/smoke-step.out
    ((rc == 0)) || fail "$name (status $rc)"
    printf 'PASS: %-36s (%ss)\n' "$name" "$(since "$t")"
}

cleanup() {
    if [[ $CONNECTED == 1 ]]; then
        nvme disconnect -n "$NQN" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

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

discover() {
    local out
    out=$(nvme discover -t tcp -a "$ADDR" -s "$PORT")
    printf '%s\n' "$out" | grep -E 'subnqn|trsvcid|traddr'
    grep -q "$NQN" <<<"$out" || { echo "$NQN not in the discovery log"; return 1; }
}

# The namespace block device of our controller (no udev here: devtmpfs makes the nodes).
find_dev() {
    local c i n
    for ((i = 0; i < 100; i++)); do
        for c in /sys/class/nvme/nvme*; do
            [[ -r $c/subsysnqn && $(<"$c/subsysnqn") == "$NQN" ]] || continue
            for n in /sys/block/nvme*n1; do
                [[ -e $n ]] || continue
                if [[ $(<"$n/device/subsysnqn" 2>/dev/null) == "$NQN" ]] ||
                    [[ $(basename "$n") == "$(basename "$c")"n1 ]]; then
                    if [[ -b /dev/$(basename "$n") ]]; then
                        echo "/dev/$(basename "$n")" >/tmp/smoke.dev
                        return 0
                    fi
                fi
            done
        done
        sleep 0.1
    done
    return 1
}

check_list() {
    local out
    out=$(nvme list)
    printf '%s\n' "$out"
    grep -q "$DEV" <<<"$out" || { echo "$DEV missing from nvme list"; return 1; }
}

run_fio() {
    fio --name=smoke --filename="$DEV" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
        --iodepth=16 --size="$SIZE" --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 || { cat /tmp/fio.out; return 1; }
    # terse v3: field 5 = errors, 49 = write iops
    awk -F';' '/^3;/ { printf "fio: errors=%s write_iops=%s read(verify)_iops=%s\n", $5, $49, $8;
                       if ($5 != 0) exit 1 }' /tmp/fio.out
}

echo "smoke-nvmet: kernel $(uname -r), guest uptime $(cut -d' ' -f1 /proc/uptime)s"
step "modprobe nvmet nvmet-tcp nvme-tcp" modprobe -a nvmet nvmet-tcp nvme-tcp
step "modprobe null_blk (1 GiB, memory)" modprobe null_blk nr_devices=1 gb=1 memory_backed=1
[[ -b /dev/nullb0 ]] || fail "/dev/nullb0 missing"
step "nvmet-tcp target on $ADDR:$PORT" target_setup
step "nvme discover" discover
step "nvme connect" nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN"
CONNECTED=1
step "namespace device node" find_dev
DEV=$(</tmp/smoke.dev)
echo "    device: $DEV"
step "nvme list" check_list
step "fio randwrite $SIZE +crc32c verify" run_fio
step "nvme disconnect" nvme disconnect -n "$NQN"
CONNECTED=0
step "target teardown" target_teardown
echo "smoke-nvmet: PASS ($(since "$T0")s)"
