# shellcheck shell=bash
# Shared helpers for the stack scripts (up.sh, down.sh, asterisk.sh).
# Source it; it sets ROOT (the repository), RUN (its .run folder) and LOGS.
# shellcheck disable=SC2034  # the variables below are used by the scripts sourcing this one

set -euo pipefail
# Nothing here reads standard input. Daemons started with a closed fd 0 (as
# CI may run us) misbehave: Redis crashes, Asterisk loses a socket. Give them
# /dev/null.
exec </dev/null

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUN="$ROOT/.run"
LOGS="$RUN/logs"
ENV_FILE="$RUN/env"
VENV="$RUN/venv"
AST_ROOT="$RUN/asterisk/root"
CACHE_DIR="${HILO_CACHE_DIR:-/var/cache/hilo}"
AST_TARBALL="$CACHE_DIR/asterisk-sid-chroot.tar.zst"
# uid/gid of the asterisk user inside the chroot. A fixed, uncommon id keeps
# Asterisk's processes and files from looking like (and being) some host user's.
AST_UID=5060

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    _C_STEP=$'\e[1;34m' _C_OK=$'\e[32m' _C_WARN=$'\e[1;33m' _C_ERR=$'\e[1;31m' _C_DIM=$'\e[2m' _C_OFF=$'\e[0m'
else
    _C_STEP='' _C_OK='' _C_WARN='' _C_ERR='' _C_DIM='' _C_OFF=''
fi

step() { printf '%s==>%s %s\n' "$_C_STEP" "$_C_OFF" "$*"; }
info() { printf '    %s\n' "$*"; }
ok() { printf '    %s%s%s\n' "$_C_OK" "$*" "$_C_OFF"; }
note() { printf '    %s%s%s\n' "$_C_DIM" "$*" "$_C_OFF"; }
warn() { printf '%swarning:%s %s\n' "$_C_WARN" "$_C_OFF" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$_C_ERR" "$_C_OFF" "$*" >&2
    exit 1
}

need_root() {
    [[ $EUID -eq 0 ]] || die "the stack scripts need root (chroot, mount, runuser): run them as root"
}

# ---------------------------------------------------------------- processes

# pid_of FILE [COMM]: print the pid stored in FILE if that process is alive
# (and, given COMM, runs the program of that name: a pid file left by a
# previous boot may name an unrelated process).
pid_of() {
    local file=$1 comm=${2:-} pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -n $comm && $(cat "/proc/$pid/comm" 2>/dev/null) != "$comm" ]]; then
        return 1
    fi
    printf '%s\n' "$pid"
}

pid_alive() { pid_of "$@" >/dev/null; }

# wait_pid_gone PID SECONDS: wait for a process to exit.
wait_pid_gone() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# stop_pid PID NAME [SECONDS]: TERM, wait, then KILL.
stop_pid() {
    local pid=$1 name=$2 secs=${3:-10}
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_gone "$pid" "$secs"; then
        warn "$name (pid $pid) did not stop after ${secs}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 5 || warn "$name (pid $pid) is still there"
    fi
}

# stop_pidfile FILE COMM NAME [SECONDS]: stop the process of a pid file, remove the file.
stop_pidfile() {
    local file=$1 comm=$2 name=$3 secs=${4:-10} pid
    if pid=$(pid_of "$file" "$comm"); then
        step "Stopping $name (pid $pid)"
        stop_pid "$pid" "$name" "$secs"
    fi
    rm -f "$file"
}

# --------------------------------------------------------------------- ports

# tcp_listening PORT [ADDR]: something listens on that TCP port.
tcp_listening() {
    local port=$1 addr=${2:-}
    if [[ -n $addr ]]; then
        [[ -n $(ss -Hltn "( sport = :$port )" 2>/dev/null | awk -v a="$addr:$port" '$4 == a || $4 ~ /^(\*|0\.0\.0\.0|\[::\]):/') ]]
    else
        [[ -n $(ss -Hltn "( sport = :$port )" 2>/dev/null) ]]
    fi
}

udp_bound() { [[ -n $(ss -Hlun "( sport = :$1 )" 2>/dev/null) ]]; }

port_in_use() { tcp_listening "$1" || udp_bound "$1"; }

# who_listens PORT: the ss lines (with process) of listeners on PORT.
who_listens() { ss -Hlntup "( sport = :$1 )" 2>/dev/null || true; }

# free_tcp_port START: first port >= START with no TCP/UDP listener.
free_tcp_port() {
    local port=$1
    while port_in_use "$port"; do
        port=$((port + 1))
        ((port < 65535)) || die "no free port found from $1 on"
    done
    printf '%s\n' "$port"
}

