#!/bin/busybox sh
# PID 1 of the vocloud worker-node guest: a busybox initramfs on the Debian kernel that runs the
# *host's* munged and slurmd from a dedicated export tree (vocloud.guest.export: the daemons, their
# libraries, a minimal /etc, the site's batch configuration; never the host's /), shared
# read-only over virtio-9p (the virtme approach; see docs/worker.md for why not a debootstrap image).
#
#   1. load the modules (virtio, 9p, overlay, isofs, ACPI button),
#   2. read the context (NoCloud seed, context.sh) — node name, controller, munge key, address,
#   3. mount the export tree (9p tag "hostroot") on /newroot, read-only, and give it writable
#      tmpfs-backed overlays on /etc /var /tmp /root and a fresh tmpfs on /run,
#   4. configure eth0 from ETH0_IP/ETH0_MASK, set the hostname,
#   5. write the munge key (never echoed), start munged, start slurmd (configless or with a
#      delivered slurm.conf; dynamic node with -Z when SLURM_DYNAMIC_CONF is set),
#   6. print VOCLOUD-READY and hand the power button to acpid (stop slurmd, power off).
# Grid Engine mode (the context carries SGE_ROOT): steps 5-6 start the host's sge_execd instead
# of munged + slurmd, with the qmaster's name in /etc/hosts (docs/worker.md, "Grid Engine").
# Progress lines start with VOCLOUD-WORKER; a fatal step prints VOCLOUD-WORKER-FAILED <why>.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp /mnt/context /newroot /ovl

say() { echo "VOCLOUD-WORKER $*"; }
fail() {
    echo "VOCLOUD-WORKER-FAILED $*"
    # Stay up (and power-button-able) so the failure is on the console for `vocloud vm log`.
    setup_acpi
    while :; do sleep 3600; done
}

setup_acpi() {
    mkdir -p /etc/acpi/PWRF
    cat > /etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo "VOCLOUD-POWEROFF"
[ -f /newroot/run/slurmd.pid ] && kill -TERM "$(cat /newroot/run/slurmd.pid)" 2>/dev/null
[ -f /newroot/run/sge_execd.pid ] && kill -TERM "$(cat /newroot/run/sge_execd.pid)" 2>/dev/null
sleep 1
sync
poweroff -f
EOF
    chmod +x /etc/acpi/PWRF/00000080
    cd /etc/acpi
    acpid -f -c /etc/acpi -l /dev/console &
    acpid_pid=$!
    cd /
    # acpid must hold the button's event device before READY, or an early press is lost.
    i=0
    while [ $i -lt 200 ] && ! ls -l /proc/$acpid_pid/fd 2>/dev/null | grep -q /dev/input/event; do
        usleep 10000
        i=$((i + 1))
    done
}

while read -r mod; do
    [ -n "$mod" ] && insmod "/lib/modules/$mod.ko" 2>/dev/null
done < /etc/vocloud/modules

# ---------------------------------------------------------------- context (NoCloud seed)
i=0
while [ $i -lt 40 ] && ! ls /sys/class/block/ 2>/dev/null | grep -q '^vd'; do
    usleep 50000
    i=$((i + 1))
done
seed=""
for dev in /dev/vd?; do
    [ -b "$dev" ] || continue
    if mount -t iso9660 -o ro "$dev" /mnt/context 2>/dev/null; then
        [ -f /mnt/context/context.sh ] && { seed=$dev; break; }
        umount /mnt/context
    fi
done
[ -n "$seed" ] || fail "no context seed (cidata ISO with context.sh) attached"
# context.sh holds KEY='value' lines written (and validated) by vocloud.drivers.context.
. /mnt/context/context.sh
umount /mnt/context
# A burst worker (docs/bursting.md) runs at another site, started through that site's EC2 API:
# the first site's vocloud sent the worker's context as UserData (KEY='value' lines), and the
# site running this guest put it in its own context as USER_DATA (base64 when it came through
# EC2). Its variables fill in only what this site's context does not say (the network is the
# running site's). The text is never run: every line must be KEY='value' (capital letters,
# digits, _; a value without quotes), or the worker fails saying which line is wrong.
if [ -n "$USER_DATA" ]; then
    if [ "$USER_DATA_ENCODING" = base64 ]; then
        case "$USER_DATA" in *[!A-Za-z0-9+/=]*) fail "USER_DATA is not base64" ;; esac
        echo "$USER_DATA" | base64 -d > /run/user-data 2>/dev/null || fail "USER_DATA is not base64"
    else
        printf '%s\n' "$USER_DATA" > /run/user-data
    fi
    unset USER_DATA USER_DATA_ENCODING
    taken=0
    lineno=0
    while IFS= read -r line || [ -n "$line" ]; do
        lineno=$((lineno + 1))
        case "$line" in ''|'#'*) continue ;; esac
        key=${line%%=*}
        val=${line#*=}
        echo "$key" | grep -qE '^[A-Z][A-Z0-9_]*$' || fail "user data line $lineno is not KEY='value'"
        case "$val" in "'"*"'") val=${val#"'"}; val=${val%"'"} ;; *) fail "user data line $lineno ($key): the value is not in single quotes" ;; esac
        case "$val" in *"'"*) fail "user data line $lineno ($key): the value holds a quote" ;; esac
        case "$key" in USER_DATA|USER_DATA_ENCODING) continue ;; esac
        eval "[ -n \"\${$key+x}\" ]" && continue  # set by this site's context (or init): theirs
        export "$key=$val"
        taken=$((taken + 1))
    done < /run/user-data
    rm -f /run/user-data
    say "context: $taken variables from user data"
