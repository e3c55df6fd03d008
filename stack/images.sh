#!/usr/bin/env bash
# Container images of docker-compose.yml, built on this machine with podman and no container registry:
# the base images are Debian made here with debootstrap (from this machine's apt mirror) and imported.
#
#   stack/images.sh              the base images if missing, then the service images (cached layers: an image
#                                whose inputs did not change takes seconds)
#   stack/images.sh base         only the base images (localhost/hilo-base:bookworm and :sid)
#   stack/images.sh check        can podman run a container here? (says why not)
#   stack/images.sh list         the images and whether each exists
#   stack/images.sh rebuild      the service images without the layer cache (new Debian and Python packages)
#   stack/images.sh refresh      debootstrap the base images again, then rebuild everything
#
# The debootstrap results are cached as tarballs in $HILO_CACHE_DIR (/var/cache/hilo), so a rebuild
# that has them starts from `podman import`. Logs are in .run/logs/images-*.log.

# shellcheck source=stack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_REPO=localhost/hilo-base
# the Debian suites of the base images (localhost/hilo-base:SUITE)
BASE_SUITES=(bookworm sid)
# image, build context (relative to the repository), Dockerfile (relative to the context), base suite
SERVICE_IMAGES=(
    "localhost/hilo:latest . Dockerfile bookworm"
    "localhost/hilo-postgres:latest containers/postgres Dockerfile bookworm"
    "localhost/hilo-redis:latest containers/redis Dockerfile bookworm"
    "localhost/hilo-asterisk:latest containers/asterisk Dockerfile sid"
)

base_tarball() { printf '%s/hilo-base-%s.tar.zst\n' "$CACHE_DIR" "$1"; }

need_podman() {
    ensure_packages podman podman-compose
}

# ------------------------------------------------------------------- base images