# wait_tcp HOST PORT SECONDS NAME: wait until a TCP connect succeeds.
wait_tcp() {
    local host=$1 port=$2 secs=$3 name=$4 start=$SECONDS last=$SECONDS
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        ((SECONDS - start < secs)) || return 1
        if ((SECONDS - last >= 10)); then
            note "still waiting for $name on $host:$port ($((SECONDS - start))s)"
            last=$SECONDS
        fi
        sleep 0.2
    done
}

# -------------------------------------------------------------- long commands

# run_logged LOG DESCRIPTION CMD...: run CMD with its output in LOG, printing a
# line every 10 s while it runs; on failure show the end of LOG.
run_logged() {
    local log=$1 desc=$2 pid rc start=$SECONDS last=$SECONDS
    shift 2
    mkdir -p "$(dirname "$log")"
    "$@" >>"$log" 2>&1 </dev/null &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if ((SECONDS - last >= 10)); then
            note "$desc: still running ($((SECONDS - start))s) ${_C_DIM}$(tail -n 1 "$log" 2>/dev/null | cut -c1-90)${_C_OFF}"
            last=$SECONDS
        fi
    done
    rc=0
    wait "$pid" || rc=$?
    if ((rc != 0)); then
        warn "$desc failed (exit $rc); last lines of $log:"
        tail -n 40 "$log" >&2 || true
        return "$rc"
    fi
    note "$desc: done in $((SECONDS - start))s"
}

# ------------------------------------------------------------------ packages

# debian_mirror: the Debian archive this machine's apt uses (not the security one).
debian_mirror() {
    local uri
    uri=$(
        {
            grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
                sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n'
            grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
                sed -E 's/\[[^]]*\]//' | awk '{print $2}'
        } | grep -E '^(https?|file):' | grep -v -- '-security' | grep -vi 'security\.' | head -n 1
    )
    [[ -n $uri ]] || die "cannot find a Debian mirror in /etc/apt/sources.list{,.d}"
    printf '%s\n' "${uri%/}"
}

_APT_UPDATED=0
# ensure_packages PKG...: install the Debian packages that are missing.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    step "Installing Debian packages: ${missing[*]}"
    need_root
    if ((_APT_UPDATED == 0)); then
        run_logged "$LOGS/apt.log" "apt-get update" apt-get update
        _APT_UPDATED=1
    fi
    run_logged "$LOGS/apt.log" "apt-get install" \
        env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# ----------------------------------------------------------------------- env

load_env() {
    [[ -r $ENV_FILE ]] || die "$ENV_FILE is missing: run stack/up.sh first"
    set -a
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    set +a
}

# private_logs: the log folder and the files in it readable by root (and its group) only, whatever the umask
# they were created with: logs hold callers' data (masked numbers, but still).
private_logs() {
    mkdir -p "$LOGS"
    chmod 750 "$LOGS"
    find "$LOGS" -maxdepth 1 -type f -perm /027 -exec chmod g-w,o-rwx {} +
}

# ensure_env_secret KEY: give KEY a new random secret in .run/env unless it has one (the file is mode 600).
ensure_env_secret() {
    [[ -w $ENV_FILE ]] || die "$ENV_FILE is missing: run stack/up.sh first"
    grep -q "^$1=" "$ENV_FILE" && return 0
    printf '%s=%s\n' "$1" "$(python3 -c 'import secrets; print(secrets.token_hex(16))')" >>"$ENV_FILE"
}

# env_get KEY: value of KEY in .run/env (without exporting anything).
env_get() {
    [[ -r $ENV_FILE ]] || return 1
    sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# ------------------------------------------------------------------- asterisk

# Inside the chroot /var/run is an absolute symlink to /run: seen from the host
# it would point at the host's /run, so host-side paths use $AST_ROOT/run.
AST_RUNDIR="$AST_ROOT/run/asterisk"

ast_pid() { pid_of "$AST_RUNDIR/asterisk.pid" asterisk; }

ast_rx() { chroot "$AST_ROOT" /usr/sbin/asterisk -rx "$1"; }

is_mounted() { awk -v m="$1" '$2 == m {found = 1} END {exit !found}' /proc/mounts; }

# ------------------------------------------------------------ chroot builds

# A root file system being built by debootstrap (stack/asterisk.sh, stack/images.sh): on exit, whatever
# happened, unmount what the build mounted in it and delete it.
BUILD_DIR=''
cleanup_build_dir() {
    [[ -n $BUILD_DIR && -d $BUILD_DIR ]] || return 0
    local m
    for m in dev/pts dev proc sys; do
        is_mounted "$BUILD_DIR/$m" && umount -l "$BUILD_DIR/$m" 2>/dev/null
    done
    rm -rf --one-file-system "$BUILD_DIR"
    BUILD_DIR=''
}
