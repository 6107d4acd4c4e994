#!/usr/bin/python3
"""`make bench`: measures the request path on loopback and prints a table.

Every figure is a ratio to a baseline measured in the same run, because
the machines are shared and noisy: HTTP scenarios against nginx's own
`return 204`, the uncached course GET against pgbench running the same
SELECT on as many connections as the module's pools hold.  Results go to
var/bench/results.md and results.json.  Nothing here fails on a figure.

The auth scenarios restart nginx with ES256 keys (ELEARN_JWT_ALG) and
put HS256 back at the end.

The search scenarios (issue 4) run with 50 clients on the 100,000-course
demo set: the uncached query mix of tools/bench-search-queries.txt (wrk
cycles through it at result pages 4 to 6, beyond any cache of first
pages) and its most common word alone, the same first page repeated
(the search cache's hit ratio from /metrics, or "cache not present"),
a browse by newest at cursor page 500 against page 1 with offset page
500 beside them, and suggest over 2-4 letter prefixes of the mix.  The
targets are printed in a note after the table.

The progress scenarios (issue 5) post reports of 32 enrolled bench
students over course 1's videos, each (student, video) pair's reports 10 s
apart as a player's: write-behind with the default (queued)
acknowledgement and with durable ones, both against `return 204`, and the
naive location (one PostgreSQL upsert a report) as the reference
write-behind is compared with.  During the queued run the stack's
elearn-progress is watched: its lag, and the rows and statements it
writes.

The progress daemon scenarios (issue 5) measure elearn-progress, the
stack's write-behind daemon, against pgbench running the naive
single-row progress upsert with 16 clients: the rows per second it drains
from a backlog of 200,000 reports (each a distinct (user, video) row), and
its lag while reports arrive at a steady rate (PROGRESS_RATE, default
5,000/s from 50,000 users: three times what 50,000 learners reporting
every 30 s send) for BENCH_SECONDS, with the rows per statement.

The peer scenario (issue 5) measures the same ingestion written in Lua
(tools/peer-lua: Debian's libnginx-mod-http-lua, lua-nginx-redis,
lua-nginx-kafka) against elearn's queued one: one extra nginx loading
both modules, an extra Kafka 3.9 broker (config/kafka-peer; the Lua
client speaks only Produce v0-v2, which Kafka 4 removed), the run stack's
Redis and key; both with the progress wrk script, in turn, twice. A run
with any non-2xx answer or socket error, or whose events on the broker do
not match its answers, fails the scenario (no ratio; exit status 1).
Ports: BENCH_PEER_HTTP_PORT (default the HTTP port + 2), Kafka's two plus
200.

Environment: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64),
BENCH_ONLY=search, BENCH_ONLY=progress or BENCH_ONLY=peer (only those
scenarios, for working on them).
"""

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
PORT = os.environ["ELEARN_HTTP_PORT"]
BASE = "http://127.0.0.1:%s" % PORT
OUT = os.path.join(os.environ["ELEARN_VAR"], "..", "bench")
ONLY = os.environ.get("BENCH_ONLY", "")
SEARCH_CONNS = 50                       # issue 4: 50 concurrent clients
THINK_MS = 100                          # a search client's pause, ms
SEARCH_QUERIES = os.path.join(TOP, "tools", "bench-search-queries.txt")

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}

# each wrk thread walks its own stride of course ids, so every request
# asks for a course nobody asked for yet: the Redis miss and the query
UNCACHED_LUA = """
-- "first" must be a global: setup() sets it in each thread's own state
first = 1
local step, n = 1, 0
local threads = {}
function setup(thread)
    table.insert(threads, thread)
    thread:set("first", #threads)
end
function init(args)
    step = tonumber(args[1])
    n = first
end
function request()
    local path = "/api/v1/courses/" .. n
    n = n + step
    if n > 100000 then n = first end
    return wrk.format("GET", path)
end
"""


# each request carries the next of many pre-minted tokens: no cache hit
TOKENS_LUA = """
local tokens, i = {}, 0
function init(args)
    for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
    i = math.random(#tokens)
end
function request()
    i = i % #tokens + 1
    return wrk.format("GET", nil, {["Authorization"] = "Bearer " .. tokens[i]})
end
"""

# 16 accounts, taken in turn: one person rarely logs in 16 times at once,
# and the per-account backoff counts attempts in flight
LOGIN_LUA = """
local n, i = %d, 0
local threads = {}
function setup(thread)
    table.insert(threads, thread)
    thread:set("i", #threads)
end
function request()
    i = i %% n + 1
    local body = '{"email": "bench-' .. i .. '@bench.elearn.dev", '
                 .. '"password": "bench-password-' .. i .. '"}'
    return wrk.format("POST", nil,
                      {["Content-Type"] = "application/json"}, body)
end
"""
LOGIN_ACCOUNTS = 16

# each thread cycles through the lines of args[1] (URL-encoded queries,
# '#' comments skipped) from its own starting point, appending each to
# args[2]; with args[3] == "page" it asks in turn for result pages 4, 5
# and 6, which no cache of first pages holds
LINES_LUA = """
-- globals, not locals: thread:set() after loading sets globals
lines, i, n, prefix, paged = {}, 0, 0, "", false
suffix = function() return "" end
local threads = {}
function setup(thread)
    table.insert(threads, thread)
    thread:set("i", #threads * 37)
end
function init(args)
    for line in io.lines(args[1]) do
        if line ~= "" and line:sub(1, 1) ~= "#" then
            lines[#lines + 1] = line
        end
    end
    prefix = args[2]
    paged = args[3] == "page"
end
function request()
    i = i % #lines + 1
    local path = prefix .. lines[i] .. suffix()
    if paged then
        n = n + 1
        path = path .. "&page=" .. (4 + n % 3)
    end
    return wrk.format("GET", path)
end
"""

# LINES_LUA with think time: each connection waits args[4] ms after an
# answer before its next request (a user reading the results), so the
# offered load is set by the clients rather than by how fast answers
# come back
# With args[5] "fresh", q gets a random run of English stop words, which
# the query parser drops (the query is the same) but which make every
# request's cache keys its own: nothing is ever read from the search
# cache, each request runs its page statement and search_facets.
THINK_LUA = LINES_LUA.replace(
    'paged = args[3] == "page"\n',
    'paged = args[3] == "page"\n    think = tonumber(args[4])\n'
    '    if args[5] == "fresh" then suffix = stopwords end\n') + """
function delay()
    return think
end
local stop = {"the", "a", "of", "and", "to", "in", "is", "it", "on", "for"}
function stopwords()
    local s = ""
    for k = 1, 8 do
        s = s .. "+" .. stop[math.random(#stop)]
    end
    return s
end
"""

