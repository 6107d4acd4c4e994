#!/usr/bin/env bash
# Starts and stops elearn's local stack on loopback: a project-local
# PostgreSQL 15 cluster, Redis 7, a single-node Kafka (KRaft) and the stock
# /usr/sbin/nginx with the module loaded, and the worker daemons
# (elearn-outbox, elearn-progress).  Everything lives under $ELEARN_VAR
# (var/run-stack for `make run`; the tests use their own, and start no
# elearn-progress: its tests run their own).
#
#   tools/stack.sh start [pg|redis|kafka|outbox|nginx|progress ...]
#                                                (default: all but progress)
#   tools/stack.sh stop  [...]
#   tools/stack.sh status
#   tools/stack.sh reload                              (nginx -s reload)
#
# Every start is idempotent: a component already running is left alone.
set -euo pipefail

ELEARN_TOP=$(cd "$(dirname "$0")/.." && pwd)
export ELEARN_TOP
# shellcheck source=../config/elearn.env
. "$ELEARN_TOP/config/elearn.env"

PGBIN=/usr/lib/postgresql/15/bin
V=$ELEARN_VAR

log() { echo "stack: $*" >&2; }

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {   # port seconds name
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_open "$1" && return 0
        sleep 0.1
    done
    log "$3 did not open port $1 within $2 s"
    return 1
}

