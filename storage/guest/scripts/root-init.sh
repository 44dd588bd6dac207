#!/bin/bash
# PID 1 of the debootstrap images, started by the boot initramfs with /dev, /proc and /sys mounted.
# No udev, no systemd: set up the few mounts and device links a sandbox needs, run the QEMU guest
# agent on its virtio port, and power off on an ACPI power-button press. bash as PID 1 reaps the
# orphans that end up here (its SIGCHLD handler waits for any child).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
umask 022

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
mkdir -p /run/lock
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
[ -s /etc/hostname ] && cat /etc/hostname > /proc/sys/kernel/hostname

# What udev would do: /dev/virtio-ports/<name> for each named virtio-serial port. The host
# sends a port's name shortly after the port appears, so give the agent's port a moment.
link_virtio_ports() {
    mkdir -p /dev/virtio-ports
    for port in /sys/class/virtio-ports/*; do
        [ -r "$port/name" ] || continue
        name=$(cat "$port/name")
        [ -n "$name" ] && ln -sfn "../${port##*/}" "/dev/virtio-ports/$name"
    done
}
agent=/dev/virtio-ports/org.qemu.guest_agent.0
for _ in $(seq 50); do
    link_virtio_ports
    [ -e "$agent" ] && break
    sleep 0.1
done

if [ -e "$agent" ]; then
    # Restart the agent if it dies: it is the host's only way in.
    ( while :; do qemu-ga -m virtio-serial -p "$agent"; sleep 0.5; done ) &
else
    echo "OPENHOSTING-NO-AGENT: no virtio-serial port named org.qemu.guest_agent.0"
fi

# ACPI shutdown (virsh shutdown --mode acpi): the button driver reports the press as an input
# event; any read from its event node means "pressed".
for dev in /sys/class/input/event*; do
    [ "$(cat "$dev/device/name" 2>/dev/null)" = "Power Button" ] || continue
    ( dd if="/dev/input/${dev##*/}" of=/dev/null bs=4096 count=1 2>/dev/null && /sbin/poweroff ) &
done

echo "OPENHOSTING-GUEST-UP"
while :; do
    sleep 86400 &
    wait $!
done
