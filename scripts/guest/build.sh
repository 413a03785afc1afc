#!/usr/bin/env bash
# scripts/guest/build.sh - build the Linux test guest used by scripts/guest/run.sh.
#
# The guest is a stock Debian kernel booted under qemu (TCG). Its nvme-tcp initiator,
# nvme-cli and fio act as a real client of a ferrite target running on the host (see
# /work/shared/notes/linux-guest.md for the recipe this follows).
#
# Steps (each one is skipped when its output is already in the cache, so re-runs are fast):
#   1. apt-get install the host packages (qemu-system-x86 busybox-static cpio kmod file
#      xz-utils zstd nvme-cli fio); retried 3x because the docker-clean apt hook can delete
#      downloaded .debs half-way through a multi-package install.
#   2. apt-get download the kernel package, dpkg -x it, depmod the module tree.
#   3. build the initramfs: static busybox, scripts/guest/init.sh as /init, and the modules
#      below with their dependencies (resolved by kmod's `modprobe --show-depends`).
#   4. cut vmlinux out of the bzImage so qemu can boot it through PVH (skips the slow
#      in-guest decompression under TCG).
#
# Knobs (environment):
#   FERRITE_GUEST_DIR  cache directory (default /var/tmp/ferrite-guest)
#   KPKG               kernel package (default linux-image-6.1.0-56-amd64); KPKG=auto uses
#                      whatever linux-image-amd64 depends on. If the pinned package has left
#                      the archive, falls back to that dependency with a warning.
#   GUEST_FORCE=1      rebuild the initramfs and vmlinux even if cached
#
# Output layout:
#   $FERRITE_GUEST_DIR/debs/*.deb                 downloaded kernel packages
#   $FERRITE_GUEST_DIR/kroot/$KVER/               unpacked kernel package (full module tree)
#   $FERRITE_GUEST_DIR/out/$KVER/{vmlinux,vmlinuz,initrd.gz}
#   $FERRITE_GUEST_DIR/current                    KVER of the last successful build
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${FERRITE_GUEST_DIR:-/var/tmp/ferrite-guest}
KPKG=${KPKG:-linux-image-6.1.0-56-amd64}
GUEST_FORCE=${GUEST_FORCE:-0}

HOST_PKGS=(qemu-system-x86 busybox-static cpio kmod file xz-utils zstd nvme-cli fio)

# Loaded by /init at boot (must exist).
BOOT_MODULES=(virtio_pci virtio_net virtio_blk 9pnet_virtio 9p overlay)
# Copied into the initramfs so they load even without the host tree (missing ones are skipped).
EXTRA_MODULES=(configfs nvme-core nvme-fabrics nvme-tcp nvme-rdma nvmet nvmet-tcp nvmet-rdma
               null_blk loop nbd ublk_drv crc32c_generic crc32c-intel crc32_generic crc32-pclmul
               ib_core ib_uverbs ib_umad rdma_cm rdma_ucm rdma_rxe)