fi
if [ -n "$SGE_ROOT" ]; then
    # Grid Engine worker: no munge, no slurmd; the node name is SGE_NODENAME.
    SLURM_NODENAME=${SGE_NODENAME:-$HOSTNAME}
    say "context from $seed node=${SLURM_NODENAME:-?} qmaster=${SGE_QMASTER_HOST:-?}(${SGE_QMASTER_IP:-dns}) gridengine"
    [ -n "$SLURM_NODENAME" ] || fail "context has no SGE_NODENAME"
else
say "context from $seed node=${SLURM_NODENAME:-?} controller=${SLURM_CONF_SERVER:-${SLURM_CONTROLLER:-?}}"
[ -n "$SLURM_NODENAME" ] || fail "context has no SLURM_NODENAME"
[ -n "$MUNGE_KEY" ] || fail "context has no MUNGE_KEY"
fi

# ---------------------------------------------------------------- export tree over 9p
grep -q 9p /proc/filesystems || fail "kernel has no 9p filesystem (modules not loaded)"
root=""
if mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /newroot 2>/dev/null; then
    root="9p hostroot"
else
    # No virtfs device: a site that cannot export a host directory to this VM (a cloud running
    # it through EC2, where such attributes are administrators' only) attaches the export tree
    # as a disk image instead (an ISO 9660 or ext4 image of it, its manifest at the top).
    for dev in /dev/vd?; do
        [ -b "$dev" ] && [ "$dev" != "$seed" ] || continue
        for fs in iso9660 ext4; do
            mount -t $fs -o ro "$dev" /newroot 2>/dev/null || continue
            [ -f /newroot/.vocloud-export.json ] && { root="$dev ($fs)"; break 2; }
            umount /newroot
        done
    done
fi
[ -n "$root" ] || fail "cannot mount the export tree (9p tag hostroot): is qemu started with the virtfs device? (no disk holds one either)"
say "export tree from $root"
# What guest root can read of the host: the exfiltration regression test (and an admin checking
# a tree) asks with VOCLOUD_PROBE_PATHS (absolute paths) and VOCLOUD_PROBE_TEXT (a string to look
# for in every file); only presence is printed, never a file's content. Before any overlay, so
# the answer is about the 9p export alone.
if [ -n "$VOCLOUD_PROBE_PATHS" ]; then
    for p in $VOCLOUD_PROBE_PATHS; do
        if [ -e "/newroot$p" ] || [ -L "/newroot$p" ]; then say "PROBE present $p"; else say "PROBE absent $p"; fi
    done
fi
if [ -n "$VOCLOUD_PROBE_TEXT" ]; then
    hits=$(grep -rlsF -- "$VOCLOUD_PROBE_TEXT" /newroot 2>/dev/null | head -5 | tr '\n' ' ')
    say "PROBE text ${hits:-not-found} files=$(find /newroot -xdev 2>/dev/null | wc -l)"
fi
unset VOCLOUD_PROBE_PATHS VOCLOUD_PROBE_TEXT
mount -t tmpfs -o mode=0755 ovl /ovl
for d in etc var tmp root; do
    [ -d "/newroot/$d" ] || continue
    mkdir -p "/ovl/$d/up" "/ovl/$d/wk"
    mount -t overlay overlay -o "lowerdir=/newroot/$d,upperdir=/ovl/$d/up,workdir=/ovl/$d/wk" \
        "/newroot/$d" || fail "overlay on /$d failed"
done
mount -t tmpfs -o mode=0755 run /newroot/run
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
# slurmd 22.05 initializes its cgroup plugin even with proctrack/linuxproc and task/none; its
# cgroup/v2 plugin wants a systemd (dbus) to delegate a scope, which this guest has not, so the
# guest offers the v1 layout (a tmpfs of per-controller hierarchies), which it autodetects.
mount -t tmpfs -o mode=0755 cgroup /newroot/sys/fs/cgroup
for c in cpuset cpu cpuacct memory devices freezer pids; do
    mkdir -p "/newroot/sys/fs/cgroup/$c"
    mount -t cgroup -o "$c" cgroup "/newroot/sys/fs/cgroup/$c" 2>/dev/null || rmdir "/newroot/sys/fs/cgroup/$c"