# progress reports: each thread walks the tokens of args[1] and the
# "videoId:duration" pairs of args[2] from its own start, posting to
# args[3] .. "/api/v1/videos/{id}/progress".  Consecutive requests go to
# consecutive students, each student's to the videos in turn (all 128
# (student, video) pairs), and each pair's next report is the 10 seconds
# after its last, as a player sends them: a pair's watched intervals stay
# one or two stretches, as a learner's do.  Each thread builds its first
# 4,096 requests in init() and cycles through them (32 reports a pair,
# then resends): building one per request in Lua cost wrk 3.4 us of CPU a
# report on the two cores the server shares, 1.4 us as a table read.
PROGRESS_LUA = """
tokens, videos, k, prefix = {}, {}, 0, ""
reqs, n = {}, 0
local threads = {}
function setup(thread)
    table.insert(threads, thread)
    thread:set("k", #threads * 7919)
end
local function build()
    k = k + 1
    local npairs = #tokens * #videos
    local v = videos[math.floor(k / #tokens) % #videos + 1]
    local span = math.max(v[2] - 10, 1)
    local p = (math.floor(k / npairs) * 10) % span
    local body = '{"positionSeconds":' .. (p + 10)
                 .. ',"watched":[[' .. p .. ',' .. (p + 10) .. ']]}'
    return wrk.format("POST", prefix .. "/api/v1/videos/" .. v[1]
                      .. "/progress",
                      {["Authorization"] = "Bearer "
                                           .. tokens[k % #tokens + 1],
                       ["Content-Type"] = "application/json"}, body)
end
function init(args)
    for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
    for pair in string.gmatch(args[2], "[^,]+") do
        local id, dur = pair:match("(%d+):(%d+)")
        videos[#videos + 1] = {id, tonumber(dur)}
    end
    prefix = args[3] or ""
    for i = 1, 4096 do reqs[i] = build() end
end
function request()
    n = n % #reqs + 1
    return reqs[n]
end
"""
PROGRESS_STUDENTS = 32

HEADER = []     # extra wrk headers (the bearer token)


def wrk(path, script=None, threads=2, conns=None, args=None, header=True,
        seconds=None, base=None):
    cmd = ["wrk", "-t%d" % threads, "-c%d" % (conns or CONNS),
           "-d%ds" % (seconds or SECONDS), "--latency"]
    if header:
        for h in HEADER:
            cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append((base or BASE) + path)
    if script:
        cmd += ["--"] + (args or [str(threads)])
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=(seconds or SECONDS) + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))

    def ms(v):
        m = re.match(r"([\d.]+)(\w+)", v)
        return float(m.group(1)) * UNIT[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # socket errors (connect, read, timeout) are answers that never came
    errors = sum(int(n) for n in re.findall(
        r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": rps, "p50_ms": ms(lat["50"]), "p99_ms": ms(lat["99"]),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors,
            "requests": int(re.search(r"(\d+) requests in", out).group(1))}


def pgbench(clients):
    sql = open(os.path.join(TOP, "sql", "api.sql")).read()
    stmt = sql.split("-- name: course_get_json", 1)[1]
    stmt = "\n".join(l for l in stmt.splitlines()
                     if not l.lstrip().startswith("--"))
    # $2: published courses only, as the GET asks
    stmt = stmt.split(";", 1)[0].replace("$1", ":id").replace("$2",
                                                               "false")
    with tempfile.NamedTemporaryFile("w", suffix=".sql",
                                     delete=False) as f:
        f.write("\\set id random(1, 100000)\n")
        f.write(" ".join(stmt.split()) + ";\n")
        script = f.name
    # simple protocol: pgbench's extended mode takes the colons inside the
    # statement's to_char() formats for variables.  Simple is the cheaper
    # protocol for the server, so the baseline is, if anything, too strong.
    out = subprocess.run(["pgbench", "-n", "-M", "simple", "-c",
                          str(clients), "-j", "2", "-T", str(SECONDS),
                          "-f", script, "-r"],
                         capture_output=True, text=True,
                         timeout=SECONDS + 60)
    os.unlink(script)
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))
    lat = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    return {"rps": tps, "p50_ms": float(lat.group(1)) if lat else None,
            "p99_ms": None, "non_2xx": 0}