T0=$SECONDS
log()  { printf '[guest-build %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
warn() { printf '[guest-build %3ds] WARNING: %s\n' "$((SECONDS - T0))" "$*" >&2; }
die()  { printf '[guest-build %3ds] ERROR: %s\n' "$((SECONDS - T0))" "$*" >&2; exit 1; }

mkdir -p "$DIR"/debs "$DIR"/kroot "$DIR"/out
# One build at a time per cache directory.
exec 9>"$DIR/.lock"
flock 9

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() {
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        if ! apt-get update -q >"$DIR/apt.log" 2>&1; then
            tail -n 5 "$DIR/apt.log" >&2
            warn "apt-get update failed; trying with the existing lists"
        fi
        APT_UPDATED=1
    fi
}

# --- 1. host packages ---------------------------------------------------------------------
pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

missing=()
for p in "${HOST_PKGS[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}) and not root: install them first"
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get"
    apt_update
    log "installing: ${missing[*]}"
    ok=0
    for attempt in 1 2 3; do
        if apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1; then
            ok=1
            break
        fi
        tail -n 5 "$DIR/apt.log" >&2
        warn "apt-get install failed (attempt $attempt/3; log: $DIR/apt.log)"
    done
    ((ok)) || die "apt-get install ${missing[*]} failed 3 times"
else
    log "host packages present"
fi
for c in qemu-system-x86_64 cpio modprobe depmod file xz zstd nvme fio; do
    command -v "$c" >/dev/null || die "$c not found after install"
done
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (busybox-static)"
[[ $(file -L "$BUSYBOX") == *"statically linked"* ]] || die "$BUSYBOX is not static (busybox-static?)"

# --- 2. kernel package --------------------------------------------------------------------
apt_candidate() {
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
    [[ -n $c && $c != "(none)" ]]
}
meta_dependency() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

stamp_for() { printf '%s/kroot/.pkg-%s' "$DIR" "$1"; }

if [[ $KPKG != auto && -s $(stamp_for "$KPKG") ]]; then
    log "kernel package $KPKG already unpacked"
else
    apt_update
    if [[ $KPKG == auto ]]; then
        KPKG=$(meta_dependency)
        [[ -n $KPKG ]] || die "cannot resolve linux-image-amd64's dependency"
        log "KPKG=auto -> $KPKG"
    elif ! apt_candidate "$KPKG"; then
        fallback=$(meta_dependency)
        [[ -n $fallback ]] || die "$KPKG is not in the archive and linux-image-amd64 cannot be resolved"
        warn "$KPKG is no longer in the archive; falling back to $fallback (linux-image-amd64's dependency)"
        KPKG=$fallback
    fi
fi

STAMP=$(stamp_for "$KPKG")
if [[ -s $STAMP ]]; then
    KVER=$(<"$STAMP")
else
    deb=$(find "$DIR/debs" -maxdepth 1 -name "${KPKG}_*.deb" -print -quit)
    if [[ -z $deb ]]; then
        log "downloading $KPKG"
        if ! (cd "$DIR/debs" && apt-get download -q "$KPKG" >"$DIR/download.log" 2>&1); then
            cat "$DIR/download.log" >&2
            die "apt-get download $KPKG failed"
        fi
        deb=$(find "$DIR/debs" -maxdepth 1 -name "${KPKG}_*.deb" -print -quit)
        [[ -n $deb ]] || die "apt-get download $KPKG produced no .deb"
    fi
    log "unpacking $(basename "$deb")"
    tmp="$DIR/kroot/.unpack.$$"
    rm -rf "$tmp"
    dpkg -x "$deb" "$tmp"
    mdir=$(find "$tmp/lib/modules" "$tmp/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d \
        -print -quit 2>/dev/null || true)
    [[ -n $mdir ]] || die "no lib/modules/<version> in $deb"
    KVER=$(basename "$mdir")
    # kmod (-d ROOT) looks in ROOT/lib/modules: make that work for a /usr/lib-only package.
    if [[ ! -e $tmp/lib/modules && -d $tmp/usr/lib/modules ]]; then
        ln -s usr/lib "$tmp/lib"
    fi
    rm -rf "$DIR/kroot/$KVER"
    mv "$tmp" "$DIR/kroot/$KVER"
    log "depmod $KVER"
    depmod -b "$DIR/kroot/$KVER" "$KVER"
    printf '%s\n' "$KVER" >"$STAMP"
fi
KROOT=$DIR/kroot/$KVER
MODDIR=$KROOT/lib/modules/$KVER
OUT=$DIR/out/$KVER
mkdir -p "$OUT"
[[ -d $MODDIR ]] || die "$MODDIR missing (remove $STAMP and re-run)"
log "kernel $KVER ($KPKG)"

# --- 3. initramfs -------------------------------------------------------------------------
# Rebuilt whenever an input changes: this script, init.sh, busybox, or the kernel.
key=$({
    sha256sum "$HERE/build.sh" "$HERE/init.sh" "$BUSYBOX"
    printf '%s\n' "$KVER" "${BOOT_MODULES[*]}" "${EXTRA_MODULES[*]}"
} | sed "s#  .*/#  #" | sha256sum | cut -d' ' -f1)

if [[ $GUEST_FORCE != 1 && -s $OUT/initrd.gz && $(cat "$OUT/initrd.key" 2>/dev/null) == "$key" ]]; then
    log "initramfs up to date"
else
    log "building initramfs"
    IROOT=$OUT/.initramfs
    rm -rf "$IROOT"
    mkdir -p "$IROOT"/{bin,sbin,dev,proc,sys,job,lower,upper,newroot,tmp,etc,lib/modules/"$KVER"}
    cp "$BUSYBOX" "$IROOT/bin/busybox"
    ln -s busybox "$IROOT/bin/sh"
    install -m 0755 "$HERE/init.sh" "$IROOT/init"
    printf '%s\n' "$KVER" >"$IROOT/etc/kver"
    printf '%s\n' "${BOOT_MODULES[@]}" >"$IROOT/etc/boot-modules"

    declare -A seen=()
    nmods=0
    add_module() { # $1 = module name; returns 1 if the kernel has no such module
        local m=$1 out line path rel
        if ! out=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>&1); then
            return 1
        fi
        while IFS= read -r line; do
            case $line in
            insmod\ *)
                path=${line#insmod }
                path=${path%% *}
                rel=${path#*/lib/modules/"$KVER"/}
                [[ -n ${seen[$rel]:-} ]] && continue
                seen[$rel]=1
                mkdir -p "$IROOT/lib/modules/$KVER/$(dirname "$rel")"
                cp "$MODDIR/$rel" "$IROOT/lib/modules/$KVER/$rel"
                nmods=$((nmods + 1))
                ;;
            builtin\ *) ;;
            esac
        done <<<"$out"
    }
    for m in "${BOOT_MODULES[@]}"; do
        add_module "$m" || die "boot module $m not found in $KVER"
    done
    skipped=()
    for m in "${EXTRA_MODULES[@]}"; do
        add_module "$m" || skipped+=("$m")
    done
    ((${#skipped[@]} == 0)) || log "not in this kernel (skipped): ${skipped[*]}"
    for f in modules.order modules.builtin modules.builtin.modinfo; do
        [[ -e $MODDIR/$f ]] && cp "$MODDIR/$f" "$IROOT/lib/modules/$KVER/"
    done
    depmod -b "$IROOT" "$KVER"
    (cd "$IROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) \
        >"$OUT/initrd.gz.tmp"
    mv "$OUT/initrd.gz.tmp" "$OUT/initrd.gz"
    rm -rf "$IROOT"
    printf '%s\n' "$key" >"$OUT/initrd.key"
    log "initramfs: $nmods modules, $(du -h "$OUT/initrd.gz" | cut -f1)"
fi

# --- 4. vmlinux (PVH boot) ----------------------------------------------------------------
BZ=$KROOT/boot/vmlinuz-$KVER
[[ -f $BZ ]] || die "$BZ missing"
ln -sf "$BZ" "$OUT/vmlinuz"

is_elf() { [[ $(head -c 4 "$1" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; }

# Find each compression magic in the bzImage, decompress from there, keep the first ELF.
extract_vmlinux() {
    local img=$1 out=$2 magic tool off
    local -a cands=('\xfd\x37\x7a\x58\x5a\x00:xz' '\x28\xb5\x2f\xfd:zstd' '\x1f\x8b\x08:gzip'
                    '\x5d\x00\x00\x00:lzma' '\x02\x21\x4c\x18:lz4' 'BZh:bzip2')
    for c in "${cands[@]}"; do
        magic=${c%:*}
        tool=${c##*:}
        command -v "$tool" >/dev/null || continue
        while IFS=: read -r off _; do
            tail -c +"$((off + 1))" "$img" | "$tool" -dc >"$out.tmp" 2>/dev/null || true
            if [[ -s $out.tmp ]] && is_elf "$out.tmp"; then
                mv "$out.tmp" "$out"
                log "vmlinux: $tool stream at offset $off, $(du -h "$out" | cut -f1)"
                return 0
            fi
        done < <(LC_ALL=C grep -obUaP "$magic" "$img" | head -n 16)
    done
    rm -f "$out.tmp"
    return 1
}

if [[ $GUEST_FORCE != 1 && -s $OUT/vmlinux && $OUT/vmlinux -nt $BZ ]]; then
    log "vmlinux up to date"
else
    log "extracting vmlinux from $(basename "$BZ")"
    extract_vmlinux "$BZ" "$OUT/vmlinux" ||
        die "could not extract vmlinux from $BZ (VM_BZIMAGE=1 boots the bzImage instead)"
    [[ $(file -b "$OUT/vmlinux") == *"ELF 64-bit"* ]] || die "extracted vmlinux is not a 64-bit ELF"
fi

printf '%s\n' "$KVER" >"$DIR/current.tmp"
mv "$DIR/current.tmp" "$DIR/current"
log "done: $OUT (vmlinux, initrd.gz)"
