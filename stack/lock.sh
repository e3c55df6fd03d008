#!/usr/bin/env bash
# Refresh requirements.lock (runtime) and requirements-dev.lock (runtime + dev extras) on purpose:
# resolve the newest versions pyproject.toml allows, install them into the stack's venv, run the whole
# suite (make test), and only when it passes write the new locks in place. On a failure the locks stay
# as they were and the venv goes back to them.
#
#   stack/lock.sh            resolve, test, write
#   stack/lock.sh --no-test  resolve and write only (for a lock that cannot be tested here; say why in the commit)
#
# The resolver (uv) asks the package index this machine's pip and uv are set up for; no index address is
# written into the locks.

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TEST=1
for arg in "$@"; do
    case $arg in
    --no-test) TEST=0 ;;
    -h | --help)
        sed -n '2,9s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *) die "unknown option: $arg (see --help)" ;;
    esac
done

[[ -x $VENV/bin/uv ]] || die "no uv in ${VENV#"$ROOT"/}: run make stack first (it installs the dev lock, uv included)"
new="$RUN/lock"
install -d "$new"
# Linux, CPython 3.11 (the oldest Python Hilo supports); every wheel's hash of each chosen version is kept,
# so the locks install on any Linux architecture those versions ship for. setuptools is locked too: the
# editable install builds without network access to unpinned build tools (--no-build-isolation).
compile() {
    local out=$1
    shift
    (cd "$ROOT" && printf 'setuptools>=68\n' | "$VENV/bin/uv" pip compile pyproject.toml - "$@" \
        --generate-hashes --python-version 3.11 --python-platform linux \
        --no-header --annotation-style line --quiet -o "$out")
    sed -i "s#${new#"$ROOT"/}/##g; s#$ROOT/##g" "$out"  # annotations name files as they are in the checkout
}
step "Resolving the newest allowed versions"
compile "$new/requirements-dev.lock" --extra dev || die "resolving the dev lock failed"
# The runtime lock is the dev lock's runtime part: the same versions, so the image runs what CI tested.
compile "$new/requirements.lock" --constraint "$new/requirements-dev.lock" || die "resolving the runtime lock failed"
for f in requirements.lock requirements-dev.lock; do
    if [[ -f $ROOT/$f ]]; then
        diff -u <(grep -E '^[A-Za-z0-9]' "$ROOT/$f") <(grep -E '^[A-Za-z0-9]' "$new/$f") | grep -E '^[-+][A-Za-z0-9]' |
            sed 's/ \\$//; s/^/    /' || info "$f: no version changes"
    fi
done

write() {
    cp "$new/requirements.lock" "$new/requirements-dev.lock" "$ROOT/"
    ok "wrote requirements.lock and requirements-dev.lock"
}
if ((!TEST)); then
    write
    exit 0
fi

step "Installing the new lock into ${VENV#"$ROOT"/} and running the suite (make test)"
# stack/up.sh installs whatever lock it is given and notices the change by its hash.
if HILO_LOCK="$new/requirements-dev.lock" make -C "$ROOT" test; then
    write
    info "commit both lock files"
else
    warn "the suite failed with the new versions: the locks stay as they were"
    bash "$ROOT/stack/up.sh" --no-server --venv-only >/dev/null || true
    die "fix what the new versions broke (or pin them in pyproject.toml), then run make lock again"
fi
