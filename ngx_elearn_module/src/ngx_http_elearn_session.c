
/*
 * elearn session: login sessions, rotating refresh tokens, revocation and
 * the login backoff in Redis, and each worker's in-memory revoked set.
 *
 * Every change of session state is one Lua script, so it is atomic: two
 * refreshes racing with one token cannot both win, and a session capped
 * away by a new login is revoked, published and gone in the same step.
 * The scripts are static strings below, one per operation, each with
 * its KEYS and ARGV documented; they run with EVALSHA and fall back to
 * EVAL (which loads them) on NOSCRIPT.
 *
 * What this file must never do: put a caller's string into a script's
 * text (everything user-controlled travels as an argument), store or log
 * a refresh token (only its SHA-256 is kept), or call a handler from
 * inside the call that started the operation.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_session.h"


#define NGX_HTTP_ELEARN_SESSION_PREFIX   "elearn:"
#define NGX_HTTP_ELEARN_SESSION_CHANNEL                                       \
    NGX_HTTP_ELEARN_SESSION_PREFIX "revoked"

#define NGX_HTTP_ELEARN_SID_BYTES        16        /* 128 bits */
#define NGX_HTTP_ELEARN_SID_LEN          22        /* base64url of 16 */
#define NGX_HTTP_ELEARN_SID_MAX          64        /* what revoke accepts */
#define NGX_HTTP_ELEARN_REFRESH_BYTES    32
#define NGX_HTTP_ELEARN_SHA256_HEX       (2 * SHA256_DIGEST_LENGTH)
#define NGX_HTTP_ELEARN_LOGINFAIL        NGX_HTTP_ELEARN_SESSION_PREFIX      \
                                         "loginfail:"

/* a User-Agent is kept to this many bytes, printable ASCII only */
#define NGX_HTTP_ELEARN_UA_MAX           256

/* revoked entries are "s:{sid}" or "j:{jti}": longer ones are ignored */
#define NGX_HTTP_ELEARN_REVOKED_NAME_MAX 128

/* a worker's revoked set this large is worth a warning */
#define NGX_HTTP_ELEARN_REVOKED_WARN     1000000

/* purge of expired entries, and retry of a failed load */
#define NGX_HTTP_ELEARN_REVOKED_TICK     1000

/* the most keys and arguments a script takes */
#define NGX_HTTP_ELEARN_SESSION_ARGS     16

/*
 * A revocation is answered once this worker has heard its own publish
 * back, at most this late (pub/sub is down or slow: answered anyway)
 */
#define NGX_HTTP_ELEARN_SESSION_ECHO     250


/*
 * The scripts.  Times are Unix seconds from the caller (one clock for
 * the whole operation); "until" is when the last access token an entry
 * of the revoked set can match stops being accepted.
 */

/*
 * Shared by the scripts that revoke a session: deletes it and its
 * current refresh token, takes it off its user's list, adds "s:{sid}"
 * to the revoked set (a later expiry wins) and publishes it.  Rotated
 * refresh tokens stay: they point to a session that no longer exists.
 */
#define NGX_HTTP_ELEARN_LUA_REVOKE                                            \
    "local P = '" NGX_HTTP_ELEARN_SESSION_PREFIX "'\n"                       \
    "local function revoke(sid, uid, untl)\n"                                 \
    "  local s = P .. 'sess:' .. sid\n"                                       \
    "  local rt = redis.call('HGET', s, 'rt')\n"                              \
    "  if rt then redis.call('DEL', P .. 'rt:' .. rt) end\n"                  \
    "  redis.call('DEL', s)\n"                                                \
    "  redis.call('ZREM', P .. 'usess:' .. uid, sid)\n"                       \
    "  redis.call('ZADD', P .. 'revoked', 'GT', untl, 's:' .. sid)\n"         \
    "  redis.call('PUBLISH', P .. 'revoked', 's:' .. sid)\n"                  \
    "end\n"                                                                   \
    "local function prune(now)\n"                                            \
    "  redis.call('ZREMRANGEBYSCORE', P .. 'revoked', '-inf', '(' .. now)\n" \
    "end\n"


/*
 * create.  KEYS: sess:{sid}, usess:{uid}, rt:{hash}.  ARGV: sid, uid,
 * role, name, user agent, hash, now, refresh ttl, session max, until.
 * Returns {sid, revoked sid...}: the sessions the cap ended.
 */
static const char  ngx_http_elearn_lua_create[] =
    NGX_HTTP_ELEARN_LUA_REVOKE
    "local now, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])\n"
    "redis.call('HSET', KEYS[1], 'uid', ARGV[2], 'role', ARGV[3],\n"
    "  'name', ARGV[4], 'created', ARGV[7], 'used', ARGV[7],\n"
    "  'ua', ARGV[5], 'rt', ARGV[6])\n"
    "redis.call('EXPIRE', KEYS[1], ttl)\n"
    "redis.call('HSET', KEYS[3], 'sid', ARGV[1], 'state', 'current')\n"
    "redis.call('EXPIRE', KEYS[3], ttl)\n"
    /* the score orders by creation, strictly, even within a millisecond */
    "local score = now * 1000\n"
    "local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')\n"
    "if top[2] and tonumber(top[2]) >= score then\n"
    "  score = tonumber(top[2]) + 1\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], string.format('%.0f', score), ARGV[1])\n"
    /* sessions that expired leave their member behind */
    "for _, s in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do\n"
    "  if redis.call('EXISTS', P .. 'sess:' .. s) == 0 then\n"
    "    redis.call('ZREM', KEYS[2], s)\n"
    "  end\n"
    "end\n"
    "local out = {ARGV[1]}\n"
    "local n, max = redis.call('ZCARD', KEYS[2]), tonumber(ARGV[9])\n"
    "if n > max then\n"
    "  for _, s in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - max - 1)) do\n"
    "    revoke(s, ARGV[2], ARGV[10])\n"
    "    out[#out + 1] = s\n"
    "  end\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[2], ttl)\n"
    "prune(ARGV[7])\n"
    "return out\n";


/*
 * refresh.  KEYS: rt:{old hash}, rt:{new hash}.  ARGV: old hash, new
 * hash, now, refresh ttl, until.  Returns {"ok", uid, role, name, sid},
 * {"reused", sid} (the session is revoked) or {"unknown"}.
 */
static const char  ngx_http_elearn_lua_refresh[] =
    NGX_HTTP_ELEARN_LUA_REVOKE
    "local rt = redis.call('HMGET', KEYS[1], 'sid', 'state')\n"
    "local sid = rt[1]\n"
    "if not sid then return {'unknown'} end\n"
    "local s = P .. 'sess:' .. sid\n"
    "local h = redis.call('HMGET', s, 'uid', 'role', 'name', 'rt')\n"
    "if not h[1] then return {'unknown'} end\n"
    /* RFC 9700 4.14.2: a rotated token presented again ends the grant */
    "if rt[2] ~= 'current' or h[4] ~= ARGV[1] then\n"
    "  revoke(sid, h[1], ARGV[5])\n"
    "  prune(ARGV[3])\n"
    "  return {'reused', sid}\n"
    "end\n"
    "local ttl = tonumber(ARGV[4])\n"
    "redis.call('HSET', KEYS[1], 'state', 'rotated')\n"
    "redis.call('HSET', KEYS[2], 'sid', sid, 'state', 'current')\n"
    "redis.call('EXPIRE', KEYS[2], ttl)\n"
    "redis.call('HSET', s, 'rt', ARGV[2], 'used', ARGV[3])\n"
    "redis.call('EXPIRE', s, ttl)\n"
    "redis.call('EXPIRE', P .. 'usess:' .. h[1], ttl)\n"
    "return {'ok', h[1], h[2] or '', h[3] or '', sid}\n";