def course_codes():
    """course_get answers by status, from the module's own /metrics."""
    text = subprocess.run(["curl", "-fsS", BASE + "/metrics"],
                          capture_output=True, text=True).stdout
    codes = {}
    for m in re.finditer(r'^elearn_http_requests_total\{([^}]*)\} (\d+)',
                         text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("endpoint") == "course_get":
            codes[labels["code"]] = codes.get(labels["code"], 0) + \
                int(m.group(2))
    return codes


def near_204(path, watch=None, **kw):
    """The scenario between two runs of the baseline: the machine is
    shared, so its ratio is to the baseline measured around it.  watch
    (a DaemonWatch) is started and stopped around the scenario's run."""
    warm = dict(kw, seconds=2)
    wrk(path, **warm)
    b1 = wrk("/bench/204")
    if watch:
        watch.start()
    r = wrk(path, **kw)
    if watch:
        watch.stop()
    b2 = wrk("/bench/204")
    return r, (b1["rps"] + b2["rps"]) / 2


def stack(*args, **env):
    e = dict(os.environ, **env)
    subprocess.run([os.path.join(TOP, "tools", "stack.sh")] + list(args),
                   env=e, check=True, capture_output=True)


def restart_nginx(**env):
    stack("stop", "nginx", **env)
    stack("start", "nginx", **env)
    for _ in range(100):
        r = subprocess.run(["curl", "-fs", "-o", "/dev/null",
                            BASE + "/readyz"])
        if r.returncode == 0:
            return
        time.sleep(0.1)


def login(email, password):
    out = subprocess.run(
        ["curl", "-fsS", "-H", "Content-Type: application/json", "-d",
         json.dumps({"email": email, "password": password}),
         BASE + "/api/v1/auth/login"], capture_output=True, text=True,
        check=True).stdout
    return json.loads(out)["accessToken"]


def es256_tokens(n, template, path):
    """n valid ES256 tokens of the same session, each with its own jti,
    signed with the stack's dev key (python3-cryptography)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    pem = open(os.path.join(os.environ["ELEARN_VAR"], "secrets",
                            "jwt-es256.pem"), "rb").read()
    key = serialization.load_pem_private_key(pem, None)
    claims = json.loads(base64.urlsafe_b64decode(
        template.split(".")[1] + "=="))

    def b64(d):
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    with open(path, "w") as f:
        for _ in range(n):
            claims["jti"] = uuid.uuid4().hex
            body = head + "." + b64(json.dumps(claims).encode())
            der = key.sign(body.encode(), ec.ECDSA(hashes.SHA256()))
            r, s = utils.decode_dss_signature(der)
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            f.write(body + "." + b64(sig) + "\n")


def openssl_ecdsa_verify_rate():
    out = subprocess.run(["openssl", "speed", "-seconds", "5",
                          "ecdsap256"], capture_output=True,
                         text=True).stdout
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+[\d.]+s\s+[\d.]+s"
                  r"\s+[\d.]+\s+([\d.]+)", out)
    return float(m.group(1))


def argon2_rate(threads, seconds=None):
    """Bare Argon2id hashes per second of libargon2 itself, at the
    module's parameters, in `threads` threads of one process (ctypes lets
    go of the GIL during the call)."""
    import ctypes
    lib = ctypes.CDLL("libargon2.so.1")
    u32, size = ctypes.c_uint32, ctypes.c_size_t
    lib.argon2id_hash_raw.argtypes = [u32, u32, u32, ctypes.c_void_p, size,
                                      ctypes.c_void_p, size, ctypes.c_void_p,
                                      size]
    seconds = seconds or min(SECONDS, 10)
    counts = [0] * threads
    stop = time.time() + seconds

    def run(k):
        out = ctypes.create_string_buffer(32)
        while time.time() < stop:
            pw = b"password-%d" % k
            rc = lib.argon2id_hash_raw(2, 19456, 1, pw, len(pw),
                                       b"saltsaltsaltsalt", 16, out, 32)
            assert rc == 0, rc
            counts[k] += 1
    t0 = time.time()
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.time() - t0)


def redis_flush_courses():
    port = os.environ["ELEARN_REDIS_PORT"]
    subprocess.run(["bash", "-c",
                    "redis-cli -p %s --scan --pattern 'course:*' | "
                    "xargs -r -n 500 redis-cli -p %s DEL >/dev/null"
                    % (port, port)], check=True)


def search_queries():
    return [l.strip() for l in open(SEARCH_QUERIES)
            if l.strip() and not l.startswith("#")]


def write_lines(name, lines):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def cache_counts(cache):
    """elearn_cache_requests_total of one cache by result, or None when
    /metrics has no such family."""
    text = subprocess.run(["curl", "-fsS", BASE + "/metrics"],
                          capture_output=True, text=True).stdout
    counts = None
    for m in re.finditer(r'^elearn_cache_requests_total\{([^}]*)\} (\d+)',
                         text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("cache") == cache:
            counts = counts or {}
            k = labels.get("result", "?")
            counts[k] = counts.get(k, 0) + int(m.group(2))
    return counts


def redis_flush_search():
    port = os.environ["ELEARN_REDIS_PORT"]
    subprocess.run(["bash", "-c",
                    "redis-cli -p %s --scan --pattern 'search:*' | "
                    "xargs -r -n 500 redis-cli -p %s DEL >/dev/null"
                    % (port, port)], check=True)


def get_json(path):
    req = urllib.request.Request(BASE + path, headers=dict(
        h.split(": ", 1) for h in HEADER))
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def first_touch(queries, clients):
    """Each query once, by `clients` threads on keep-alive connections:
    requests per second and latency percentiles over all of them."""
    import concurrent.futures
    import http.client

    local = threading.local()
    headers = dict(h.split(": ", 1) for h in HEADER)

    def one(q):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", int(PORT),
                                                    timeout=30)
        t = time.perf_counter()
        local.conn.request("GET", "/api/v1/courses/search?q=%s&page=4" % q,
                           headers=headers)
        resp = local.conn.getresponse()
        resp.read()
        return time.perf_counter() - t, resp.status

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        res = list(ex.map(one, queries))
    took = time.time() - t0
    lat = sorted(r[0] * 1000 for r in res)

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))]
    return {"rps": len(res) / took, "p50_ms": pct(50), "p99_ms": pct(99),
            "non_2xx": sum(1 for r in res if r[1] // 100 != 2)}


def search_scenarios(rows, notes):
    """Issue 4's search figures, 50 clients each; about 80 s at
    BENCH_SECONDS=10."""
    half = max(SECONDS // 2, 3)
    queries = search_queries()
    top = queries[0]                  # the file lists the commonest first
    kw = dict(conns=SEARCH_CONNS)

    # cold: every query of the mix once (page 4), nothing in Redis, so
    # each pays its count, facets and ranking
    redis_flush_search()
    r = first_touch(queries, kw["conns"])
    rows.append(("search, cold: each of the %d queries once (page 4)"
                 % len(queries), r, None, "-"))
    notes.append("search, cold: Redis search:* flushed, then each query of "
                 "the mix asked once by %d concurrent clients: every "
                 "request runs the page statement and the query's total, "
                 "facets and ranking (search_facets)" % kw["conns"])

    # uncached pages: the mix at pages 4-6, then the commonest word alone
    redis_flush_search()
    lua = os.path.join(OUT, "lines.lua")
    open(lua, "w").write(LINES_LUA)
    mix = write_lines("search-queries.txt", queries)
    r = wrk("/api/v1/courses/search", script=lua, args=[
        mix, "/api/v1/courses/search?q=", "page"], **kw)
    rows.append(("search, uncached pages, %d-query mix (pages 4-6)"
                 % len(queries), r, None, "-"))
    redis_flush_search()          # its first touches are in it too
    think = os.path.join(OUT, "think.lua")
    open(think, "w").write(THINK_LUA)
    r = wrk("/api/v1/courses/search", script=think, args=[
        mix, "/api/v1/courses/search?q=", "page", str(THINK_MS)], **kw)
    rows.append(("search, uncached pages, %d-query mix, %d ms think time"
                 % (len(queries), THINK_MS), r, None, "-"))
    r = wrk("/api/v1/courses/search", script=think, args=[
        mix, "/api/v1/courses/search?q=", "page", str(THINK_MS), "fresh"],
        **kw)
    rows.append(("search, nothing cached (every request a new key), "
                 "%d-query mix, %d ms think time" % (len(queries), THINK_MS),
                 r, None, "-"))
    notes.append("search, nothing cached: as the row above, but q ends in "
                 "8 random English stop words (the parser drops them, the "
                 "query is the same word), so no request finds a cache "
                 "entry: each runs its page statement and search_facets "
                 "(total, facets, ranked list) in PostgreSQL.  Think time: "
                 "each of the 50 clients waits %d ms after an answer." %
                 THINK_MS)
    one = write_lines("search-top.txt", [top])
    r = wrk("/api/v1/courses/search", script=lua, seconds=half, args=[
        one, "/api/v1/courses/search?q=", "page"], **kw)
    rows.append(("search, uncached pages, commonest word \"%s\" alone "
                 "(pages 4-6)" % urllib.parse.unquote_plus(top), r, None,
                 "-"))
    notes.append("search, uncached pages: targets p50 < 10 ms and p99 < "
                 "50 ms; each request asks for result page 4, 5 or 6, "
                 "which no cache of pages holds (Redis search:* flushed "
                 "first); after its first request a query's total, facets "
                 "and ranked list come from its query entry "
                 "(docs/caching.md), so a relevance page is read by id.")

    # cached: one first page over and over
    path = "/api/v1/courses/search?q=" + top
    before = cache_counts("search")
    r, ref = near_204(path, **kw)
    after = cache_counts("search")
    if before is None or after is None:
        what = "cache not present"
        notes.append("search, first page repeated: no "
                     "elearn_cache_requests_total{cache=\"search\"} in "
                     "/metrics, so this measures the uncached query "
                     "(cache not present); target >= 0.5 of return 204.")
    else:
        hit = after.get("hit", 0) - before.get("hit", 0)
        total = sum(after.values()) - sum(before.values())
        what = "hit ratio %.3f" % (hit / total if total else 0)
        notes.append("search, first page repeated: search cache %s "
                     "(%d of %d lookups, warm-up and both runs); "
                     "target >= 0.5 of return 204." % (what, hit, total))
    rows.append(("search, first page repeated (%s)" % what, r, ref,
                 "return 204 around it"))

    # browse by newest: cursor page 500 against the first cursor page
    # (page 2: page 1 is a cached first page now), offset page 500 beside
    browse = "/api/v1/courses/search?sort=newest&pageSize=20"
    t0 = time.time()
    cursor = None
    cursors = {}
    for n in range(1, 500):
        page = get_json(browse + ("&cursor=" + urllib.parse.quote(
            cursor, safe="") if cursor else ""))
        cursor = page["pagination"]["nextCursor"]
        cursors[n + 1] = cursor
    walk = time.time() - t0

    def at(n):
        return browse + "&cursor=" + urllib.parse.quote(cursors[n], safe="")
    p2 = wrk(at(2), seconds=half, **kw)
    rows.append(("browse newest, cursor page 2", p2, None, "-"))
    for name, url in (("browse newest, cursor page 500", at(500)),
                      ("browse newest, offset page 500",
                       browse + "&page=500")):
        r = wrk(url, seconds=half, **kw)
        r["ratio"] = r["p50_ms"] / p2["p50_ms"]
        rows.append((name, r, None, "p50 of cursor page 2"))
        notes.append("%s: p50 %.2fx, p99 %.2fx of cursor page 2's" % (
            name, r["ratio"], r["p99_ms"] / p2["p99_ms"]))
    notes.append("browse: cursor page 500 target <= 1.5x the first pages' "
                 "latency; cursor page 2 stands for them because page 1 "
                 "is served from the search cache (the cursor was walked "
                 "in %.1f s)" % walk)

    # suggest: 2-4 letter prefixes of the mix's words, in turn
    prefixes = []
    for q in queries:
        w = urllib.parse.unquote_plus(q).split()[0]
        for n in (2, 3, 4):
            p = urllib.parse.quote(w[:n])
            if len(w) >= n and p not in prefixes:
                prefixes.append(p)
    pf = write_lines("suggest-prefixes.txt", prefixes)
    redis_flush_search()
    before = cache_counts("suggest") or {}
    r = wrk("/api/v1/courses/suggest", script=lua, args=[
        pf, "/api/v1/courses/suggest?q=", "-"], **kw)
    after = cache_counts("suggest") or {}
    hit = after.get("hit", 0) - before.get("hit", 0)
    total = sum(after.values()) - sum(before.values())
    rows.append(("suggest, %d prefixes of 2-4 letters (hit ratio %.3f)"
                 % (len(prefixes), hit / total if total else 0), r, None,
                 "-"))
    notes.append("suggest: target p99 < 5 ms; Redis search:* flushed "
                 "first, so each prefix's first request queries and fills "
                 "(%d misses of %d lookups)" % (total - hit, total))


def post_json(path, body, token=None):
    req = urllib.request.Request(
        BASE + path, data=json.dumps(body).encode(), method="POST",
        headers=dict({"Content-Type": "application/json"},
                     **({"Authorization": "Bearer " + token}
                        if token else {})))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def nginx_cpu_seconds():
    """CPU time so far of the nginx workers (with their librdkafka
    threads), from /proc: less at the mercy of a shared machine than
    requests per second."""
    pid = open(os.path.join(os.environ["ELEARN_VAR"], "nginx",
                            "nginx.pid")).read().strip()
    out = subprocess.run(["pgrep", "-P", pid], capture_output=True,
                         text=True).stdout.split()
    ticks = 0
    for w in out:
        try:
            f = open("/proc/%s/stat" % w).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(f[11]) + int(f[12])        # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def pid_cpu_seconds(pids):
    """utime + stime of the processes (and their threads) so far."""
    ticks = 0
    for p in pids:
        try:
            f = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(f[11]) + int(f[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def component_pids():
    """The stack's other processes a progress report costs CPU in:
    Redis, the Kafka broker, PostgreSQL (the postmaster and its
    backends) and elearn-progress, from their pid files."""
    var = os.environ["ELEARN_VAR"]

    def pidfile(*path):
        try:
            return [open(os.path.join(var, *path)).readline().strip()]
        except OSError:
            return []

    pg = pidfile("pg", "data", "postmaster.pid")
    if pg:
        pg += subprocess.run(["pgrep", "-P", pg[0]], capture_output=True,
                             text=True).stdout.split()
    return {"redis": pidfile("redis", "redis.pid"),
            "kafka": pidfile("kafka", "kafka.pid"), "postgres": pg,
            "elearn-progress": pidfile("progress", "progress.pid")}


def cpu_per_request(path, **kw):
    """wrk's figures plus the nginx workers' CPU microseconds per
    request (cpu_us), and each other component's and wrk's own
    (cpu_parts)."""
    parts = component_pids()
    t0 = nginx_cpu_seconds()
    p0 = {k: pid_cpu_seconds(v) for k, v in parts.items()}
    c0 = os.times()
    r = wrk(path, **kw)
    c1 = os.times()
    used = nginx_cpu_seconds() - t0
    n = max(r["rps"] * (kw.get("seconds") or SECONDS), 1)
    r["cpu_us"] = used * 1e6 / n
    r["cpu_parts"] = {k: (pid_cpu_seconds(v) - p0[k]) * 1e6 / n
                      for k, v in parts.items()}
    r["cpu_parts"]["wrk"] = (c1.children_user - c0.children_user
                             + c1.children_system
                             - c0.children_system) * 1e6 / n
    return r


def progress_setup():
    """The bench students (enrolled in course 1) and course 1's videos:
    (tokens file, "videoId:duration,...", tokens, wrk script)."""
    course = get_json("/api/v1/courses/1")
    videos = ",".join("%d:%d" % (v["videoId"], v["durationSeconds"])
                      for v in course["videos"]
                      if v.get("durationSeconds"))
    tokens = []
    for i in range(1, PROGRESS_STUDENTS + 1):
        email = "bench-progress-%d@bench.elearn.dev" % i
        password = "bench-password-%d" % i
        # 201 the first time, 409 after: either way the account exists
        post_json("/api/v1/auth/register", {"email": email,
                                            "password": password,
                                            "displayName": "Bench P%d" % i})
        for _ in range(50):     # the dev config rate-limits logins
            status, body = post_json("/api/v1/auth/login",
                                     {"email": email, "password": password})
            if status != 429:
                break
            time.sleep(0.2)
        token = json.loads(body)["accessToken"]
        status, _ = post_json("/api/v1/courses/1/enrollments", {}, token)
        assert status in (200, 201), status
        tokens.append(token)
    toks = write_lines("progress-tokens.txt", tokens)
    lua = os.path.join(OUT, "progress.lua")
    open(lua, "w").write(PROGRESS_LUA)
    return toks, videos, tokens, lua


class DaemonWatch(threading.Thread):
    """elearn-progress while reports arrive: its lag (librdkafka's
    consumer_lag, refreshed every second) sampled every 0.25 s from
    start() until it is 0 again after stop() (at most `bound` s more); its
    metrics and the batch upserts pg_stat_statements counted, at start()
    (m0, pg0), at stop() (m1, pg1) and once drained (m2, pg2)."""

    def __init__(self, bound=60):
        super().__init__(daemon=True)
        self.bound = bound
        self.lags = []
        self.stopped = None             # seconds from start() to stop()
        self.drained = None             # seconds after stop(), or None
        self.lag_seen = False

    def start(self):
        self.m0 = self.m2 = progress_metrics()
        self.pg0 = self.pg2 = upsert_statements()
        self.t0 = time.time()
        super().start()

    def stop(self):
        self.m1 = progress_metrics()
        self.pg1 = upsert_statements()
        self.stopped = time.time() - self.t0

    def run(self):
        while True:
            t = time.time() - self.t0
            try:
                m = progress_metrics()
            except OSError:             # a missed sample, not the end
                m = None
            if m is not None:
                self.m2 = m
                self.lags.append(progress_lag(m))
                self.lag_seen = self.lag_seen or progress_lag_reported(m)
            if self.stopped is not None:
                if m is not None and self.lags[-1] == 0 and self.lag_seen:
                    self.drained = max(t - self.stopped, 0.0)
                    self.pg2 = upsert_statements()
                    return
                if t > self.stopped + self.bound:
                    return
            time.sleep(0.25)

    def finish(self):
        """Waits for the end of the drain (bounded); returns self."""
        self.join(self.bound + 5)
        return self

    def delta(self, series, end):
        return end[series] - self.m0[series]

    def statements(self, end_pg):
        """Upserts by pg_stat_statements up to end_pg, or -1 unknown."""
        return end_pg - self.pg0 if None not in (self.pg0, end_pg) else -1

    def after(self):
        return ("0 again %.1f s after the load" % self.drained
                if self.drained is not None
                else "not 0 within %d s after the load" % self.bound)

    def note(self):
        self.finish()
        secs = max(self.stopped or 0, 1e-3)
        rows = self.delta("elearn_progress_rows_total", self.m1)
        stmts = self.delta("elearn_progress_statements_total", self.m1)
        pg = self.statements(self.pg1)
        reports = self.delta('elearn_consumer_messages_total{topic="%s"}'
                             % PROGRESS_TOPIC, self.m1)
        return ("elearn-progress under the queued ingest load: %d reports "
                "consumed (%.0f/s), %d rows in %d statements (%d by "
                "pg_stat_statements; %.0f rows/s, %.0f per statement); lag "
                "max %d, %s"
                % (reports, reports / secs, rows, stmts, pg, rows / secs,
                   rows / max(pg, stmts, 1), max(self.lags or [0]),
                   self.after()))


def progress_scenarios(rows, notes):
    """Issue 5's ingest figures; about 70 s at BENCH_SECONDS=10."""
    toks, videos, tokens, lua = progress_setup()
    kw = dict(script=lua, header=False)
    watch = DaemonWatch()
    queued, ref = near_204("/", args=[toks, videos, ""], watch=watch, **kw)
    rows.append(("progress ingest, queued (default)", queued, ref,
                 "return 204 around it"))
    notes.append(watch.note())
    durable, ref = near_204("/", args=[toks, videos, "/bench/durable"],
                            **kw)
    rows.append(("progress ingest, durable (broker ack)", durable, ref,
                 "return 204 around it"))
    naive = wrk("/", args=[toks, videos, "/bench/naive"], **kw)
    rows.append(("progress ingest, naive (1 upsert/report, reference)",
                 naive, naive["rps"], "naive"))

    # what each costs nginx itself, the machine's other load aside
    cpu = [("return 204", cpu_per_request("/bench/204"))]
    for name, prefix in (("queued", ""), ("durable", "/bench/durable"),
                         ("naive", "/bench/naive")):
        cpu.append((name, cpu_per_request("/", args=[toks, videos, prefix],
                                          **kw)))
    notes.append("progress ingest, nginx CPU per request (workers and "
                 "their librdkafka threads, from /proc): "
                 + ", ".join("%s %.1f us" % (n, r["cpu_us"])
                             for n, r in cpu))
    # where the rest of a report's CPU goes, on the same two cores
    notes.append("progress ingest, other CPU per request: "
                 + "; ".join("%s: %s" % (n, ", ".join(
                     "%s %.1f us" % kv for kv in r["cpu_parts"].items()))
                             for n, r in cpu))
    for name, r in (("queued", queued), ("durable", durable)):
        r = dict(r, ratio=r["rps"] / naive["rps"])
        rows.append(("progress ingest, %s, against naive" % name, r, None,
                     "naive"))
    notes.append("progress ingest: targets >= 0.5 of return 204 (queued) "
                 "and >= 5x the naive location; %d students x %d videos "
                 "of course 1, each pair's reports 10 s apart as a player's"
                 % (len(tokens), len(videos.split(","))))


