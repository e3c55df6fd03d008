#!/usr/bin/env bash
# Start the local Hilo stack: PostgreSQL, Redis, Asterisk 22 (chroot), two SIPp
# demo agents and the Hilo server. Idempotent: what already runs is reused.
#
#   stack/up.sh               everything
#   stack/up.sh --no-server   everything but the Hilo server (the tests run
#                             their own); migrations and demo seed still run
#   stack/up.sh --venv-only   only install the locked Python packages into .run/venv
#
# State lives in .run/ (env, venv, data, logs, pid files); stack/down.sh stops it.

# shellcheck source=stack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

START_SERVER=1
VENV_ONLY=0
for arg in "$@"; do
    case $arg in
    --no-server) START_SERVER=0 ;;
    --venv-only) VENV_ONLY=1 ;;
    -h | --help)
        sed -n '2,11s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *) die "unknown option: $arg (see --help)" ;;
    esac
done

need_root
umask 022
mkdir -p "$RUN" "$LOGS"
private_logs  # 0750, files 0640; again at the end for the logs the services created meanwhile
T0=$SECONDS

PG_PORT_START=55432
REDIS_PORT_START=56379
# SIPp phones that answer every call: the demo agents, and the demo supervisor's phone (listen/whisper/barge).
# name, SIP port, media port, scenario (asterisk/sipp/): the demo agents, the demo supervisor's phone, and
# a phone that rings and is never answered (for ring-no-answer tests), and one that is always busy (486, for
# busy-phone tests). Their endpoints in dialplans/phones.yaml
# have these static contacts; the phones only answer calls, so they never need their credentials.
SIPP_AGENTS=("agent-alice 5071 6000 agent_uas" "agent-bob 5072 6010 agent_uas" "supervisor-demo 5073 6020 agent_uas"
    "agent-noanswer 5074 6030 agent_no_answer_uas" "agent-busy 5075 6040 agent_busy_uas")

# ------------------------------------------------------------ a. packages
step "Checking Debian packages"
ensure_packages postgresql redis-server debootstrap espeak-ng sox sip-tester zstd \
    python3-venv iproute2 curl chromium  # chromium: the console's browser test (headless, via Playwright)
ok "all present"

# ------------------------------------------------------------------ b. venv
# The venv holds exactly the locked versions (requirements-dev.lock: runtime + dev extras, with hashes), so a
# new machine runs what CI tested; `make lock` refreshes the lock on purpose. HILO_LOCK names another lock
# (stack/lock.sh tries a new one with it).
LOCK=${HILO_LOCK:-$ROOT/requirements-dev.lock}
venv_setup() {
    local want have
    [[ -f $ROOT/pyproject.toml ]] || die "pyproject.toml is missing"
    [[ -f $LOCK ]] || die "the lock $LOCK is missing (make lock writes it)"
    want=$(cat "$ROOT/pyproject.toml" "$LOCK" | sha256sum | cut -d' ' -f1)
    have=$(cat "$VENV/.installed-hash" 2>/dev/null || true)
    if [[ -x $VENV/bin/python && $want == "$have" ]]; then
        step "Python venv up to date (${VENV#"$ROOT"/})"
        return 0
    fi
    step "Installing the locked packages into ${VENV#"$ROOT"/} (${LOCK#"$ROOT"/}, then pip install -e . --no-deps)"
    if [[ ! -x $VENV/bin/python ]]; then
        python3 -m venv "$VENV" || die "python3 -m venv failed"
    fi
    # --require-hashes: every package is the one the lock names, byte for byte. The venv is synced, not only
    # added to: a package the lock dropped would otherwise linger and hide a missing dependency.
    run_logged "$LOGS/pip.log" "pip install -r ${LOCK##*/}" \
        "$VENV/bin/python" -m pip install --require-hashes --no-deps -r "$LOCK"
    local extra
    extra=$(comm -23 <("$VENV/bin/python" -m pip freeze --exclude-editable 2>/dev/null | sed 's/==.*//' |
        tr 'A-Z_.' 'a-z--' | sort -u) <(grep -oE '^[A-Za-z0-9_.-]+==' "$LOCK" | sed 's/==$//' |
        tr 'A-Z_.' 'a-z--' | sort -u) | grep -vxE 'pip|hilo' || true)
    if [[ -n $extra ]]; then
        # shellcheck disable=SC2086  # one name per word
        run_logged "$LOGS/pip.log" "pip uninstall (not in the lock)" "$VENV/bin/python" -m pip uninstall -y $extra
    fi
    # The project itself, editable, built with the locked setuptools (no unpinned build tools fetched).
    run_logged "$LOGS/pip.log" "pip install -e ." \
        "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -e "$ROOT"
    printf '%s\n' "$want" >"$VENV/.installed-hash"
}
venv_setup
((VENV_ONLY)) && exit 0