/*
 * revoke.  KEYS: sess:{sid}.  ARGV: sid, uid, until for the sid, jti
 * ("" for none), until for the jti, now.  The jti is the caller's own
 * token's, so it is revoked even when the session is not found.
 * Returns 1, or 0 when the user has no such session.
 */
static const char  ngx_http_elearn_lua_revoke[] =
    NGX_HTTP_ELEARN_LUA_REVOKE
    "if ARGV[4] ~= '' then\n"
    "  redis.call('ZADD', P .. 'revoked', 'GT', ARGV[5], 'j:' .. ARGV[4])\n"
    "  redis.call('PUBLISH', P .. 'revoked', 'j:' .. ARGV[4])\n"
    "end\n"
    "local found = redis.call('HGET', KEYS[1], 'uid') == ARGV[2]\n"
    "if found then revoke(ARGV[1], ARGV[2], ARGV[3]) end\n"
    "prune(ARGV[6])\n"
    "if found then return 1 end\n"
    "return 0\n";


/*
 * list.  KEYS: usess:{uid}.  ARGV: uid.  Returns {{sid, created, used,
 * user agent}...} oldest first, dropping members whose session is gone.
 */
static const char  ngx_http_elearn_lua_list[] =
    "local P = '" NGX_HTTP_ELEARN_SESSION_PREFIX "'\n"
    "local out = {}\n"
    "for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  local h = redis.call('HMGET', P .. 'sess:' .. sid,\n"
    "                       'uid', 'created', 'used', 'ua')\n"
    "  if h[1] == ARGV[1] then\n"
    "    out[#out + 1] = {sid, h[2] or '0', h[3] or '0', h[4] or ''}\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[1], sid)\n"
    "  end\n"
    "end\n"
    "return out\n";


/*
 * login_allowed.  KEYS: loginfail:{hash}.  ARGV: max failures (0: no
 * limit), window.  Counts the attempt before the password is checked, so
 * parallel guesses cannot all pass before any failure is counted; a
 * successful login deletes the count.  A fixed window from the first
 * attempt; a counter that somehow lost its TTL gets one.  Returns 0
 * (allowed) or the seconds until the window ends.
 */
static const char  ngx_http_elearn_lua_login_allowed[] =
    "local max = tonumber(ARGV[1])\n"
    "if max == 0 then return 0 end\n"
    "local n = redis.call('INCR', KEYS[1])\n"
    "if n == 1 or redis.call('TTL', KEYS[1]) < 0 then\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "if n <= max then return 0 end\n"
    "local t = redis.call('TTL', KEYS[1])\n"
    "if t < 1 then t = 1 end\n"
    "return t\n";


typedef enum {
    NGX_HTTP_ELEARN_SCRIPT_CREATE = 0,
    NGX_HTTP_ELEARN_SCRIPT_REFRESH,
    NGX_HTTP_ELEARN_SCRIPT_REVOKE,
    NGX_HTTP_ELEARN_SCRIPT_LIST,
    NGX_HTTP_ELEARN_SCRIPT_LOGIN_ALLOWED,
    NGX_HTTP_ELEARN_SCRIPT_MAX
} ngx_http_elearn_script_e;


static ngx_http_elearn_redis_script_t  ngx_http_elearn_scripts[] = {
    ngx_http_elearn_redis_script("session create",
                                 ngx_http_elearn_lua_create),
    ngx_http_elearn_redis_script("session refresh",
                                 ngx_http_elearn_lua_refresh),
    ngx_http_elearn_redis_script("session revoke",
                                 ngx_http_elearn_lua_revoke),
    ngx_http_elearn_redis_script("session list", ngx_http_elearn_lua_list),
    ngx_http_elearn_redis_script("login allowed",
                                 ngx_http_elearn_lua_login_allowed)
};


/* one session operation of a request; lives in r->pool */
typedef struct {
    ngx_http_elearn_session_handler_pt   handler;
    void                                *data;
    ngx_http_elearn_script_e             script;
    int                                  nkeys;
    int                                  argc;
    const char                          *argv[NGX_HTTP_ELEARN_SESSION_ARGS];
    size_t                               argvlen[NGX_HTTP_ELEARN_SESSION_ARGS];
    ngx_http_elearn_session_result_t     res;
    ngx_str_t                            sid;        /* revoke; list: current */
    ngx_str_t                            jti;
    time_t                               sid_until;
    time_t                               jti_until;

    /* a revocation waiting for its echo (ngx_http_elearn_session_echo) */
    ngx_http_request_t                  *request;
    ngx_queue_t                          queue;      /* in rv->echoes */
    ngx_event_t                          timer;

    unsigned                             failed:1;   /* building argv */
    unsigned                             echoing:1;
} ngx_http_elearn_session_op_t;


/* an entry of the revoked set; its name follows the struct */
typedef struct {
    ngx_str_node_t                       sn;         /* by name */
    ngx_rbtree_node_t                    expiry;     /* key: until */
} ngx_http_elearn_revocation_t;


struct ngx_http_elearn_revocations_s {
    ngx_rbtree_t                         names;
    ngx_rbtree_node_t                    names_sentinel;
    ngx_rbtree_t                         expiries;
    ngx_rbtree_node_t                    expiries_sentinel;
    ngx_uint_t                           count;
    ngx_uint_t                           revision;   /* names added */

    ngx_http_elearn_redis_t             *redis;
    ngx_event_t                          timer;
    time_t                               ttl;        /* jwt ttl + leeway */
    ngx_flag_t                           fail_open;

    ngx_uint_t                           generation; /* subscriptions */
    ngx_uint_t                           load_generation;

    ngx_queue_t                          echoes;     /* revocations' ops */

    unsigned                             subscribed:1;
    unsigned                             loaded:1;
    unsigned                             loading:1;
    unsigned                             warned:1;
    unsigned                             destroyed:1;
};


static ngx_http_elearn_session_op_t *ngx_http_elearn_session_op(
    ngx_http_request_t *r, ngx_http_elearn_script_e script, int nkeys,
    ngx_http_elearn_session_handler_pt handler, void *data);
static void ngx_http_elearn_session_arg(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, const char *prefix, u_char *data,
    size_t len);
static void ngx_http_elearn_session_arg_num(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, const char *prefix, int64_t n);
static ngx_int_t ngx_http_elearn_session_send(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op);
static void ngx_http_elearn_session_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_session_create_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply);
static ngx_int_t ngx_http_elearn_session_refresh_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply);
static ngx_int_t ngx_http_elearn_session_revoke_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply);
static ngx_int_t ngx_http_elearn_session_list_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply);
static ngx_int_t ngx_http_elearn_session_login_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply);
static ngx_int_t ngx_http_elearn_session_copy(ngx_http_request_t *r,
    ngx_str_t *dst, redisReply *rr);
