#!/usr/bin/env bash
# scripts/guest/run.sh SCRIPT [ARGS...] - run SCRIPT inside the Linux test guest.
#
# Boots the Debian kernel built by scripts/guest/build.sh under qemu (TCG) and runs SCRIPT
# as root in a chroot of the host's root filesystem (overlay, so writable; writes are lost at
# power-off), in the caller's cwd, with ARGS. The guest has the kernel's full module tree
# (modprobe works), configfs, nvme-cli/fio from the host, and eth0 10.0.2.15/24 with the
# default route via 10.0.2.2, which is the *host's loopback*: a target on the host at
# 127.0.0.1:4420 is reached from the guest as 10.0.2.2:4420. SCRIPT's stdout+stderr are
# streamed to our stdout. The script sees VM_GUEST=1 and a writable share at /run/job.
# Builds the guest first if it is missing or init.sh changed.
#
# Exit status: SCRIPT's status, or 124 timeout (console tail printed), 125 guest died without
# reporting a status, 126 guest init failed.
#
# Knobs (environment):
#   VM_TIMEOUT=600       seconds before qemu is killed
#   VM_MEM=2048          guest memory, MiB
#   VM_SMP=2             guest vCPUs
#   VM_CPU=max,la57=off  qemu -cpu
#   VM_ACCEL=tcg         tcg, or kvm on a host with real KVM (not this one: kvm_pvm)
#   VM_ROOT=overlay      overlay (writable host root) | ro (read-only root, tmpfs /tmp /var/tmp)
#   VM_MODULES=""        modules to modprobe before the script starts
#   VM_HOSTFWD=""        extra slirp options, e.g. ",hostfwd=tcp:127.0.0.1:14420-10.0.2.15:4420"
#   VM_PASSENV=""        names of host environment variables passed to the script
#   VM_KVER              kernel version (default: the last one build.sh built)
#   VM_BZIMAGE=1         boot the bzImage instead of the extracted vmlinux (slower)
#   VM_APPEND=""         extra kernel command line
#   VM_QEMU_EXTRA=""     extra qemu arguments (word-split)
#   VM_SERIAL=1          wait for other VM_SERIAL=1 guests to finish first (2-core hosts)
#   VM_KEEP=1            keep the job dir (config, script, output, rc, console.log)
#   VM_VERBOSE=1         stream the guest console (kernel + init) to stderr
#   FERRITE_GUEST_DIR    build cache (default /var/tmp/ferrite-guest)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${FERRITE_GUEST_DIR:-/var/tmp/ferrite-guest}

if (($# < 1)); then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
SCRIPT=$1
shift
[[ -f $SCRIPT ]] || { echo "run.sh: no such script: $SCRIPT" >&2; exit 2; }

VM_TIMEOUT=${VM_TIMEOUT:-600}
VM_MEM=${VM_MEM:-2048}
VM_SMP=${VM_SMP:-2}
VM_CPU=${VM_CPU:-max,la57=off}
VM_ACCEL=${VM_ACCEL:-tcg}
VM_ROOT=${VM_ROOT:-overlay}
VM_MODULES=${VM_MODULES:-}
VM_HOSTFWD=${VM_HOSTFWD:-}
VM_PASSENV=${VM_PASSENV:-}
VM_BZIMAGE=${VM_BZIMAGE:-0}
VM_APPEND=${VM_APPEND:-}
VM_QEMU_EXTRA=${VM_QEMU_EXTRA:-}
VM_KEEP=${VM_KEEP:-0}
VM_VERBOSE=${VM_VERBOSE:-0}
VM_SERIAL=${VM_SERIAL:-0}

say() { printf '[guest-run] %s\n' "$*" >&2; }

# --- the built guest ----------------------------------------------------------------------
VM_KVER=${VM_KVER:-$(cat "$DIR/current" 2>/dev/null || true)}
OUT=$DIR/out/${VM_KVER:-none}
if [[ -z $VM_KVER || ! -s $OUT/vmlinux || ! -s $OUT/initrd.gz || $HERE/init.sh -nt $OUT/initrd.gz ]]; then
    say "guest not built or out of date: running build.sh"
    "$HERE/build.sh" >&2
    VM_KVER=$(cat "$DIR/current")
    OUT=$DIR/out/$VM_KVER
fi
KERNEL=$OUT/vmlinux
[[ $VM_BZIMAGE == 1 ]] && KERNEL=$OUT/vmlinuz
for f in "$KERNEL" "$OUT/initrd.gz"; do
    [[ -s $f ]] || { say "missing $f (run scripts/guest/build.sh)"; exit 126; }
done

# --- the job folder -----------------------------------------------------------------------
JOB=$(mktemp -d "${TMPDIR:-/tmp}/ferrite-vm.XXXXXX")
TAILPID=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n $TAILPID ]]; then kill "$TAILPID" 2>/dev/null || true; fi
    if [[ $VM_KEEP == 1 ]]; then
        say "job dir kept: $JOB"
    else
        rm -rf "$JOB"
    fi
}
trap cleanup EXIT