# ------------------------------------------------------------------- c. env
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }

env_setup() {
    local pg_port redis_port pg_pw redis_pw
    if [[ ! -s $ENV_FILE ]]; then
        step "Creating ${ENV_FILE#"$ROOT"/} (new secrets and free ports)"
        pg_port=$(free_tcp_port "$PG_PORT_START")
        redis_port=$(free_tcp_port "$REDIS_PORT_START")
        pg_pw=$(secret)
        redis_pw=$(secret)
        (
            umask 077
            cat >"$ENV_FILE.tmp" <<EOF
HILO_ARI_URL=http://127.0.0.1:8088/ari
HILO_ARI_USER=hilo
HILO_ARI_PASSWORD=$(secret)
HILO_AMI_HOST=127.0.0.1
HILO_AMI_PORT=5038
HILO_AMI_USER=hilo
HILO_AMI_PASSWORD=$(secret)
HILO_AMI_PERMIT=127.0.0.0/255.0.0.0
HILO_DATABASE_URL=postgresql://hilo:$pg_pw@127.0.0.1:$pg_port/hilo
HILO_TEST_DATABASE_URL=postgresql://hilo:$pg_pw@127.0.0.1:$pg_port/hilo_test
HILO_REDIS_URL=redis://:$redis_pw@127.0.0.1:$redis_port/0
HILO_API_TOKEN=$(secret)
HILO_HTTP_HOST=127.0.0.1
HILO_HTTP_PORT=8080
HILO_SIP_HOST=127.0.0.1
HILO_SIP_PORT=5060
HILO_MEDIA_ADDR=127.0.0.1
HILO_SOUNDS_DIR=$AST_ROOT/usr/share/asterisk/sounds/hilo
HILO_ASTERISK_ROOT=$AST_ROOT
HILO_BIND_ADDR=127.0.0.1
EOF
        )
        mv "$ENV_FILE.tmp" "$ENV_FILE"
    else
        step "Reusing ${ENV_FILE#"$ROOT"/}"
        chmod 600 "$ENV_FILE"
        # Keys added to the stack after this file was made get their default.
        local kv
        for kv in HILO_AMI_PERMIT=127.0.0.0/255.0.0.0 HILO_MEDIA_ADDR=127.0.0.1; do
            grep -q "^${kv%%=*}=" "$ENV_FILE" || printf '%s\n' "$kv" >>"$ENV_FILE"
        done
        # Point the chroot paths at this checkout (it may have moved). Prompts go where Debian's
        # Asterisk looks for sounds: astdatadir (/usr/share/asterisk) + /sounds.
        sed -i -e "s|^HILO_SOUNDS_DIR=.*|HILO_SOUNDS_DIR=$AST_ROOT/usr/share/asterisk/sounds/hilo|" \
            -e "s|^HILO_ASTERISK_ROOT=.*|HILO_ASTERISK_ROOT=$AST_ROOT|" "$ENV_FILE"
    fi
    load_env
    PG_PORT=$(sed -E 's|.*@[^:/]+:([0-9]+)/.*|\1|' <<<"$HILO_DATABASE_URL")
    PG_PASSWORD=$(sed -E 's|^postgresql://[^:]+:([^@]*)@.*|\1|' <<<"$HILO_DATABASE_URL")
    REDIS_PORT=$(sed -E 's|.*@[^:/]+:([0-9]+)/.*|\1|' <<<"$HILO_REDIS_URL")
    REDIS_PASSWORD=$(sed -E 's|^redis://[^:]*:([^@]*)@.*|\1|' <<<"$HILO_REDIS_URL")
    [[ $PG_PORT =~ ^[0-9]+$ && $REDIS_PORT =~ ^[0-9]+$ ]] || die "cannot read the ports from $ENV_FILE"
}
env_setup
# Passwords of the demo console users (made in step h), generated once like the other secrets.
# "name role agent teams password-variable": the demo supervisor supervises both demo teams (routing.yaml).
CONSOLE_USERS=("alice agent alice - HILO_CONSOLE_ALICE_PASSWORD" "bob agent bob - HILO_CONSOLE_BOB_PASSWORD"
    "supervisor supervisor - front-office,back-office HILO_CONSOLE_SUPERVISOR_PASSWORD")
