#!/usr/bin/env bash
# WebSocket figures of `make bench` (issue 6), measured by
# build/bin/elearn-wsload against nchan (Debian's libnginx-mod-nchan on the
# stock nginx, tools/bench/nchan.conf.in, a prefix of its own under var/)
# and against elearn's live sessions, in the same run:
#
#   idle    BENCH_WS_IDLE (50,000) idle WebSocket connections: the nginx
#           workers' RSS delta per connection (VmRSS summed over the
#           workers from /proc/<pid>/status, fresh nginx, before and after),
#           kernel memory apart (/proc/net/sockstat TCP "mem" pages and
#           /proc/meminfo Slab: both ends of every loopback connection,
#           and every other socket of the machine); beside it the RSS per
#           idle keep-alive HTTP connection to a plain `return 204` (same
#           nginx, same count).
#   fanout  one publish to each size of BENCH_WS_FANOUT ("1000 10000"),
#           repeated BENCH_WS_MESSAGES (20) times, in BENCH_WS_ROUNDS (10)
#           rounds that alternate the targets (nchan, elearn, nchan, ...)
#           so that a noisy stretch of the shared machine weighs on both:
#           delivery latency percentiles over every delivery of every
#           round, each round's p99 beside them, lost messages.
#   sessions  BENCH_WS_SESSIONS ("50x1000": 50 sessions of 1,000), each
#           owner publishing once a second, BENCH_WS_MESSAGES times, from
#           as many load processes as the file cap needs: latency
#           percentiles over all deliveries, losses, and for elearn the
#           Redis PUBLISH calls per message (INFO commandstats).
#
# Prints a table and writes var/bench/ws.{md,json}.  The elearn side needs
# the running stack (`make run`, as `make bench` does) with live sessions
# (contract s7); when the module has none yet, its cells say "pending live
# sessions" instead of a figure.  Never fails on a figure.
#
#   tools/bench-ws.sh                  both targets
#   BENCH_WS_TARGETS=nchan tools/bench-ws.sh
#
# Environment: BENCH_WS_TARGETS ("nchan elearn"), BENCH_WS_IDLE (50000,
# 0 skips), BENCH_WS_FANOUT ("1000 10000", " " skips), BENCH_WS_MESSAGES
# (20), BENCH_WS_ROUNDS (10, at most 10),
# BENCH_WS_RATE (connections per second per load process, 2500, against
# nchan), BENCH_WS_ELEARN_RATE (the same against elearn, 1000: a join is
# a token check and one Redis script; PostgreSQL only for a worker's first
# join of a session and on a cache miss),
# BENCH_WS_SESSIONS ("50x1000", empty skips), BENCH_WS_WORKERS (worker
# processes of nchan, and of elearn during the bench: 4), BENCH_NCHAN_PORT
# (ELEARN_HTTP_PORT + 1000), BENCH_WS_SETTLE (2.5 s between "everyone
# joined" and the first message: the presence counts of the last joins go
# out within elearn_live_presence_interval, 1 s, so that the Redis PUBLISH
# count of the messages' window holds messages only; the PUBLISH calls
# while joining are reported apart).
set -euo pipefail
ELEARN_TOP=$(cd "$(dirname "$0")/.." && pwd)
export ELEARN_TOP
. "$ELEARN_TOP/config/elearn.env"

TOOL=${ELEARN_BUILD:-$ELEARN_TOP/build}/bin/elearn-wsload
OUT=$(dirname "$ELEARN_VAR")/bench       # var/bench, as tools/bench.py
WORK=$OUT/ws
NCHAN=$(dirname "$ELEARN_VAR")/bench-ws/nchan
TARGETS=${BENCH_WS_TARGETS:-nchan elearn}
IDLE=${BENCH_WS_IDLE:-50000}
FANOUT=${BENCH_WS_FANOUT:-1000 10000}
MESSAGES=${BENCH_WS_MESSAGES:-20}
ROUNDS=${BENCH_WS_ROUNDS:-10}
SESSIONS=${BENCH_WS_SESSIONS-50x1000}
RATE=${BENCH_WS_RATE:-2500}
ELEARN_RATE=${BENCH_WS_ELEARN_RATE:-1000}
WORKERS=${BENCH_WS_WORKERS:-4}
SETTLE=${BENCH_WS_SETTLE:-2.5}
NPORT=${BENCH_NCHAN_PORT:-$((ELEARN_HTTP_PORT + 1000))}
BASE=http://127.0.0.1:$ELEARN_HTTP_PORT
PER_PROC=16000          # connections per load process (20,000 files cap)
MAX_IDLE=100000         # hard cap of the idle figure

log() { echo "bench-ws: $*" >&2; }