static time_t ngx_http_elearn_session_number(redisReply *rr);
static u_char *ngx_http_elearn_session_time(u_char *p, time_t t);
static ngx_int_t ngx_http_elearn_session_random(ngx_pool_t *pool,
    size_t bytes, ngx_str_t *out);
static u_char *ngx_http_elearn_session_sha256(ngx_pool_t *pool,
    ngx_str_t *data);
static void ngx_http_elearn_session_sha256_hex(u_char *data, size_t len,
    u_char *hex);
static ngx_uint_t ngx_http_elearn_session_token_shape(u_char *data,
    size_t len, size_t min, size_t max);
static time_t ngx_http_elearn_session_revoke_until(
    ngx_http_elearn_main_conf_t *emcf);
static void ngx_http_elearn_session_login_clear(ngx_str_t *email);

static void ngx_http_elearn_revocations_add(ngx_http_elearn_revocations_t *rv,
    const char *prefix, u_char *name, size_t len, time_t until);
static ngx_http_elearn_revocation_t *ngx_http_elearn_revocations_find(
    ngx_http_elearn_revocations_t *rv, u_char *name, size_t len);
static void ngx_http_elearn_revocations_purge(
    ngx_http_elearn_revocations_t *rv);
static void ngx_http_elearn_revocations_remove(
    ngx_http_elearn_revocations_t *rv, ngx_http_elearn_revocation_t *e);
static void ngx_http_elearn_revocations_load(
    ngx_http_elearn_revocations_t *rv);
