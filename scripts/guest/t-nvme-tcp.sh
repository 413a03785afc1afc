#!/usr/bin/env bash
# t-nvme-tcp.sh — runs INSIDE the Linux guest (scripts/guest/run.sh): the stock Linux NVMe/TCP
# initiator, nvme-cli and fio against a ferrite target on the host (10.0.2.2).
#
# Usage: t-nvme-tcp.sh NQN HOSTNQN PORT DISCOVERY_PORT
# The subsystem must hold two namespaces (1: malloc, 2: uring) and allow HOSTNQN only.
# Each step prints "ok - ..." or fails the script with "not ok - ...".
set -euo pipefail
NQN=$1 HOSTNQN=$2 PORT=$3 DPORT=$4
ADDR=10.0.2.2
FIO_SIZE=${FIO_SIZE:-64m}
modprobe nvme-tcp
modprobe ext4 2>/dev/null || true

ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; exit 1; }
dev_of() { # nsid -> /dev/nvmeXnY (the namespace head) of our subsystem
  local s n
  for s in /sys/class/nvme-subsystem/nvme-subsys*; do
    [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
    for n in "$s"/nvme*n"$1"; do
      [ -e "$n" ] && [ -b "/dev/$(basename "$n")" ] && { echo "/dev/$(basename "$n")"; return 0; }
    done
  done
  return 1
}
wait_dev() { for _ in $(seq 50); do dev_of "$1" >/dev/null && { dev_of "$1"; return 0; }; sleep 0.2; done; fail "namespace $1 device did not appear"; }
connect() { nvme connect -t tcp -a $ADDR -s "$PORT" -n "$NQN" --hostnqn="$HOSTNQN" "$@" >/dev/null || fail "nvme connect $*"; }
disconnect() { nvme disconnect -n "$NQN" >/dev/null || fail "nvme disconnect"; sleep 0.3; }

nvme discover -t tcp -a $ADDR -s "$DPORT" --hostnqn="$HOSTNQN" > /tmp/disc.txt || fail "nvme discover"
grep -q "subnqn:.*$NQN" /tmp/disc.txt || { cat /tmp/disc.txt; fail "discovery lists the subsystem"; }
grep -q "traddr:.*10.0.2.2\|traddr:.*127.0.0.1" /tmp/disc.txt || { cat /tmp/disc.txt; fail "discovery traddr"; }
ok "nvme discover lists $NQN"

if nvme connect -t tcp -a $ADDR -s "$PORT" -n "$NQN" --hostnqn=nqn.2026-11.io.ferrite:stranger >/tmp/bad.txt 2>&1; then
  fail "a host NQN not allowed was accepted"
fi
ok "host NQN not allowed is refused at Connect"

connect --nr-io-queues=2
D1=$(wait_dev 1); D2=$(wait_dev 2)
nvme list > /tmp/list.txt 2>&1; grep -q "$(basename "$D1")" /tmp/list.txt || { cat /tmp/list.txt; fail "nvme list"; }
nvme id-ctrl "$D1" > /tmp/idctrl.txt || fail "id-ctrl"
grep -q "subnqn *: $NQN" /tmp/idctrl.txt || { cat /tmp/idctrl.txt; fail "id-ctrl subnqn"; }
grep -q "kas *: [1-9]" /tmp/idctrl.txt || fail "id-ctrl kas"
nvme id-ns "$D1" | grep -q "nsze *: 0x" || fail "id-ns"
nvme list-subsys | grep -q "$NQN" || fail "list-subsys"
ok "connect --nr-io-queues=2, nvme list, id-ctrl, id-ns, list-subsys"

for D in "$D1" "$D2"; do
  fio --name=rw --filename="$D" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=16 \
      --size="$FIO_SIZE" --verify=crc32c --verify_fatal=1 --output=/tmp/fio.txt || { cat /tmp/fio.txt; fail "fio randwrite verify on $D"; }
  grep -q "err= 0" /tmp/fio.txt || { cat /tmp/fio.txt; fail "fio errors on $D"; }
  fio --name=seqw --filename="$D" --ioengine=libaio --direct=1 --rw=write --bs=128k --iodepth=8 --size=32m \
      --verify=crc32c --output=/tmp/fio2.txt || { cat /tmp/fio2.txt; fail "fio 128k seq write+verify on $D"; }
  fio --name=seqr --filename="$D" --ioengine=libaio --direct=1 --rw=read --bs=128k --iodepth=8 --size=32m \
      --output=/tmp/fio3.txt || fail "fio 128k seq read on $D"
  ok "fio 4k randwrite QD16 $FIO_SIZE verify, 128k seq write+verify and read on $D"
done

mkfs.ext4 -q -F "$D2" || fail "mkfs.ext4"
mkdir -p /mnt/f
mount -t ext4 "$D2" /mnt/f 2>/tmp/mount.txt || { cat /tmp/mount.txt; dmesg | tail -5; fail "mount"; }
mkdir -p /mnt/f/tree/a/b
for i in $(seq 1 40); do head -c $((i * 3001)) /dev/urandom > /mnt/f/tree/a/file$i; done
cp -r /mnt/f/tree/a /mnt/f/tree/copy
(cd /mnt/f && find tree -type f -print0 | sort -z | xargs -0 sha256sum) > /tmp/sums.txt
sync; umount /mnt/f
disconnect
connect
D2=$(wait_dev 2)
mount -t ext4 "$D2" /mnt/f || fail "mount after reconnect"
(cd /mnt/f && sha256sum -c --quiet /tmp/sums.txt) || fail "sha256sums after reconnect"
umount /mnt/f
ok "mkfs.ext4, files, sync, unmount, disconnect, reconnect, mount: sha256sums match"

D1=$(wait_dev 1)
dd if=/dev/urandom of="$D1" bs=1M count=4 oflag=direct status=none
blkdiscard -o 0 -l 2097152 "$D1" || fail "blkdiscard"
[ "$(dd if="$D1" bs=1M count=2 iflag=direct status=none | tr -d '\0' | wc -c)" = 0 ] || fail "discarded range reads zeros"
blkdiscard -z -o 2097152 -l 2097152 "$D1" || fail "blkdiscard -z (write zeroes)"
[ "$(dd if="$D1" bs=1M skip=2 count=2 iflag=direct status=none | tr -d '\0' | wc -c)" = 0 ] || fail "zeroed range reads zeros"
ok "deallocate (blkdiscard) and write-zeroes (blkdiscard -z) read back zeros"
disconnect

connect --hdr-digest --data-digest
D1=$(wait_dev 1)
fio --name=dg --filename="$D1" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=8 --size=8m \
    --verify=crc32c --verify_fatal=1 --output=/tmp/fio4.txt || { cat /tmp/fio4.txt; fail "fio with digests"; }
disconnect
ok "connect --hdr-digest --data-digest and verified I/O"

for i in $(seq 1 20); do connect; wait_dev 1 >/dev/null; disconnect; done
ok "20 connect/disconnect cycles"
echo "guest: all NVMe/TCP checks passed"
