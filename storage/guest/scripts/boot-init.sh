#!/bin/sh
# /init of the boot initramfs (busybox): load the drivers, mount the image's root disk and hand
# over to the root's own init. Kernel arguments: oh.root= (default /dev/vda), oh.rootfstype=
# (ext4), oh.init= (/sbin/openhosting-init).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/oh-load-modules

root=/dev/vda
rootfstype=ext4
rootinit=/sbin/openhosting-init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        oh.root=*) root=${arg#oh.root=} ;;
        oh.rootfstype=*) rootfstype=${arg#oh.rootfstype=} ;;
        oh.init=*) rootinit=${arg#oh.init=} ;;
    esac
done

fail() {
    echo "OPENHOSTING-BOOT-FAILED: $*"
    sync
    poweroff -f
}

# The loopback device lives in the network namespace, which survives switch_root: bring it up
# here so that images need no network tools of their own.
ip link set lo up

# Disks are probed asynchronously after virtio_blk loads.
tries=0
while [ ! -b "$root" ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 200 ] && fail "no root device $root"
    sleep 0.05
done
mount -t "$rootfstype" -o rw "$root" /newroot || fail "cannot mount $root ($rootfstype)"
[ -x "/newroot$rootinit" ] || fail "no executable $rootinit on $root"

for fs in dev proc sys; do
    mkdir -p "/newroot/$fs"
    mount --move "/$fs" "/newroot/$fs"
done
exec switch_root /newroot "$rootinit"
