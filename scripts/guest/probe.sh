#!/usr/bin/env bash
# scripts/guest/probe.sh - can the Linux test guest (scripts/guest/run.sh) run on this host?
#
# Prints "ok" and exits 0 if it can: an x86_64 host (the guest runs the host's own nvme-cli,
# fio, ... binaries) with qemu-system-x86_64 and the guest tools installed, or root with
# apt-get so scripts/guest/build.sh can install them. Otherwise prints the reason and exits 1.
# Tests call it to skip with a message. Fast: no network, no qemu run.
#
# Knobs: FERRITE_GUEST_DIR (build cache, default /var/tmp/ferrite-guest); with
# GUEST_PROBE_BUILT=1 it also requires the guest to be built already (no download needed).
set -euo pipefail

DIR=${FERRITE_GUEST_DIR:-/var/tmp/ferrite-guest}

no() {
    echo "guest harness unavailable: $*"
    exit 1
}

[[ $(uname -m) == x86_64 ]] || no "host is $(uname -m), the guest needs an x86_64 host"
[[ $(uname -s) == Linux ]] || no "host is not Linux"

tools=(qemu-system-x86_64 cpio modprobe depmod nvme fio)
missing=()
for t in "${tools[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[[ -x /bin/busybox ]] || missing+=(busybox)
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || no "missing ${missing[*]} and not root (cannot apt-get install)"
    command -v apt-get >/dev/null 2>&1 || no "missing ${missing[*]} and no apt-get"
fi

if [[ ${GUEST_PROBE_BUILT:-0} == 1 ]]; then
    kver=$(cat "$DIR/current" 2>/dev/null || true)
    [[ -n $kver && -s $DIR/out/$kver/vmlinux && -s $DIR/out/$kver/initrd.gz ]] ||
        no "guest not built in $DIR (run scripts/guest/build.sh)"
fi

echo ok