pid_alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() {   # pidfile name
    local pid i
    pid_alive "$1" || { rm -f "$1"; return 0; }
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
        sleep 0.1
    done
    log "$2 ignored SIGTERM for 30 s, killing"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

# --- PostgreSQL ---------------------------------------------------------

pg_start() {
    local d=$V/pg/data
    mkdir -p "$V/pg/run"
    if [ ! -f "$d/PG_VERSION" ]; then
        log "pg: initdb in $d"
        mkdir -p "$d"
        local pw=$V/pg/.pw
        printf '%s\n' "$ELEARN_PG_PASSWORD" > "$pw"
        if [ "$(id -u)" -eq 0 ]; then
            chown -R postgres:postgres "$V/pg"
        fi
        as_pg "$PGBIN/initdb" -D "$d" -U "$ELEARN_PG_USER" --pwfile="$pw" \
            --auth-local=scram-sha-256 --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >/dev/null
        rm -f "$pw"
        cat >> "$d/postgresql.conf" <<CONF
# elearn local cluster
listen_addresses = '127.0.0.1'
port = $ELEARN_PG_PORT
unix_socket_directories = '$V/pg/run'
max_connections = 200
shared_buffers = 256MB
work_mem = 16MB
maintenance_work_mem = 256MB
logging_collector = off
log_min_duration_statement = 1000
CONF
    fi
    # the cache stampede test counts statements in pg_stat_statements; an
    # older cluster gets the line here and a restart to load the library
    if ! grep -q "^shared_preload_libraries = 'pg_stat_statements'" \
            "$d/postgresql.conf"; then
        log "pg: enabling pg_stat_statements"
        echo "shared_preload_libraries = 'pg_stat_statements'" \
            >> "$d/postgresql.conf"
        if as_pg "$PGBIN/pg_ctl" -D "$d" status >/dev/null 2>&1; then
            as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w -t 60 stop >/dev/null
        fi
    fi
    if as_pg "$PGBIN/pg_ctl" -D "$d" status >/dev/null 2>&1; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$V/pg/run" "$V/pg"
    as_pg "$PGBIN/pg_ctl" -D "$d" -l "$V/pg/postgres.log" -w -t 60 \
        -o "-p $ELEARN_PG_PORT" start >/dev/null
    if ! psql -d postgres -Atqc \
            "SELECT 1 FROM pg_database WHERE datname = '$ELEARN_PG_DB'" \
            | grep -q 1; then
        createdb "$ELEARN_PG_DB"
    fi
    log "pg: up on 127.0.0.1:$ELEARN_PG_PORT"
}

pg_stop() {
    local d=$V/pg/data
    [ -f "$d/PG_VERSION" ] || return 0
    if as_pg "$PGBIN/pg_ctl" -D "$d" status >/dev/null 2>&1; then
        as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w -t 60 stop >/dev/null
    fi
}

# --- Redis --------------------------------------------------------------

redis_start() {
    mkdir -p "$V/redis"
    pid_alive "$V/redis/redis.pid" && return 0
    redis-server --bind 127.0.0.1 --port "$ELEARN_REDIS_PORT" \
        --daemonize yes --dir "$V/redis" --pidfile "$V/redis/redis.pid" \
        --logfile "$V/redis/redis.log" --save '' --appendonly no \
        --maxmemory 512mb --maxmemory-policy allkeys-lru
    wait_port "$ELEARN_REDIS_PORT" 10 redis
    log "redis: up on 127.0.0.1:$ELEARN_REDIS_PORT"
}

redis_stop() {
    stop_pidfile "$V/redis/redis.pid" redis
}

# --- Kafka --------------------------------------------------------------

kafka_start() {
    local libs conf pom l4j log1
    mkdir -p "$V/kafka"
    if pid_alive "$V/kafka/kafka.pid"; then
        kafka_topics
        return 0
    fi
    # ELEARN_KAFKA_POM: another pinned broker (the bench's Kafka 3.9 for
    # the Lua peer, config/kafka-peer); 3.x logs through log4j 1, with the
    # log4j.properties beside its pom
    pom=${ELEARN_KAFKA_POM:-$ELEARN_TOP/config/kafka/pom.xml}
    libs=$("$ELEARN_TOP/tools/fetch-kafka.sh" "$pom")
    l4j=$(dirname "$pom")/log4j.properties
    log1=()
    if [ -f "$l4j" ]; then
        log1=(-Dlog4j.configuration="file:$l4j")
    fi
    conf=$V/kafka/server.properties
    envsubst < "$ELEARN_TOP/config/kafka/server.properties.in" > "$conf"
    if [ ! -f "$V/kafka/data/meta.properties" ]; then
        java -cp "$libs/*" kafka.tools.StorageTool format --standalone \
            -t "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid \
                  2>/dev/null)" -c "$conf" >/dev/null 2>&1
    fi
    nohup java -Xms256m -Xmx768m -XX:+UseG1GC \
        -Dkafka.logs.dir="$V/kafka" \
        -Dlog4j2.configurationFile="$ELEARN_TOP/config/kafka/log4j2.properties" \
        "${log1[@]}" \
        -cp "$libs/*" kafka.Kafka "$conf" \
        > "$V/kafka/stdout.log" 2>&1 < /dev/null &
    echo $! > "$V/kafka/kafka.pid"
    wait_port "$ELEARN_KAFKA_PORT" 60 kafka
    kafka_topics
    log "kafka: up on $ELEARN_KAFKA_BROKERS"
}

kafka_topics() {
    /usr/bin/python3 "$ELEARN_TOP/tools/kafka-topics.py" \
        "$ELEARN_KAFKA_BROKERS" "$ELEARN_TOP/config/kafka/topics.txt"
}

kafka_stop() {
    stop_pidfile "$V/kafka/kafka.pid" kafka
}

# --- nginx --------------------------------------------------------------

# Dev-only signing keys, made once per stack: an HS256 secret and an
# ES256/RS256 key pair.  The JWT key file of the configuration follows
# ELEARN_JWT_ALG unless ELEARN_JWT_KEY_FILE names one.
nginx_keys() {
    local s=$V/secrets
    mkdir -p "$s"
    chmod 700 "$s"
    [ -f "$s/jwt-hs256.key" ] \
        || head -c 48 /dev/urandom > "$s/jwt-hs256.key"
    [ -f "$s/jwt-es256.pem" ] \
        || openssl ecparam -name prime256v1 -genkey -noout \
               -out "$s/jwt-es256.pem" 2>/dev/null
    [ -f "$s/jwt-rs256.pem" ] \
        || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
               -out "$s/jwt-rs256.pem" 2>/dev/null
    # cursor signing key (elearn_cursor_key_file): its own secret, so
    # rotating the JWT key does not void cursors and the reverse
    [ -f "$s/cursor.key" ] || head -c 48 /dev/urandom > "$s/cursor.key"
    chmod 600 "$s"/*
    case $ELEARN_JWT_ALG in
        HS256) : "${ELEARN_JWT_KEY_FILE:=$s/jwt-hs256.key}" ;;
        ES256) : "${ELEARN_JWT_KEY_FILE:=$s/jwt-es256.pem}" ;;
        RS256) : "${ELEARN_JWT_KEY_FILE:=$s/jwt-rs256.pem}" ;;
    esac
    export ELEARN_JWT_KEY_FILE
    : "${ELEARN_CURSOR_KEY_FILE:=$s/cursor.key}"
    export ELEARN_CURSOR_KEY_FILE
}

nginx_conf() {
    local n=$V/nginx
    nginx_keys
    mkdir -p "$n/logs" "$n/tmp"
    [ "$(id -u)" -eq 0 ] && chown "$ELEARN_NGINX_USER" "$n/tmp"
    export ELEARN_NGINX_PREFIX=$n
    envsubst "$(env | sed -n 's/^\(ELEARN_[A-Z_]*\)=.*/$\1/p' | tr '\n' ' ')" \
        < "$ELEARN_NGINX_CONF" > "$n/nginx.conf"
}

nginx_start() {
    local n=$V/nginx
    nginx_conf
    if pid_alive "$n/nginx.pid"; then
        return 0
    fi
    # an ASan build of the module needs its runtime in the stock binary
    env ${ELEARN_NGINX_PRELOAD:+LD_PRELOAD="$ELEARN_NGINX_PRELOAD"} \
        /usr/sbin/nginx -p "$n" -c "$n/nginx.conf" -e "$n/logs/error.log"
    wait_port "$ELEARN_HTTP_PORT" 10 nginx
    log "nginx: up on http://127.0.0.1:$ELEARN_HTTP_PORT"
}

nginx_reload() {
    local n=$V/nginx
    nginx_conf
    env ${ELEARN_NGINX_PRELOAD:+LD_PRELOAD="$ELEARN_NGINX_PRELOAD"} \
        /usr/sbin/nginx -p "$n" -c "$n/nginx.conf" -e "$n/logs/error.log" \
        -s reload
}

nginx_stop() {
    stop_pidfile "$V/nginx/nginx.pid" nginx
}

# --- worker daemons: build/bin/elearn-<name> -c config/<name>.conf -------

daemon_start() {   # name metrics-port
    local d=$V/$1
    mkdir -p "$d"
    pid_alive "$d/$1.pid" && return 0
    # each daemon's own metrics port (the key is the same in every config)
    ELEARN_METRICS_PORT=$2 nohup "$ELEARN_BUILD/bin/elearn-$1" \
        -c "$ELEARN_TOP/config/$1.conf" >>"$d/$1.log" 2>&1 </dev/null &
    echo $! >"$d/$1.pid"
    wait_port "$2" 10 "elearn-$1"
    log "$1: up (metrics on 127.0.0.1:$2, log $d/$1.log)"
}

outbox_start() {
    daemon_start outbox "$ELEARN_OUTBOX_METRICS_PORT"
}

outbox_stop() {
    stop_pidfile "$V/outbox/outbox.pid" elearn-outbox
}

# elearn-progress, the write-behind of video progress: started after the
# migrations (tools/run.sh does), since a report it cannot write goes to
# the DLQ.  Not in the default start: the test stack runs none (its tests
# start their own in the same consumer group).
progress_start() {
    daemon_start progress "$ELEARN_PROGRESS_METRICS_PORT"
}

progress_stop() {
    stop_pidfile "$V/progress/progress.pid" elearn-progress
}

# ------------------------------------------------------------------------

status() {
    local c
    for c in pg redis kafka outbox nginx progress; do
        case $c in
            pg)       p=$ELEARN_PG_PORT ;;
            redis)    p=$ELEARN_REDIS_PORT ;;
            kafka)    p=$ELEARN_KAFKA_PORT ;;
            outbox)   p=$ELEARN_OUTBOX_METRICS_PORT ;;
            nginx)    p=$ELEARN_HTTP_PORT ;;
            progress) p=$ELEARN_PROGRESS_METRICS_PORT ;;
        esac
        if port_open "$p"; then
            echo "$c: up (127.0.0.1:$p)"
        else
            echo "$c: down (127.0.0.1:$p)"
        fi
    done
}

cmd=${1:-status}
shift || true
comps=("$@")
case $cmd in
    start)
        [ ${#comps[@]} -eq 0 ] && comps=(pg redis kafka outbox nginx)
        for c in "${comps[@]}"; do "${c}_start"; done ;;
    stop)
        [ ${#comps[@]} -eq 0 ] && comps=(pg redis kafka outbox nginx progress)
        for ((i = ${#comps[@]} - 1; i >= 0; i--)); do
            "${comps[$i]}_stop"
        done ;;
    reload)
        nginx_reload ;;
    status)
        status ;;
    *)
        echo "usage: $0 start|stop|status|reload" \
             "[pg redis kafka outbox nginx progress]" >&2
        exit 2 ;;
esac
