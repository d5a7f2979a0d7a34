#!/bin/sh
# PID 1 of the guest initramfs of `cargo xtask kernels`: mounts what mcblast
# and iproute2 need, loads the lab's modules, runs the smoke suite with its
# results on the second serial port (a file on the host), and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
# The lab's modules; the rest load on demand (the kernel runs /sbin/modprobe).
for m in veth bridge nf_tables nft_numgen; do
    modprobe "$m" 2>/dev/null || grep -qw "$m" "/lib/modules/$(uname -r)/modules.builtin" 2>/dev/null ||
        echo "init: cannot load module $m"
done
printf '@@MCBK boot secs=%s\n' "$(cut -d' ' -f1 /proc/uptime)" >>/dev/ttyS1
mkdir -p /tmp/mcbk
MCBLAST=/usr/bin/mcblast MCBK_OUT=/dev/ttyS1 MCBK_TMP=/tmp/mcbk MCBLAST_LAB_PREFIX=mcbk- sh /smoke.sh
sync
poweroff -f
