-- elearn's progress ingestion written in Lua: the bench-only peer of
-- issue 5 (tools/bench.py, BENCH_ONLY=peer).  It does what
-- POST /api/v1/videos/{id}/progress does in the module's default
-- ("queued") mode, on Debian's libnginx-mod-http-lua with lua-nginx-redis
-- (resty.redis) and lua-nginx-kafka (lua-resty-kafka 0.07):
--
--   1. the bearer token: HS256 over the stack's own secret (LuaJIT FFI to
--      libcrypto's HMAC), header alg pinned, iss/exp/nbf/iat/sub/jti/sid/
--      role checked like ngx_http_elearn_jwt.c, verified tokens kept per
--      worker until they expire (elearn_jwt_cache_size), and the revoked
--      set (elearn:revoked) checked in memory;
--   2. the body: Content-Length and read size at most 4 KiB,
--      application/json, a JSON object, the same field rules and messages
--      (at most 8 errors) as ngx_http_elearn_progress_parse();
--   3. the module's own "progress report" Redis script, extracted from
--      ngx_http_elearn_progress.c (tools/peer-lua/scripts.py), run with
--      EVALSHA on a keepalive pool: the cached video and enrollment, the
--      bounds, the merge, in one round trip;
--   4. the same event, keyed by the user, to elearn.progress through
--      lua-resty-kafka's async producer (acks=all, a 20 ms flush as
--      elearn_kafka_linger); 204.
--
-- What it does not do (see docs/BENCHMARKS.md): a cache miss of the video
-- or the enrollment, which the module answers from PostgreSQL, is a 503
-- here (Debian has no PostgreSQL client for nginx Lua; the bench fills
-- both caches through elearn first and fails on any non-2xx); the revoked
-- set is polled every second instead of followed by pub/sub; HS256 only;
-- POST only; cjson, unlike jansson, lets duplicate keys through and cannot
-- tell {} from [].

local ffi = require "ffi"
local cjson = require "cjson.safe"
local redis = require "nginx.redis"
local producer = require "nginx.kafka.producer"
local b64 = require "ngx.base64"

local C = ffi.C
local floor, ceil, min, max = math.floor, math.ceil, math.min, math.max
local byte, sub, find, match = string.byte, string.sub, string.find,
                               string.match
local fmt = string.format
local concat = table.concat
local type, tonumber, tostring, next = type, tonumber, tostring, next
local ngx_var, ngx_req, ngx_now = ngx.var, ngx.req, ngx.now

cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(32)

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
typedef struct hmac_ctx_st HMAC_CTX;
const EVP_MD *EVP_sha256(void);
HMAC_CTX *HMAC_CTX_new(void);
int HMAC_Init_ex(HMAC_CTX *ctx, const void *key, int len, const EVP_MD *md,
                 void *impl);
int HMAC_Update(HMAC_CTX *ctx, const unsigned char *data, size_t len);
int HMAC_Final(HMAC_CTX *ctx, unsigned char *md, unsigned int *len);
int CRYPTO_memcmp(const void *a, const void *b, size_t len);
int RAND_bytes(unsigned char *buf, int num);
]]

-- nginx links libcrypto already; the soname in case its symbols are local
local loaded, crypto = pcall(ffi.load, "libcrypto.so.3")
if not loaded then
    crypto = C
end

local _M = {}

-- the module's defaults (the bench's nginx sets none of these directives)
local ISS = "elearn"                    -- elearn_jwt_issuer
local TTL = 30 * 86400                  -- elearn_progress_ttl
local SLACK = 5                         -- elearn_progress_slack
local BODY_MAX = 4096
local IV_MAX = 64
local ERR_MAX = 8
local JWT_MAX = 8192
local ID_LEN = 40                       -- sid, jti: shorter than this
local ROLE_LEN = 16
local CACHE_MAX = 10000                 -- elearn_jwt_cache_size
local TOPIC = "elearn.progress"
local ROLES = {student = true, instructor = true, admin = true}