def other_scenarios(rows, lua, pool, workers):
    """The request path, auth and login scenarios."""
    base = wrk("/bench/204")
    rows.append(("return 204 (baseline)", base, base["rps"], "return 204"))
    r, ref = near_204("/healthz")
    rows.append(("/healthz", r, ref, "return 204 around it"))
    subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-H", HEADER[0],
                    BASE + "/api/v1/courses/1"], check=True)
    r, ref = near_204("/api/v1/courses/1")
    rows.append(("course GET, cached", r, ref, "return 204 around it"))

    pgb = pgbench(pool * workers)
    rows.append(("pgbench same SELECT, %d conns (baseline)"
                 % (pool * workers), pgb, pgb["rps"], "pgbench"))
    redis_flush_courses()
    before = course_codes()
    r = wrk("/api/v1/courses/1", script=lua)
    after = course_codes()
    # non-2xx must be the unpublished courses' 404s, never 503/504
    r["codes"] = {k: after.get(k, 0) - before.get(k, 0) for k in after
                  if after.get(k, 0) != before.get(k, 0)}
    rows.append(("course GET, uncached", r, pgb["rps"], "pgbench"))

    # auth: claims only, revocation check on
    r, ref = near_204("/api/v1/me")
    rows.append(("GET /me, HS256", r, ref, "return 204 around it"))

    restart_nginx(ELEARN_JWT_ALG="ES256")
    try:
        es = login("student@elearn.dev", "student-dev-pass")
        HEADER[:] = ["Authorization: Bearer " + es]
        r, ref = near_204("/api/v1/me")
        rows.append(("GET /me, ES256, one token (cache)", r, ref,
                     "return 204 around it"))
        toks = os.path.join(OUT, "es256-tokens.txt")
        es256_tokens(40000, es, toks)
        lua2 = os.path.join(OUT, "tokens.lua")
        open(lua2, "w").write(TOKENS_LUA)
        ossl = openssl_ecdsa_verify_rate()
        rows.append(("openssl speed ecdsap256 verify, 1 core (baseline)",
                     {"rps": ossl, "p50_ms": None, "p99_ms": None,
                      "non_2xx": 0}, ossl, "openssl"))
        r = wrk("/api/v1/me", script=lua2, args=[toks], header=False)
        rows.append(("GET /me, ES256, every token new", r, ossl, "openssl"))
    finally:
        restart_nginx()

    # login: 16 clients against the bare hash rate of both cores
    hrate = argon2_rate(2)
    rows.append(("libargon2 in-process, 2 threads (baseline)",
                 {"rps": hrate, "p50_ms": None, "p99_ms": None,
                  "non_2xx": 0}, hrate, "argon2"))
    for i in range(1, LOGIN_ACCOUNTS + 1):
        # 201 the first time, 409 after: either way the account exists
        subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-H",
             "Content-Type: application/json", "-d",
             json.dumps({"email": "bench-%d@bench.elearn.dev" % i,
                         "password": "bench-password-%d" % i,
                         "displayName": "Bench %d" % i}),
             BASE + "/api/v1/auth/register"], check=True)
    lua3 = os.path.join(OUT, "login.lua")
    open(lua3, "w").write(LOGIN_LUA % LOGIN_ACCOUNTS)
    # the example config's per-address limit_req would measure itself
    restart_nginx(ELEARN_LOGIN_RATE="100000r/s")
    try:
        r = wrk("/api/v1/auth/login", script=lua3, conns=16, args=["-"],
                header=False)
    finally:
        restart_nginx()
    rows.append(("POST /auth/login, 16 clients", r, hrate, "argon2"))


