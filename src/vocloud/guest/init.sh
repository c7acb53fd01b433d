#!/bin/busybox sh
# PID 1 of the vocloud test guest (a busybox initramfs on the Debian kernel).
#
# It does only what the integration tests and the demo need to observe from outside:
#   * loads the modules the Debian kernel builds as modules (virtio, ext4, isofs, ACPI button),
#   * mounts the root disk (vda, ext4) read-only if one is attached and reports its id,
#   * mounts a cloud-init NoCloud seed (label "cidata", CD-ROM or virtio disk) and echoes its
#     hostname and context variables on the console, proving contextualization end to end,
#   * configures each NIC from OpenNebula's ETHn_IP/_MAC/_MASK/_GATEWAY context variables
#     (CONTEXT=[NETWORK="YES"]) so the host and other guests reach it at its lease,
#   * prints the ready marker the qemu driver waits for,
#   * runs busybox acpid (started before the marker) so the ACPI power button powers it off,
#   * pings the addresses CONTEXT=[PING=...] names and prints each result (tests only).
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

# ETHn_* from context.sh -> the NIC with that MAC gets the address (busybox ip and ipcalc).
configure_nics() {
    ip link set lo up
    n=0
    while [ $n -lt 8 ]; do
        # a subshell, so a context variable named PATH or IFS cannot change this script
        vals=$(. /mnt/context/context.sh; eval "printf '%s|%s|%s|%s' \"\$ETH${n}_IP\" \"\$ETH${n}_MAC\" \"\${ETH${n}_MASK:-24}\" \"\$ETH${n}_GATEWAY\"")
        old_ifs=$IFS
        IFS='|'
        set -- $vals
        IFS=$old_ifs
        addr=$1 mac=$(echo "$2" | tr 'A-F' 'a-f') mask=$3 gw=$4
        [ -n "$addr" ] && [ -n "$mac" ] || break
        dev=""
        for path in /sys/class/net/*; do
            [ "$(cat "$path/address" 2>/dev/null)" = "$mac" ] && dev=${path##*/}
        done
        if [ -z "$dev" ]; then
            echo "VOCLOUD-NET-ERROR eth$n: no NIC with MAC $mac"
        else
            case "$mask" in
                *.*) prefix=$(ipcalc -p "$addr" "$mask" | sed 's/PREFIX=//') ;;
                *) prefix=$mask ;;
            esac
            ip link set "$dev" up
            ip addr add "$addr/$prefix" dev "$dev" && echo "VOCLOUD-NET $dev $addr/$prefix"
            [ -n "$gw" ] && ip route add default via "$gw" dev "$dev"
        fi
        n=$((n + 1))
    done
}

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
        configure_nics
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

# CONTEXT=[TICK=<ms>]: a counter on the console every <ms> milliseconds, so a test can see that a
# migrated guest kept running (the count goes on, never restarts) and for how long it stood still.
tick=""
[ -f /mnt/context/context.sh ] && tick=$(. /mnt/context/context.sh; printf '%s' "${TICK:-}")
case "$tick" in
    ''|*[!0-9]*) ;;
    *) (n=0; while :; do n=$((n + 1)); echo "VOCLOUD-TICK $n $(cut -d' ' -f1 /proc/uptime)"
        usleep $((tick * 1000)); done) & ;;
esac

# CONTEXT=[PING="<ip> <ip> ..."]: once a second this guest pings each address once and prints
# "VOCLOUD-PING <round> <ip> ok|fail", so a test sees from outside what the guest reaches (the
# isolation acceptance test). Test guest only: nothing host-side ever runs or trusts this.
targets=""
[ -f /mnt/context/context.sh ] && targets=$(. /mnt/context/context.sh; printf '%s' "${PING:-}")
if [ -n "$targets" ]; then
    (r=0; while :; do
        r=$((r + 1))
        for ip in $targets; do
            case "$ip" in *[!0-9.]*) continue ;; esac
            if ping -c 1 -W 1 "$ip" >/dev/null 2>&1; then res=ok; else res=fail; fi
            echo "VOCLOUD-PING $r $ip $res"
        done
        sleep 1
    done) &
fi

wait $acpid_pid
echo "VOCLOUD-ACPID-EXITED"
while :; do sleep 3600; done