static void ngx_http_elearn_revocations_loaded(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_elearn_revocations_message(ngx_str_t *channel,
    ngx_str_t *message, void *data);
static void ngx_http_elearn_revocations_state(ngx_str_t *channel,
    ngx_uint_t subscribed, void *data);
static void ngx_http_elearn_revocations_tick(ngx_event_t *ev);
static ngx_int_t ngx_http_elearn_session_echo(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op);
static void ngx_http_elearn_session_echoed(ngx_http_elearn_session_op_t *op);
static void ngx_http_elearn_session_echo_timeout(ngx_event_t *ev);
static void ngx_http_elearn_session_echo_cleanup(void *data);


/* sessions */

ngx_int_t
ngx_http_elearn_session_create(ngx_http_request_t *r, int64_t user_id,
    ngx_str_t *role, ngx_str_t *display_name, ngx_str_t *user_agent,
    ngx_http_elearn_session_handler_pt handler, void *data)
{
    u_char                        *ua, *hash;
    size_t                         i, ua_len;
    ngx_str_t                      sid, token;
    ngx_http_elearn_main_conf_t   *emcf;
    ngx_http_elearn_session_op_t  *op;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    op = ngx_http_elearn_session_op(r, NGX_HTTP_ELEARN_SCRIPT_CREATE, 3,
                                    handler, data);
    if (op == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_elearn_session_random(r->pool, NGX_HTTP_ELEARN_SID_BYTES,
                                       &sid)
        != NGX_OK
        || ngx_http_elearn_session_random(r->pool,
                                          NGX_HTTP_ELEARN_REFRESH_BYTES,
                                          &token)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    hash = ngx_http_elearn_session_sha256(r->pool, &token);

    /* shown back as JSON later: short and plain ASCII, whatever was sent */

    ua_len = ngx_min(user_agent->len, NGX_HTTP_ELEARN_UA_MAX);

    ua = ngx_pnalloc(r->pool, ua_len + 1);

    op->res.role.data = ngx_pstrdup(r->pool, role);
    op->res.display_name.data = ngx_pstrdup(r->pool, display_name);

    if (hash == NULL || ua == NULL
        || (role->len && op->res.role.data == NULL)
        || (display_name->len && op->res.display_name.data == NULL))
    {
        return NGX_ERROR;
    }

    for (i = 0; i < ua_len; i++) {
        ua[i] = (user_agent->data[i] >= 0x20 && user_agent->data[i] < 0x7f)
                ? user_agent->data[i] : '?';
    }

    op->res.user_id = user_id;
    op->res.sid = sid;
    op->res.refresh_token = token;
    op->res.role.len = role->len;
    op->res.display_name.len = display_name->len;

    /* KEYS */
    ngx_http_elearn_session_arg(r, op, "sess:", sid.data, sid.len);
    ngx_http_elearn_session_arg_num(r, op, "usess:", user_id);
    ngx_http_elearn_session_arg(r, op, "rt:", hash,
                                NGX_HTTP_ELEARN_SHA256_HEX);

    /* ARGV */
    ngx_http_elearn_session_arg(r, op, NULL, sid.data, sid.len);
    ngx_http_elearn_session_arg_num(r, op, NULL, user_id);
    ngx_http_elearn_session_arg(r, op, NULL, op->res.role.data,
                                op->res.role.len);
    ngx_http_elearn_session_arg(r, op, NULL, op->res.display_name.data,
                                op->res.display_name.len);
    ngx_http_elearn_session_arg(r, op, NULL, ua, ua_len);
    ngx_http_elearn_session_arg(r, op, NULL, hash,
                                NGX_HTTP_ELEARN_SHA256_HEX);
    ngx_http_elearn_session_arg_num(r, op, NULL, ngx_time());
    ngx_http_elearn_session_arg_num(r, op, NULL, emcf->refresh_ttl);
    ngx_http_elearn_session_arg_num(r, op, NULL, emcf->session_max);
    ngx_http_elearn_session_arg_num(r, op, NULL,
                                    ngx_http_elearn_session_revoke_until(emcf));

    return ngx_http_elearn_session_send(r, op);
}


ngx_int_t
ngx_http_elearn_session_refresh(ngx_http_request_t *r,
    ngx_str_t *refresh_token, ngx_http_elearn_session_handler_pt handler,
    void *data)
{
    u_char                        *old, *new;
    ngx_str_t                      token;
    ngx_http_elearn_main_conf_t   *emcf;
    ngx_http_elearn_session_op_t  *op;

    /* not even the shape of ours: no need to ask Redis */

    if (!ngx_http_elearn_session_token_shape(refresh_token->data,
                                             refresh_token->len,
                                             NGX_HTTP_ELEARN_REFRESH_TOKEN_LEN,
                                             NGX_HTTP_ELEARN_REFRESH_TOKEN_LEN))
    {
        return NGX_HTTP_UNAUTHORIZED;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    op = ngx_http_elearn_session_op(r, NGX_HTTP_ELEARN_SCRIPT_REFRESH, 2,
                                    handler, data);
    if (op == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_elearn_session_random(r->pool,
                                       NGX_HTTP_ELEARN_REFRESH_BYTES, &token)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    old = ngx_http_elearn_session_sha256(r->pool, refresh_token);
    new = ngx_http_elearn_session_sha256(r->pool, &token);

    if (old == NULL || new == NULL) {
        return NGX_ERROR;
    }

    op->res.refresh_token = token;

    /* KEYS */
    ngx_http_elearn_session_arg(r, op, "rt:", old, NGX_HTTP_ELEARN_SHA256_HEX);
    ngx_http_elearn_session_arg(r, op, "rt:", new, NGX_HTTP_ELEARN_SHA256_HEX);

    /* ARGV */
    ngx_http_elearn_session_arg(r, op, NULL, old, NGX_HTTP_ELEARN_SHA256_HEX);
    ngx_http_elearn_session_arg(r, op, NULL, new, NGX_HTTP_ELEARN_SHA256_HEX);
    ngx_http_elearn_session_arg_num(r, op, NULL, ngx_time());
    ngx_http_elearn_session_arg_num(r, op, NULL, emcf->refresh_ttl);
    ngx_http_elearn_session_arg_num(r, op, NULL,
                                    ngx_http_elearn_session_revoke_until(emcf));

    return ngx_http_elearn_session_send(r, op);
}


ngx_int_t
ngx_http_elearn_session_revoke(ngx_http_request_t *r, int64_t user_id,
    ngx_str_t *sid, ngx_str_t *jti, time_t access_exp,
    ngx_http_elearn_session_handler_pt handler, void *data)
{
    time_t                         until;
    ngx_http_elearn_main_conf_t   *emcf;
    ngx_http_elearn_session_op_t  *op;

    if (!ngx_http_elearn_session_token_shape(sid->data, sid->len, 1,
                                             NGX_HTTP_ELEARN_SID_MAX))
    {
        return NGX_HTTP_NOT_FOUND;
    }

    if (jti != NULL
        && (jti->len == 0 || jti->len > NGX_HTTP_ELEARN_SID_MAX))
    {
        jti = NULL;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    op = ngx_http_elearn_session_op(r, NGX_HTTP_ELEARN_SCRIPT_REVOKE, 1,
                                    handler, data);
    if (op == NULL) {
        return NGX_ERROR;
    }

    /*
     * The session may have issued a token since the caller's (a refresh
     * elsewhere): it stays revoked as long as any token it issued up to
     * now can be accepted.
     */

    until = ngx_http_elearn_session_revoke_until(emcf);

    op->sid_until = ngx_max(until, access_exp + emcf->jwt_leeway);
    op->jti_until = access_exp + emcf->jwt_leeway;

    op->sid.data = ngx_pstrdup(r->pool, sid);
    if (op->sid.data == NULL) {
        return NGX_ERROR;
    }

    op->sid.len = sid->len;

    if (jti != NULL) {
        op->jti.data = ngx_pstrdup(r->pool, jti);
        if (op->jti.data == NULL) {
            return NGX_ERROR;
        }

        op->jti.len = jti->len;
    }

    op->res.user_id = user_id;
    op->res.sid = op->sid;

    /* KEYS */
    ngx_http_elearn_session_arg(r, op, "sess:", op->sid.data, op->sid.len);

    /* ARGV */
    ngx_http_elearn_session_arg(r, op, NULL, op->sid.data, op->sid.len);
    ngx_http_elearn_session_arg_num(r, op, NULL, user_id);
    ngx_http_elearn_session_arg_num(r, op, NULL, op->sid_until);
    ngx_http_elearn_session_arg(r, op, NULL, op->jti.data, op->jti.len);
    ngx_http_elearn_session_arg_num(r, op, NULL, op->jti_until);
    ngx_http_elearn_session_arg_num(r, op, NULL, ngx_time());

    return ngx_http_elearn_session_send(r, op);
}


ngx_int_t
ngx_http_elearn_session_list(ngx_http_request_t *r, int64_t user_id,
    ngx_str_t *current_sid, ngx_http_elearn_session_handler_pt handler,
    void *data)
{
    ngx_http_elearn_session_op_t  *op;

    op = ngx_http_elearn_session_op(r, NGX_HTTP_ELEARN_SCRIPT_LIST, 1,
                                    handler, data);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->res.user_id = user_id;

    if (current_sid != NULL && current_sid->len) {
        op->sid.data = ngx_pstrdup(r->pool, current_sid);
        if (op->sid.data == NULL) {
            return NGX_ERROR;
        }

        op->sid.len = current_sid->len;
    }

    ngx_http_elearn_session_arg_num(r, op, "usess:", user_id);
    ngx_http_elearn_session_arg_num(r, op, NULL, user_id);

    return ngx_http_elearn_session_send(r, op);
}


ngx_int_t
ngx_http_elearn_session_login_allowed(ngx_http_request_t *r,
    ngx_str_t *email, ngx_http_elearn_session_handler_pt handler,
    void *data)
{
    u_char                         hash[NGX_HTTP_ELEARN_SHA256_HEX];
    ngx_http_elearn_main_conf_t   *emcf;
    ngx_http_elearn_session_op_t  *op;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    op = ngx_http_elearn_session_op(r, NGX_HTTP_ELEARN_SCRIPT_LOGIN_ALLOWED,
                                    1, handler, data);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_http_elearn_session_sha256_hex(email->data, email->len, hash);

    ngx_http_elearn_session_arg(r, op, "loginfail:", hash, sizeof(hash));
    ngx_http_elearn_session_arg_num(r, op, NULL, emcf->login_max_failures);
    ngx_http_elearn_session_arg_num(r, op, NULL, emcf->login_failure_window);

    return ngx_http_elearn_session_send(r, op);
}


void
ngx_http_elearn_session_login_succeeded(ngx_str_t *email)
{
    ngx_http_elearn_session_login_clear(email);
}


/* fire and forget: a count left behind only delays a later lockout */

static void
ngx_http_elearn_session_login_clear(ngx_str_t *email)
{
    u_char                        key[sizeof(NGX_HTTP_ELEARN_LOGINFAIL) - 1
                                      + NGX_HTTP_ELEARN_SHA256_HEX];
    size_t                        argvlen[2];
    const char                   *argv[2];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_elearn_module);
    if (emcf == NULL || emcf->redis == NULL) {
        return;
    }

    ngx_memcpy(key, NGX_HTTP_ELEARN_LOGINFAIL,
               sizeof(NGX_HTTP_ELEARN_LOGINFAIL) - 1);
    ngx_http_elearn_session_sha256_hex(email->data, email->len,
                                       key + sizeof(NGX_HTTP_ELEARN_LOGINFAIL)
                                       - 1);

    argv[0] = "DEL";
    argvlen[0] = sizeof("DEL") - 1;
    argv[1] = (char *) key;
    argvlen[1] = sizeof(key);

    (void) ngx_http_elearn_redis_command(NULL, NULL, NULL, 2, argv, argvlen);
}


static ngx_http_elearn_session_op_t *
ngx_http_elearn_session_op(ngx_http_request_t *r,
    ngx_http_elearn_script_e script, int nkeys,
    ngx_http_elearn_session_handler_pt handler, void *data)
{
    ngx_http_elearn_session_op_t  *op;

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_session_op_t));
    if (op == NULL) {
        return NULL;
    }

    op->handler = handler;
    op->data = data;
    op->script = script;
    op->nkeys = nkeys;

    return op;
}


/*
 * Appends one argument: data, or a key: "elearn:" prefix data.  A
 * failure sticks to op and fails ngx_http_elearn_session_send().
 */

static void
ngx_http_elearn_session_arg(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, const char *prefix, u_char *data,
    size_t len)
{
    u_char  *p, *s;
    size_t   plen;

    if (op->failed || op->argc >= NGX_HTTP_ELEARN_SESSION_ARGS) {
        op->failed = 1;
        return;
    }

    if (prefix == NULL) {
        /* the caller's buffer: r->pool or static, alive for a retry */
        op->argv[op->argc] = data ? (char *) data : "";
        op->argvlen[op->argc] = len;
        op->argc++;
        return;
    }

    plen = ngx_strlen(prefix);

    s = ngx_pnalloc(r->pool,
                    sizeof(NGX_HTTP_ELEARN_SESSION_PREFIX) - 1 + plen + len);
    if (s == NULL) {
        op->failed = 1;
        return;
    }

    p = ngx_cpymem(s, NGX_HTTP_ELEARN_SESSION_PREFIX,
                   sizeof(NGX_HTTP_ELEARN_SESSION_PREFIX) - 1);
    p = ngx_cpymem(p, prefix, plen);
    p = ngx_cpymem(p, data, len);

    op->argv[op->argc] = (char *) s;
    op->argvlen[op->argc] = p - s;
    op->argc++;
}


/* appends a number, or a key ending in one */

static void
ngx_http_elearn_session_arg_num(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, const char *prefix, int64_t n)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        op->failed = 1;
        return;
    }

    last = ngx_sprintf(p, "%L", n);

    ngx_http_elearn_session_arg(r, op, prefix, p, last - p);
}