# --- the progress daemon (issue 5) ------------------------------------------

PROGRESS_TOPIC = "elearn.progress"
PROGRESS_RATE = int(os.environ.get("PROGRESS_RATE", "5000"))
PROGRESS_BACKLOG = 200000
PROGRESS_USERS = 50000
# a report as the module produces it, formatted without json.dumps so the
# producer keeps up with the rate
PROGRESS_EVENT = ('{"eventId":"%s","type":"progress.reported",'
                  '"occurredAt":"2026-11-27T12:00:00.000Z","schemaVersion":1,'
                  '"data":{"userId":%d,"videoId":%d,"courseId":1,'
                  '"positionSeconds":%d,"watched":[[%d,%d]],'
                  '"durationSeconds":396,"reportedAtMs":%d}}')

PROGRESS_PGBENCH = """\\set u random(1, %d)
\\set v random(1, 4)
\\set pos random(10, 390)
INSERT INTO video_progress AS p (user_id, video_id, position_seconds, \
watched, reported_at_ms) VALUES (:u, :v, :pos, \
int4multirange(int4range(:pos - 10, :pos)), 1) \
ON CONFLICT (user_id, video_id) DO UPDATE SET \
position_seconds = EXCLUDED.position_seconds, \
watched = p.watched + EXCLUDED.watched, updated_at = now();
"""