local conf = {}
local secret
local hmac_ctx
local mac = ffi.new("unsigned char[32]")
local maclen = ffi.new("unsigned int[1]")
local report_script, report_sha

-- per worker
local kafka
local revoked = {}                      -- "s:<sid>" / "j:<jti>" -> true
local revoked_loaded = false
local tokens, ntokens = {}, 0           -- verified token -> claims
local headers = {}                      -- header seen valid -> true

local TITLES = {
    [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
    [405] = "Method Not Allowed", [413] = "Content Too Large",
    [415] = "Unsupported Media Type", [422] = "Unprocessable Content",
    [500] = "Internal Server Error", [503] = "Service Unavailable",
}


local function seconds(s)
    local n, unit = s:match("^(%d+)(%a*)$")
    local scale = {[""] = 1, s = 1, m = 60, h = 3600, d = 86400}
    return tonumber(n) * scale[unit]
end


-- init_by_lua: c.key_file, c.alg, c.leeway ("30s"), c.redis_port,
-- c.kafka_brokers ("host:port,..."), c.scripts (scripts.py's output)
function _M.init(c)
    assert(c.alg == "HS256", "the Lua peer verifies HS256 tokens only")
    local f = assert(io.open(c.key_file, "rb"))
    secret = f:read("*a")
    f:close()
    assert(#secret >= 32 and #secret <= 4096, "HS256 secret size")
    conf.leeway = seconds(c.leeway)
    conf.redis_port = tonumber(c.redis_port)
    conf.brokers = {}
    for host, port in c.kafka_brokers:gmatch("([^,:]+):(%d+)") do
        conf.brokers[#conf.brokers + 1] = {host = host,
                                           port = tonumber(port)}
    end
    report_script = dofile(c.scripts).report
    local sha = ngx.sha1_bin(report_script)
    report_sha = sha:gsub(".", function(ch)
        return fmt("%02x", byte(ch))
    end)
end


-- the revoked set, polled: the module follows it by pub/sub
local function load_revoked(premature)
    if premature then
        return
    end
    local red = redis:new()
    red:set_timeout(1000)
    local ok = red:connect("127.0.0.1", conf.redis_port)
    if not ok then
        return
    end
    local list = red:zrangebyscore("elearn:revoked", ngx.time(), "+inf")
    if type(list) == "table" then
        local set = {}
        for i = 1, #list do
            set[list[i]] = true
        end
        revoked = set
        revoked_loaded = true
    end
    red:set_keepalive(10000, 64)
end


function _M.init_worker()
    hmac_ctx = crypto.HMAC_CTX_new()
    assert(crypto.HMAC_Init_ex(hmac_ctx, secret, #secret,
                               crypto.EVP_sha256(), nil) == 1)
    kafka = producer:new(conf.brokers, {
        producer_type = "async",
        api_version = 2,                -- the newest it speaks
        required_acks = -1,             -- as the idempotent producer
        flush_time = 20,                -- elearn_kafka_linger
        max_buffering = 100000,         -- elearn_kafka_queue_max
        request_timeout = 2000,
    })
    ngx.timer.at(0, load_revoked)
    ngx.timer.every(1, load_revoked)
end


-- --- answers ----------------------------------------------------------

local function escape(s)
    return (s:gsub('[%c"\\]', function(ch)
        if ch == '"' or ch == "\\" then
            return "\\" .. ch
        end
        if ch == "\n" then return "\\n" end
        if ch == "\r" then return "\\r" end
        if ch == "\t" then return "\\t" end
        return fmt("\\u%04x", byte(ch))
    end))
end


-- ngx_http_elearn_problem_send(): the same body and headers
local function problem(status, slug, detail, errors)
    local out = {'{"type":"/problems/', slug, '","title":"',
                 TITLES[status] or "Error", '","status":', status}
    if detail and detail ~= "" then
        out[#out + 1] = ',"detail":"' .. escape(detail) .. '"'
    end
    if errors then
        local e = {}
        for i = 1, #errors do
            e[i] = '{"field":"' .. escape(errors[i][1]) .. '","message":"'
                   .. escape(errors[i][2]) .. '"}'
        end
        out[#out + 1] = ',"errors":[' .. concat(e, ",") .. "]"
    end
    out[#out + 1] = "}"
    if status == 503 then
        ngx.header["Retry-After"] = 1
    end
    if status == 401 then
        ngx.header["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    end
    ngx.status = status
    ngx.header["Content-Type"] = "application/problem+json"
    ngx.print(concat(out))
    return ngx.exit(ngx.HTTP_OK)
end


local function fields(errors)
    return problem(422, "validation", "invalid progress report", errors)
end


-- --- the token --------------------------------------------------------

local function b64url_id(s)
    -- elearn_jwt_id_valid(): base64url characters, '.' and '~'
    return type(s) == "string" and not find(s, "[^%w%-_%.~]")
end


local function date(v)
    if type(v) ~= "number" or v ~= v or v <= -9.2e18 or v >= 9.2e18 then
        return nil
    end
    return v >= 0 and floor(v) or ceil(v)
end


-- the user id as a decimal string (a string sub is kept as sent, so
-- ids past 2^53 stay exact), or nil
local function sub_claim(v)
    if type(v) == "number" then
        if v > 0 and v == floor(v) and v < 2^53 then
            return fmt("%d", v)
        end
        return nil
    end
    if type(v) ~= "string" or #v == 0 or #v > 19 or byte(v, 1) == 48
       or find(v, "%D") or (#v == 19 and v > "9223372036854775807")
    then
        return nil
    end
    return v
end


local function check_header(h)
    if headers[h] then
        return true
    end
    local hdr = cjson.decode(b64.decode_base64url(h) or "")
    if type(hdr) ~= "table" or #hdr > 0 then
        return nil, "malformed header"
    end
    if hdr.alg ~= "HS256" then
        return nil, "alg not allowed"
    end
    if hdr.typ ~= nil and (type(hdr.typ) ~= "string"
                           or hdr.typ:upper() ~= "JWT")
    then
        return nil, "bad typ"
    end
    if hdr.crit ~= nil then
        return nil, "unsupported crit"
    end
    headers[h] = true
    return true
end


local function verify(token, now)
    local d1 = find(token, ".", 1, true)
    local d2 = d1 and find(token, ".", d1 + 1, true)
    if not d2 or d1 == 1 or d2 == d1 + 1 or find(token, ".", d2 + 1, true)
    then
        return nil, "malformed token"
    end
    local ok, err = check_header(sub(token, 1, d1 - 1))
    if not ok then
        return nil, err
    end
    local sig = sub(token, d2 + 1)
    local raw = #sig == 43 and b64.decode_base64url(sig)
    if not raw or #raw ~= 32 then
        return nil, "bad signature"
    end
    local signed = sub(token, 1, d2 - 1)
    crypto.HMAC_Init_ex(hmac_ctx, nil, 0, nil, nil)
    crypto.HMAC_Update(hmac_ctx, signed, #signed)
    crypto.HMAC_Final(hmac_ctx, mac, maclen)
    if crypto.CRYPTO_memcmp(mac, raw, 32) ~= 0 then
        return nil, "bad signature"
    end
    local p = cjson.decode(b64.decode_base64url(sub(token, d1 + 1, d2 - 1))
                           or "")
    if type(p) ~= "table" then
        return nil, "malformed payload"
    end
    if p.iss ~= ISS then
        return nil, "wrong issuer"
    end
    local exp = date(p.exp)
    if not exp then
        return nil, "missing exp"
    end
    if exp <= now - conf.leeway then
        return nil, "expired"
    end
    if p.nbf ~= nil then
        local nbf = date(p.nbf)
        if not nbf then
            return nil, "bad nbf"
        end
        if nbf > now + conf.leeway then
            return nil, "not yet valid"
        end
    end
    if p.iat ~= nil and not date(p.iat) then
        return nil, "bad iat"
    end
    local user = sub_claim(p.sub)
    if not user then
        return nil, "missing or bad sub"
    end
    if not b64url_id(p.jti) or #p.jti == 0 or #p.jti >= ID_LEN then
        return nil, "missing or bad jti"
    end
    if not b64url_id(p.sid) or #p.sid == 0 or #p.sid >= ID_LEN then
        return nil, "missing or bad sid"
    end
    if not b64url_id(p.role) or #p.role == 0 or #p.role >= ROLE_LEN then
        return nil, "missing or bad role"
    end
    return {user = user, exp = exp, role = p.role,
            sid = "s:" .. p.sid, jti = "j:" .. p.jti}
end


-- the caller, or the 401/503 answered
local function authenticate()
    local h = ngx_var.http_authorization
    if not h then
        return nil, "no bearer token"
    end
    if #h < 7 or sub(h, 1, 7):lower() ~= "bearer " then
        return nil, "not a bearer token"
    end
    local token = h:match("^ *(.-)$", 8)
    if #token == 0 then
        return nil, "empty token"
    end
    if #token > JWT_MAX then
        return nil, "token too long"
    end
    local now = ngx.time()
    local claims = tokens[token]
    if claims and claims.exp <= now then
        tokens[token] = nil
        claims = nil
    end
    if not claims then
        local err
        claims, err = verify(token, now)
        if not claims then
            return nil, err
        end
        if ntokens >= CACHE_MAX then
            tokens, ntokens = {}, 0
        end
        tokens[token] = claims
        ntokens = ntokens + 1
    end
    if not ROLES[claims.role] then
        return nil, "unknown role"
    end
    return claims
end


-- --- the report -------------------------------------------------------

local function finite(v)
    return v == v and v ~= math.huge and v ~= -math.huge
end


local function is_list(t)
    local n = #t
    for k in next, t do
        if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
            return false
        end
    end
    return true
end


-- ngx_http_elearn_progress_parse(): the raw numbers, or the 422 answered
local function parse(body)
    local errors = {}
    local function err(field, index, message)
        if #errors < ERR_MAX then
            errors[#errors + 1] = {index and fmt("%s[%d]", field, index)
                                   or field, message}
        end
    end

    local position = body.positionSeconds
    if position == nil then
        err("positionSeconds", nil, "is required")
    elseif type(position) ~= "number" then
        err("positionSeconds", nil, "must be a number")
    elseif not finite(position) or position < 0 then
        err("positionSeconds", nil, "must not be negative")
    end

    local raw = {}
    local watched = body.watched
    if watched == nil then
        err("watched", nil, "is required (an empty list when nothing was "
                            .. "played)")
    elseif type(watched) ~= "table" or not is_list(watched) then
        err("watched", nil, "must be a list of [from, to] intervals")
    elseif #watched > IV_MAX then
        err("watched", nil, "at most 64 intervals per report")
    else
        local prev = 0
        for i = 1, #watched do
            local iv = watched[i]
            local a = type(iv) == "table" and iv[1]
            local b = type(iv) == "table" and iv[2]
            if type(iv) ~= "table" or not is_list(iv) or #iv ~= 2
               or type(a) ~= "number" or type(b) ~= "number"
            then
                err("watched", i - 1, "must be [from, to], two numbers of "
                                      .. "seconds")
            elseif not finite(a) or not finite(b) or a < 0 then
                err("watched", i - 1, "must not be negative")
            elseif a >= b then
                err("watched", i - 1, "from must be less than to")
            else
                if a < prev then
                    err("watched", i - 1, "intervals must be in order and "
                                          .. "must not overlap")
                end
                prev = b
                raw[#raw + 1] = a
                raw[#raw + 1] = b
            end
        end
    end

    if #errors > 0 then
        return fields(errors)
    end
    return position, raw
end


local function round(v)
    if v > 1e12 then
        v = 1e12
    end
    return floor(v + 0.5)
end


-- ngx_http_elearn_progress_normalize(): whole seconds, touching joined
local function normalize(raw)
    local iv = {}
    for i = 1, #raw, 2 do
        local a, b = round(raw[i]), round(raw[i + 1])
        if a < b then
            if #iv > 0 and a <= iv[#iv] then
                if b > iv[#iv] then
                    iv[#iv] = b
                end
            else
                iv[#iv + 1] = a
                iv[#iv + 1] = b
            end
        end
    end
    return iv
end


-- 16 random bytes at a time from a 4 KiB pool, as the module does
local pool = ffi.new("unsigned char[4096]")
local used = 4096
local HEX = {}
for i = 0, 255 do
    HEX[i] = fmt("%02x", i)
end

local function uuid4()
    if used == 4096 then
        assert(crypto.RAND_bytes(pool, 4096) == 1)
        used = 0
    end
    local u = pool + used
    used = used + 16
    local h = {}
    for i = 0, 15 do
        local v = u[i]
        if i == 6 then
            v = bit.bor(bit.band(v, 0x0f), 0x40)
        elseif i == 8 then
            v = bit.bor(bit.band(v, 0x3f), 0x80)
        end
        h[#h + 1] = HEX[v]
        if i == 3 or i == 5 or i == 7 or i == 9 then
            h[#h + 1] = "-"
        end
    end
    return concat(h)
end


local stamp_sec, stamp_str = -1, ""

-- "YYYY-MM-DDTHH:MM:SS.mmmZ"
local function iso(ms)
    local s = floor(ms / 1000)
    if s ~= stamp_sec then
        stamp_sec, stamp_str = s, os.date("!%Y-%m-%dT%H:%M:%S", s)
    end
    return fmt("%s.%03dZ", stamp_str, ms % 1000)
end


-- the event of docs/progress.md, field for field
local function event(user, video, course, pos, iv, duration, ms)
    local w = {}
    for i = 1, #iv, 2 do
        w[#w + 1] = "[" .. iv[i] .. "," .. iv[i + 1] .. "]"
    end
    return concat({'{"eventId":"', uuid4(),
                   '","type":"progress.reported","occurredAt":"', iso(ms),
                   '","schemaVersion":1,"data":{"userId":', user,
                   ',"videoId":', video, ',"courseId":', course,
                   ',"positionSeconds":', fmt("%d", pos), ',"watched":[',
                   concat(w, ","), '],"durationSeconds":', duration,
                   ',"reportedAtMs":', fmt("%d", ms), "}}"})
end


-- the report script: "what courseId durationSeconds" (ngx.null when the
-- video is not cached), or nil and the error (a Redis failure)
local function run_report(red, keys_args)
    local res, err = red:evalsha(report_sha, 2, unpack(keys_args))
    if not res and err and find(err, "NOSCRIPT", 1, true) then
        res, err = red:eval(report_script, 2, unpack(keys_args))
    end
    return res, err
end


local function is_json(ct)
    if not ct or #ct < 16 or sub(ct, 1, 16):lower() ~= "application/json"
    then
        return false
    end
    local rest = sub(ct, 17):match("^[ \t]*(.-)$")
    return rest == "" or byte(rest, 1) == 59      -- ';'
end


-- content_by_lua: POST /peer/api/v1/videos/{id}/progress, $1 the id
function _M.report()
    local claims, why = authenticate()
    if not claims then
        ngx.log(ngx.INFO, "elearn peer: rejected: ", why)
        return problem(401, "invalid-token", why)
    end
    if not revoked_loaded then
        return problem(503, "dependency-unavailable",
                       "revocations cannot be checked")
    end
    if revoked[claims.sid] or revoked[claims.jti] then
        return problem(401, "invalid-token", "token revoked")
    end
    if ngx_req.get_method() ~= "POST" then
        ngx.header["Allow"] = "GET, HEAD, POST"
        return problem(405, "method-not-allowed",
                       "this resource allows GET, HEAD, POST")
    end

    local video = ngx_var[1]
    local length = tonumber(ngx_var.content_length)
    if length and length > BODY_MAX then
        return problem(413, "body-too-large",
                       "a progress report is at most 4096 bytes")
    end
    if not is_json(ngx_var.content_type) then
        return problem(415, "unsupported-media-type",
                       "the body must be application/json")
    end
    ngx_req.read_body()
    local data = ngx_req.get_body_data()
    if not data then
        if ngx_req.get_body_file() then
            return problem(413, "body-too-large",
                           "a progress report is at most 4096 bytes")
        end
        return problem(400, "malformed-json",
                       "the request needs a JSON body")
    end
    if #data > BODY_MAX then
        return problem(413, "body-too-large",
                       "a progress report is at most 4096 bytes")
    end
    local body, jerr = cjson.decode(data)
    if body == nil then
        return problem(400, "malformed-json", "invalid JSON: "
                                              .. tostring(jerr))
    end
    if type(body) ~= "table" or (#body > 0) then
        return problem(400, "malformed-json",
                       "the body must be a JSON object")
    end

    local position, raw = parse(body)
    local ms = floor(ngx_now() * 1000 + 0.5)
    local iv = normalize(raw)
    local pos = round(position)

    local list = {}
    local mx = position
    for i = 1, #iv, 2 do
        list[#list + 1] = iv[i] .. "-" .. iv[i + 1]
    end
    for i = 2, #raw, 2 do
        mx = max(mx, raw[i])
    end
    mx = ceil(min(mx, 1e12) * 1000) / 1000

    local user = claims.user
    local red = redis:new()
    red:set_timeout(5000)
    local ok, err = red:connect("127.0.0.1", conf.redis_port)
    if not ok then
        return problem(503, "dependency-unavailable",
                       "the cache is unavailable or at capacity")
    end
    local res
    res, err = run_report(red, {
        "video:" .. video, "progress:" .. user .. ":" .. video, user,
        fmt("%d", pos), fmt("%d", ms), concat(list, ","), TTL,
        fmt("%.3f", mx), SLACK})
    if not res then
        ngx.log(ngx.ERR, "elearn peer: report script: ", err)
        return problem(503, "dependency-unavailable",
                       "the cache is unavailable or at capacity")
    end
    red:set_keepalive(10000, 256)

    local what, course, duration
    if res ~= ngx.null then
        what, course, duration = match(res, "^(%S+) (%d+) (%d+)$")
    end
    if what == "0" then
        return problem(403, "not-enrolled", "you are not enrolled in "
                       .. "course " .. course .. " of this video")
    end
    if what == "bounds" then
        local msg = fmt("must lie within the video: 0 to %s seconds "
                        .. "(plus %d s of slack)", duration, SLACK)
        local limit = tonumber(duration) + SLACK
        local errors = {}
        if position > limit then
            errors[1] = {"positionSeconds", msg}
        end
        for i = 2, #raw, 2 do
            if raw[i] > limit and #errors < ERR_MAX then
                errors[#errors + 1] = {fmt("watched[%d]", i / 2 - 1), msg}
            end
        end
        return fields(errors)
    end
    if what ~= "ok" then
        -- video:{id} or enroll:{user}:{course} not cached: the module asks
        -- PostgreSQL, the peer cannot
        return problem(503, "dependency-unavailable",
                       "the peer has no PostgreSQL: cache miss")
    end

    -- ngx_http_elearn_progress_clamp()
    local d = tonumber(duration)
    local civ = {}
    for i = 1, #iv, 2 do
        if iv[i] < d then
            civ[#civ + 1] = iv[i]
            civ[#civ + 1] = min(iv[i + 1], d)
        end
    end

    ok, err = kafka:send(TOPIC, user, event(user, video, course, min(pos, d),
                                            civ, duration, ms))
    if not ok then
        return problem(503, "unavailable", "the event queue is full: retry "
                                           .. "later")
    end
    return ngx.exit(204)
end


return _M
