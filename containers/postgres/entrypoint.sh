#!/bin/sh
# Create the cluster on the first start (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB), then run the
# command as the postgres user: postgres listening on every address of the container, password logins only
# from the network.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "${1:-}" = postgres ]; then
    install -d -o postgres -g postgres -m 700 "$PGDATA"
    chown postgres:postgres "$PGDATA"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        [ -n "${POSTGRES_PASSWORD:-}" ] || {
            echo "error: POSTGRES_PASSWORD is not set" >&2
            exit 1
        }
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        chown postgres "$pwfile"
        runuser -u postgres -- initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 \
            --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256 >/dev/null
        rm -f "$pwfile"
        # initdb allows host logins from loopback only: the other containers come over the network.
        printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
        printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
        if [ "$POSTGRES_DB" != postgres ]; then
            runuser -u postgres -- postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
        fi
        echo "cluster created in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
    fi
    shift
    exec runuser -u postgres -- postgres -D "$PGDATA" "$@"
fi
exec "$@"