static ngx_int_t
ngx_http_elearn_session_send(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op)
{
    ngx_int_t  rc;

    if (op->failed) {
        return NGX_ERROR;
    }

    rc = ngx_http_elearn_redis_eval(r, &ngx_http_elearn_scripts[op->script],
                                    ngx_http_elearn_session_reply, op,
                                    op->nkeys, op->argc, op->argv,
                                    op->argvlen);

    if (rc == NGX_AGAIN || rc == NGX_ERROR) {
        return rc;
    }

    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


static void
ngx_http_elearn_session_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_session_op_t  *op = data;

    if (rc != NGX_OK) {
        goto done;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* logged by ngx_http_elearn_redis_eval() */
        rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        goto done;
    }

    switch (op->script) {

    case NGX_HTTP_ELEARN_SCRIPT_CREATE:
        rc = ngx_http_elearn_session_create_done(r, op, reply);
        break;

    case NGX_HTTP_ELEARN_SCRIPT_REFRESH:
        rc = ngx_http_elearn_session_refresh_done(r, op, reply);
        break;

    case NGX_HTTP_ELEARN_SCRIPT_REVOKE:
        rc = ngx_http_elearn_session_revoke_done(r, op, reply);
        break;

    case NGX_HTTP_ELEARN_SCRIPT_LIST:
        rc = ngx_http_elearn_session_list_done(r, op, reply);
        break;

    default: /* NGX_HTTP_ELEARN_SCRIPT_LOGIN_ALLOWED */
        rc = ngx_http_elearn_session_login_done(r, op, reply);
        break;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn session: %s script: unexpected reply",
                      ngx_http_elearn_scripts[op->script].name);
        rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else if (rc == NGX_ERROR) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

done:

    if (rc != NGX_OK) {
        /* nothing half-filled reaches the caller */
        op->res.refresh_token.len = 0;
        op->res.refresh_token.data = NULL;
    }

    /* revoked: the script published "s:{sid}" */
    if (op->script == NGX_HTTP_ELEARN_SCRIPT_REVOKE && rc == NGX_OK
        && ngx_http_elearn_session_echo(r, op) == NGX_AGAIN)
    {
        return;
    }

    op->handler(r, rc, &op->res, op->data);
}


/*
 * "Takes effect on the next request" (a logout, a session deleted): the
 * other workers learn a revocation from the channel, so the answer waits
 * until this worker hears its own publish back.  Redis writes a message
 * to every subscriber in the same pass, so by then it is in every
 * worker's socket, ahead of any request the client sends after the
 * answer.  NGX_AGAIN: the handler is called later.
 */

static ngx_int_t
ngx_http_elearn_session_echo(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op)
{
    ngx_pool_cleanup_t             *cln;
    ngx_http_elearn_main_conf_t    *emcf;
    ngx_http_elearn_revocations_t  *rv;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);
    rv = emcf->revocations;

    if (rv == NULL || rv->destroyed || !rv->subscribed) {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_DECLINED;
    }

    cln->handler = ngx_http_elearn_session_echo_cleanup;
    cln->data = op;

    op->request = r;
    op->echoing = 1;

    op->timer.handler = ngx_http_elearn_session_echo_timeout;
    op->timer.data = op;
    op->timer.log = r->connection->log;
    ngx_add_timer(&op->timer, NGX_HTTP_ELEARN_SESSION_ECHO);

    ngx_queue_insert_tail(&rv->echoes, &op->queue);

    return NGX_AGAIN;
}


static void
ngx_http_elearn_session_echoed(ngx_http_elearn_session_op_t *op)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    op->echoing = 0;
    ngx_queue_remove(&op->queue);

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    r = op->request;
    c = r->connection;

    op->handler(r, NGX_OK, &op->res, op->data);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_elearn_session_echo_timeout(ngx_event_t *ev)
{
    ngx_http_elearn_session_op_t *op = ev->data;

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "elearn session: no echo of a revocation within %d ms",
                  NGX_HTTP_ELEARN_SESSION_ECHO);

    ngx_http_elearn_session_echoed(op);
}


static void
ngx_http_elearn_session_echo_cleanup(void *data)
{
    ngx_http_elearn_session_op_t *op = data;

    if (!op->echoing) {
        return;
    }

    op->echoing = 0;
    ngx_queue_remove(&op->queue);

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }
}


/* {sid, revoked sid...} */

static ngx_int_t
ngx_http_elearn_session_create_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply)
{
    size_t                        i;
    time_t                        until;
    redisReply                   *e;
    ngx_http_elearn_main_conf_t  *emcf;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        return NGX_DECLINED;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);
    until = ngx_http_elearn_session_revoke_until(emcf);

    for (i = 1; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type == REDIS_REPLY_STRING) {
            ngx_http_elearn_revocations_add(emcf->revocations, "s:",
                                            (u_char *) e->str, e->len, until);
        }
    }

    if (reply->elements > 1) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "elearn session: user %L over %ui sessions, "
                      "%uz oldest revoked", op->res.user_id,
                      emcf->session_max, (size_t) reply->elements - 1);
    }

    return NGX_OK;
}


/* {"ok", uid, role, name, sid}, {"reused", sid} or {"unknown"} */