done
mkdir -p /newroot/sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /newroot/sys/fs/cgroup/systemd
mount -o bind /dev /newroot/dev
mkdir -p /newroot/dev/shm && mount -t tmpfs -o mode=1777 shm /newroot/dev/shm

# ---------------------------------------------------------------- network and name
hostname "$SLURM_NODENAME"
echo "$SLURM_NODENAME" > /newroot/etc/hostname
ip link set lo up
if [ -n "$ETH0_IP" ]; then
    dev=eth0
    if [ -n "$ETH0_MAC" ]; then
        for n in /sys/class/net/*; do
            [ "$(cat "$n/address" 2>/dev/null)" = "$(echo "$ETH0_MAC" | tr 'A-F' 'a-f')" ] && dev=${n##*/}
        done
    fi
    case "${ETH0_MASK:-24}" in
        *.*) prefix=$(ipcalc -p "$ETH0_IP" "$ETH0_MASK" | sed 's/PREFIX=//') ;;
        *) prefix=${ETH0_MASK:-24} ;;
    esac
    ip link set "$dev" up
    ip addr add "$ETH0_IP/$prefix" dev "$dev" || fail "cannot set $ETH0_IP/$prefix on $dev"
    [ -n "$ETH0_GATEWAY" ] && ip route add default via "$ETH0_GATEWAY"
    printf '127.0.0.1 localhost\n%s %s\n' "$ETH0_IP" "$SLURM_NODENAME" > /newroot/etc/hosts
    say "net $dev $ETH0_IP/$prefix"
fi
# Grid Engine resolves the qmaster by name (act_qmaster) and checks names both ways: without a
# site DNS that knows it, the context names its address.
if [ -n "$SGE_ROOT" ] && [ -n "$SGE_QMASTER_IP" ] && [ -n "$SGE_QMASTER_HOST" ]; then
    [ -f /newroot/etc/hosts ] || echo '127.0.0.1 localhost' > /newroot/etc/hosts
    echo "$SGE_QMASTER_IP $SGE_QMASTER_HOST" >> /newroot/etc/hosts
fi

# Commands in the export tree run with a clean environment: the context (and its key) stays here.
inroot() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot /newroot "$@"; }