def progress_metrics():
    """The stack daemon's /metrics as {series: value}."""
    url = "http://127.0.0.1:%s/metrics" % os.environ.get(
        "ELEARN_PROGRESS_METRICS_PORT", "9482")
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            out[name] = float(v)
    return out


def progress_lag(m):
    return sum(v for k, v in m.items()
               if k.startswith('elearn_consumer_lag{topic="%s"'
                               % PROGRESS_TOPIC))


def progress_lag_reported(m):
    """Whether the daemon's metrics hold a lag yet (librdkafka reports it
    once a second after the assignment): a lag of 0 before that is none
    measured, not none left."""
    return any(k.startswith("elearn_consumer_lag{") for k in m)


def upsert_statements():
    """How many times PostgreSQL ran elearn-progress's batch upsert, from
    pg_stat_statements (issue 5 asks for rows per statement from there);
    None when it cannot be read."""
    out = subprocess.run(
        ["psql", "-tAq", "-c",
         "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
         "WHERE query LIKE 'WITH input AS (%unnest(%'"],
        capture_output=True, text=True, timeout=30)
    try:
        return int(out.stdout.strip())
    except ValueError:
        return None


def progress_produce(n, rate=None, start=0):
    """Produces n reports (report i: user 1 + i % users, video 1 + i //
    users % 4, so a backlog's rows are distinct), paced at rate/s if given.
    Returns the seconds it took."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": os.environ["ELEARN_KAFKA_BROKERS"],
                  "linger.ms": 20, "queue.buffering.max.messages": 1000000})
    t0 = time.time()
    for i in range(start, start + n):
        u = 1 + i % PROGRESS_USERS
        v = 1 + (i // PROGRESS_USERS) % 4
        pos = 10 + i % 380
        # the module stamps reportedAtMs with its clock at acceptance
        body = PROGRESS_EVENT % (uuid.uuid4(), u, v, pos, pos - 10, pos,
                                 int(time.time() * 1000))
        while True:
            try:
                p.produce(PROGRESS_TOPIC, body, key=str(u))
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
            if rate:
                ahead = (i - start) / rate - (time.time() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    p.flush(60)
    return time.time() - t0


def progress_pgbench(clients=16):
    with tempfile.NamedTemporaryFile("w", suffix=".sql",
                                     delete=False) as f:
        f.write(PROGRESS_PGBENCH % PROGRESS_USERS)
        script = f.name
    out = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c",
                          str(clients), "-j", "2", "-T", str(SECONDS),
                          "-f", script], capture_output=True, text=True,
                         timeout=SECONDS + 60)
    os.unlink(script)
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))
    lat = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    return {"rps": tps, "p50_ms": float(lat.group(1)) if lat else None,
            "p99_ms": None, "non_2xx": 0}


def progress_delay_p99(m0, m):
    """The upper bound of the delay histogram's bucket holding the 99th
    percentile of the batches between two scrapes (None if none)."""
    pre = "elearn_progress_delay_seconds_bucket{le=\""
    bounds = sorted((float(k[len(pre):-2]) if k[len(pre):-2] != "+Inf"
                     else float("inf"), k) for k in m if k.startswith(pre))
    counts = [(b, m[k] - m0.get(k, 0)) for b, k in bounds]
    if not counts or counts[-1][1] == 0:
        return None
    for b, c in counts:
        if c >= 0.99 * counts[-1][1]:
            return b
    return None


def progress_wait_drained(timeout):
    """Waits (bounded) until the daemon's lag is 0; returns the metrics."""
    deadline = time.time() + timeout
    m = progress_metrics()
    while time.time() < deadline:
        m = progress_metrics()
        if progress_lag(m) == 0 and progress_lag_reported(m):
            break
        time.sleep(0.5)
    return m


def progress_daemon_scenarios(rows, notes):
    """elearn-progress: drain rate of a backlog, lag under a steady rate."""
    stack("start", "progress")
    progress_wait_drained(60)

    base = progress_pgbench()
    rows.append(("pgbench single-row progress upsert, 16 conns (baseline)",
                 base, base["rps"], "pgbench upsert"))

    # a backlog of distinct rows, produced while the daemon is stopped
    stack("stop", "progress")
    progress_produce(PROGRESS_BACKLOG)
    t0 = time.time()
    stack("start", "progress")
    # a new process: its counters start at 0 (a first batch may be in
    # before its metrics can be read)
    m0 = dict.fromkeys(progress_metrics(), 0.0)
    deadline = t0 + 300
    m = m0
    while time.time() < deadline:
        m = progress_metrics()
        if (m["elearn_progress_rows_total"] - m0["elearn_progress_rows_total"]
                >= PROGRESS_BACKLOG):
            break
        time.sleep(0.2)
    took = time.time() - t0
    done = m["elearn_progress_rows_total"] - m0["elearn_progress_rows_total"]
    stmts = (m["elearn_progress_statements_total"]
             - m0["elearn_progress_statements_total"])
    in_tx = (m.get("elearn_progress_flush_seconds_sum", 0)
             - m0.get("elearn_progress_flush_seconds_sum", 0))
    r = {"rps": done / took, "p50_ms": None, "p99_ms": None, "non_2xx": 0}
    rows.append(("elearn-progress draining %d reports (distinct rows)"
                 % PROGRESS_BACKLOG, r, base["rps"], "pgbench upsert"))
    notes.append("progress backlog: %d rows in %.1f s (%.1f s of it in "
                 "the batch transactions), %d statements (%.0f rows per "
                 "statement)" % (done, took, in_tx, stmts,
                                 done / max(stmts, 1)))

    # a steady rate of reports from 50,000 users, lag sampled meanwhile
    progress_wait_drained(60)
    watch = DaemonWatch(bound=120)
    watch.start()
    n = PROGRESS_RATE * SECONDS
    sent_in = progress_produce(n, rate=PROGRESS_RATE, start=PROGRESS_BACKLOG)
    watch.stop()
    watch.finish()
    m0, m = watch.m0, watch.m2
    drain = watch.drained if watch.drained is not None else watch.bound
    reports = watch.delta('elearn_progress_reports_total{result="merged"}', m)
    rws = watch.delta("elearn_progress_rows_total", m)
    stmts = watch.delta("elearn_progress_statements_total", m)
    r = {"rps": reports / (sent_in + drain), "p50_ms": None, "p99_ms": None,
         "non_2xx": 0}
    rows.append(("elearn-progress at %d reports/s offered" % PROGRESS_RATE,
                 r, base["rps"], "pgbench upsert"))
    notes.append("progress at %d reports/s for %d s: produced in %.1f s, "
                 "lag max %d, %s, p99 report-to-COMMIT delay <= %s s; %d "
                 "reports -> %d rows in %d statements (%d by "
                 "pg_stat_statements; %.0f rows per statement)"
                 % (PROGRESS_RATE, SECONDS, sent_in, max(watch.lags or [0]),
                    watch.after(), progress_delay_p99(m0, m), reports, rws,
                    stmts, watch.statements(watch.pg2), rws / max(stmts, 1)))


