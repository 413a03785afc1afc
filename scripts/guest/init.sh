#!/bin/sh
# scripts/guest/init.sh - /init of the test guest's initramfs (busybox sh; copied in by build.sh).
#
# 1. mounts proc/sys/dev, loads the boot modules (virtio, 9p, overlay), mounts the `job` 9p
#    share on /job and sources /job/config (written by run.sh; kernel parameters with a dot
#    never reach /init, so all settings come from there).
# 2. mounts the host root (9p `hostroot`, read-only) on /lower and builds /newroot from it:
#    VM_ROOT=overlay (default): overlayfs with a tmpfs upper layer (writable, lost at power-off)
#    VM_ROOT=ro: the host root bind-mounted, fresh tmpfs on /tmp and /var/tmp (the caller's cwd
#    bound back if it was under one of them), tmpfs overlay on /usr/lib (for /lib/modules).
# 3. mounts proc, sys, dev, devpts, shm, /run, configfs, debugfs, the job share on /run/job and
#    the kernel's full module tree on /lib/modules/$KVER inside /newroot.
# 4. points /proc/sys/kernel/modprobe at a wrapper running the host's kmod modprobe in the
#    chroot, brings up lo and eth0 (10.0.2.15/24, default route 10.0.2.2 = host loopback).
# 5. runs the job's script in the chroot with its output on ttyS1 (and /job/output), writes its
#    exit status to /job/rc and powers off.
# Failures before the script starts print "ferrite-init: FATAL" on the console (run.sh -> 126).
#
# Settings read from /job/config: VM_KVER VM_KROOT VM_ROOT VM_MODULES VM_CWD VM_VERBOSE VM_CMD.

/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

T0=$(cut -d' ' -f1 /proc/uptime)
say() { echo "ferrite-init[$(cut -d' ' -f1 /proc/uptime)]: $*"; }
fatal() {
    echo "ferrite-init: FATAL: $*"
    if grep -q '^job /job ' /proc/mounts; then
        echo "$*" >/job/init-failed
    fi
    sync
    poweroff -f
    sleep 5
    exit 1
}
say "start (kernel up at ${T0}s)"

KVER=$(cat /etc/kver)
while read -r m; do
    modprobe "$m" || say "warning: modprobe $m failed"
done </etc/boot-modules

P9="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "$P9" job /job || fatal "cannot mount the job share"
[ -r /job/config ] || fatal "/job/config missing"
# shellcheck disable=SC1091
. /job/config
VM_ROOT=${VM_ROOT:-overlay}
VM_KROOT=${VM_KROOT:-}
VM_CWD=${VM_CWD:-/}
[ "${VM_KVER:-$KVER}" = "$KVER" ] || fatal "initramfs is for $KVER, config wants $VM_KVER"

mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower || fatal "cannot mount the host root"

R=/newroot
case $VM_ROOT in
overlay)
    mount -t tmpfs -o mode=0755 tmpfs /upper || fatal "tmpfs /upper"
    mkdir -p /upper/u /upper/w
    mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w $R ||
        fatal "overlay root"
    ;;
ro)
    mount --bind /lower $R || fatal "bind root"
    # /lib -> usr/lib on a merged-/usr host; the overlay makes /lib/modules/$KVER creatable.
    libdir=/usr/lib
    [ -L /lower/lib ] || libdir=/lib
    mount -t tmpfs -o mode=0755 tmpfs /upper || fatal "tmpfs /upper"
    mkdir -p /upper/u /upper/w
    mount -t overlay overlay -o lowerdir=/lower$libdir,upperdir=/upper/u,workdir=/upper/w \
        $R$libdir || fatal "overlay on $libdir"
    for d in /tmp /var/tmp; do
        mount -t tmpfs -o mode=1777 tmpfs $R$d || fatal "tmpfs $d"
    done
    case $VM_CWD in
    /tmp/* | /var/tmp/*)
        if ! { mkdir -p "$R$VM_CWD" && mount --bind "/lower$VM_CWD" "$R$VM_CWD"; }; then
            say "warning: cannot bind $VM_CWD"
        fi
        ;;
    esac
    ;;
*) fatal "unknown VM_ROOT=$VM_ROOT" ;;
esac

modprobe configfs 2>/dev/null
mount -t proc proc $R/proc || fatal "proc"
mount -t sysfs sysfs $R/sys || fatal "sysfs"
mount -t devtmpfs devtmpfs $R/dev || fatal "devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run || fatal "/run"
mount -t configfs configfs $R/sys/kernel/config || say "warning: no configfs"
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mkdir -p $R/run/job
mount --bind /job $R/run/job || fatal "bind /run/job"
if [ -n "$VM_KROOT" ] && [ -d "/lower$VM_KROOT/lib/modules/$KVER" ]; then
    if ! { mkdir -p "$R/lib/modules/$KVER" &&
        mount --bind "/lower$VM_KROOT/lib/modules/$KVER" "$R/lib/modules/$KVER"; }; then
        fatal "cannot bind the module tree on /lib/modules/$KVER"
    fi
else
    say "warning: module tree $VM_KROOT not visible; guest modprobe limited to the initramfs"
    mkdir -p "$R/lib/modules" && mount --bind "/lib/modules" "$R/lib/modules"
fi

# request_module() runs the usermode helper in *this* root: send it into the chroot (kmod,
# full tree), falling back to busybox modprobe on the initramfs modules.
cat >/sbin/modprobe-wrapper <<'EOF'
#!/bin/sh
if [ -x /newroot/sbin/modprobe ]; then
    chroot /newroot /sbin/modprobe "$@" && exit 0
fi
exec /bin/modprobe "$@"
EOF
chmod 0755 /sbin/modprobe-wrapper
echo /sbin/modprobe-wrapper >/proc/sys/kernel/modprobe

for m in ${VM_MODULES:-}; do
    chroot $R /sbin/modprobe "$m" || say "warning: modprobe $m failed"
done

ip link set lo up
ip link set eth0 up || fatal "no eth0"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

say "root ready ($VM_ROOT, cwd $VM_CWD), eth0 10.0.2.15, running the script"
[ -n "${VM_CMD:-}" ] || fatal "VM_CMD missing from /job/config"
stty -F /dev/ttyS1 raw -echo 2>/dev/null
eval "set -- $VM_CMD"
mkfifo /tmp/script.out
tee /job/output </tmp/script.out >/dev/ttyS1 &
TEE=$!
chroot $R "$@" </dev/null >/tmp/script.out 2>&1
echo $? >/job/rc
# Background processes the script left behind may hold its stdout open: give them 2 s to
# finish, then kill them so tee sees end-of-file.
i=0
while kill -0 $TEE 2>/dev/null && [ $i -lt 20 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 $TEE 2>/dev/null; then
    say "killing processes left behind by the script"
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        if [ "$p" != 1 ] && [ "$p" != "$TEE" ]; then # kernel threads ignore it
            kill -KILL "$p" 2>/dev/null
        fi
    done
fi
wait $TEE
sync
say "script exited with $(cat /job/rc 2>/dev/null || echo '?'), powering off"
umount $R/run/job 2>/dev/null
umount /job 2>/dev/null
poweroff -f
sleep 5