cp "$SCRIPT" "$JOB/script"
chmod 0755 "$JOB/script"

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # single-quote for the guest's sh

# The command run in the chroot: a clean environment, the caller's cwd, the script and ARGS.
cmd=(/usr/bin/env -i "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
     HOME=/root TERM=dumb LANG=C.UTF-8 VM_GUEST=1 "VM_KVER=$VM_KVER")
for v in $VM_PASSENV; do
    [[ -n ${!v+x} ]] && cmd+=("$v=${!v}")
done
# shellcheck disable=SC2016 # expanded by the guest's sh
cmd+=(/bin/sh -c 'cd "$1" 2>/dev/null || { echo "run.sh: no $1 in the guest, using /" >&2; cd /; }
shift; exec /run/job/script "$@"' sh "$PWD" "$@")
cmdq=
for a in "${cmd[@]}"; do cmdq+="$(q "$a") "; done

{
    echo "VM_KVER=$(q "$VM_KVER")"
    echo "VM_KROOT=$(q "$DIR/kroot/$VM_KVER")"
    echo "VM_ROOT=$(q "$VM_ROOT")"
    echo "VM_MODULES=$(q "$VM_MODULES")"
    echo "VM_CWD=$(q "$PWD")"
    echo "VM_VERBOSE=$(q "$VM_VERBOSE")"
    echo "VM_CMD=$(q "$cmdq")"
} >"$JOB/config"

# --- qemu ---------------------------------------------------------------------------------
case $VM_ACCEL in
tcg) accel=(-accel "tcg,thread=multi" -cpu "$VM_CPU") ;;
kvm) accel=(-accel kvm -cpu host) ;;
*) say "unknown VM_ACCEL=$VM_ACCEL"; exit 2 ;;
esac
[[ -z $VM_HOSTFWD || $VM_HOSTFWD == ,* ]] || VM_HOSTFWD=",$VM_HOSTFWD"
# shellcheck disable=SC2206 # word splitting intended
extra=($VM_QEMU_EXTRA)

: >"$JOB/console.log"
if [[ $VM_VERBOSE == 1 ]]; then
    tail -n +1 -F "$JOB/console.log" >&2 2>/dev/null &
    TAILPID=$!
fi

if [[ $VM_SERIAL == 1 ]]; then
    exec 8>"$DIR/run.lock"
    if ! flock -n 8; then
        say "waiting for another guest (VM_SERIAL=1)"
        flock 8
    fi
fi

say "booting $VM_KVER ($(basename "$KERNEL"), ${VM_SMP} vCPU, ${VM_MEM} MiB, timeout ${VM_TIMEOUT}s): $(basename "$SCRIPT") $*"
start=$SECONDS
set +e
timeout --foreground -k 5 "$VM_TIMEOUT" qemu-system-x86_64 \
    "${accel[@]}" -m "$VM_MEM" -smp "$VM_SMP" \
    -kernel "$KERNEL" -initrd "$OUT/initrd.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 $VM_APPEND" \
    -display none -monitor none -no-reboot -nodefaults \
    -chardev "file,id=con,path=$JOB/console.log" -serial chardev:con \
    -chardev stdio,id=out,signal=off -serial chardev:out \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$JOB,mount_tag=job,security_model=none" \
    -netdev "user,id=n0,net=10.0.2.0/24,host=10.0.2.2$VM_HOSTFWD" \
    -device virtio-net-pci,netdev=n0 \
    "${extra[@]}" </dev/null
qrc=$?
set -e
elapsed=$((SECONDS - start))

console_tail() {
    say "last lines of the guest console:"
    tail -n 40 "$JOB/console.log" | sed 's/^/  | /' >&2
}

if [[ $qrc == 124 || $qrc == 137 ]]; then
    say "TIMEOUT after ${elapsed}s (VM_TIMEOUT=$VM_TIMEOUT)"
    console_tail
    exit 124
fi
if [[ -s $JOB/rc ]]; then
    rc=$(tr -dc '0-9' <"$JOB/rc")
    say "script exited with ${rc:-?} after ${elapsed}s"
    exit "${rc:-125}"
fi
if [[ -e $JOB/init-failed ]] || grep -q 'ferrite-init: FATAL' "$JOB/console.log"; then
    say "guest init FAILED (qemu status $qrc, ${elapsed}s)"
    console_tail
    exit 126
fi
say "guest died without reporting a status (qemu status $qrc, ${elapsed}s)"
console_tail
exit 125