static ngx_int_t
ngx_http_elearn_session_refresh_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply)
{
    int64_t                       uid;
    redisReply                   *st, **e;
    ngx_http_elearn_main_conf_t  *emcf;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return NGX_DECLINED;
    }

    e = reply->element;
    st = e[0];

    if (st->len == 2 && ngx_strncmp(st->str, "ok", 2) == 0) {

        if (reply->elements != 5 || e[1]->type != REDIS_REPLY_STRING) {
            return NGX_DECLINED;
        }

        uid = ngx_atoof((u_char *) e[1]->str, e[1]->len);
        if (uid == NGX_ERROR) {
            return NGX_DECLINED;
        }

        op->res.user_id = uid;

        if (ngx_http_elearn_session_copy(r, &op->res.role, e[2]) != NGX_OK
            || ngx_http_elearn_session_copy(r, &op->res.display_name, e[3])
               != NGX_OK
            || ngx_http_elearn_session_copy(r, &op->res.sid, e[4]) != NGX_OK)
        {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (st->len == 6 && ngx_strncmp(st->str, "reused", 6) == 0
        && reply->elements == 2 && e[1]->type == REDIS_REPLY_STRING)
    {
        emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

        ngx_http_elearn_revocations_add(emcf->revocations, "s:",
                              (u_char *) e[1]->str, e[1]->len,
                              ngx_http_elearn_session_revoke_until(emcf));

        /* the sid is not secret; the token never appears in a log */

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn session: a rotated refresh token was reused, "
                      "session \"%*s\" revoked", (size_t) e[1]->len,
                      e[1]->str);

        return NGX_HTTP_UNAUTHORIZED;
    }

    return NGX_HTTP_UNAUTHORIZED;
}


static ngx_int_t
ngx_http_elearn_session_revoke_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply)
{
    ngx_http_elearn_main_conf_t  *emcf;

    if (reply->type != REDIS_REPLY_INTEGER) {
        return NGX_DECLINED;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    /* this worker knows at once; the others hear it on the channel */

    if (op->jti.len) {
        ngx_http_elearn_revocations_add(emcf->revocations, "j:",
                                        op->jti.data, op->jti.len,
                                        op->jti_until);
    }

    if (reply->integer != 1) {
        return NGX_HTTP_NOT_FOUND;
    }

    ngx_http_elearn_revocations_add(emcf->revocations, "s:", op->sid.data,
                                    op->sid.len, op->sid_until);

    return NGX_OK;
}


/* {{sid, created, used, user agent}...} into JSON */

static ngx_int_t
ngx_http_elearn_session_list_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply)
{
    u_char      *p;
    size_t       i, j, len;
    redisReply  *e;

    static const char  current[] = "\",\"current\":";

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_DECLINED;
    }

    len = sizeof("[]") - 1;

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 4) {
            return NGX_DECLINED;
        }

        for (j = 0; j < 4; j++) {
            if (e->element[j]->type != REDIS_REPLY_STRING) {
                return NGX_DECLINED;
            }
        }

        len += sizeof("{\"sessionId\":\"\",\"createdAt\":\"\","
                      "\"lastUsedAt\":\"\",\"userAgent\":\"") - 1
               + 6 * e->element[0]->len
               + 2 * (sizeof("1970-01-01T00:00:00Z") - 1)
               + 6 * e->element[3]->len
               + sizeof(current) - 1 + sizeof("false},") - 1;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    op->res.sessions_json.data = p;

    *p++ = '[';

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"sessionId\":\"",
                       sizeof("{\"sessionId\":\"") - 1);
        p = ngx_http_elearn_json_escape(p, (u_char *) e->element[0]->str,
                                        e->element[0]->len);
        p = ngx_cpymem(p, "\",\"createdAt\":\"",
                       sizeof("\",\"createdAt\":\"") - 1);
        p = ngx_http_elearn_session_time(p,
                            ngx_http_elearn_session_number(e->element[1]));
        p = ngx_cpymem(p, "\",\"lastUsedAt\":\"",
                       sizeof("\",\"lastUsedAt\":\"") - 1);
        p = ngx_http_elearn_session_time(p,
                            ngx_http_elearn_session_number(e->element[2]));
        p = ngx_cpymem(p, "\",\"userAgent\":\"",
                       sizeof("\",\"userAgent\":\"") - 1);
        p = ngx_http_elearn_json_escape(p, (u_char *) e->element[3]->str,
                                        e->element[3]->len);
        p = ngx_cpymem(p, current, sizeof(current) - 1);

        if (op->sid.len == e->element[0]->len
            && ngx_memcmp(op->sid.data, e->element[0]->str, op->sid.len)
               == 0)
        {
            p = ngx_cpymem(p, "true}", sizeof("true}") - 1);

        } else {
            p = ngx_cpymem(p, "false}", sizeof("false}") - 1);
        }
    }

    *p++ = ']';

    op->res.sessions_json.len = p - op->res.sessions_json.data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_session_login_done(ngx_http_request_t *r,
    ngx_http_elearn_session_op_t *op, redisReply *reply)
{
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) {
        return NGX_DECLINED;
    }

    if (reply->integer == 0) {
        return NGX_OK;
    }

    op->res.retry_after = (time_t) reply->integer;

    return NGX_HTTP_TOO_MANY_REQUESTS;
}


static ngx_int_t
ngx_http_elearn_session_copy(ngx_http_request_t *r, ngx_str_t *dst,
    redisReply *rr)
{
    if (rr->type != REDIS_REPLY_STRING) {
        ngx_str_null(dst);
        return NGX_OK;
    }

    dst->data = ngx_pnalloc(r->pool, rr->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, rr->str, rr->len);
    dst->data[rr->len] = '\0';
    dst->len = rr->len;

    return NGX_OK;
}


static time_t
ngx_http_elearn_session_number(redisReply *rr)
{
    time_t  t;

    t = ngx_atotm((u_char *) rr->str, rr->len);

    return (t == NGX_ERROR) ? 0 : t;
}


/* RFC 3339, UTC; always 20 bytes */