# --- issue 5's peer: the same ingestion in Lua (tools/peer-lua) ---------

PEER_KAFKA_POM = os.path.join(TOP, "config", "kafka-peer", "pom.xml")
FAILED = []     # scenarios whose figures must not count; main() exits 1


def peer_env():
    """The environment of the peer's stack (tools/stack.sh): its own var
    directory, nginx port and Kafka 3.9 broker; the run stack's Redis,
    PostgreSQL and signing keys."""
    var = os.environ["ELEARN_VAR"]
    kafka = int(os.environ["ELEARN_KAFKA_PORT"])
    return {
        "ELEARN_VAR": os.path.join(OUT, "peer-stack"),
        "ELEARN_HTTP_PORT": os.environ.get("BENCH_PEER_HTTP_PORT",
                                           str(int(PORT) + 2)),
        "ELEARN_KAFKA_PORT": str(kafka + 200),
        "ELEARN_KAFKA_CONTROLLER_PORT": str(
            int(os.environ["ELEARN_KAFKA_CONTROLLER_PORT"]) + 200),
        "ELEARN_KAFKA_POM": PEER_KAFKA_POM,
        "ELEARN_NGINX_CONF": os.path.join(TOP, "tools", "peer-lua",
                                          "nginx.conf.in"),
        "ELEARN_JWT_ALG": "HS256",
        "ELEARN_JWT_KEY_FILE": os.path.join(var, "secrets",
                                            "jwt-hs256.key"),
        "ELEARN_CURSOR_KEY_FILE": os.path.join(var, "secrets",
                                               "cursor.key"),
        "ELEARN_PEER_SCRIPTS": os.path.join(OUT, "peer-scripts.lua"),
        # tools/stack.sh derives the broker list from the port
        "ELEARN_KAFKA_BROKERS": "127.0.0.1:%d" % (kafka + 200),
    }


def redis_cli(*args):
    return subprocess.run(["redis-cli", "-p", os.environ["ELEARN_REDIS_PORT"]]
                          + [str(a) for a in args], capture_output=True,
                          text=True, check=True).stdout.split()


def peer_offsets(brokers):
    """The sum of elearn.progress's end offsets on the peer's broker once
    it stops moving (the producers batch for 20 ms; bounded at 15 s)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": brokers, "group.id": "elearn-bench"})
    parts = c.list_topics(PROGRESS_TOPIC, timeout=10).topics[
        PROGRESS_TOPIC].partitions
    last, deadline = -1, time.time() + 15
    while time.time() < deadline:
        n = sum(c.get_watermark_offsets(TopicPartition(PROGRESS_TOPIC, p),
                                        timeout=10)[1] for p in parts)
        if n == last:
            break
        last = n
        time.sleep(1)
    c.close()
    return last


def peer_event_shape(brokers):
    """The field names of the newest event of elearn.progress's
    partition 0 on the peer's broker, data's included."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": brokers, "group.id": "elearn-bench"})
    high = c.get_watermark_offsets(TopicPartition(PROGRESS_TOPIC, 0),
                                   timeout=10)[1]
    c.assign([TopicPartition(PROGRESS_TOPIC, 0, max(high - 1, 0))])
    m = c.poll(10)
    c.close()
    if m is None or m.error():
        return None
    e = json.loads(m.value())
    return sorted(e) + sorted("data." + k for k in e.get("data", {}))


def peer_run(name, base, prefix, toks, videos, lua, brokers, pids):
    """One measured wrk run of an ingestion, checked: no non-2xx or
    socket error, as many events on the broker as 204s (up to the
    requests in flight when wrk stopped), and nginx's, Redis's and the
    broker's CPU per report."""
    n0 = peer_offsets(brokers)
    c0 = {k: pid_cpu_seconds(v) for k, v in pids.items()}
    r = wrk("/", script=lua, header=False, args=[toks, videos, prefix],
            base=base)
    events = peer_offsets(brokers) - n0
    r["cpu_parts"] = {k: (pid_cpu_seconds(v) - c0[k]) * 1e6
                      / max(r["requests"], 1) for k, v in pids.items()}
    r["cpu_us"] = sum(r["cpu_parts"].values())
    r["events"] = events
    bad = []
    if r["non_2xx"] or r["socket_errors"]:
        bad.append("%d non-2xx, %d socket errors"
                   % (r["non_2xx"], r["socket_errors"]))
    if not r["requests"] <= events <= r["requests"] + CONNS:
        bad.append("%d events on the broker for %d answers"
                   % (events, r["requests"]))
    if bad:
        FAILED.append("%s: %s" % (name, "; ".join(bad)))
    return r