# debootstrap_base SUITE: a minimal Debian SUITE as a tarball in the cache.
debootstrap_base() {
    local suite=$1 tarball mirror security log="$LOGS/images-debootstrap-$1.log"
    tarball=$(base_tarball "$suite")
    ensure_packages debootstrap zstd
    mkdir -p "$CACHE_DIR" "$LOGS"
    mirror=$(debian_mirror)
    step "Building the base image tarball: Debian $suite (debootstrap, once per machine)"
    info "from this machine's apt mirror; output in $log"
    : >"$log"
    BUILD_DIR=$(mktemp -d "$CACHE_DIR/base-$suite.XXXXXX")
    trap cleanup_build_dir EXIT
    chmod 755 "$BUILD_DIR"
    run_logged "$log" "debootstrap $suite" debootstrap --variant=minbase "$suite" "$BUILD_DIR" "$mirror"
    {
        printf 'deb %s %s main\n' "$mirror" "$suite"
        if [[ $suite != sid ]]; then
            printf 'deb %s %s-updates main\n' "$mirror" "$suite"
            security=$(debian_security_mirror)
            [[ -z $security ]] || printf 'deb %s %s-security main\n' "$security" "$suite"
        fi
    } >"$BUILD_DIR/etc/apt/sources.list"
    # What a container base image does differently from a system: no service starts while packages
    # install, no recommended packages, no package cache nor lists kept in the layers.
    printf '#!/bin/sh\nexit 101\n' >"$BUILD_DIR/usr/sbin/policy-rc.d"
    chmod 755 "$BUILD_DIR/usr/sbin/policy-rc.d"
    cat >"$BUILD_DIR/etc/apt/apt.conf.d/90hilo-container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF
    # A mirror that is a dated snapshot serves Release files whose Valid-Until has passed (sid's are valid
    # for a week): apt in the image would then refuse it, as debootstrap did not.
    local release until
    release=$(find "$BUILD_DIR/var/lib/apt/lists" -name '*_InRelease' -o -name '*_Release' | head -n 1)
    until=$(sed -n 's/^Valid-Until: //p' "$release" 2>/dev/null | head -n 1)
    if [[ -n $until ]] && (($(date -d "$until" +%s) < $(date +%s))); then
        warn "the mirror's $suite Release expired on $until (a dated snapshot?): apt in the image will not check Valid-Until"
        printf '// %s\n// %s\nAcquire::Check-Valid-Until "false";\n' \
            "stack/images.sh: this machine's Debian mirror serves a $suite Release whose Valid-Until ($until)" \
            "had passed when the image was built." >"$BUILD_DIR/etc/apt/apt.conf.d/90hilo-mirror-snapshot"
    fi
    chroot "$BUILD_DIR" apt-get clean
    rm -rf "$BUILD_DIR"/var/lib/apt/lists/* "$BUILD_DIR"/var/log/*.log "$BUILD_DIR"/var/cache/debconf/*-old
    # podman provides these at run time
    : >"$BUILD_DIR/etc/resolv.conf"
    : >"$BUILD_DIR/etc/hostname"
    run_logged "$log" "compressing the tarball" \
        tar --numeric-owner -C "$BUILD_DIR" -I 'zstd -T0 -3' -cpf "$tarball.tmp" .
    mv -f "$tarball.tmp" "$tarball"
    cleanup_build_dir
    trap - EXIT
    ok "base tarball: $tarball ($(du -h "$tarball" | cut -f1))"
}

# debian_security_mirror: the security archive of this machine's apt sources, if any.
debian_security_mirror() {
    {
        grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
            sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n'
        grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '^(https?|file):' | grep -E -- '-security|security\.' | head -n 1 | sed 's|/$||' || true
}

# ensure_base SUITE [force]: localhost/hilo-base:SUITE exists in podman.
ensure_base() {
    local suite=$1 force=${2:-0} tarball image="$BASE_REPO:$1"
    tarball=$(base_tarball "$suite")
    if ((force)); then
        rm -f "$tarball"
    elif podman image exists "$image"; then
        step "Base image $image present"
        return 0
    fi
    [[ -s $tarball ]] || debootstrap_base "$suite"
    step "Importing $image from ${tarball}"
    local previous
    previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    zstd -dc "$tarball" |
        podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
            --message "Debian $suite (debootstrap --variant=minbase), stack/images.sh" - "$image" >/dev/null ||
        die "podman import of $tarball failed"
    [[ -z $previous ]] || podman rmi "$previous" >/dev/null 2>&1 || true
    ok "$image ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec))"
}

# ----------------------------------------------------------------- running at all

# Where this machine's podman settings go when its defaults cannot start a container (see configure_podman).
MACHINE_CONF=/etc/containers/containers.conf.d/hilo-machine.conf

# can_run: podman runs a container of the bookworm base image; prints the error otherwise.
can_run() {
    local out
    if out=$(timeout 60 podman run --rm "$BASE_REPO:bookworm" true 2>&1); then
        return 0
    fi
    printf '%s\n' "${out:-podman run timed out}"
    return 1
}

# configure_podman: make podman able to start containers on this machine, or die saying why it cannot.
# Seen on sandboxed machines: root without CAP_SYS_RESOURCE cannot raise a hard limit, and podman's default
# ulimits (nofile 1048576) are above the machine's (crun: "setrlimit `RLIMIT_NOFILE`: Operation not
# permitted"); with a cgroup v2 hierarchy that has controllers beside the v1 ones, crun 1.8 refuses to run
# ("cgroups in hybrid mode not supported"), runc does not.
configure_podman() {
    local out first nofile nproc
    out=$(can_run) && return 0
    if [[ -f $MACHINE_CONF ]]; then
        die "podman cannot start a container here, even with $MACHINE_CONF: $out"
    fi
    first=$out
    warn "podman cannot start a container with its defaults here: $first"
    ensure_packages runc
    nofile=$(ulimit -Hn)
    if [[ $nofile == unlimited ]] || ((nofile > 1048576)); then nofile=1048576; fi
    nproc=$(ulimit -Hu)
    if [[ $nproc == unlimited ]] || ((nproc > 32768)); then nproc=32768; fi
    step "Configuring podman for this machine: runc, ulimits nofile=$nofile nproc=$nproc ($MACHINE_CONF)"
    mkdir -p "$(dirname "$MACHINE_CONF")"
    cat >"$MACHINE_CONF" <<EOF
# Written by Hilo's stack/images.sh: podman's defaults could not start a container on this machine
# ($first).
# Containers get resource limits within the machine's own hard limits, and run with runc (crun refuses
# a cgroup v2 hierarchy with controllers beside the v1 ones). Delete this file to return to the defaults.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
    if ! out=$(can_run); then
        rm -f "$MACHINE_CONF"
        die "podman cannot start a container here: $first; with runc and ulimits within the machine's: $out"
    fi
    ok "podman runs containers with $MACHINE_CONF"
}

cmd_check() {
    need_root
    need_podman
    ensure_base bookworm
    local out
    step "podman run --rm $BASE_REPO:bookworm true"
    configure_podman
    ok "podman runs containers here"
    step "the same on a bridge network with a port published on loopback (what compose does)"
    local net=hilo-images-check
    podman network exists "$net" || podman network create "$net" >/dev/null
    if out=$(timeout 60 podman run --rm --network "$net" -p 127.0.0.1::9 "$BASE_REPO:bookworm" true 2>&1); then
        ok "bridge networks and published ports work"
    else
        warn "bridge network: $out"
    fi
    podman network rm "$net" >/dev/null 2>&1 || true
}

# -------------------------------------------------------------- service images

# pip_cert: a CA bundle the builds' pip may need (a TLS-inspecting proxy's CA is in the host's bundle).
pip_cert() {
    local cert
    cert=$(python3 -m pip config get global.cert 2>/dev/null || true)
    [[ -n $cert && -r $cert ]] || cert=/etc/ssl/certs/ca-certificates.crt
    [[ -r $cert ]] && printf '%s\n' "$cert"
}

build_service() {
    local image=$1 context=$2 dockerfile=$3 suite=$4 no_cache=${5:-0} log cert name previous
    name=${image#localhost/}
    name=${name%%:*}
    log="$LOGS/images-$name.log"
    local args=(build --layers -t "$image" -f "$ROOT/$context/$dockerfile"
        --build-arg "BASE=$BASE_REPO:$suite")
    ((no_cache)) && args+=(--no-cache)
    if cert=$(pip_cert); then
        args+=(--secret "id=pip_cert,src=$cert")
    fi
    step "Building $image (context ${context}, FROM $BASE_REPO:$suite)"
    info "output in $log"
    : >"$log"
    previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    run_logged "$log" "podman build $name" podman "${args[@]}" "$ROOT/$context" ||
        die "building $image failed (log: $log)"
    # the image this one replaces, unless a container or another tag still uses it
    if [[ -n $previous && $previous != "$(podman image inspect --format '{{.Id}}' "$image")" ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    ok "$image ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec))"
}

# build_services [no-cache]: build every service image. Layers are cached, so an image whose inputs did not
# change is rebuilt in seconds; with no-cache every step runs again (new Debian and Python packages).
build_services() {
    local no_cache=${1:-0} spec image context dockerfile suite
    [[ -f $ROOT/requirements.lock ]] ||
        die "requirements.lock is missing: the Hilo image installs its dependencies from it"
    for spec in "${SERVICE_IMAGES[@]}"; do
        read -r image context dockerfile suite <<<"$spec"
        build_service "$image" "$context" "$dockerfile" "$suite" "$no_cache"
    done
}

cmd_list() {
    local spec image suite
    for suite in "${BASE_SUITES[@]}"; do
        image="$BASE_REPO:$suite"
        printf '%-36s %s\n' "$image" "$(podman image exists "$image" && echo present || echo missing)"
    done
    for spec in "${SERVICE_IMAGES[@]}"; do
        read -r image _ <<<"$spec"
        printf '%-36s %s\n' "$image" "$(podman image exists "$image" && echo present || echo missing)"
    done
}

main() {
    local cmd=${1:-build} suite t0=$SECONDS
    case $cmd in
    build | rebuild | refresh)
        need_root
        umask 022
        mkdir -p "$LOGS"
        need_podman
        for suite in "${BASE_SUITES[@]}"; do
            ensure_base "$suite" "$([[ $cmd == refresh ]] && echo 1 || echo 0)"
        done
        configure_podman
        build_services "$([[ $cmd == build ]] && echo 0 || echo 1)"
        step "Images ready in $((SECONDS - t0))s"
        cmd_list
        ;;
    base)
        need_root
        need_podman
        for suite in "${BASE_SUITES[@]}"; do ensure_base "$suite"; done
        ;;
    check) cmd_check ;;
    list)
        command -v podman >/dev/null || die "podman is not installed (stack/images.sh installs it)"
        cmd_list
        ;;
    -h | --help | help) sed -n '2,14s/^# \{0,1\}//p' "$0" ;;
    *)
        sed -n '2,14s/^# \{0,1\}//p' "$0" >&2
        exit 2
        ;;
    esac
}

main "$@"