static u_char *
ngx_http_elearn_session_time(u_char *p, time_t t)
{
    ngx_tm_t  tm;

    /* a four-digit year, whatever Redis held */
    t = ngx_max(0, ngx_min(t, (time_t) 253402300799LL));

    ngx_gmtime(t, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
}


/* bytes random bytes as base64url, without padding, NUL-terminated */

static ngx_int_t
ngx_http_elearn_session_random(ngx_pool_t *pool, size_t bytes,
    ngx_str_t *out)
{
    u_char     buf[NGX_HTTP_ELEARN_REFRESH_BYTES];
    ngx_str_t  src;

    if (bytes > sizeof(buf) || RAND_bytes(buf, (int) bytes) != 1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn session: RAND_bytes() failed");
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(pool, ngx_base64_encoded_length(bytes) + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    src.data = buf;
    src.len = bytes;

    ngx_encode_base64url(out, &src);
    out->data[out->len] = '\0';

    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_OK;
}


/* the SHA-256 of data in hex, NGX_HTTP_ELEARN_SHA256_HEX bytes */

static u_char *
ngx_http_elearn_session_sha256(ngx_pool_t *pool, ngx_str_t *data)
{
    u_char  *hex;

    hex = ngx_pnalloc(pool, NGX_HTTP_ELEARN_SHA256_HEX);
    if (hex == NULL) {
        return NULL;
    }

    ngx_http_elearn_session_sha256_hex(data->data, data->len, hex);

    return hex;
}


static void
ngx_http_elearn_session_sha256_hex(u_char *data, size_t len, u_char *hex)
{
    u_char  md[SHA256_DIGEST_LENGTH];

    SHA256(data, len, md);

    ngx_hex_dump(hex, md, SHA256_DIGEST_LENGTH);
}


/* base64url characters only, between min and max of them */

static ngx_uint_t
ngx_http_elearn_session_token_shape(u_char *data, size_t len, size_t min,
    size_t max)
{
    size_t  i;
    u_char  c;

    if (data == NULL || len < min || len > max) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = data[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * A session revoked now may have issued an access token a moment ago:
 * that token is accepted until now + ttl + leeway.
 */

static time_t
ngx_http_elearn_session_revoke_until(ngx_http_elearn_main_conf_t *emcf)
{
    return ngx_time() + emcf->jwt_ttl + emcf->jwt_leeway;
}


/* the revoked set */

ngx_http_elearn_revocations_t *
ngx_http_elearn_revocations_create(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf)
{
    ngx_str_t                       channel;
    ngx_http_elearn_revocations_t  *rv;

    /* the cycle pool outlives every command the set sends */

    rv = ngx_pcalloc(cycle->pool, sizeof(ngx_http_elearn_revocations_t));
    if (rv == NULL) {
        return NULL;
    }

    ngx_rbtree_init(&rv->names, &rv->names_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&rv->echoes);
    ngx_rbtree_init(&rv->expiries, &rv->expiries_sentinel,
                    ngx_rbtree_insert_value);

    rv->redis = emcf->redis;
    rv->ttl = emcf->jwt_ttl + emcf->jwt_leeway;
    rv->fail_open = emcf->revocation_fail_open;

    rv->timer.handler = ngx_http_elearn_revocations_tick;
    rv->timer.data = rv;
    rv->timer.log = cycle->log;
    rv->timer.cancelable = 1;

    if (rv->redis == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "elearn session: no Redis, revocations are not seen "
                      "(elearn_revocation_fail_open %s)",
                      rv->fail_open ? "on" : "off");
        return rv;
    }

    ngx_str_set(&channel, NGX_HTTP_ELEARN_SESSION_CHANNEL);

    if (ngx_http_elearn_redis_subscribe(rv->redis, &channel,
                                        ngx_http_elearn_revocations_message,
                                        rv)
        != NGX_OK
        || ngx_http_elearn_redis_subscribe_state(rv->redis, &channel,
                                          ngx_http_elearn_revocations_state)
           != NGX_OK)
    {
        return NULL;
    }

    ngx_add_timer(&rv->timer, NGX_HTTP_ELEARN_REVOKED_TICK);

    return rv;
}


void
ngx_http_elearn_revocations_destroy(ngx_http_elearn_revocations_t *rv)
{
    ngx_str_t                      channel;
    ngx_queue_t                   *q;
    ngx_rbtree_node_t             *node;
    ngx_http_elearn_revocation_t  *e;

    if (rv == NULL || rv->destroyed) {
        return;
    }

    rv->destroyed = 1;

    /* the worker is leaving: waiting revocations are answered now */
    while (!ngx_queue_empty(&rv->echoes)) {
        q = ngx_queue_head(&rv->echoes);
        ngx_http_elearn_session_echoed(
            ngx_queue_data(q, ngx_http_elearn_session_op_t, queue));
    }
    rv->subscribed = 0;
    rv->loaded = 0;

    if (rv->timer.timer_set) {
        ngx_del_timer(&rv->timer);
    }

    if (rv->redis != NULL) {
        ngx_str_set(&channel, NGX_HTTP_ELEARN_SESSION_CHANNEL);
        (void) ngx_http_elearn_redis_unsubscribe(rv->redis, &channel);
    }

    while (rv->names.root != rv->names.sentinel) {
        node = ngx_rbtree_min(rv->names.root, rv->names.sentinel);
        e = (ngx_http_elearn_revocation_t *) node;

        ngx_http_elearn_revocations_remove(rv, e);
    }
}


ngx_uint_t
ngx_http_elearn_revocations_revision(ngx_http_elearn_revocations_t *rv)
{
    return rv->revision;
}


ngx_int_t
ngx_http_elearn_revocations_check(ngx_http_elearn_revocations_t *rv,
    ngx_str_t *sid, ngx_str_t *jti)
{
    u_char                        *p;
    u_char                         name[2 + NGX_HTTP_ELEARN_REVOKED_NAME_MAX];
    time_t                         now;
    ngx_uint_t                     i;
    ngx_str_t                     *id;
    ngx_http_elearn_revocation_t  *e;
    ngx_http_elearn_main_conf_t   *emcf;

    if (rv == NULL) {
        emcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                   ngx_http_elearn_module);

        return (emcf != NULL && emcf->revocation_fail_open)
               ? NGX_OK : NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    now = ngx_time();

    /* what is known revoked stays so, trusted set or not */

    for (i = 0; i < 2; i++) {
        id = (i == 0) ? sid : jti;

        if (id == NULL || id->len == 0
            || id->len > NGX_HTTP_ELEARN_REVOKED_NAME_MAX)
        {
            continue;
        }

        p = ngx_cpymem(name, (i == 0) ? "s:" : "j:", 2);
        p = ngx_cpymem(p, id->data, id->len);

        e = ngx_http_elearn_revocations_find(rv, name, p - name);

        if (e != NULL && (time_t) e->expiry.key >= now) {
            return NGX_DECLINED;
        }
    }

    if (rv->subscribed && rv->loaded) {
        return NGX_OK;
    }

    return rv->fail_open ? NGX_OK : NGX_HTTP_SERVICE_UNAVAILABLE;
}


/* adds prefix + name until until, or moves a known one's end later */

static void
ngx_http_elearn_revocations_add(ngx_http_elearn_revocations_t *rv,
    const char *prefix, u_char *name, size_t len, time_t until)
{
    u_char                        *p;
    u_char                         buf[2 + NGX_HTTP_ELEARN_REVOKED_NAME_MAX];
    size_t                         plen;
    ngx_http_elearn_revocation_t  *e;

    if (rv == NULL || rv->destroyed || until < ngx_time()) {
        return;
    }

    plen = (prefix != NULL) ? ngx_strlen(prefix) : 0;

    if (len == 0 || plen + len > sizeof(buf)) {
        return;
    }

    p = (prefix != NULL) ? ngx_cpymem(buf, prefix, plen) : buf;
    p = ngx_cpymem(p, name, len);
    len = p - buf;

    e = ngx_http_elearn_revocations_find(rv, buf, len);

    if (e != NULL) {
        if ((time_t) e->expiry.key < until) {
            ngx_rbtree_delete(&rv->expiries, &e->expiry);
            e->expiry.key = until;
            ngx_rbtree_insert(&rv->expiries, &e->expiry);
        }

        return;
    }

    e = ngx_alloc(sizeof(ngx_http_elearn_revocation_t) + len, ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    ngx_memzero(e, sizeof(ngx_http_elearn_revocation_t));

    e->sn.str.data = (u_char *) e + sizeof(ngx_http_elearn_revocation_t);
    e->sn.str.len = len;
    ngx_memcpy(e->sn.str.data, buf, len);
    e->sn.node.key = ngx_crc32_short(buf, len);
    e->expiry.key = until;

    ngx_rbtree_insert(&rv->names, &e->sn.node);
    ngx_rbtree_insert(&rv->expiries, &e->expiry);

    rv->count++;
    rv->revision++;

    if (rv->count > NGX_HTTP_ELEARN_REVOKED_WARN && !rv->warned) {
        rv->warned = 1;

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn session: the revoked set holds %ui entries",
                      rv->count);
    }
}


static ngx_http_elearn_revocation_t *
ngx_http_elearn_revocations_find(ngx_http_elearn_revocations_t *rv,
    u_char *name, size_t len)
{
    ngx_str_t  key;

    key.data = name;
    key.len = len;

    return (ngx_http_elearn_revocation_t *)
               ngx_str_rbtree_lookup(&rv->names, &key,
                                     ngx_crc32_short(name, len));
}


static void
ngx_http_elearn_revocations_remove(ngx_http_elearn_revocations_t *rv,
    ngx_http_elearn_revocation_t *e)
{
    ngx_rbtree_delete(&rv->names, &e->sn.node);
    ngx_rbtree_delete(&rv->expiries, &e->expiry);

    rv->count--;

    ngx_free(e);
}


static void
ngx_http_elearn_revocations_purge(ngx_http_elearn_revocations_t *rv)
{
    time_t                         now;
    ngx_rbtree_node_t             *node;
    ngx_http_elearn_revocation_t  *e;

    now = ngx_time();

    while (rv->expiries.root != rv->expiries.sentinel) {
        node = ngx_rbtree_min(rv->expiries.root, rv->expiries.sentinel);

        if ((time_t) node->key >= now) {
            break;
        }

        e = (ngx_http_elearn_revocation_t *)
                ((u_char *) node
                 - offsetof(ngx_http_elearn_revocation_t, expiry));

        ngx_http_elearn_revocations_remove(rv, e);
    }

    if (rv->count < NGX_HTTP_ELEARN_REVOKED_WARN / 2) {
        rv->warned = 0;
    }
}


/*
 * Reads what Redis holds now.  Sent only after Redis confirmed the
 * subscription, so a revocation is either in the reply or arrives as a
 * message (the scripts ZADD before they PUBLISH, atomically); messages
 * that arrive meanwhile are applied as they come, and the two merge.
 */

static void
ngx_http_elearn_revocations_load(ngx_http_elearn_revocations_t *rv)
{
    u_char       now[NGX_TIME_T_LEN];
    size_t       argvlen[5];
    ngx_int_t    rc;
    const char  *argv[5];

    argv[0] = "ZRANGEBYSCORE";
    argvlen[0] = sizeof("ZRANGEBYSCORE") - 1;
    argv[1] = NGX_HTTP_ELEARN_SESSION_PREFIX "revoked";
    argvlen[1] = sizeof(NGX_HTTP_ELEARN_SESSION_PREFIX "revoked") - 1;
    argv[2] = (char *) now;
    argvlen[2] = ngx_sprintf(now, "%T", ngx_time()) - now;
    argv[3] = "+inf";
    argvlen[3] = sizeof("+inf") - 1;
    argv[4] = "WITHSCORES";
    argvlen[4] = sizeof("WITHSCORES") - 1;

    rc = ngx_http_elearn_redis_command(NULL,
                                       ngx_http_elearn_revocations_loaded,
                                       rv, 5, argv, argvlen);
    if (rc != NGX_AGAIN) {
        /* the tick tries again */
        return;
    }

    rv->loading = 1;
    rv->load_generation = rv->generation;
}


static void
ngx_http_elearn_revocations_loaded(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_elearn_revocations_t  *rv = data;

    size_t       i;
    time_t       until;
    redisReply  *name, *score;

    rv->loading = 0;

    if (rv->destroyed) {
        return;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn session: loading the revoked set failed (%i)",
                      rc);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn session: loading the revoked set failed: %*s",
                      (size_t) (reply->type == REDIS_REPLY_ERROR
                                ? reply->len : 0),
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        return;
    }

    /* true revocations whichever subscription asked: keep them all */

    for (i = 0; i + 1 < reply->elements; i += 2) {
        name = reply->element[i];
        score = reply->element[i + 1];

        if (name->type != REDIS_REPLY_STRING
            || score->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        until = ngx_http_elearn_session_number(score);

        ngx_http_elearn_revocations_add(rv, NULL, (u_char *) name->str,
                                        name->len, until);
    }

    if (rv->load_generation != rv->generation || !rv->subscribed) {
        /* resubscribed since it was sent: messages may be missing */
        if (rv->subscribed) {
            ngx_http_elearn_revocations_load(rv);
        }

        return;
    }

    rv->loaded = 1;

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "elearn session: revoked set loaded, %ui entries",
                  rv->count);
}


/*
 * "s:{sid}" or "j:{jti}"; the message carries no expiry, so the entry is
 * kept as long as any access token can still be accepted.
 */

static void
ngx_http_elearn_revocations_message(ngx_str_t *channel, ngx_str_t *message,
    void *data)
{
    ngx_http_elearn_revocations_t  *rv = data;

    ngx_queue_t                   *q;
    ngx_http_elearn_session_op_t  *op;

    if (message->len < 3
        || (message->data[0] != 's' && message->data[0] != 'j')
        || message->data[1] != ':')
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn session: ignored a malformed revocation");
        return;
    }

    ngx_http_elearn_revocations_add(rv, NULL, message->data, message->len,
                                    ngx_time() + rv->ttl);

    /* a revocation of this worker's waiting for its echo: answer it */

    q = ngx_queue_head(&rv->echoes);

    while (q != ngx_queue_sentinel(&rv->echoes)) {
        op = ngx_queue_data(q, ngx_http_elearn_session_op_t, queue);

        if (message->data[0] == 's'
            && op->sid.len == message->len - 2
            && ngx_strncmp(op->sid.data, message->data + 2, op->sid.len)
               == 0)
        {
            /* answering may end other requests: start over */
            ngx_http_elearn_session_echoed(op);
            q = ngx_queue_head(&rv->echoes);
            continue;
        }

        q = ngx_queue_next(q);
    }
}


static void
ngx_http_elearn_revocations_state(ngx_str_t *channel, ngx_uint_t subscribed,
    void *data)
{
    ngx_http_elearn_revocations_t  *rv = data;

    if (rv->destroyed) {
        return;
    }

    if (!subscribed) {
        if (rv->subscribed) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "elearn session: revocations unseen while "
                          "pub/sub is down (elearn_revocation_fail_open %s)",
                          rv->fail_open ? "on" : "off");
        }

        rv->subscribed = 0;
        rv->loaded = 0;
        return;
    }

    rv->subscribed = 1;
    rv->loaded = 0;
    rv->generation++;

    /* a load under way started before this subscription: it reloads */

    if (!rv->loading) {
        ngx_http_elearn_revocations_load(rv);
    }
}


static void
ngx_http_elearn_revocations_tick(ngx_event_t *ev)
{
    ngx_http_elearn_revocations_t  *rv = ev->data;

    if (rv->destroyed) {
        return;
    }

    ngx_http_elearn_revocations_purge(rv);

    if (rv->subscribed && !rv->loaded && !rv->loading) {
        ngx_http_elearn_revocations_load(rv);
    }

    /* cancelable: never holds up a worker's exit */
    ngx_add_timer(ev, NGX_HTTP_ELEARN_REVOKED_TICK);
}
