#!/usr/bin/env bash
# Asterisk 22 of the local stack: a Debian sid chroot in .run/asterisk/root.
#
#   stack/asterisk.sh start      extract the chroot if needed, render the config,
#                                start Asterisk (or reload it if already running)
#   stack/asterisk.sh stop       stop Asterisk and unmount /proc and /dev
#   stack/asterisk.sh restart    stop, then start and wait until fully booted
#   stack/asterisk.sh rx "CMD"   run an Asterisk CLI command
#   stack/asterisk.sh status     say whether it runs
#   stack/asterisk.sh image      build the chroot tarball cache if missing
#
# The chroot comes from a tarball cache ($AST_TARBALL), built once per machine
# with debootstrap from the machine's own Debian mirror.

# shellcheck source=stack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AST_PACKAGES=(asterisk asterisk-core-sounds-en-gsm asterisk-moh-opsound-gsm)
BOOT_TIMEOUT=60

# ------------------------------------------------------------------ the image

build_image() {
    need_root
    ensure_packages debootstrap zstd
    mkdir -p "$CACHE_DIR" "$LOGS"
    local mirror log="$LOGS/asterisk-image.log"
    mirror=$(debian_mirror)
    step "Building the Asterisk chroot image (Debian sid, once per machine)"
    info "from the apt mirror of this machine; output in $log"
    : >"$log"
    BUILD_DIR=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    trap cleanup_build_dir EXIT
    chmod 755 "$BUILD_DIR"
    run_logged "$log" "debootstrap sid" debootstrap --variant=minbase sid "$BUILD_DIR" "$mirror"
    # No service may start inside the chroot while packages install.
    printf '#!/bin/sh\nexit 101\n' >"$BUILD_DIR/usr/sbin/policy-rc.d"
    chmod 755 "$BUILD_DIR/usr/sbin/policy-rc.d"
    # Create the asterisk user first so the package keeps our fixed uid/gid.
    chroot "$BUILD_DIR" groupadd --gid "$AST_UID" asterisk
    chroot "$BUILD_DIR" useradd --uid "$AST_UID" --gid "$AST_UID" --home-dir /var/lib/asterisk \
        --no-create-home --shell /usr/sbin/nologin --comment 'Asterisk PBX daemon' asterisk
    run_logged "$log" "apt-get install ${AST_PACKAGES[*]}" \
        chroot "$BUILD_DIR" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${AST_PACKAGES[@]}"
    chroot "$BUILD_DIR" apt-get clean
    rm -rf "$BUILD_DIR"/var/lib/apt/lists/* "$BUILD_DIR/usr/sbin/policy-rc.d"
    printf 'nameserver 127.0.0.1\n' >"$BUILD_DIR/etc/resolv.conf"
    [[ -x $BUILD_DIR/usr/sbin/asterisk ]] || die "asterisk is missing from the built chroot"
    run_logged "$log" "compressing the image" \
        tar --numeric-owner -C "$BUILD_DIR" -I 'zstd -T0 -3' -cpf "$AST_TARBALL.tmp" .
    mv -f "$AST_TARBALL.tmp" "$AST_TARBALL"
    cleanup_build_dir
    trap - EXIT
    ok "image: $AST_TARBALL ($(du -h "$AST_TARBALL" | cut -f1))"
}

ensure_image() {
    [[ -s $AST_TARBALL ]] || build_image
}

# --------------------------------------------------------------- the chroot

ensure_root() {
    [[ -f $AST_ROOT/.hilo-extracted ]] && return 0
    need_root
    if [[ -d $AST_ROOT ]]; then
        # An unfinished extraction: never delete through live mounts.
        ast_pid >/dev/null && die "Asterisk runs from the incomplete chroot $AST_ROOT: stop it first"
        umount_root
    fi
    ensure_image
    ensure_packages zstd
    step "Extracting the Asterisk chroot into ${AST_ROOT#"$ROOT"/}"
    local tmp="$AST_ROOT.tmp"
    rm -rf --one-file-system "$tmp"
    mkdir -p "$tmp"
    chmod 755 "$tmp"
    run_logged "$LOGS/asterisk-extract.log" "tar -x" tar --numeric-owner -C "$tmp" -I 'zstd -T0' -xpf "$AST_TARBALL"
    rm -f "$LOGS/asterisk-extract.log"
    [[ -x $tmp/usr/sbin/asterisk ]] || die "the image $AST_TARBALL has no asterisk: delete it to rebuild"
    rm -rf --one-file-system "$AST_ROOT"
    mv "$tmp" "$AST_ROOT"
    touch "$AST_ROOT/.hilo-extracted"
}

mount_root() {
    local d
    for d in proc dev; do
        if ! is_mounted "$AST_ROOT/$d"; then
            mkdir -p "$AST_ROOT/$d"
            mount --bind "/$d" "$AST_ROOT/$d"
        fi
    done
}

umount_root() {
    local d
    for d in dev proc; do
        if is_mounted "$AST_ROOT/$d"; then
            umount "$AST_ROOT/$d" 2>/dev/null || umount -l "$AST_ROOT/$d"
        fi
    done
}

# Hash of the rendered configuration, to reload only when it changed.
config_hash() {
    (cd "$AST_ROOT/etc/asterisk" && cat ./*.conf 2>/dev/null | sha1sum | cut -d' ' -f1)
}

configure() {
    [[ -x $VENV/bin/python ]] || die "no Python venv in ${VENV#"$ROOT"/}: run stack/up.sh first"
    load_env
    (cd "$ROOT" && "$VENV/bin/python" -m asterisk.render_config \
        --src "$ROOT/asterisk/etc" --out "$AST_ROOT/etc/asterisk") >/dev/null ||
        die "rendering asterisk/etc failed"
    # The generated dialplan of dialplans/numbers.yaml (included by extensions.conf).
    (cd "$ROOT" && "$VENV/bin/hilo" dialplan render --output "$AST_ROOT/etc/asterisk/hilo-numbers.conf") ||
        die "rendering the numbers dialplan (hilo dialplan render) failed"
    # The phones of dialplans/phones.yaml with their digest credentials (passwords from .run/env; the file
    # holds only their hashes, mode 640).
    (cd "$ROOT" && "$VENV/bin/hilo" phones render --output "$AST_ROOT/etc/asterisk/hilo-phones.conf") ||
        die "rendering the phones (hilo phones render) failed"
    install -d -m 755 "$AST_RUNDIR"
    # Hilo's prompts (some say a caller's name): for root and Asterisk's group only; setgid, so every file
    # Hilo writes there gets Asterisk's group, and Hilo makes them 0640 (speech/tts.py).
    install -d -m 2750 -g "$AST_UID" "$AST_ROOT/usr/share/asterisk/sounds/hilo"
    # ARI recordings (voicemail, call recordings) land here; Asterisk does not create the folder itself.
    install -d -m 750 "$AST_ROOT/var/spool/asterisk/recording"
    # Debian's sample users.conf is deprecated (a warning at every load) and unused.
    rm -f "$AST_ROOT/etc/asterisk/users.conf"
    # The stack addresses everything by IP: keep any DNS query of Asterisk on
    # loopback rather than on the resolver of the machine that built the image.
    # (PJSIP still opens its DNS client sockets, on ephemeral UDP ports of
    # 0.0.0.0 and [::]: pjproject binds them to the wildcard address, and an
    # empty nameserver list is not an option -- glibc then reports 127.0.0.1.)
    printf '# Hilo stack: Asterisk needs no DNS, everything is addressed by IP.\nnameserver 127.0.0.1\n' \
        >"$AST_ROOT/etc/resolv.conf"
    chroot "$AST_ROOT" chown -R asterisk:asterisk /etc/asterisk /var/lib/asterisk /var/log/asterisk \
        /var/spool/asterisk /var/cache/asterisk /run/asterisk
    # The rendered files hold the ARI/AMI secrets; the logs and CDRs callers' numbers.
    chmod -R o-rwx "$AST_ROOT/etc/asterisk" "$AST_ROOT/var/log/asterisk"
    mkdir -p "$LOGS"
    ln -sfn "$AST_ROOT/var/log/asterisk/messages" "$LOGS/asterisk-messages.log"
}

# host address to reach a service bound to ADDR
_reach() { [[ $1 == 0.0.0.0 || -z $1 ]] && echo 127.0.0.1 || echo "$1"; }

wait_booted() {
    local start=$SECONDS last=$SECONDS
    until timeout 10 chroot "$AST_ROOT" /usr/sbin/asterisk -rx 'core waitfullybooted' >/dev/null 2>&1; do
        ast_pid >/dev/null || {
            tail -n 30 "$AST_ROOT/var/log/asterisk/messages" >&2 2>/dev/null || true
            die "Asterisk exited during start (log: $LOGS/asterisk-messages.log)"
        }
        ((SECONDS - start < BOOT_TIMEOUT)) || die "Asterisk not fully booted after ${BOOT_TIMEOUT}s"
        if ((SECONDS - last >= 10)); then
            note "waiting for Asterisk to boot ($((SECONDS - start))s)"
            last=$SECONDS
        fi
        sleep 0.5
    done
    local host
    host=$(_reach "${HILO_BIND_ADDR:-127.0.0.1}")
    wait_tcp "$host" 8088 20 "Asterisk HTTP/ARI" || die "Asterisk HTTP (ARI) is not listening on $host:8088"
    wait_tcp "$host" "${HILO_AMI_PORT:-5038}" 20 "Asterisk AMI" || die "Asterisk AMI is not listening"
}

cmd_start() {
    need_root
    local pid before after
    ensure_root
    if pid=$(ast_pid); then
        mount_root
        before=$(config_hash)
        configure
        after=$(config_hash)
        if [[ $before != "$after" ]]; then
            step "Asterisk already running (pid $pid): configuration changed, reloading"
            ast_rx 'core reload' >/dev/null
            sleep 1
        else
            step "Asterisk already running (pid $pid)"
        fi
        return 0
    fi
    configure
    local port busy=''
    for port in 8088 "${HILO_AMI_PORT:-5038}" "${HILO_SIP_PORT:-5060}"; do
        port_in_use "$port" && busy+="$(who_listens "$port")"$'\n'
    done
    [[ -z ${busy//$'\n'/} ]] || die "Asterisk ports are taken by another process (another checkout's stack? stop it with its stack/down.sh):"$'\n'"$busy"
    step "Starting Asterisk (chroot ${AST_ROOT#"$ROOT"/})"
    rm -f "$AST_RUNDIR/asterisk.pid" "$AST_RUNDIR/asterisk.ctl"
    mount_root
    # A failed start leaves no mounts behind.
    trap 'ast_pid >/dev/null || umount_root' EXIT
    chroot "$AST_ROOT" /usr/sbin/asterisk -U asterisk -G asterisk >"$LOGS/asterisk-start.log" 2>&1 </dev/null ||
        die "Asterisk did not start: $(tail -n 5 "$LOGS/asterisk-start.log")"
    wait_booted
    trap - EXIT
    ok "Asterisk $(ast_rx 'core show version' | awk '{print $2; exit}') fully booted (pid $(ast_pid))"
}

# Processes whose root directory is our chroot (Asterisk, remote consoles).
chroot_pids() {
    local p real
    real=$(readlink -f "$AST_ROOT")
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/root" 2>/dev/null) == "$real" ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

cmd_stop() {
    need_root
    local pid p
    if pid=$(ast_pid); then
        step "Stopping Asterisk (pid $pid)"
        timeout 15 chroot "$AST_ROOT" /usr/sbin/asterisk -rx 'core stop now' >/dev/null 2>&1 || true
        wait_pid_gone "$pid" 20 || stop_pid "$pid" asterisk 10
    fi
    if [[ -d $AST_ROOT ]]; then
        for p in $(chroot_pids); do
            stop_pid "$p" "process $p in the Asterisk chroot" 5
        done
        rm -f "$AST_RUNDIR/asterisk.pid" "$AST_RUNDIR/asterisk.ctl"
        umount_root
    fi
}

cmd_rx() {
    [[ $# -ge 1 ]] || die "usage: $0 rx 'CLI COMMAND'"
    ast_pid >/dev/null || die "Asterisk is not running"
    ast_rx "$*"
}

cmd_status() {
    local pid
    if pid=$(ast_pid); then
        echo "asterisk: running (pid $pid)"
    else
        echo "asterisk: stopped"
        return 3
    fi
}

main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    rx) cmd_rx "$@" ;;
    status) cmd_status ;;
    image) need_root && ensure_image ;;
    *)
        sed -n '2,11s/^# \{0,1\}//p' "$0" >&2
        exit 2
        ;;
    esac
}

main "$@"