wait_http() {   # url name: 10 s for a 2xx
    local i
    for ((i = 0; i < 100; i++)); do
        curl -fso /dev/null "$1" && return 0
        sleep 0.1
    done
    log "$2 does not answer $1"
    return 1
}

# some load process still runs (a wait for its files is not in vain)
loaders_alive() {
    local p
    for p in "${LOADERS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}

[ -x "$TOOL" ] || { log "$TOOL missing: make all first"; exit 1; }
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] \
    || { log "libnginx-mod-nchan is not installed (tools/deps.sh)"; exit 1; }
[ "$IDLE" -le "$MAX_IDLE" ] || { log "BENCH_WS_IDLE over $MAX_IDLE"; exit 1; }
[[ $ROUNDS =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] \
    || { log "BENCH_WS_ROUNDS: 1 to 10"; exit 1; }
if [ -n "$SESSIONS" ]; then
    [[ $SESSIONS =~ ^[0-9]+x[0-9]+$ ]] \
        && [ $((${SESSIONS%x*} * ${SESSIONS#*x})) -le "$MAX_IDLE" ] \
        && [ "${SESSIONS%x*}" -le 1000 ] \
        || { log "BENCH_WS_SESSIONS: SxP, S <= 1000, S*P <= $MAX_IDLE"; exit 1; }
fi
mkdir -p "$OUT" "$WORK"
rm -f "$WORK"/*.json "$WORK"/*.err "$WORK"/*.samples "$WORK"/ready.*

LOADERS=()
cleanup() {
    local p
    for p in "${LOADERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    nchan_stop
    # elearn's nginx back to the stack's own configuration
    if [ -f "$WORK/elearn-restarted" ]; then
        rm -f "$WORK/elearn-restarted" "$WORK/elearn-idle.paths"
        elearn_restart stock || true
    fi
}
trap cleanup EXIT

# --- nchan -------------------------------------------------------------

nchan_start() {
    local user=${ELEARN_NGINX_USER:-www-data}
    nchan_stop
    if [ -n "$(ss -Hltn "sport = :$NPORT")" ]; then
        log "port $NPORT is taken (BENCH_NCHAN_PORT)"
        return 1
    fi
    mkdir -p "$NCHAN/tmp"
    [ "$(id -u)" -eq 0 ] && chown "$user" "$NCHAN/tmp"
    sed -e "s|@PREFIX@|$NCHAN|g; s|@PORT@|$NPORT|g" \
        -e "s|@WORKERS@|$WORKERS|g; s|@SHM@|256m|g; s|@USER@|$user|g" \
        "$ELEARN_TOP/tools/bench/nchan.conf.in" > "$NCHAN/nginx.conf"
    /usr/sbin/nginx -p "$NCHAN" -c "$NCHAN/nginx.conf" -e "$NCHAN/error.log"
    wait_http "http://127.0.0.1:$NPORT/204" "nchan's nginx"
}

# stops the master and waits for every worker too: a worker left behind
# would keep its `reuseport` socket and take connections from the next
# nginx (subscribers that never see its messages)
nchan_stop() {
    local pid pids i
    [ -f "$NCHAN/nginx.pid" ] || return 0
    pid=$(cat "$NCHAN/nginx.pid")
    pids="$pid $(pgrep -P "$pid" | tr '\n' ' ')"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
        # shellcheck disable=SC2086
        kill -0 $pids 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    [ "$i" -lt 10 ] || log "nchan's nginx took $((i / 10)) s to stop"
    if kill -0 $pids 2>/dev/null; then
        log "nchan's nginx ignored SIGTERM for 60 s, killing"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    rm -f "$NCHAN/nginx.pid"
}

# --- measuring ---------------------------------------------------------

# VmRSS RssAnon RssShmem (kB) summed over the children of master pid $1
workers_rss() {
    local c f a b s
    local rss=0 anon=0 shm=0
    for c in $(pgrep -P "$1"); do
        f=/proc/$c/status
        [ -r "$f" ] || continue
        read -r a b s < <(awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2}
                              /^RssShmem:/ {s=$2} END {print r, a, s}' "$f")
        rss=$((rss + a)) anon=$((anon + b)) shm=$((shm + s))
    done
    echo "$rss $anon $shm"
}

# kernel memory: TCP buffers (pages) and all slabs (kB; socket structures)
tcp_mem_pages() { awk '/^TCP:/ {print $NF}' /proc/net/sockstat; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

# runs $1 idle connections in processes of at most PER_PROC, waits until
# each has tried all of its own; the rest of the arguments go to the tool
idle_start() {   # n rate label srcbase args...
    local n=$1 rate=$2 label=$3 src=$4 procs i each wait
    shift 4
    procs=$(((n + PER_PROC - 1) / PER_PROC))
    LOADERS=()
    for ((i = 0; i < procs; i++)); do
        each=$((n / procs + (i < n % procs ? 1 : 0)))
        "$TOOL" --mode idle -c "$each" -d 900 -r "$rate" --timeout-ms 30000 \
            --max-pending 1000 --retries 5 --sources 32 --src-base "$src" \
            --proc-index "$i" --label "$label" -q \
            --ready-file "$WORK/ready.$label.$i" "$@" \
            > "$WORK/$label.$i.json" 2> "$WORK/$label.$i.err" &
        LOADERS+=($!)
    done
    # four times what the rate needs, and a minute (a busy machine)
    wait=$((4 * (n / procs) / rate + 60))
    for ((i = 0; i < wait * 10; i++)); do
        [ "$(ls "$WORK"/ready."$label".* 2>/dev/null | wc -l)" -ge "$procs" ] \
            && return 0
        loaders_alive || break
        sleep 0.1
    done
    log "$label: the load processes did not finish connecting in $wait s"
}

idle_stop() {   # label -> one JSON object summing the processes
    local p
    for p in "${LOADERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${LOADERS[@]}"; do wait "$p" || true; done
    LOADERS=()
    cat "$WORK/$1".*.json | jq -s '{established: (map(.established) | add),
        failed: (map(.failed) | add), dropped: (map(.dropped) | add),
        retried: (map(.retried) | add),
        processes: length, error: (map(.error) | map(select(. != ""))
        | first // ""), sources: (map(.sources) | add),
        source_first: .[0].source_first, source_last: .[-1].source_last,
        connect_s: (map(.connect_s)
                    | if any(. == null) then null else max end)}'
}

# one idle figure: master pid, n, rate, label, srcbase, tool args...
idle_figure() {
    local master=$1 n=$2 rate=$3 label=$4 src=$5 r0 r1 m0 m1 k0 k1 agg
    shift 5
    sleep 1
    read -r -a r0 < <(workers_rss "$master")
    m0=$(tcp_mem_pages)
    k0=$(slab_kb)
    idle_start "$n" "$rate" "$label" "$src" "$@"
    sleep 2
    read -r -a r1 < <(workers_rss "$master")
    m1=$(tcp_mem_pages)
    k1=$(slab_kb)
    # not in a subshell: `wait` needs the load processes as its children
    idle_stop "$label" > "$WORK/$label.sum.json"
    agg=$(cat "$WORK/$label.sum.json")
    jq -n --argjson a "$agg" --argjson n "$n" \
        --argjson r0 "${r0[0]}" --argjson r1 "${r1[0]}" \
        --argjson a0 "${r0[1]}" --argjson a1 "${r1[1]}" \
        --argjson s0 "${r0[2]}" --argjson s1 "${r1[2]}" \
        --argjson m0 "$m0" --argjson m1 "$m1" \
        --argjson k0 "$k0" --argjson k1 "$k1" '$a + {connections: $n,
        rss_kb_before: $r0, rss_kb_after: $r1,
        rss_bytes_per_conn: (if $a.established > 0
            then (($r1 - $r0) * 1024 / $a.established | floor) else null end),
        anon_bytes_per_conn: (if $a.established > 0
            then (($a1 - $a0) * 1024 / $a.established | floor) else null end),
        shmem_bytes_per_conn: (if $a.established > 0
            then (($s1 - $s0) * 1024 / $a.established | floor) else null end),
        tcp_mem_pages_before: $m0, tcp_mem_pages_after: $m1,
        tcp_mem_bytes_per_conn: (if $a.established > 0
            then (($m1 - $m0) * 4096 / $a.established | floor) else null end),
        slab_kb_before: $k0, slab_kb_after: $k1,
        slab_bytes_per_conn: (if $a.established > 0
            then (($k1 - $k0) * 1024 / $a.established | floor) else null end)}'
}

# one fanout round: size label args... -> the tool's JSON line, every
# latency in $WORK/<label>.samples
fanout_figure() {
    local n=$1 label=$2 interval
    shift 2
    # publishes spaced beyond the slowest delivery, so they do not overlap
    interval=$((100 + n / 20))
    "$TOOL" --mode fanout -c "$n" -m "$MESSAGES" -i "$interval" -d 300 \
        -r 5000 --settle-ms 500 --drain-ms 10000 --sources 32 \
        --src-base 127.3.0.1 --label "$label" -q \
        --samples-out "$WORK/$label.samples" "$@" \
        2> "$WORK/$label.err" || true
}

# the rounds of one target and size: label rounds-json-file -> one figure,
# percentiles over every delivery of every round
fanout_pool() {
    local label=$1 p0 p1
    read -r p0 p1 < <(sort -m -n "$WORK/$label".r*.samples 2>/dev/null \
        | awk '
        { v[NR] = $1 }
        END { if (NR == 0) { print "null null"; exit }
              i50 = int(NR * 0.5 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
              printf "%.3f %.3f\n", v[i50] / 1e6, v[i99] / 1e6 }')
    rm -f "$WORK/$label".r*.samples
    jq -s --argjson p50 "$p0" --argjson p99 "$p1" '
        map(select(.pending == null)) as $r |
        if ($r | length) == 0 then {pending: "no round ran"}
        else {rounds: ($r | length),
              established: ($r | map(.established) | min),
              expected: ($r | map(.expected) | add),
              delivered: ($r | map(.delivered) | add),
              lost: ($r | map(.lost) | add),
              duplicates: ($r | map(.duplicates) | add),
              round_p99_ms: ($r | map(.latency_ms.p99)),
              latency_ms: {p50: $p50, p99: $p99,
                           max: ($r | map(.latency_ms.max) | max)},
              error: ($r | map(.error) | map(select(. != "")) | first // "")}
        end' "$WORK/$label".r*.json
}
pending_json() { jq -n --arg r "$1" '{pending: $r}'; }

redis_publishes() {
    redis-cli -p "$ELEARN_REDIS_PORT" info commandstats \
        | sed -n 's/^cmdstat_publish:calls=\([0-9]*\),.*/\1/p' | grep . \
        || echo 0
}

# many sessions at once: label rate srcbase subfile pubfile per [redis];
# line i of subfile and pubfile are session i, each with `per`
# subscribers; the sessions are split over the load processes
sessions_figure() {
    local label=$1 rate=$2 src=$3 subs=$4 pubs=$5 per=$6 redis=${7:-}
    local n procs each i first p0 p1 r0=0 r1=0 rj=0 k joined=false
    n=$(wc -l < "$subs")
    if [ "$n" -eq 0 ]; then
        log "$label: no sessions to join"
        jq -n '{pending: "no sessions could be created"}'
        return 0
    fi
    rm -f "$WORK/start.$label"
    [ -n "$redis" ] && rj=$(redis_publishes)
    procs=$(((n * per + PER_PROC - 1) / PER_PROC))
    LOADERS=()
    first=0
    for ((i = 0; i < procs; i++)); do
        each=$((n / procs + (i < n % procs ? 1 : 0)))
        sed -n "$((first + 1)),$((first + each))p" "$subs" \
            > "$WORK/$label.$i.subs"
        sed -n "$((first + 1)),$((first + each))p" "$pubs" \
            > "$WORK/$label.$i.pubs"
        first=$((first + each))
        "$TOOL" --mode fanout -c $((each * per)) -m "$MESSAGES" -i 1000 \
            -d 900 -r "$rate" --retries 5 --max-pending 1000 \
            --settle-ms 2000 --drain-ms 5000 --sources 32 \
            --src-base "$src" --proc-index "$i" --label "$label" -q \
            --paths "$WORK/$label.$i.subs" --pub-paths "$WORK/$label.$i.pubs" \
            --ready-file "$WORK/ready.$label.$i" \
            --start-file "$WORK/start.$label" \
            --samples-out "$WORK/$label.$i.samples" "${@:8}" \
            > "$WORK/$label.$i.json" 2> "$WORK/$label.$i.err" &
        LOADERS+=($!)
    done
    # joined everywhere (each waits 2 s before its first publish)
    k=$((4 * per * n / procs / rate + 60))
    for ((i = 0; i < k * 10; i++)); do
        [ "$(ls "$WORK"/ready."$label".[0-9] 2>/dev/null | wc -l)" \
              -ge "$procs" ] \
            && { joined=true; break; }
        loaders_alive || break
        sleep 0.1
    done
    $joined || log "$label: not every process had joined its sessions in $k s"
    # the last joins' presence counts are out (one interval), then the
    # window of the messages opens: the processes publish only now
    sleep "$SETTLE"
    [ -n "$redis" ] && r0=$(redis_publishes)
    touch "$WORK/start.$label"
    # published and drained everywhere (each then holds its sockets)
    for ((i = 0; i < (MESSAGES + 70) * 10; i++)); do
        [ "$(ls "$WORK"/ready."$label".*.done 2>/dev/null | wc -l)" \
              -ge "$procs" ] && break
        loaders_alive || break
        sleep 0.1
    done
    [ -n "$redis" ] && r1=$(redis_publishes)
    for p in "${LOADERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${LOADERS[@]}"; do wait "$p" || true; done
    LOADERS=()
    rm -f "$WORK/$label".*.subs "$WORK/$label".*.pubs "$WORK/start.$label"
    # percentiles over every delivery of every process
    read -r p0 p1 < <(sort -m -n "$WORK/$label".*.samples | awk '
        { v[NR] = $1 }
        END { if (NR == 0) { print "null null"; exit }
              i50 = int(NR * 0.5 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
              printf "%.3f %.3f\n", v[i50] / 1e6, v[i99] / 1e6 }')
    rm -f "$WORK/$label".*.samples
    cat "$WORK/$label".*.json | jq -s --argjson p50 "$p0" --argjson p99 "$p1" \
        --argjson r "$([ -n "$redis" ] && echo $((r1 - r0)) || echo null)" \
        --argjson rj "$([ -n "$redis" ] && echo $((r0 - rj)) || echo null)" \
        --argjson joined "$joined" \
        '{sessions: (map(.sessions) | add), processes: length,
          joined_in_time: $joined,
          other_frames: (map(.other_frames) | add),
          connections: (map(.connections) | add),
          established: (map(.established) | add),
          failed: (map(.failed) | add), retried: (map(.retried) | add),
          published: (map(.published) | add),
          expected: (map(.expected) | add),
          delivered: (map(.delivered) | add), lost: (map(.lost) | add),
          duplicates: (map(.duplicates) | add),
          latency_ms: {p50: $p50, p99: $p99,
                       max: (map(.latency_ms.max) | max)},
          redis_publishes: $r,
          redis_publishes_while_joining: $rj,
          redis_publishes_per_message: (if $r == null then null
              else ($r / (map(.published) | add) * 100 | round / 100) end),
          error: (map(.error) | map(select(. != "")) | first // "")}'
}

# --- the nchan side ----------------------------------------------------

nchan_run() {
    local res='{}' j run=r$$
    log "nchan: $WORKERS workers on port $NPORT"
    if [ "$IDLE" -gt 0 ]; then
        nchan_start
        log "nchan: $IDLE idle keep-alive HTTP connections (reference)"
        j=$(idle_figure "$(cat "$NCHAN/nginx.pid")" "$IDLE" "$RATE" \
                nchan-http 127.1.0.1 --target http --port "$NPORT" --path /204)
        res=$(jq -n --argjson r "$res" --argjson j "$j" '$r + {http_ref: $j}')
        nchan_start
        log "nchan: $IDLE idle WebSocket subscribers"
        j=$(idle_figure "$(cat "$NCHAN/nginx.pid")" "$IDLE" "$RATE" \
                nchan-idle 127.2.0.1 --target nchan --port "$NPORT" \
                --path "/sub/idle$run")
        res=$(jq -n --argjson r "$res" --argjson j "$j" '$r + {idle: $j}')
    fi
    if [ -n "$SESSIONS" ]; then
        nchan_start
        sessions_run nchan
        res=$(jq -n --argjson r "$res" --slurpfile j "$WORK/nchan-sessions.sum" \
            '$r + {sessions: $j[0]}')
    fi
    nchan_stop
    echo "$res"
}

# the sessions figure of one target into $WORK/<target>-sessions.sum
sessions_run() {
    local t=$1 ns=${SESSIONS%x*} per=${SESSIONS#*x} i sid
    : > "$WORK/$t-sessions.subs"
    : > "$WORK/$t-sessions.pubs"
    for ((i = 0; i < ns; i++)); do
        if [ "$t" = nchan ]; then
            echo "/sub/s${i}r$$" >> "$WORK/$t-sessions.subs"
            echo "/pub/s${i}r$$" >> "$WORK/$t-sessions.pubs"
        else
            sid=$(elearn_session "$owner" $((per + 1)) 2>/dev/null)
            [ -n "$sid" ] || break
            echo "/live/$sid?access_token=$student" >> "$WORK/$t-sessions.subs"
            echo "/live/$sid?access_token=$owner" >> "$WORK/$t-sessions.pubs"
        fi
    done
    log "$t: $ns sessions of $per, each publishing once a second"
    if [ "$t" = nchan ]; then
        sessions_figure nchan-sessions "$RATE" 127.6.0.1 \
            "$WORK/$t-sessions.subs" "$WORK/$t-sessions.pubs" "$per" "" \
            --port "$NPORT" --target nchan > "$WORK/$t-sessions.sum"
    else
        sessions_figure elearn-sessions "$ELEARN_RATE" 127.7.0.1 \
            "$WORK/$t-sessions.subs" "$WORK/$t-sessions.pubs" "$per" redis \
            --port "$ELEARN_HTTP_PORT" --target elearn \
            > "$WORK/$t-sessions.sum"
    fi
    rm -f "$WORK/$t-sessions.subs" "$WORK/$t-sessions.pubs"
}

# --- the elearn side ---------------------------------------------------

elearn_login() {
    curl -fsS -H 'Content-Type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$2\"}" \
        "$BASE/api/v1/auth/login" | jq -r .accessToken
}

# creates a live session of course 2 (owned by the dev instructor, the dev
# student enrolled); prints its id, or nothing with the reason on stderr
elearn_session() {   # owner-token capacity
    local out code
    out=$(curl -sS -o - -w '\n%{http_code}' -X POST \
        -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
        -d "{\"title\":\"bench-ws\",\"capacity\":$2}" \
        "$BASE/api/v1/courses/2/live-sessions" 2>/dev/null) || true
    code=${out##*$'\n'}
    if [ "$code" != 201 ]; then
        echo "POST /api/v1/courses/2/live-sessions answered $code" >&2
        return 0
    fi
    echo "${out%$'\n'*}" | jq -r '.sessionId // empty' \
        | tee -a "$WORK/elearn-sessions"
}

# elearn's nginx as nchan's above: as many workers, 19,000 connections
# each, `reuseport`, and a capacity cap that admits the largest fan-out;
# the stack's own template is copied with those lines changed (bench only)
elearn_bench_conf() {
    local src=${ELEARN_NGINX_CONF:-$ELEARN_TOP/nginx-conf/elearn.conf.in}
    sed -e 's/^\( *worker_connections\) [0-9]*;/\1 19000;/' \
        -e 's/^\( *listen 127\.0\.0\.1:${ELEARN_HTTP_PORT}\);/\1 reuseport backlog=8192;/' \
        "$src" > "$WORK/elearn-bench.conf.in"
    grep -q 'worker_connections 19000;' "$WORK/elearn-bench.conf.in" \
        && grep -q 'reuseport' "$WORK/elearn-bench.conf.in"
}

elearn_restart() {   # bench|stock
    local cap=1000 n
    # the owner takes a place too
    for n in $FANOUT; do [ "$n" -ge "$cap" ] && cap=$((n + 1)); done
    [ -n "$SESSIONS" ] && [ "${SESSIONS#*x}" -ge "$cap" ] \
        && cap=$((${SESSIONS#*x} + 1))
    "$ELEARN_TOP/tools/stack.sh" stop nginx >/dev/null
    if [ "$1" = bench ]; then
        ELEARN_NGINX_CONF=$WORK/elearn-bench.conf.in \
        ELEARN_NGINX_WORKERS=$WORKERS ELEARN_LIVE_CAPACITY_MAX=$cap \
            "$ELEARN_TOP/tools/stack.sh" start nginx >/dev/null
    else
        "$ELEARN_TOP/tools/stack.sh" start nginx >/dev/null
    fi
    wait_http "$BASE/readyz" "elearn's nginx"
}

elearn_close_sessions() {   # owner-token
    local sid
    [ -f "$WORK/elearn-sessions" ] || return 0
    while read -r sid; do
        curl -fso /dev/null -X POST -H "Authorization: Bearer $1" \
            "$BASE/api/v1/live-sessions/$sid/close" || true
    done < "$WORK/elearn-sessions"
    rm -f "$WORK/elearn-sessions"
}

elearn_run() {
    local res='{}' owner student sid j paths i why master sessions
    if ! curl -fso /dev/null "$BASE/readyz"; then
        pending_json "pending: the elearn stack is not running (make run)"
        return
    fi
    owner=$(elearn_login instructor@elearn.dev instructor-dev-pass)
    student=$(elearn_login student@elearn.dev student-dev-pass)
    sid=$(elearn_session "$owner" 1000 2> "$WORK/elearn-session.err")
    if [ -z "$sid" ]; then
        why=$(cat "$WORK/elearn-session.err")
        log "elearn: no live sessions ($why)"
        pending_json "pending live sessions ($why)"
        return
    fi
    if ! elearn_bench_conf; then
        log "elearn: cannot set worker_connections/reuseport in its config"
        pending_json "pending: the elearn config could not be adapted"
        return
    fi
    touch "$WORK/elearn-restarted"
    elearn_restart bench
    master=$(cat "$ELEARN_VAR/nginx/nginx.pid")
    if [ "$IDLE" -gt 0 ]; then
        # sessions of 1,000 (the default capacity), the dev student in
        # all; one session more than needed so that no session is full
        sessions=$(((IDLE + 999) / 1000 + 1))
        paths=$WORK/elearn-idle.paths
        : > "$paths"
        for ((i = 0; i < sessions; i++)); do
            sid=$(elearn_session "$owner" 1000 2>/dev/null)
            [ -n "$sid" ] || break
            echo "/live/$sid?access_token=$student" >> "$paths"
        done
        log "elearn: $IDLE idle participants in $sessions sessions"
        j=$(idle_figure "$master" "$IDLE" "$ELEARN_RATE" elearn-idle \
                127.4.0.1 \
                --target elearn --port "$ELEARN_HTTP_PORT" --paths "$paths")
        res=$(jq -n --argjson r "$res" --argjson j "$j" '$r + {idle: $j}')
        rm -f "$paths"
        elearn_restart bench
    fi
    if [ -n "$SESSIONS" ]; then
        elearn_restart bench
        sessions_run elearn
        res=$(jq -n --argjson r "$res" \
            --slurpfile j "$WORK/elearn-sessions.sum" '$r + {sessions: $j[0]}')
    fi
    elearn_close_sessions "$owner"
    echo "$res"
}

# --- one publish to N, the targets alternating --------------------------

# fanout_<n> of each target into $WORK/<target>.fanout.json ({} when the
# target is not run or has no live sessions)
fanout_run() {
    local n r t sid owner student run=r$$ nchan_ok=false elearn_ok=false
    echo '{}' > "$WORK/nchan.fanout.json"
    echo '{}' > "$WORK/elearn.fanout.json"
    [ -n "${FANOUT// /}" ] || return 0
    for t in $TARGETS; do
        if [ "$t" = nchan ]; then
            nchan_start && nchan_ok=true
        elif [ "$t" = elearn ] && curl -fso /dev/null "$BASE/readyz" \
             && elearn_bench_conf
        then
            owner=$(elearn_login instructor@elearn.dev instructor-dev-pass)
            student=$(elearn_login student@elearn.dev student-dev-pass)
            touch "$WORK/elearn-restarted"
            elearn_restart bench
            elearn_ok=true
        fi
    done
    for n in $FANOUT; do
        rm -f "$WORK"/*-fanout-"$n".r*
        for ((r = 1; r <= ROUNDS; r++)); do
            if $nchan_ok; then
                log "nchan: one publish to $n subscribers, $MESSAGES times" \
                    "(round $r of $ROUNDS)"
                fanout_figure "$n" "nchan-fanout-$n.r$r" --target nchan \
                    --port "$NPORT" --path "/sub/f$n${run}r$r" \
                    --pub-path "/pub/f$n${run}r$r" \
                    > "$WORK/nchan-fanout-$n.r$r.json"
            fi
            $elearn_ok || continue
            # a session per round: the last round's places are free at once
            sid=$(elearn_session "$owner" $((n + 1)) \
                      2> "$WORK/elearn-session.err")
            if [ -z "$sid" ]; then
                pending_json "pending: a session of $n ($(cat \
                    "$WORK/elearn-session.err"))" \
                    > "$WORK/elearn-fanout-$n.r$r.json"
                continue
            fi
            log "elearn: one broadcast to $n participants, $MESSAGES times" \
                "(round $r of $ROUNDS)"
            fanout_figure "$n" "elearn-fanout-$n.r$r" --target elearn \
                -r $((ELEARN_RATE * 4)) --retries 5 \
                --port "$ELEARN_HTTP_PORT" \
                --path "/live/$sid?access_token=$student" \
                --pub-path "/live/$sid?access_token=$owner" \
                > "$WORK/elearn-fanout-$n.r$r.json"
        done
        for t in nchan elearn; do
            if [ "$t" = nchan ] && ! $nchan_ok; then continue; fi
            if [ "$t" = elearn ] && ! $elearn_ok; then continue; fi
            jq -n --slurpfile f "$WORK/$t.fanout.json" \
                --argjson j "$(fanout_pool "$t-fanout-$n")" --arg n "$n" \
                '$f[0] + {("fanout_" + $n): $j}' > "$WORK/$t.fanout.new"
            mv "$WORK/$t.fanout.new" "$WORK/$t.fanout.json"
        done
    done
    $elearn_ok && elearn_close_sessions "$owner"
    nchan_stop
}

# --- the run -----------------------------------------------------------

nchan='{"pending": "not run (BENCH_WS_TARGETS)"}'
elearn='{"pending": "not run (BENCH_WS_TARGETS)"}'
for t in $TARGETS; do
    case $t in
        nchan) nchan=$(nchan_run) ;;
        elearn) elearn=$(elearn_run) ;;
        *) log "unknown target $t (nchan, elearn)"; exit 1 ;;
    esac
done
fanout_run
for t in nchan elearn; do
    # a target that did not run stays "pending"
    if [ "$t" = nchan ] && ! jq -e .pending <<< "$nchan" >/dev/null; then
        nchan=$(jq -n --argjson r "$nchan" \
            --slurpfile f "$WORK/nchan.fanout.json" '$r + $f[0]')
    elif [ "$t" = elearn ] && ! jq -e .pending <<< "$elearn" >/dev/null; then
        elearn=$(jq -n --argjson r "$elearn" \
            --slurpfile f "$WORK/elearn.fanout.json" '$r + $f[0]')
    fi
done

settings="elearn-wsload, $(nproc) cores, nchan $WORKERS workers; idle $IDLE \
connections; fanout $FANOUT subscribers x $MESSAGES publishes x $ROUNDS \
rounds (targets alternating); \
sessions ${SESSIONS:-none}"
jq -n --arg s "$settings" --argjson n "$nchan" --argjson e "$elearn" \
    --arg fan "$FANOUT" \
    '{settings: $s, fanout_sizes: ($fan | split(" ") | map(select(. != ""))),
      nchan: $n, elearn: $e}' > "$OUT/ws.json"

# the table: one row per figure, nchan and elearn side by side
jq -r -f /dev/stdin "$OUT/ws.json" > "$OUT/ws.md" <<'JQ'
def cell($t; $f):
  if $t.pending then $t.pending
  elif $f == null then "-"
  elif ($f | type) == "number" then ($f | tostring)
  else $f end;
def ratio($a; $b):
  if ($a | type) == "number" and ($b | type) == "number" and $b > 0
  then ($a / $b * 100 | round / 100 | tostring) else "-" end;
def lat($t; $n):
  $t["fanout_" + $n] as $f |
  if $t.pending then [$t.pending, null]
  elif $f == null then ["-", null]
  elif $f.pending then [$f.pending, null]
  else ["\($f.latency_ms.p50) / \($f.latency_ms.p99) (\($f.established) subscribed, \($f.delivered)/\($f.expected) delivered, \($f.lost) lost; p99 of each round: \($f.round_p99_ms | map(tostring) | join(", ")))",
        $f.latency_ms.p99] end;
. as $r |
"# WebSocket bench: \($r.settings)\n",
"| figure | nchan | elearn | elearn / nchan |",
"|---|---:|---:|---:|",
( ["idle connections held (of asked)",
   ($r.nchan.idle // {}), ($r.elearn.idle // {})] as [$n, $a, $b] |
  "| \($n) | \(cell($r.nchan; if $a.established then "\($a.established) (\($a.connections))" else null end)) | \(cell($r.elearn; if $b.established then "\($b.established) (\($b.connections))" else null end)) | - |"),
( "| nginx workers' RSS per idle WebSocket connection, bytes | \(cell($r.nchan; $r.nchan.idle.rss_bytes_per_conn)) | \(cell($r.elearn; $r.elearn.idle.rss_bytes_per_conn)) | \(ratio($r.elearn.idle.rss_bytes_per_conn; $r.nchan.idle.rss_bytes_per_conn)) |"),
( "| of which anonymous / shared memory, bytes | \(cell($r.nchan; if $r.nchan.idle then "\($r.nchan.idle.anon_bytes_per_conn) / \($r.nchan.idle.shmem_bytes_per_conn)" else null end)) | \(cell($r.elearn; if $r.elearn.idle then "\($r.elearn.idle.anon_bytes_per_conn) / \($r.elearn.idle.shmem_bytes_per_conn)" else null end)) | - |"),
( "| kernel, per connection (both ends): TCP buffers / slab, bytes | \(cell($r.nchan; if $r.nchan.idle then "\($r.nchan.idle.tcp_mem_bytes_per_conn) / \($r.nchan.idle.slab_bytes_per_conn)" else null end)) | \(cell($r.elearn; if $r.elearn.idle then "\($r.elearn.idle.tcp_mem_bytes_per_conn) / \($r.elearn.idle.slab_bytes_per_conn)" else null end)) | - |"),
( "| reference: RSS per idle keep-alive HTTP connection (return 204), bytes | \(cell($r.nchan; $r.nchan.http_ref.rss_bytes_per_conn)) | - | - |"),
( $r.fanout_sizes[] as $n | lat($r.nchan; $n) as $a | lat($r.elearn; $n) as $b |
  "| one publish to \($n): p50 / p99 ms (delivered) | \($a[0]) | \($b[0]) | \(ratio($b[1]; $a[1])) |"),
( def ses($t): if $t.pending then [$t.pending, null]
      elif $t.sessions == null then ["-", null]
      else $t.sessions as $s |
        ["\($s.latency_ms.p50) / \($s.latency_ms.p99) (\($s.established)/\($s.connections) joined\(if $s.joined_in_time then "" else " (joins unfinished in time: not valid)" end), \($s.delivered)/\($s.expected) delivered, \($s.lost) lost)",
         $s.latency_ms.p99] end;
  if ($r.nchan.sessions // $r.elearn.sessions) then
  (ses($r.nchan) as $a | ses($r.elearn) as $b |
  "| \(($r.nchan.sessions // $r.elearn.sessions).sessions) sessions, each owner once a second: p50 / p99 ms | \($a[0]) | \($b[0]) | \(ratio($b[1]; $a[1])) |",
  "| Redis PUBLISH calls per message | - | \(cell($r.elearn; $r.elearn.sessions.redis_publishes_per_message)) | - |",
  "| Redis PUBLISH calls while joining (presence counts) | - | \(cell($r.elearn; $r.elearn.sessions.redis_publishes_while_joining)) | - |")
  else empty end)
JQ
cat "$OUT/ws.md"
log "written to $OUT/ws.{md,json}"
