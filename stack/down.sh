#!/usr/bin/env bash
# Stop what stack/up.sh started (found by its pid files and the chroot in
# .run/), and nothing else. Quiet when nothing runs.

# shellcheck source=stack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root
[[ -d $RUN ]] || exit 0

# Hilo server
stop_pidfile "$RUN/hilo.pid" hilo "the Hilo server" 15

# SIPp demo agents (each takes a second or two to quit: signal them all first)
for f in "$RUN"/sipp/*.pid; do
    if pid=$(pid_of "$f" sipp); then
        step "Stopping SIPp $(basename "$f" .pid) (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
done
for f in "$RUN"/sipp/*.pid; do
    [[ -e $f ]] || continue
    if pid=$(pid_of "$f" sipp); then
        stop_pid "$pid" "SIPp $(basename "$f" .pid)" 10
    fi
    rm -f "$f"
done

# Asterisk (and the /proc, /dev mounts of its chroot)
if [[ -d $AST_ROOT ]]; then
    bash "$ROOT/stack/asterisk.sh" stop
fi

# Redis
stop_pidfile "$RUN/redis/redis.pid" redis-server Redis 15

# PostgreSQL
if [[ -e $RUN/pg/data/PG_VERSION ]]; then
    data=$(readlink -f "$RUN/pg/data")
    pg_ctl="/usr/lib/postgresql/$(cat "$data/PG_VERSION")/bin/pg_ctl"
    if [[ -x $pg_ctl ]] && (cd / && runuser -u postgres -- "$pg_ctl" -D "$data" status >/dev/null 2>&1); then
        step "Stopping PostgreSQL"
        (cd / && runuser -u postgres -- "$pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null) ||
            warn "pg_ctl stop failed (log: $LOGS/postgresql.log)"
    fi
fi
exit 0