for spec in "${CONSOLE_USERS[@]}"; do
    ensure_env_secret "${spec##* }"
done
# The Prometheus scrape token: /metrics has the per-agent series only for a scraper presenting it.
ensure_env_secret HILO_METRICS_TOKEN
# The AES-256 key call recordings are encrypted with, under a key id so keys can rotate: a new key is added
# to HILO_RECORDING_KEYS ("id:base64,id:base64") and named in HILO_RECORDING_KEY_ID; old ones stay to read
# older files. Generated once, like the other secrets.
if ! grep -q '^HILO_RECORDING_KEYS=' "$ENV_FILE"; then
    printf 'HILO_RECORDING_KEYS=%s:%s\nHILO_RECORDING_KEY_ID=%s\n' "k$(date -u +%Y%m%d)" \
        "$(python3 -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())')" \
        "k$(date -u +%Y%m%d)" >>"$ENV_FILE"
fi
# The pepper of customers' PIN / date-of-birth hashes (crm_bridge/verification.py), kept out of the database.
# Generated once like the other secrets; to rotate it see docs/security.md (the old value goes to
# HILO_SECRET_PEPPER_PREVIOUS, or secrets hashed with it no longer verify).
ensure_env_secret HILO_SECRET_PEPPER
# Messaging (bridges/): development credentials for Twilio and the WhatsApp Cloud API, generated once like
# the other secrets (real ones replace them; see docs/messaging.md).
if ! grep -q '^HILO_TWILIO_ACCOUNT_SID=' "$ENV_FILE"; then
    printf 'HILO_TWILIO_ACCOUNT_SID=AC%s\n' "$(python3 -c 'import secrets; print(secrets.token_hex(16))')" >>"$ENV_FILE"
fi
for key in HILO_TWILIO_AUTH_TOKEN HILO_WHATSAPP_APP_SECRET HILO_WHATSAPP_VERIFY_TOKEN HILO_WHATSAPP_ACCESS_TOKEN; do
    ensure_env_secret "$key"
done
# Each phone of dialplans/phones.yaml has its own SIP password (HILO_PHONE_SECRET_<ENDPOINT>), generated once;
# stack/asterisk.sh renders their digest hashes into Asterisk's hilo-phones.conf, `hilo phones show <endpoint>`
# prints what to type into a phone.
phone_keys=$(cd "$ROOT" && "$VENV/bin/hilo" phones secret-keys) || die "hilo phones secret-keys failed: see dialplans/phones.yaml"
for key in $phone_keys; do
    ensure_env_secret "$key"
done
load_env

