#!/bin/busybox sh
# PID 1 of the vocloud test guest (a busybox initramfs on the Debian kernel).
#
# It does only what the integration tests and the demo need to observe from outside:
#   * loads the modules the Debian kernel builds as modules (virtio, ext4, isofs, ACPI button),
#   * mounts the root disk (vda, ext4) read-only if one is attached and reports its id,
#   * mounts a cloud-init NoCloud seed (label "cidata", CD-ROM or virtio disk) and echoes its
#     hostname and context variables on the console, proving contextualization end to end,
#   * prints the ready marker the qemu driver waits for,
#   * runs busybox acpid (started before the marker) so the ACPI power button powers it off.
# Everything prints to the serial console, which the driver keeps as the VM's log.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp /mnt/root /mnt/context

while read -r mod; do
    [ -n "$mod" ] && insmod "/lib/modules/$mod.ko" 2>/dev/null
done < /etc/vocloud/modules

# Block devices are probed asynchronously after the modules load: give them a moment.
wait_for_block() {
    i=0
    while [ $i -lt 20 ]; do
        ls /sys/class/block/ 2>/dev/null | grep -qE '^(vd|sr)' && return 0
        usleep 50000
        i=$((i + 1))
    done
    return 1
}

find_seed() {
    for dev in /dev/vd? /dev/sr0; do
        [ -b "$dev" ] || continue
        if mount -t iso9660 -o ro "$dev" /mnt/context 2>/dev/null; then
            if [ -f /mnt/context/meta-data ]; then
                echo "$dev"
                return 0
            fi
            umount /mnt/context
        fi
    done
    return 1
}

if [ -n "$(ls /sys/bus/virtio/devices/ 2>/dev/null)" ] || [ -e /sys/class/block/sr0 ]; then
    wait_for_block
fi

if [ -b /dev/vda ] && mount -t ext4 -o ro /dev/vda /mnt/root 2>/dev/null; then
    echo "VOCLOUD-DISK vda=$(cat /mnt/root/vocloud-disk-id 2>/dev/null)"
fi

seed=$(find_seed)
if [ -n "$seed" ]; then
    host=$(sed -n 's/^local-hostname: *//p' /mnt/context/meta-data | tr -d '"')
    [ -n "$host" ] && hostname "$host"
    echo "VOCLOUD-CONTEXT-SEED $seed hostname=$(hostname)"
    if [ -f /mnt/context/context.sh ]; then
        # context.sh holds KEY='value' lines written by vocloud.drivers.context.
        sed -n "s/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p" /mnt/context/context.sh | while read -r key; do
            val=$(. /mnt/context/context.sh; eval "printf '%s' \"\$$key\"")
            echo "VOCLOUD-CONTEXT $key=$val"
        done
    fi
fi

mkdir -p /etc/acpi/PWRF
cat > /etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo "VOCLOUD-POWEROFF"
sync
poweroff -f
EOF
chmod +x /etc/acpi/PWRF/00000080

# acpid must hold the power button's event device *before* the marker: a button press that
# arrives while nobody has the device open is lost, and the driver may press it right after READY.
mkdir -p /var/log
cd /etc/acpi
acpid -f -c /etc/acpi -l /dev/console &
acpid_pid=$!
i=0
while [ $i -lt 200 ] && ! ls -l /proc/$acpid_pid/fd 2>/dev/null | grep -q /dev/input/event; do
    usleep 10000
    i=$((i + 1))
done

echo "VOCLOUD-READY $(hostname) uptime=$(cut -d' ' -f1 /proc/uptime)"

wait $acpid_pid
echo "VOCLOUD-ACPID-EXITED"
while :; do sleep 3600; done