# ---------------------------------------------------------------- Grid Engine execd
# The execd is the host's (9p root), run like slurmd with chroot and a clean environment, and
# joins the cell named by SGE_ROOT/SGE_CELL (the cell's common/ directory must be in the shared
# tree). The qmaster accepts it only once the site registered this host as an execution host
# (vocloud's Grid Engine adapter does so when the VM gets its lease): until then sge_execd exits,
# and this loop starts it again.
if [ -n "$SGE_ROOT" ]; then
    cell=${SGE_CELL:-default}
    [ -f "/newroot$SGE_ROOT/$cell/common/act_qmaster" ] \
        || fail "no Grid Engine cell $SGE_ROOT/$cell in the export tree (python -m vocloud.guest.export --include)"
    set -- SGE_ROOT="$SGE_ROOT" SGE_CELL="$cell"
    # The execd's spool (the cell's execd_spool_dir) is written in the guest's overlays: make it
    # when the export tree has no such directory.
    [ -n "$SGE_EXECD_SPOOL" ] && mkdir -p "/newroot$SGE_EXECD_SPOOL" 2>/dev/null
    [ -n "$SGE_QMASTER_PORT" ] && set -- "$@" SGE_QMASTER_PORT="$SGE_QMASTER_PORT"
    [ -n "$SGE_EXECD_PORT" ] && set -- "$@" SGE_EXECD_PORT="$SGE_EXECD_PORT"
    execd_pid() {
        for c in /proc/[0-9]*/comm; do
            [ "$(cat "$c" 2>/dev/null)" = sge_execd ] && { p=${c#/proc/}; echo "${p%/comm}"; return; }
        done
    }
    tries=0
    while :; do
        inroot env "$@" sh -c 'sge_execd >> /run/sge_execd.out 2>&1'
        sleep 3
        pid=$(execd_pid)
        [ -n "$pid" ] && break
        tries=$((tries + 1))
        [ $tries -eq 1 ] && say "sge_execd not accepted yet: $(tail -2 /newroot/run/sge_execd.out | tr '\n' ' ') $(tail -2 /newroot/tmp/execd_messages.* 2>/dev/null | tr '\n' ' ')"
        [ $tries -ge 100 ] && fail "sge_execd did not stay up: $(tail -3 /newroot/run/sge_execd.out) $(tail -3 /newroot/tmp/execd_messages.* 2>/dev/null)"
        sleep 2
    done
    echo "$pid" > /newroot/run/sge_execd.pid
    say "sge_execd started (pid $pid, $tries retries): $*"
    setup_acpi
    echo "VOCLOUD-READY $(hostname) uptime=$(cut -d' ' -f1 /proc/uptime)"
    if [ -n "$SGE_EXECD_SPOOL" ]; then
        log="/newroot$SGE_EXECD_SPOOL/$SLURM_NODENAME/messages"
        ( i=0; while [ ! -f "$log" ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
          tail -f "$log" 2>/dev/null | while IFS= read -r line; do echo "VOCLOUD-SGE $line"; done ) &
    fi
    wait $acpid_pid
    while :; do sleep 3600; done
fi

# ---------------------------------------------------------------- munge
sock=${MUNGE_SOCKET:-/run/munge/munge.socket.2}
mkdir -p /newroot/etc/munge "/newroot${sock%/*}" /newroot/run/munge
chmod 0700 /newroot/etc/munge
chmod 0755 "/newroot${sock%/*}"
umask 077
echo "$MUNGE_KEY" | base64 -d > /newroot/etc/munge/munge.key || fail "MUNGE_KEY is not base64"
umask 022
unset MUNGE_KEY
chmod 0400 /newroot/etc/munge/munge.key
inroot munged --force --key-file=/etc/munge/munge.key --socket="$sock" \
    --pid-file=/run/munge/munged.pid --seed-file=/run/munge/seed \
    --log-file=/run/munge/munged.log || fail "munged did not start: $(tail -3 /newroot/run/munge/munged.log)"
# slurmd fetches its configuration (configless) with the default socket, then switches to the
# AuthInfo socket slurm.conf names: both paths must reach this munged.
if [ "$sock" != /run/munge/munge.socket.2 ]; then
    ln -sf "$sock" /newroot/run/munge/munge.socket.2
fi
say "munged up ($sock)"

# ---------------------------------------------------------------- slurmd
set -- -D -N "$SLURM_NODENAME"
if [ -n "$SLURM_CONF_B64" ]; then
    mkdir -p /newroot/etc/slurm
    echo "$SLURM_CONF_B64" | base64 -d > /newroot/etc/slurm/slurm.conf || fail "SLURM_CONF_B64 is not base64"
    set -- "$@" -f /etc/slurm/slurm.conf
elif [ -n "$SLURM_CONF_SERVER" ]; then
    set -- "$@" --conf-server "$SLURM_CONF_SERVER"
else
    fail "context has neither SLURM_CONF_SERVER (configless) nor SLURM_CONF_B64"
fi
[ -n "$SLURM_DYNAMIC_CONF" ] && set -- "$@" -Z --conf "$SLURM_DYNAMIC_CONF"
[ -n "$SLURM_BOOTED" ] && set -- "$@" -b
# the site's spool parent, when its SlurmdSpoolDir is not in the export tree: made before slurmd
# starts, so a first start never fails on it (the retry below is for sites that do not say)
[ -n "$SLURMD_SPOOL_PARENT" ] && mkdir -p "/newroot$SLURMD_SPOOL_PARENT" 2>/dev/null
start_slurmd() {
    inroot sh -c 'slurmd "$@" > /run/slurmd.out 2>&1 & echo $! > /run/slurmd.pid' slurmd "$@"
}
start_slurmd "$@"
say "slurmd started: slurmd $*"

setup_acpi
echo "VOCLOUD-READY $(hostname) uptime=$(cut -d' ' -f1 /proc/uptime)"

# slurmd makes its SlurmdSpoolDir but not the directory above it. The export tree has the usual
# ones (/var/spool/slurmd); a configuration (configless: known only to slurmd) that puts the spool
# elsewhere under the writable overlays (/tmp, /var, ...) gets the parent made here, in guest RAM,
# and slurmd started again — a few times at most, and only while slurmd is starting.
(
    tries=0
    while [ $tries -lt 4 ]; do
        pid=$(cat /newroot/run/slurmd.pid 2>/dev/null)
        i=0
        while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done
        kill -0 "$pid" 2>/dev/null && break
        dir=$(sed -n 's|.*fatal: mkdir(\(/[^)]*\)): No such file or directory.*|\1|p' /newroot/run/slurmd.out | tail -1)
        [ -n "$dir" ] || break
        mkdir -p "/newroot${dir%/*}" 2>/dev/null || break
        say "made ${dir%/*} (slurmd's spool parent, not in the export tree); slurmd started again"
        tries=$((tries + 1))
        start_slurmd "$@"
    done
) &

# Report slurmd's own output on the console: the first lines tell why a node never registers.
tail -f /newroot/run/slurmd.out 2>/dev/null | while IFS= read -r line; do echo "VOCLOUD-SLURMD $line"; done &
wait $acpid_pid
while :; do sleep 3600; done