# ------------------------------------------------------------ d. PostgreSQL
PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
[[ -x $PG_BIN/pg_ctl ]] || die "no PostgreSQL server binaries in /usr/lib/postgresql"

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# .run/pg, or (when the postgres user cannot reach the checkout, or the path
# is too long for a unix socket) a folder under /var/lib/hilo linked from it.
pg_dir() {
    if [[ -L $RUN/pg || -d $RUN/pg ]]; then
        readlink -f "$RUN/pg"
        return 0
    fi
    local ext
    if as_postgres test -x "$RUN" && ((${#RUN} < 70)); then
        install -d -o postgres -g postgres -m 700 "$RUN/pg"
    else
        ext="/var/lib/hilo/pg-$(printf '%s' "$ROOT" | sha1sum | cut -d' ' -f1)"
        install -d -m 755 /var/lib/hilo
        install -d -o postgres -g postgres -m 700 "$ext"
        ln -sfn "$ext" "$RUN/pg"
        note "the postgres user cannot use ${RUN}: cluster kept in $ext" >&2
    fi
    readlink -f "$RUN/pg"
}

pg_setup() {
    local dir data ver
    dir=$(pg_dir)
    data="$dir/data"
    ver=$(basename "$(dirname "$PG_BIN")")
    [[ $(stat -c %U "$dir") == postgres ]] || chown postgres:postgres "$dir"
    ln -sfn "$dir/postgresql.log" "$LOGS/postgresql.log"
    if [[ ! -f $data/PG_VERSION ]]; then
        step "Creating the PostgreSQL $ver cluster (${RUN#"$ROOT"/}/pg/data)"
        as_postgres "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 >"$LOGS/initdb.log" 2>&1 ||
            {
                tail -n 20 "$LOGS/initdb.log" >&2
                die "initdb failed"
            }
        printf "\ninclude_if_exists = 'hilo.conf'\n" >>"$data/postgresql.conf"
    elif [[ $(cat "$data/PG_VERSION") != "$ver" ]]; then
        die "the cluster in $data is PostgreSQL $(cat "$data/PG_VERSION"), the newest server here is $ver: remove .run/pg (make clean) to recreate it"
    fi
    cat >"$data/hilo.conf" <<EOF
# Written by stack/up.sh on every run.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$dir'
password_encryption = 'scram-sha-256'
EOF
    chown postgres:postgres "$data/hilo.conf"
    if as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        step "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    else
        port_in_use "$PG_PORT" && die "port $PG_PORT (PostgreSQL in .run/env) is taken by another process:"$'\n'"$(who_listens "$PG_PORT")"
        step "Starting PostgreSQL $ver on 127.0.0.1:$PG_PORT"
        as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgresql.log" -w -t 60 start >/dev/null ||
            {
                tail -n 20 "$dir/postgresql.log" >&2
                die "PostgreSQL did not start (log: $LOGS/postgresql.log)"
            }
    fi
    local i
    for ((i = 0; i < 60; i++)); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.5
    done
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || die "PostgreSQL does not answer on 127.0.0.1:$PG_PORT"
    # Role and databases (idempotent). The password never appears on a command line (where `ps` shows it to
    # every local user): it reaches psql on its standard input, as a psql variable (\set; inside its single
    # quotes a quote is doubled and a backslash escaped), which :'pw' then quotes as an SQL literal.
    local pw_quoted=${PG_PASSWORD//\\/\\\\}
    pw_quoted=${pw_quoted//\'/\'\'}
    as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$PG_PORT" -d postgres \
        >/dev/null <<SQL || die "creating the hilo role/databases failed"
\set pw '$pw_quoted'
SELECT 'CREATE ROLE hilo LOGIN CREATEDB' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hilo')
\gexec
ALTER ROLE hilo WITH LOGIN CREATEDB PASSWORD :'pw';
SELECT 'CREATE DATABASE hilo OWNER hilo' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'hilo')
\gexec
SELECT 'CREATE DATABASE hilo_test OWNER hilo' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'hilo_test')
\gexec
SQL
    ok "databases hilo and hilo_test ready"
}
pg_setup

# ------------------------------------------------------------------ e. Redis
redis_ping() { REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

redis_setup() {
    local dir="$RUN/redis" pidfile="$RUN/redis/redis.pid" i
    install -d -m 700 "$dir"
    (
        umask 077
        cat >"$dir/redis.conf" <<EOF
# Written by stack/up.sh on every run (holds the password: mode 600).
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
requirepass $REDIS_PASSWORD
dir $dir
appendonly yes
daemonize yes
pidfile $pidfile
logfile $LOGS/redis.log
EOF
    )
    if pid_alive "$pidfile" redis-server && redis_ping; then
        step "Redis already running on 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    port_in_use "$REDIS_PORT" && die "port $REDIS_PORT (Redis in .run/env) is taken by another process:"$'\n'"$(who_listens "$REDIS_PORT")"
    step "Starting Redis on 127.0.0.1:$REDIS_PORT"
    rm -f "$pidfile"
    redis-server "$dir/redis.conf" </dev/null || die "redis-server failed (log: $LOGS/redis.log)"
    for ((i = 0; i < 100; i++)); do
        redis_ping && return 0
        sleep 0.2
    done
    tail -n 20 "$LOGS/redis.log" >&2 || true
    die "Redis does not answer PING on 127.0.0.1:$REDIS_PORT"
}
redis_setup

# --------------------------------------------------------------- f. Asterisk
bash "$ROOT/stack/asterisk.sh" start

# ---------------------------------------------------------- g. SIPp agents
sipp_agent() {
    local name=$1 port=$2 media_port=$3 scenario=$4
    local pidfile="$RUN/sipp/$name.pid" log="$LOGS/sipp-$name.log" pid out
    if pid=$(pid_of "$pidfile" sipp); then
        step "SIPp $name already answering on 127.0.0.1:$port (pid $pid)"
        return 0
    fi
    udp_bound "$port" && die "UDP port $port (SIPp $name) is taken by another process:"$'\n'"$(who_listens "$port")"
    step "Starting SIPp $name on 127.0.0.1:$port"
    # -bg: SIPp forks, prints "Background mode - PID=[n]" and its parent exits
    #      with status 99; the child needs no terminal.
    # -nostdin: no keyboard control (CI has no standard input).
    # -ci: the UDP control socket (port 8888 and up) on loopback, not 0.0.0.0.
    # -mi/-mp: the media (RTP echo) sockets on loopback.
    # -aa: answer OPTIONS (and INFO, NOTIFY, UPDATE) with 200 OK, so Asterisk's qualify sees the phone alive.
    local rc=0
    out=$(cd "$RUN/sipp" && setsid sipp -sf "$ROOT/asterisk/sipp/$scenario.xml" -s "$name" \
        -i 127.0.0.1 -p "$port" -mi 127.0.0.1 -mp "$media_port" -ci 127.0.0.1 -aa \
        -bg -nostdin -trace_err -error_file "$LOGS/sipp-$name-errors.log" </dev/null 2>&1) || rc=$?
    printf '%s\n' "$out" >>"$log"
    pid=$(sed -nE 's/.*PID=\[([0-9]+)\].*/\1/p' <<<"$out" | tail -n 1)
    [[ -n $pid && ($rc == 0 || $rc == 99) ]] || die "SIPp $name did not start (exit $rc): $out"
    printf '%s\n' "$pid" >"$pidfile"
    local i
    for ((i = 0; i < 50; i++)); do
        udp_bound "$port" && return 0
        kill -0 "$pid" 2>/dev/null || die "SIPp $name exited (see $log)"
        sleep 0.1
    done
    die "SIPp $name is not listening on UDP $port"
}

install -d -m 755 "$RUN/sipp"
for agent in "${SIPP_AGENTS[@]}"; do
    # shellcheck disable=SC2086  # "name port media_port scenario"
    sipp_agent $agent
done

# ------------------------------------------------------------ h. Hilo server
hilo_cmd() { (cd "$ROOT" && "$VENV/bin/hilo" "$@"); }

step "Applying database migrations (hilo db migrate)"
hilo_cmd db migrate >>"$LOGS/hilo-setup.log" 2>&1 || {
    tail -n 40 "$LOGS/hilo-setup.log" >&2
    die "hilo db migrate failed"
}
step "Seeding the demo data (hilo seed demo)"
hilo_cmd seed demo >>"$LOGS/hilo-setup.log" 2>&1 || {
    tail -n 40 "$LOGS/hilo-setup.log" >&2
    die "hilo seed demo failed"
}
step "Demo console users (hilo users add; passwords in ${ENV_FILE#"$ROOT"/})"
for spec in "${CONSOLE_USERS[@]}"; do
    read -r user role agent teams var <<<"$spec"
    args=(users add "$user" --role "$role" --password-env "$var" --replace)  # unchanged users stay as they are
    [[ $agent == - ]] || args+=(--agent "$agent")
    if [[ $teams != - ]]; then
        IFS=, read -r -a team_list <<<"$teams"
        for team in "${team_list[@]}"; do args+=(--team "$team"); done
    fi
    hilo_cmd "${args[@]}" >>"$LOGS/hilo-setup.log" 2>&1 || {
        tail -n 40 "$LOGS/hilo-setup.log" >&2
        die "hilo users add $user failed"
    }
done
# `make run` deploys the repo's dialplans/: a new flow version only when the files changed.
step "Making dialplans/ the live flow version (hilo flows apply)"
hilo_cmd flows apply --by make-run --comment "dialplans/ working copy" >>"$LOGS/hilo-setup.log" 2>&1 || {
    tail -n 40 "$LOGS/hilo-setup.log" >&2
    die "hilo flows apply failed: fix the problems listed above (hilo flows validate)"
}

HEALTH_URL="http://${HILO_HTTP_HOST}:${HILO_HTTP_PORT}/healthz"
if ((START_SERVER)); then
    if pid=$(pid_of "$RUN/hilo.pid" hilo); then
        step "Hilo server already running (pid $pid)"
    else
        tcp_listening "$HILO_HTTP_PORT" &&
            die "port $HILO_HTTP_PORT (Hilo HTTP) is taken by another process:"$'\n'"$(who_listens "$HILO_HTTP_PORT")"
        step "Starting the Hilo server (hilo serve, ${HILO_WORKERS:-1} worker process(es): HILO_WORKERS)"
        (umask 027 && printf '\n===== %s hilo serve =====\n' "$(date '+%F %T')" >>"$LOGS/hilo.log")
        (cd "$ROOT" && exec setsid nohup "$VENV/bin/hilo" serve >>"$LOGS/hilo.log" 2>&1 </dev/null) &
        echo $! >"$RUN/hilo.pid"
    fi
    pid=$(cat "$RUN/hilo.pid")
    start=$SECONDS last=$SECONDS
    until curl -fsS -o /dev/null --max-time 2 "$HEALTH_URL" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS - start >= 60)); then
            warn "the Hilo server is not healthy; last lines of $LOGS/hilo.log:"
            tail -n 40 "$LOGS/hilo.log" >&2 || true
            kill -0 "$pid" 2>/dev/null && die "no answer from $HEALTH_URL after 60s"
            rm -f "$RUN/hilo.pid"
            die "hilo serve exited"
        fi
        if ((SECONDS - last >= 10)); then
            note "waiting for $HEALTH_URL ($((SECONDS - start))s)"
            last=$SECONDS
        fi
        sleep 0.5
    done
    ok "Hilo server healthy (pid $pid)"
else
    note "--no-server: the Hilo server is not started"
fi

private_logs

# -------------------------------------------------------------- i. summary
row() { printf '    %-22s %s\n' "$1" "$2"; }
step "Stack ready in $((SECONDS - T0))s"
row "Asterisk ARI" "$HILO_ARI_URL  (Stasis apps: hilo, hilo-test)"
row "Asterisk AMI" "$HILO_AMI_HOST:$HILO_AMI_PORT"
row "Asterisk SIP" "$HILO_SIP_HOST:$HILO_SIP_PORT udp+tcp  (trunks: carrier-sim from 127.0.0.2, carrier-test from 127.0.0.3)"
row "PostgreSQL" "127.0.0.1:$PG_PORT  (databases hilo, hilo_test; user hilo)"
row "Redis" "127.0.0.1:$REDIS_PORT"
if ((START_SERVER)); then
    row "Hilo HTTP" "http://$HILO_HTTP_HOST:$HILO_HTTP_PORT  (healthz ok)"
    row "Agent console" "http://$HILO_HTTP_HOST:$HILO_HTTP_PORT/console/  (users alice, bob, supervisor)"
else
    row "Hilo HTTP" "not started (--no-server)"
fi
for agent in "${SIPP_AGENTS[@]}"; do
    read -r name port _ <<<"$agent"
    row "SIPp $name" "127.0.0.1:$port udp  (PJSIP/$name)"
done
row "SIP credentials" "hilo phones show <endpoint>  (each phone's own; passwords in ${ENV_FILE#"$ROOT"/})"
row "Asterisk chroot" "${AST_ROOT}"
row "Logs" "$LOGS/"
echo
info "Credentials are in ${ENV_FILE#"$ROOT"/}; load them with:  set -a; source .run/env; set +a"
info "Stop everything with:  make down  (or bash stack/down.sh)"
