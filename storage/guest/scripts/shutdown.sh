#!/bin/sh
# shutdown, poweroff, halt and reboot for the debootstrap images, which have no init system to ask.
# qemu-ga runs `shutdown -P|-H|-r +0 "message"` for guest-shutdown and needs a zero exit status.
# Power off through sysrq: it works from any process, with nothing but /proc.
action=o
case "${0##*/}" in
    reboot) action=b ;;
esac
for arg in "$@"; do
    case "$arg" in
        -r|--reboot) action=b ;;
        -P|-H|-h|--poweroff|--halt) action=o ;;
    esac
done
sync
echo "$action" > /proc/sysrq-trigger