def peer_scenarios(rows, notes):
    """Issue 5's peer: elearn's queued ingestion and the same written in
    Lua (tools/peer-lua), in one extra nginx against the run stack's Redis
    and key and an extra Kafka 3.9 broker, measured in turn (two rounds,
    averaged) with the progress scenario's wrk script."""
    toks, videos, tokens, lua = progress_setup()
    env = peer_env()
    base = "http://127.0.0.1:%s" % env["ELEARN_HTTP_PORT"]
    brokers = env["ELEARN_KAFKA_BROKERS"]
    subprocess.run([os.path.join(TOP, "tools", "peer-lua", "scripts.py"),
                    env["ELEARN_PEER_SCRIPTS"]], check=True)
    # a fresh broker each time: a run leaves ~200 MB of events behind
    import shutil
    shutil.rmtree(os.path.join(env["ELEARN_VAR"], "kafka", "data"),
                  ignore_errors=True)
    try:
        stack("start", "kafka", **env)
        stack("start", "nginx", **env)
        var = env["ELEARN_VAR"]
        nginx = open(os.path.join(var, "nginx", "nginx.pid")).read().strip()
        pids = {"nginx": subprocess.run(["pgrep", "-P", nginx],
                                        capture_output=True,
                                        text=True).stdout.split(),
                "redis": [open(os.path.join(os.environ["ELEARN_VAR"],
                                            "redis", "redis.pid")).read()
                          .strip()],
                "kafka 3.9": [open(os.path.join(var, "kafka", "kafka.pid"))
                              .read().strip()]}

        # fresh cache entries for the students and videos (the peer has
        # no PostgreSQL: a miss is its 503), filled by elearn's warm-up
        users = [json.loads(base64.urlsafe_b64decode(
            t.split(".")[1] + "=="))["sub"] for t in tokens]
        vids = [v.split(":")[0] for v in videos.split(",")]
        redis_cli("DEL", *(["video:%s" % v for v in vids]
                           + ["enroll:%s:1" % u for u in users]))
        warm = dict(script=lua, header=False, seconds=3, base=base)
        for prefix in ("", "/peer"):
            for _ in range(50):         # the producers' first metadata
                r = wrk("/", args=[toks, videos, prefix], **warm)
                if r["non_2xx"] == 0 and r["socket_errors"] == 0:
                    break
                time.sleep(0.2)
        # the very script the module runs: Redis knows its SHA-1 already
        text = open(env["ELEARN_PEER_SCRIPTS"]).read()
        body = text.split("[==[\n", 1)[1].split("]==]", 1)[0]
        import hashlib
        sha = hashlib.sha1(body.encode()).hexdigest()
        if redis_cli("SCRIPT", "EXISTS", sha) != ["1"]:
            FAILED.append("peer: the extracted report script is not the "
                          "one the module loaded")

        runs = {"elearn": [], "peer": []}
        shapes = {}
        for _ in range(2):
            for who, prefix in (("elearn", ""), ("peer", "/peer")):
                t0 = int(time.time() * 1000)
                runs[who].append(peer_run(who, base, prefix, toks, videos,
                                          lua, brokers, pids))
                shapes[who] = peer_event_shape(brokers)
                # the merge landed: a report of this run is in Redis
                at = max(int((redis_cli("HGET", "progress:%s:%s" % (u, v),
                                        "at") or ["0"])[0])
                         for u in users[:4] for v in vids)
                if at < t0:
                    FAILED.append("%s: no Redis merge during its run" % who)
        if shapes["elearn"] != shapes["peer"]:
            FAILED.append("peer: its events differ from elearn's: %s vs %s"
                          % (shapes["peer"], shapes["elearn"]))
    finally:
        stack("stop", "kafka", "nginx", **env)     # nginx first

    def mean(rs):
        return {"rps": sum(r["rps"] for r in rs) / len(rs),
                "p50_ms": sum(r["p50_ms"] for r in rs) / len(rs),
                "p99_ms": max(r["p99_ms"] for r in rs),
                "non_2xx": sum(r["non_2xx"] + r["socket_errors"]
                               for r in rs),
                "cpu_us": sum(r["cpu_us"] for r in rs) / len(rs),
                "cpu_parts": {k: sum(r["cpu_parts"][k] for r in rs)
                              / len(rs) for k in rs[0]["cpu_parts"]},
                "events": sum(r["events"] for r in rs)}
    def parts(r):
        return ", ".join("%s %.1f" % kv for kv in r["cpu_parts"].items())
    ours, peer = mean(runs["elearn"]), mean(runs["peer"])
    failed = ""
    if FAILED:      # figures that must not count: no ratio
        ours["ratio"] = peer["ratio"] = None
        failed = " - FAILED, see the notes"
    rows.append(("progress ingest, Lua peer (baseline; Kafka 3.9)" + failed,
                 peer, peer["rps"], "Lua peer"))
    rows.append(("progress ingest, queued, against the Lua peer" + failed,
                 ours, peer["rps"], "Lua peer"))
    notes.append("Lua peer: one nginx (%s workers) with elearn's module "
                 "and the Lua module, the same Redis, key and Kafka 3.9.1 "
                 "broker, two rounds of %d s each in turn; p99 the worse "
                 "round. CPU per report (nginx workers + Redis + the "
                 "broker): elearn %.1f us (%s), peer %.1f us (%s), the "
                 "peer's / elearn's %.2f; req/s by round: elearn %s, peer "
                 "%s; events on the broker: elearn %d, peer %d"
                 % (os.environ.get("ELEARN_NGINX_WORKERS", "2"), SECONDS,
                    ours["cpu_us"], parts(ours), peer["cpu_us"],
                    parts(peer), peer["cpu_us"] / max(ours["cpu_us"], 1e-9),
                    " / ".join("%.0f" % r["rps"] for r in runs["elearn"]),
                    " / ".join("%.0f" % r["rps"] for r in runs["peer"]),
                    ours["events"], peer["events"]))
    for f in FAILED:
        notes.append("FAILED " + f)


def main():
    os.makedirs(OUT, exist_ok=True)
    conf = open(os.path.join(os.environ["ELEARN_VAR"], "nginx",
                             "nginx.conf")).read()
    pool = int(re.search(r"elearn_pg_pool_size (\d+);", conf).group(1))
    workers = int(re.search(r"worker_processes (\d+);", conf).group(1))

    lua = os.path.join(OUT, "uncached.lua")
    open(lua, "w").write(UNCACHED_LUA)

    token = login("student@elearn.dev", "student-dev-pass")
    HEADER.append("Authorization: Bearer " + token)

    rows = []
    notes = []
    if ONLY not in ("search", "progress", "peer"):
        other_scenarios(rows, lua, pool, workers)
        # the auth scenarios left an ES256 token behind: a fresh HS256 one
        HEADER[:] = ["Authorization: Bearer "
                     + login("student@elearn.dev", "student-dev-pass")]
    if ONLY not in ("progress", "peer"):
        search_scenarios(rows, notes)
    if ONLY not in ("search", "peer"):
        progress_scenarios(rows, notes)
        progress_daemon_scenarios(rows, notes)
    if ONLY in ("", "peer"):
        peer_scenarios(rows, notes)

    lines = ["| scenario | req/s | p50 ms | p99 ms | non-2xx | ratio | to |",
             "|---|---:|---:|---:|---:|---:|---|"]
    result = []
    for name, m, ref, refname in rows:
        # a row with a latency target carries its own ratio, or none
        ratio = m.get("ratio", m["rps"] / ref if ref else None)
        lines.append("| %s | %.0f | %s | %s | %d | %s | %s |" % (
            name, m["rps"],
            "%.2f" % m["p50_ms"] if m["p50_ms"] is not None else "-",
            "%.2f" % m["p99_ms"] if m["p99_ms"] is not None else "-",
            m["non_2xx"], "%.2f" % ratio if ratio is not None else "-",
            refname))
        result.append(dict(m, scenario=name, ratio=ratio, baseline=refname))
    table = "\n".join(lines)
    header = ("elearn bench: %d s per scenario, %d connections (search "
              "%d), %d nginx workers, pool %d per worker"
              % (SECONDS, CONNS, SEARCH_CONNS, workers, pool))
    note = "\n".join("- " + n for n in notes)
    open(os.path.join(OUT, "results.md"), "w").write(
        "# " + header + "\n\n" + table + "\n\n" + note + "\n")
    json.dump({"settings": header, "results": result, "notes": notes},
              open(os.path.join(OUT, "results.json"), "w"), indent=2)
    print(header)
    print(table)
    print(note)
    for name, m, _, _ in rows:
        if "codes" in m:
            print("%s: answers by status %s" % (name, m["codes"]))
    print("written to %s/results.{md,json}" % os.path.abspath(OUT))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
