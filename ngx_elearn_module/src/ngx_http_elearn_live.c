
/*
 * elearn live: live sessions (contract section 7).
 *
 * REST: create (owner, checked by the router), read (enrolled, owner or
 * admin), close (owner or admin).  WebSocket: GET /live/{sessionId} with
 * the access token in ?access_token= or in the subprotocol
 * "bearer.<token>" beside "elearn.v1".  Everything that can refuse a join
 * (token, enrollment, closed or unknown session, full session) answers
 * as a normal HTTP problem before the upgrade.
 *
 * Where things live:
 *
 *   - PostgreSQL: the session rows (live_sessions).
 *   - Redis, per session: the sequence counter, the replay buffer (a list
 *     of "<seq> <ms> <message>", capped by elearn_live_replay_max and
 *     elearn_live_replay_ttl), the occupancy (a hash of participants per
 *     worker process plus a sorted set of the workers' lease expiries),
 *     a per-user chat counter and the "closed" mark.  One Lua script does
 *     every change, so each is atomic: a message is numbered, buffered and
 *     published by one EVAL (one PUBLISH per message), a join is admitted
 *     under the cap by one EVAL.
 *   - Each worker process: a tree of the sessions it has participants of,
 *     each subscribed to the session's channel.  A message arriving on the
 *     channel becomes one WebSocket frame, shared by reference by every
 *     local participant (ngx_http_elearn_ws.c queues frames, not copies).
 *
 * Gaps: a participant remembers the last sequence number it got and a
 * session the highest it saw.  When the channel's subscription is
 * confirmed (first time, and after every Redis reconnect) the worker
 * fetches what the buffer holds past that and delivers it before the
 * live messages held meanwhile, so a Redis hiccup loses nothing that is
 * still buffered.  After a Redis restart (nothing buffered, the counter
 * gone) the next message is numbered past the highest number the sending
 * worker saw, so numbers never go back.
 *
 * Capacity: every worker refreshes its lease and its participant count
 * each third of elearn_live_lease; a worker or node that dies stops
 * refreshing and its participants stop counting when its lease expires.
 * The same refresh restores the counts after a Redis restart, and tells a
 * worker that missed the "closing" message that its session was closed.
 *
 * Must never: block (Redis and PostgreSQL are asynchronous), touch a
 * request or a WebSocket after it is gone (participants are heap objects
 * that outlive both until their last Redis reply), log a token, or let a
 * token reach the access log (the query's token is overwritten in the
 * request line once read).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>
#include <openssl/sha.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_body.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_jwt.h"
#include "ngx_http_elearn_auth.h"
#include "ngx_http_elearn_session.h"
#include "ngx_http_elearn_sql.h"
#include "ngx_http_elearn_ws.h"
#include "ngx_http_elearn_live.h"


#define NGX_HTTP_ELEARN_LIVE_PREFIX      "elearn:live:"
#define NGX_HTTP_ELEARN_LIVE_KEY_LEN     (sizeof(NGX_HTTP_ELEARN_LIVE_PREFIX) \
                                          + 2 * NGX_INT64_LEN + 16)
#define NGX_HTTP_ELEARN_LIVE_NKEYS       9
#define NGX_HTTP_ELEARN_LIVE_ARGS_MAX    10
#define NGX_HTTP_ELEARN_LIVE_TS_LEN      sizeof("2026-01-01T00:00:00.000Z")
#define NGX_HTTP_ELEARN_LIVE_CLOSED_TTL  "86400000"
#define NGX_HTTP_ELEARN_LIVE_HOLD_MAX    4096     /* items held per list */

#define NGX_HTTP_ELEARN_LIVE_CLOSING                                          \
    "{\"type\":\"system\",\"event\":\"closing\"}"
#define NGX_HTTP_ELEARN_LIVE_EXPIRING                                         \
    "{\"type\":\"system\",\"event\":\"token-expiring\"}"

/* nginx 1.22 has no name for it */
#define NGX_HTTP_ELEARN_GONE  410

/* close code for an expired token (contract section 7) */
#define NGX_HTTP_ELEARN_LIVE_TOKEN_EXPIRED  4001


/*
 * The one script behind every Redis change of a session.  KEYS: 1 seq,
 * 2 replay buffer, 3 occupancy hash, 4 lease zset, 5 closed mark, 6 the
 * sender's chat counter, 7 the joining user's enrollment status
 * (enroll:{user}:{course}, the progress endpoints' cache, see
 * docs/caching.md), 8 the joining user's display name, 9 the last
 * participant count published.  ARGV[1] is the mode, ARGV[2] the channel.
 *
 *   pub      3 prefix, 4 suffix, 5 floor, 6 rate, 7 buffer max, 8 buffer
 *            ms: the message is prefix..seq..suffix.  -1 rate limited,
 *            -2 closed, else the seq.
 *   admit    3 worker, 4 lease ms, 5 capacity, 6 lastSeq (-1: none), 7
 *            buffer ms, 8 who: "owner" (needs the name only), "student"
 *            (needs the name and enrollment "1"), "known" (PostgreSQL
 *            answered: 9 the name, 10 the cache ttl in seconds, 11 "1"
 *            when enrolled; both stored): {-2} closed, {-1, n} full, {-4}
 *            not enrolled, {-5} not cached (ask PostgreSQL), else {n,
 *            seq, name, missed..}
 *   set      3 worker, 4 lease ms, 5 count: -2 closed, else the seq
 *   count    participants
 *   replay   3 after, 4 buffer ms: {seq, messages after "after"...}
 *   presence 3 ms, 4 worker, 5 left: gives back the places of the
 *            worker's participants that left since its last call, then
 *            publishes the participant count unless the last one
 *            published (within ms) was the same (then -1, else the
 *            count).  Joins and leaves publish nothing themselves: each
 *            worker with joins or leaves of a session calls this at most
 *            once per elearn_live_presence_interval
 *   close    3 mark ms: sets the mark, drops the occupancy, publishes the
 *            closing message
 */
static const char  ngx_http_elearn_live_lua[] =
    "local mode = ARGV[1]\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local function total()\n"
    "  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)\n"
    "  for _, m in ipairs(dead) do\n"
    "    redis.call('HDEL', KEYS[3], m)\n"
    "    redis.call('ZREM', KEYS[4], m)\n"
    "  end\n"
    "  local n = 0\n"
    "  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do\n"
    "    n = n + tonumber(v)\n"
    "  end\n"
    "  return n\n"
    "end\n"
    "local function presence(n)\n"
    "  redis.call('PUBLISH', ARGV[2],\n"
    "             '{\"type\":\"presence\",\"participants\":' .. n .. '}')\n"
    "end\n"
    "local function replay(out, after, ms)\n"
    "  local cutoff = now - ms\n"
    "  for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do\n"
    "    local s, at, m = string.match(e, '^(%d+) (%d+) (.*)$')\n"
    "    if s and tonumber(s) > after and tonumber(at) >= cutoff then\n"
    "      out[#out + 1] = m\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local function lease(ms)\n"
    "  redis.call('ZADD', KEYS[4], now + ms, ARGV[3])\n"
    "  redis.call('PEXPIRE', KEYS[3], ms)\n"
    "  redis.call('PEXPIRE', KEYS[4], ms)\n"
    "end\n"
    "local seq = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local closed = redis.call('EXISTS', KEYS[5]) == 1\n"
    "if mode == 'pub' then\n"
    "  if closed then return -2 end\n"
    "  local rate = tonumber(ARGV[6])\n"
    "  if rate > 0 then\n"
    "    local n = redis.call('INCR', KEYS[6])\n"
    "    if n == 1 then redis.call('PEXPIRE', KEYS[6], 1000) end\n"
    "    if n > rate then return -1 end\n"
    "  end\n"
    "  seq = math.max(seq, tonumber(ARGV[5])) + 1\n"
    "  redis.call('SET', KEYS[1], seq, 'PX', 86400000)\n"
    "  local msg = ARGV[3] .. seq .. ARGV[4]\n"
    "  redis.call('RPUSH', KEYS[2], seq .. ' ' .. now .. ' ' .. msg)\n"
    "  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[8])\n"
    "  redis.call('PUBLISH', ARGV[2], msg)\n"
    "  return seq\n"
    "elseif mode == 'admit' then\n"
    "  if closed then return {-2} end\n"
    "  local name\n"
    "  if ARGV[8] == 'known' then\n"
    "    name = ARGV[9]\n"
    "    redis.call('SET', KEYS[8], name, 'EX', ARGV[10])\n"
    "    if ARGV[11] == '1' then\n"
    "      redis.call('SET', KEYS[7], '1', 'EX', ARGV[10])\n"
    "    end\n"
    "  else\n"
    "    name = redis.call('GET', KEYS[8])\n"
    "    if not name then return {-5} end\n"
    "    if ARGV[8] == 'student' then\n"
    "      local e = redis.call('GET', KEYS[7])\n"
    "      if e == '0' then return {-4} end\n"
    "      if e ~= '1' then return {-5} end\n"
    "    end\n"
    "  end\n"
    "  local n = total()\n"
    "  if n >= tonumber(ARGV[5]) then return {-1, n} end\n"
    "  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)\n"
    "  lease(tonumber(ARGV[4]))\n"
    "  n = n + 1\n"
    "  local out = {n, seq, name}\n"
    "  local after = tonumber(ARGV[6])\n"
    "  if after >= 0 and after < seq then\n"
    "    replay(out, after, tonumber(ARGV[7]))\n"
    "  end\n"
    "  return out\n"
    "elseif mode == 'set' then\n"
    "  if closed then return -2 end\n"
    "  if tonumber(ARGV[5]) > 0 then\n"
    "    redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])\n"
    "    lease(tonumber(ARGV[4]))\n"
    "  else\n"
    "    redis.call('HDEL', KEYS[3], ARGV[3])\n"
    "    redis.call('ZREM', KEYS[4], ARGV[3])\n"
    "  end\n"
    "  return seq\n"
    "elseif mode == 'count' then\n"
    "  return total()\n"
    "elseif mode == 'replay' then\n"
    "  return replay({seq}, tonumber(ARGV[3]), tonumber(ARGV[4]))\n"
    "elseif mode == 'presence' then\n"
    "  if closed then return -2 end\n"
    "  local k = tonumber(ARGV[5])\n"
    "  if k > 0 and redis.call('HINCRBY', KEYS[3], ARGV[4], -k) <= 0 then\n"
    "    redis.call('HDEL', KEYS[3], ARGV[4])\n"
    "  end\n"
    "  local n = total()\n"
    "  if redis.call('GET', KEYS[9]) == tostring(n) then return -1 end\n"
    "  redis.call('SET', KEYS[9], n, 'PX', ARGV[3])\n"
    "  presence(n)\n"
    "  return n\n"
    "elseif mode == 'close' then\n"
    "  redis.call('SET', KEYS[5], '1', 'PX', ARGV[3])\n"
    "  redis.call('DEL', KEYS[3], KEYS[4])\n"
    "  redis.call('PUBLISH', ARGV[2],\n"
    "             '{\"type\":\"system\",\"event\":\"closing\"}')\n"
    "  return 1\n"
    "end\n"
    "return redis.error_reply('elearn live: unknown mode')\n";


typedef struct ngx_http_elearn_live_session_s  ngx_http_elearn_live_session_t;
typedef struct ngx_http_elearn_live_part_s     ngx_http_elearn_live_part_t;


/* a frame held back (before a welcome, or during a catch-up) */
typedef struct {
    int64_t                          seq;      /* 0: presence */
    ngx_http_elearn_ws_frame_t      *frame;
} ngx_http_elearn_live_item_t;


typedef struct {
    ngx_http_elearn_live_item_t     *items;
    ngx_uint_t                       nitems;
    ngx_uint_t                       nalloc;
} ngx_http_elearn_live_hold_t;


/* a session with participants in this worker process */
struct ngx_http_elearn_live_session_s {
    ngx_rbtree_node_t                node;     /* key: the session id */
    int64_t                          id;
    ngx_queue_t                      parts;
    ngx_uint_t                       nparts;   /* admitted (count) */
    ngx_uint_t                       admitting; /* admits not answered */
    ngx_uint_t                       nlinked;  /* in parts */
    int64_t                          seq;      /* highest seen, -1 none */
    ngx_http_elearn_live_hold_t      held;     /* during a catch-up */
    ngx_event_t                      presence; /* the frame, coalesced */
    ngx_event_t                      announce; /* the count's publish */
    ngx_int_t                        participants;
    ngx_uint_t                       refs;     /* Redis commands out */
    ngx_uint_t                       leaving;  /* left, not yet released */
    int64_t                          course_id; /* the row, kept while */
    int64_t                          owner_id;  /* row_until is ahead */
    ngx_uint_t                       capacity;
    ngx_msec_t                       row_until;
    unsigned                         row:1;
    unsigned                         catching_up:1;
    unsigned                         catch_up_later:1;
    unsigned                         closing:1;
    unsigned                         subscribed:1;
    unsigned                         confirmed:1;
    ngx_str_t                        channel;
    u_char                           channel_data[
                                         NGX_HTTP_ELEARN_LIVE_KEY_LEN];
};


typedef enum {
    NGX_HTTP_ELEARN_LIVE_JOINING = 0,   /* before the welcome */
    NGX_HTTP_ELEARN_LIVE_OPEN,
    NGX_HTTP_ELEARN_LIVE_GONE           /* socket or request gone */
} ngx_http_elearn_live_state_e;


/* a participant: from the join request to its last Redis reply */
struct ngx_http_elearn_live_part_s {
    ngx_queue_t                      queue;    /* in session->parts */
    ngx_http_elearn_live_session_t  *session;
    ngx_http_request_t              *request;  /* until the upgrade */
    ngx_pool_cleanup_t              *cln;      /* on request->pool */
    ngx_http_elearn_ws_t            *ws;       /* after it */
    ngx_http_elearn_live_state_e     state;
    int64_t                          user_id;
    ngx_uint_t                       role;
    int64_t                          last_seq; /* delivered */
    int64_t                          want_seq; /* ?lastSeq, -1 none */
    time_t                           exp;      /* the token's */
    u_char                           sid[40];  /* its login session */
    u_char                           jti[40];
    ngx_event_t                      expiry;
    ngx_http_elearn_live_hold_t      held;     /* before the welcome */
    ngx_uint_t                       refs;     /* Redis commands out */
    unsigned                         owner:1;  /* may broadcast */
    unsigned                         admitted:1;
    unsigned                         linked:1;
    unsigned                         warned:1;
    size_t                           from_len;
    u_char                          *from;     /* "from" of its messages */
};


/* the worker's registry */
typedef struct {
    ngx_rbtree_t                     tree;
    ngx_rbtree_node_t                sentinel;
    ngx_event_t                      lease;
    ngx_event_t                      revoked;  /* the open sockets' check */
    ngx_uint_t                       revision; /* of the set it last swept */
    ngx_http_elearn_main_conf_t     *emcf;
    size_t                           worker_len;
    u_char                           worker[NGX_MAXHOSTNAMELEN + 64];
    u_char                           sha[SHA_DIGEST_LENGTH * 2 + 1];
} ngx_http_elearn_live_worker_t;


/* a REST call's state */
typedef struct {
    int64_t                          id;       /* session */
    int64_t                          course_id;
    ngx_int_t                        capacity;
    ngx_str_t                        title;
    ngx_str_t                        status;
} ngx_http_elearn_live_rest_t;


/* replies come to the worker (r NULL): the request, if any, is in data */
typedef ngx_http_elearn_redis_handler_pt  ngx_http_elearn_live_reply_pt;


#define NGX_HTTP_ELEARN_LIVE_ARGV  (5 + NGX_HTTP_ELEARN_LIVE_NKEYS           \
                                    + NGX_HTTP_ELEARN_LIVE_ARGS_MAX)

/*
 * A script call in flight: EVALSHA first (the script's 3 KB are not sent
 * with every message), its arguments kept for the one EVAL that follows a
 * NOSCRIPT (a restarted or flushed Redis).  The bytes follow the struct.
 */
typedef struct {
    ngx_http_elearn_live_reply_pt    handler;
    void                            *data;
    int                              argc;
    const char                      *argv[NGX_HTTP_ELEARN_LIVE_ARGV];
    size_t                           argvlen[NGX_HTTP_ELEARN_LIVE_ARGV];
} ngx_http_elearn_live_call_t;


static ngx_int_t ngx_http_elearn_live_session_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_elearn_live_handler(ngx_http_request_t *r);
static void ngx_http_elearn_live_on_message(ngx_http_elearn_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len);
static void ngx_http_elearn_live_on_close(ngx_http_elearn_ws_t *ws,
    ngx_uint_t code);
static void ngx_http_elearn_live_part_gone(ngx_http_elearn_live_part_t *p);
static ngx_uint_t ngx_http_elearn_live_revoked(ngx_http_elearn_live_part_t *p);
static void ngx_http_elearn_live_session_close(
    ngx_http_elearn_live_session_t *s);
static void ngx_http_elearn_live_catch_up(ngx_http_elearn_live_session_t *s);
static void ngx_http_elearn_live_checked(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data);
static void ngx_http_elearn_live_admitted(ngx_http_request_t *nr,
    redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_elearn_live_announce_later(
    ngx_http_elearn_live_session_t *s);
static ngx_http_elearn_live_session_t *ngx_http_elearn_live_lookup(
    int64_t id);


static ngx_http_elearn_live_worker_t  *ngx_http_elearn_live_worker;
static ngx_http_elearn_live_stats_t    ngx_http_elearn_live_stats;

/* ctx->data of a join refused because the session is full */
static u_char  ngx_http_elearn_live_full_mark;


ngx_http_variable_t  ngx_http_elearn_live_vars[] = {

    { ngx_string("elearn_live_session"), NULL,
      ngx_http_elearn_live_session_variable, 0, 0, 0 },

      ngx_http_null_variable
};


static ngx_http_elearn_ws_handlers_t  ngx_http_elearn_live_ws_handlers = {
    NULL,
    ngx_http_elearn_live_on_message,
    ngx_http_elearn_live_on_close
};


static ngx_str_t  ngx_http_elearn_live_protocol = ngx_string("elearn.v1");


/* --- Redis ---------------------------------------------------------------- */


static void
ngx_http_elearn_live_evaled(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_call_t *call = data;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ERROR
        && reply->len >= sizeof("NOSCRIPT") - 1
        && ngx_strncmp(reply->str, "NOSCRIPT", sizeof("NOSCRIPT") - 1) == 0
        && call->argv[0][4] == 'S')
    {
        /* the script is not cached there (yet): once with its text */
        call->argv[0] = "EVAL";
        call->argvlen[0] = sizeof("EVAL") - 1;
        call->argv[1] = ngx_http_elearn_live_lua;
        call->argvlen[1] = sizeof(ngx_http_elearn_live_lua) - 1;

        if (ngx_http_elearn_redis_command(NULL, ngx_http_elearn_live_evaled,
                                          call, call->argc, call->argv,
                                          call->argvlen)
            == NGX_AGAIN)
        {
            return;
        }

        rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        reply = NULL;
    }

    call->handler(nr, reply, rc, call->data);
    ngx_free(call);
}


/*
 * Runs the script in mode for session sid (user_id: the chat counter's
 * and a join's user, 0 for none; course_id: a join's course, else 0),
 * with nargs more arguments after the mode and the
 * channel.  Always the worker's own command (no request): handler gets
 * data back whether or not a request is still there.  NGX_AGAIN, or
 * NGX_HTTP_SERVICE_UNAVAILABLE when Redis is not there (handler not
 * called).
 */
static ngx_int_t
ngx_http_elearn_live_eval(int64_t sid, int64_t user_id, int64_t course_id,
    const char *mode, ngx_uint_t nargs, const char **args, size_t *lens,
    ngx_http_elearn_live_reply_pt handler, void *data)
{
    u_char                       *p;
    size_t                        size;
    ngx_int_t                     rc;
    ngx_uint_t                    i, n;
    const char                   *argv[NGX_HTTP_ELEARN_LIVE_ARGV];
    size_t                        argvlen[NGX_HTTP_ELEARN_LIVE_ARGV];
    ngx_http_elearn_main_conf_t  *emcf;
    ngx_http_elearn_live_call_t  *call;
    u_char                        keys[NGX_HTTP_ELEARN_LIVE_NKEYS + 1]
                                      [NGX_HTTP_ELEARN_LIVE_KEY_LEN];

    static const char  *names[] = { "seq", "buf", "occ", "lease", "closed" };

    if (ngx_http_elearn_live_worker == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    emcf = ngx_http_elearn_live_worker->emcf;

    if (emcf->redis == NULL || nargs > NGX_HTTP_ELEARN_LIVE_ARGS_MAX) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    n = 0;
    argv[n] = "EVAL";
    argvlen[n++] = 4;
    argv[n] = ngx_http_elearn_live_lua;
    argvlen[n++] = sizeof(ngx_http_elearn_live_lua) - 1;
    argv[n] = "9";
    argvlen[n++] = 1;

    for (i = 0; i < 5; i++) {
        argv[n] = (char *) keys[i];
        argvlen[n++] = ngx_sprintf(keys[i], NGX_HTTP_ELEARN_LIVE_PREFIX
                                   "%L:%s", sid, names[i])
                       - keys[i];
    }

    argv[n] = (char *) keys[5];
    argvlen[n++] = ngx_sprintf(keys[5], NGX_HTTP_ELEARN_LIVE_PREFIX
                               "%L:rate:%L", sid, user_id)
                   - keys[5];

    argv[n] = (char *) keys[6];
    argvlen[n++] = ngx_sprintf(keys[6], "enroll:%L:%L", user_id, course_id)
                   - keys[6];

    argv[n] = (char *) keys[7];
    argvlen[n++] = ngx_sprintf(keys[7], NGX_HTTP_ELEARN_LIVE_PREFIX
                               "name:%L", user_id)
                   - keys[7];

    argv[n] = (char *) keys[8];
    argvlen[n++] = ngx_sprintf(keys[8], NGX_HTTP_ELEARN_LIVE_PREFIX "%L:pres",
                               sid)
                   - keys[8];

    argv[n] = mode;
    argvlen[n++] = ngx_strlen(mode);

    argv[n] = (char *) keys[9];
    argvlen[n++] = ngx_sprintf(keys[9], NGX_HTTP_ELEARN_LIVE_PREFIX "%L", sid)
                   - keys[9];

    for (i = 0; i < nargs; i++) {
        argv[n] = args[i];
        argvlen[n++] = lens ? lens[i] : ngx_strlen(args[i]);
    }

    size = sizeof(ngx_http_elearn_live_call_t);

    for (i = 2; i < n; i++) {
        size += argvlen[i];
    }

    call = ngx_alloc(size, ngx_cycle->log);
    if (call == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    call->handler = handler;
    call->data = data;
    call->argc = (int) n;
    call->argv[0] = "EVALSHA";
    call->argvlen[0] = sizeof("EVALSHA") - 1;
    call->argv[1] = (char *) ngx_http_elearn_live_worker->sha;
    call->argvlen[1] = SHA_DIGEST_LENGTH * 2;

    p = (u_char *) &call[1];

    for (i = 2; i < n; i++) {
        call->argv[i] = (char *) p;
        call->argvlen[i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    rc = ngx_http_elearn_redis_command(NULL, ngx_http_elearn_live_evaled,
                                       call, call->argc, call->argv,
                                       call->argvlen);
    if (rc != NGX_AGAIN) {
        ngx_free(call);
    }

    return rc;
}


static int64_t
ngx_http_elearn_live_int(redisReply *reply)
{
    if (reply == NULL) {
        return -3;
    }

    if (reply->type == REDIS_REPLY_INTEGER) {
        return reply->integer;
    }

    if (reply->type == REDIS_REPLY_STRING) {
        return ngx_atoof((u_char *) reply->str, reply->len);
    }

    return -3;
}


static u_char *
ngx_http_elearn_live_num(u_char *buf, int64_t n)
{
    u_char  *p;

    p = ngx_sprintf(buf, "%L", n);
    *p = '\0';

    return buf;
}


/* --- REST ----------------------------------------------------------------- */


/* the session's id and the caller's, as text parameters */
static ngx_int_t
ngx_http_elearn_live_query(ngx_http_request_t *r, const char *sql,
    int64_t a, int64_t b, ngx_http_elearn_pg_handler_pt handler, void *data)
{
    const char  *values[2];
    u_char       va[NGX_INT64_LEN + 1], vb[NGX_INT64_LEN + 1];

    values[0] = (char *) ngx_http_elearn_live_num(va, a);
    values[1] = (char *) ngx_http_elearn_live_num(vb, b);

    return ngx_http_elearn_pg_query(r, sql, b ? 2 : 1, values, handler, data);
}


/*
 * Reads a live_get row into rest.  NGX_OK when the caller may see the
 * session, else NGX_DECLINED with *answer what to finalize with (a
 * problem is sent already: its own return value is the output filter's,
 * NGX_OK included, so it cannot say "go on").  want_owner: only the owner
 * (or an admin) may.
 */
static ngx_int_t
ngx_http_elearn_live_row(ngx_http_request_t *r, PGresult *res, ngx_int_t rc,
    ngx_http_elearn_live_rest_t *rest, ngx_http_elearn_user_t *user,
    ngx_uint_t want_owner, ngx_uint_t *owner, ngx_int_t *answer)
{
    int64_t  instructor;

    if (rc != NGX_OK) {
        *answer = ngx_http_elearn_problem_backend(r, rc, "the database");
        return NGX_DECLINED;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn live: live_get failed: %s",
                      PQresultErrorMessage(res));
        *answer = ngx_http_elearn_problem_backend(r, NGX_ERROR,
                                                  "the database");
        return NGX_DECLINED;
    }

    if (PQntuples(res) == 0) {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND,
                                          "not-found",
                                          "live session %L does not exist",
                                          rest->id);
        return NGX_DECLINED;
    }

    rest->course_id = ngx_atoof((u_char *) PQgetvalue(res, 0, 1),
                                PQgetlength(res, 0, 1));
    rest->capacity = ngx_atoi((u_char *) PQgetvalue(res, 0, 3),
                              PQgetlength(res, 0, 3));
    instructor = ngx_atoof((u_char *) PQgetvalue(res, 0, 5),
                           PQgetlength(res, 0, 5));

    rest->title.len = PQgetlength(res, 0, 2);
    rest->title.data = ngx_pnalloc(r->pool, rest->title.len * 6 + 1);
    rest->status.len = PQgetlength(res, 0, 4);
    rest->status.data = ngx_pnalloc(r->pool, rest->status.len + 1);

    if (rest->title.data == NULL || rest->status.data == NULL) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DECLINED;
    }

    /* kept escaped, ready for JSON */
    rest->title.len = ngx_http_elearn_json_escape(rest->title.data,
                                      (u_char *) PQgetvalue(res, 0, 2),
                                      rest->title.len)
                      - rest->title.data;
    ngx_memcpy(rest->status.data, PQgetvalue(res, 0, 4), rest->status.len);

    *owner = (instructor == user->user_id
              || user->role == NGX_HTTP_ELEARN_ROLE_ADMIN);

    if (*owner) {
        return NGX_OK;
    }

    if (want_owner) {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_FORBIDDEN,
                                          "forbidden", "only the course's "
                                          "instructor may do this");
        return NGX_DECLINED;
    }

    if (PQgetvalue(res, 0, 6)[0] != 't') {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_FORBIDDEN,
                                          "forbidden", "only the course's "
                                          "students and instructor may see "
                                          "this session");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_live_rest_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_elearn_live_rest_t *rest, ngx_int_t participants)
{
    u_char  *json, *p;
    size_t   len;

    len = sizeof("{\"sessionId\":,\"courseId\":,\"title\":\"\",\"capacity\":"
                 ",\"participants\":,\"status\":\"\",\"wsUrl\":\"/live/\"}")
          + 5 * NGX_INT64_LEN + rest->title.len + rest->status.len;

    json = ngx_pnalloc(r->pool, len);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(json, "{\"sessionId\":%L,", rest->id);

    if (participants < 0) {
        /* the create answer (contract section 7) */
        p = ngx_sprintf(p, "\"title\":\"%V\",\"capacity\":%i,"
                        "\"status\":\"open\",\"wsUrl\":\"/live/%L\"}",
                        &rest->title, rest->capacity, rest->id);

    } else {
        p = ngx_sprintf(p, "\"courseId\":%L,\"title\":\"%V\","
                        "\"capacity\":%i,\"participants\":%i,"
                        "\"status\":\"%V\"}",
                        rest->course_id, &rest->title, rest->capacity,
                        participants, &rest->status);
    }

    return ngx_http_elearn_send_json(r, status, (char *) json, p - json);
}


/* POST /api/v1/courses/{courseId}/live-sessions */

static void
ngx_http_elearn_live_created(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_rest_t *rest = data;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn live: live_create failed: %s",
                      PQresultErrorMessage(res));
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_ERROR, "the database"));
        return;
    }

    rest->id = ngx_atoof((u_char *) PQgetvalue(res, 0, 0),
                         PQgetlength(res, 0, 0));

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_live_rest_json(r, NGX_HTTP_CREATED, rest, -1));
}


static void
ngx_http_elearn_live_create_body(ngx_http_request_t *r, json_t *body)
{
    u_char                         *p, *last;
    size_t                          len, chars;
    json_t                         *v;
    ngx_int_t                       rc;
    ngx_uint_t                      n;
    const char                     *key, *values[3];
    json_int_t                      cap;
    ngx_http_elearn_ctx_t          *ctx;
    ngx_http_elearn_live_rest_t    *rest;
    ngx_http_elearn_main_conf_t    *emcf;
    ngx_http_elearn_field_error_t   errors[4];
    u_char                          course[NGX_INT64_LEN + 1];
    u_char                          capacity[NGX_INT64_LEN + 1];
    u_char                          msg[64];

    r->read_event_handler = ngx_http_test_reading;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);
    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    rest = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_live_rest_t));
    if (ctx == NULL || rest == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        json_decref(body);
        return;
    }

    n = 0;

    json_object_foreach(body, key, v) {
        if (ngx_strcmp(key, "title") != 0 && ngx_strcmp(key, "capacity") != 0
            && n < 2)
        {
            errors[n].field = key;
            errors[n++].message = "is not a live session field";
        }
    }

    v = json_object_get(body, "title");
    chars = 0;

    if (json_is_string(v)) {
        p = (u_char *) json_string_value(v);
        len = json_string_length(v);

        for (last = p + len; p < last; p++) {
            if ((*p & 0xc0) != 0x80) {
                chars++;
            }
        }

        for (p = (u_char *) json_string_value(v); p < last; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
                break;
            }
        }

        if (p == last) {
            chars = 0;
        }
    }

    if (chars < 1 || chars > 200) {
        errors[n].field = "title";
        errors[n++].message = v ? "must be 1 to 200 characters, not all "
                                  "blank"
                                : "is required";
    }

    v = json_object_get(body, "capacity");
    cap = (json_int_t) emcf->live_capacity;

    if (v) {
        cap = json_is_integer(v) ? json_integer_value(v) : 0;
    }

    if (cap < 1 || cap > (json_int_t) emcf->live_capacity_max) {
        p = ngx_snprintf(msg, sizeof(msg) - 1,
                         "must be an integer from 1 to %ui",
                         emcf->live_capacity_max);
        *p = '\0';
        errors[n].field = "capacity";
        errors[n++].message = (char *) msg;
    }

    if (n) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_fields(r, "the request has invalid fields",
                                           errors, n));
        json_decref(body);
        return;
    }

    v = json_object_get(body, "title");
    len = json_string_length(v);

    rest->capacity = (ngx_int_t) cap;
    rest->title.data = ngx_pnalloc(r->pool, len * 6);
    if (rest->title.data == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        json_decref(body);
        return;
    }

    rest->title.len = ngx_http_elearn_json_escape(rest->title.data,
                                      (u_char *) json_string_value(v), len)
                      - rest->title.data;

    values[0] = (char *) ngx_http_elearn_live_num(course, ctx->ids[0]);
    values[1] = json_string_value(v);
    values[2] = (char *) ngx_http_elearn_live_num(capacity, cap);

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_LIVE_CREATE, 3,
                                  values, ngx_http_elearn_live_created, rest);

    json_decref(body);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
    }
}


ngx_int_t
ngx_http_elearn_live_create(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_read_json(r, ngx_http_elearn_live_create_body);
}


/* GET /api/v1/live-sessions/{sessionId} */

typedef struct {
    ngx_http_request_t              *request;
    ngx_http_elearn_live_rest_t     *rest;
} ngx_http_elearn_live_wait_t;


static void
ngx_http_elearn_live_wait_cleanup(void *data)
{
    ngx_http_elearn_live_wait_t *w = data;

    w->request = NULL;
}


static void
ngx_http_elearn_live_counted(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_wait_t *w = data;

    int64_t              n;
    ngx_http_request_t  *r;

    r = w->request;

    if (r == NULL) {
        /* the request is gone: w lived in its pool */
        return;
    }

    n = (rc == NGX_OK) ? ngx_http_elearn_live_int(reply) : -3;

    if (n < 0) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r,
                rc == NGX_OK ? NGX_ERROR : rc, "redis"));
        return;
    }

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_live_rest_json(r, NGX_HTTP_OK, w->rest, n));
}


/*
 * A worker command awaited by a request: the request's pool holds the
 * state, and a cleanup marks it gone so the reply is dropped.
 */
static ngx_int_t
ngx_http_elearn_live_await(ngx_http_request_t *r,
    ngx_http_elearn_live_rest_t *rest, const char *mode, ngx_uint_t nargs,
    const char **args, ngx_http_elearn_live_reply_pt handler)
{
    ngx_int_t                     rc;
    ngx_pool_cleanup_t           *cln;
    ngx_http_elearn_live_wait_t  *w;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_elearn_live_wait_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    w = cln->data;
    w->request = r;
    w->rest = rest;

    rc = ngx_http_elearn_live_eval(rest->id, 0, 0, mode, nargs, args, NULL,
                                   handler, w);
    if (rc != NGX_AGAIN) {
        w->request = NULL;
        return rc;
    }

    cln->handler = ngx_http_elearn_live_wait_cleanup;

    return NGX_AGAIN;
}


static void
ngx_http_elearn_live_got(ngx_http_request_t *r, PGresult *res, ngx_int_t rc,
    void *data)
{
    ngx_http_elearn_live_rest_t *rest = data;

    ngx_uint_t              owner;
    ngx_http_elearn_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);

    if (ngx_http_elearn_live_row(r, res, rc, rest, ctx->user, 0, &owner, &rc)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r, rc);
        return;
    }

    if (rest->status.len != 4) {
        /* closed: nobody is in it */
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_live_rest_json(r, NGX_HTTP_OK, rest, 0));
        return;
    }

    rc = ngx_http_elearn_live_await(r, rest, "count", 0, NULL,
                                    ngx_http_elearn_live_counted);
    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "redis"));
    }
}


/* GET and close both start with the session's row as the caller sees it */
static ngx_int_t
ngx_http_elearn_live_read(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx,
    ngx_http_elearn_pg_handler_pt handler)
{
    ngx_int_t                     rc;
    ngx_http_elearn_live_rest_t  *rest;

    rest = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_live_rest_t));
    if (rest == NULL || ctx->user == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rest->id = ctx->ids[0];
    ctx->data = rest;

    rc = ngx_http_elearn_live_query(r, NGX_HTTP_ELEARN_SQL_LIVE_GET,
                                    rest->id, ctx->user->user_id, handler,
                                    rest);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


ngx_int_t
ngx_http_elearn_live_get(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_live_read(r, ctx, ngx_http_elearn_live_got);
}


/* POST /api/v1/live-sessions/{sessionId}/close */

static void
ngx_http_elearn_live_told(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_wait_t *w = data;

    ngx_http_request_t  *r;

    r = w->request;

    if (r == NULL) {
        return;
    }

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {
        /* the row is closed; a retry tells the participants again */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn live: session %L closed but its participants "
                      "were not told: %s", w->rest->id,
                      rc == NGX_OK ? reply->str : "redis unavailable");
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r,
                rc == NGX_OK ? NGX_ERROR : rc, "redis"));
        return;
    }

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_send_json(r, NGX_HTTP_NO_CONTENT, "", 0));
}


static void
ngx_http_elearn_live_closed(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_rest_t *rest = data;

    const char                      *args[1];
    ngx_http_elearn_live_session_t  *s;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn live: live_close failed: %s",
                      PQresultErrorMessage(res));
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_ERROR, "the database"));
        return;
    }

    /* this worker's row of it goes at once (the others' with "closing") */
    s = ngx_http_elearn_live_lookup(rest->id);
    if (s) {
        s->row = 0;
    }

    args[0] = NGX_HTTP_ELEARN_LIVE_CLOSED_TTL;

    rc = ngx_http_elearn_live_await(r, rest, "close", 1, args,
                                    ngx_http_elearn_live_told);
    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "redis"));
    }
}


static void
ngx_http_elearn_live_close_checked(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_rest_t *rest = data;

    ngx_uint_t              owner;
    ngx_http_elearn_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);

    if (ngx_http_elearn_live_row(r, res, rc, rest, ctx->user, 1, &owner, &rc)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r, rc);
        return;
    }

    rc = ngx_http_elearn_live_query(r, NGX_HTTP_ELEARN_SQL_LIVE_CLOSE,
                                    rest->id, 0, ngx_http_elearn_live_closed,
                                    rest);
    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
    }
}


ngx_int_t
ngx_http_elearn_live_close(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_live_read(r, ctx,
                                     ngx_http_elearn_live_close_checked);
}


/* --- $elearn_live_session ------------------------------------------------- */


/*
 * The session id of /live/{id} and /api/v1/live-sessions/{id}[/...]: the
 * key a gateway hashes on, so that a session's sockets meet on one node.
 */
static ngx_int_t
ngx_http_elearn_live_session_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char  *p, *last, *start;
    size_t   i;

    static ngx_str_t  prefixes[] = {
        ngx_string("/live/"),
        ngx_string("/api/v1/live-sessions/")
    };

    p = r->uri.data;
    last = p + r->uri.len;

    for (i = 0; i < sizeof(prefixes) / sizeof(ngx_str_t); i++) {
        if (r->uri.len > prefixes[i].len
            && ngx_strncmp(p, prefixes[i].data, prefixes[i].len) == 0)
        {
            start = p + prefixes[i].len;

            for (p = start; p < last && *p >= '0' && *p <= '9'; p++) {
                /* void */
            }

            if (p == start || p - start > 18 || (p < last && *p != '/')) {
                break;
            }

            v->data = start;
            v->len = p - start;
            v->valid = 1;
            v->no_cacheable = 0;
            v->not_found = 0;

            return NGX_OK;
        }
    }

    v->not_found = 1;

    return NGX_OK;
}


/* --- frames --------------------------------------------------------------- */


static void
ngx_http_elearn_live_hold(ngx_http_elearn_live_hold_t *h, int64_t seq,
    ngx_http_elearn_ws_frame_t *frame)
{
    ngx_uint_t                    n;
    ngx_http_elearn_live_item_t  *items;

    if (h->nitems == h->nalloc) {
        if (h->nalloc == NGX_HTTP_ELEARN_LIVE_HOLD_MAX) {
            /* the oldest goes: the buffer still has it for a reconnect */
            ngx_http_elearn_ws_frame_release(h->items[0].frame);
            ngx_memmove(h->items, h->items + 1,
                        (h->nitems - 1) * sizeof(ngx_http_elearn_live_item_t));
            h->nitems--;

        } else {
            n = h->nalloc ? h->nalloc * 2 : 8;
            items = ngx_alloc(n * sizeof(ngx_http_elearn_live_item_t),
                              ngx_cycle->log);
            if (items == NULL) {
                return;
            }

            if (h->items) {
                ngx_memcpy(items, h->items,
                           h->nitems * sizeof(ngx_http_elearn_live_item_t));
                ngx_free(h->items);
            }

            h->items = items;
            h->nalloc = n;
        }
    }

    h->items[h->nitems].seq = seq;
    h->items[h->nitems++].frame = ngx_http_elearn_ws_frame_retain(frame);
}


static void
ngx_http_elearn_live_hold_free(ngx_http_elearn_live_hold_t *h)
{
    ngx_uint_t  i;

    for (i = 0; i < h->nitems; i++) {
        ngx_http_elearn_ws_frame_release(h->items[i].frame);
    }

    if (h->items) {
        ngx_free(h->items);
    }

    h->items = NULL;
    h->nitems = 0;
    h->nalloc = 0;
}


/* a message of the session's channel: its seq, 0 when it has none */
static int64_t
ngx_http_elearn_live_seq_of(u_char *p, size_t len)
{
    u_char   *last, *s;
    int64_t   seq;

    last = p + len;

    /* {"type":"chat","seq":N or {"type":"broadcast","seq":N */
    s = ngx_strlcasestrn(p, ngx_min(last, p + 40), (u_char *) "\"seq\":",
                         sizeof("\"seq\":") - 2);
    if (s == NULL) {
        return 0;
    }

    seq = 0;

    for (s += sizeof("\"seq\":") - 1; s < last && *s >= '0' && *s <= '9'; s++)
    {
        seq = seq * 10 + (*s - '0');
    }

    return seq;
}


/* one frame to one participant, in order, at most once */
static void
ngx_http_elearn_live_deliver(ngx_http_elearn_live_part_t *p, int64_t seq,
    ngx_http_elearn_ws_frame_t *frame)
{
    if (p->state == NGX_HTTP_ELEARN_LIVE_JOINING) {
        ngx_http_elearn_live_hold(&p->held, seq, frame);
        return;
    }

    if (p->state != NGX_HTTP_ELEARN_LIVE_OPEN) {
        return;
    }

    if (seq) {
        if (seq <= p->last_seq) {
            return;
        }

        p->last_seq = seq;
    }

    /* a slow reader is closed (1008) by the ws layer: nothing to do */
    if (ngx_http_elearn_ws_send(p->ws, frame) == NGX_OK) {
        ngx_http_elearn_live_stats.delivered++;
    }
}


/* a numbered message to every local participant */
static void
ngx_http_elearn_live_fanout(ngx_http_elearn_live_session_t *s, int64_t seq,
    ngx_http_elearn_ws_frame_t *frame)
{
    ngx_queue_t                  *q;
    ngx_http_elearn_live_part_t  *p;

    if (seq > s->seq) {
        s->seq = seq;
    }

    for (q = ngx_queue_head(&s->parts);
         q != ngx_queue_sentinel(&s->parts);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_elearn_live_part_t, queue);
        ngx_http_elearn_live_deliver(p, seq, frame);
    }
}


static void
ngx_http_elearn_live_send_text(ngx_http_elearn_live_part_t *p,
    const char *text, size_t len)
{
    if (p->ws && p->state == NGX_HTTP_ELEARN_LIVE_OPEN) {
        (void) ngx_http_elearn_ws_send_data(p->ws, NGX_HTTP_ELEARN_WS_TEXT,
                                            (u_char *) text, len);
    }
}


/* --- the worker's sessions ------------------------------------------------ */


static ngx_http_elearn_live_session_t *
ngx_http_elearn_live_lookup(int64_t id)
{
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_http_elearn_live_worker == NULL) {
        return NULL;
    }

    node = ngx_http_elearn_live_worker->tree.root;
    sentinel = ngx_http_elearn_live_worker->tree.sentinel;

    while (node != sentinel) {
        if ((ngx_rbtree_key_t) id < node->key) {
            node = node->left;
            continue;
        }

        if ((ngx_rbtree_key_t) id > node->key) {
            node = node->right;
            continue;
        }

        return (ngx_http_elearn_live_session_t *) node;
    }

    return NULL;
}


/* frees s once nothing refers to it any more */
static void
ngx_http_elearn_live_session_unref(ngx_http_elearn_live_session_t *s)
{
    ngx_http_elearn_main_conf_t  *emcf;

    if (s->nlinked || s->refs) {
        return;
    }

    emcf = ngx_http_elearn_live_worker->emcf;

    if (s->subscribed && emcf->redis) {
        (void) ngx_http_elearn_redis_unsubscribe(emcf->redis, &s->channel);
    }

    if (s->presence.timer_set) {
        ngx_del_timer(&s->presence);
    }

    ngx_http_elearn_live_hold_free(&s->held);
    ngx_rbtree_delete(&ngx_http_elearn_live_worker->tree, &s->node);
    ngx_free(s);
}


/*
 * Sends frames to one participant p, or to every local participant of s
 * when p is NULL: the buffered messages of a script's answer from its
 * element first on, then the frames held meanwhile (taken from held),
 * all in order, each at most once.
 */
static void
ngx_http_elearn_live_catch_up_send(ngx_http_elearn_live_session_t *s,
    ngx_http_elearn_live_part_t *p, redisReply *reply, size_t first,
    ngx_http_elearn_live_hold_t *hold)
{
    size_t                        i;
    int64_t                       seq;
    ngx_http_elearn_ws_frame_t   *frame;
    ngx_http_elearn_live_hold_t   held;

    for (i = first; reply && i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        seq = ngx_http_elearn_live_seq_of((u_char *) reply->element[i]->str,
                                          reply->element[i]->len);

        frame = ngx_http_elearn_ws_frame_create(NGX_HTTP_ELEARN_WS_TEXT,
                                    (u_char *) reply->element[i]->str,
                                    reply->element[i]->len);
        if (frame == NULL) {
            break;
        }

        if (p) {
            ngx_http_elearn_live_deliver(p, seq, frame);

        } else {
            ngx_http_elearn_live_fanout(s, seq, frame);
        }

        ngx_http_elearn_ws_frame_release(frame);
    }

    /* delivering may hold again (a participant still joining): move out */
    held = *hold;
    ngx_memzero(hold, sizeof(ngx_http_elearn_live_hold_t));

    for (i = 0; i < held.nitems; i++) {
        if (p) {
            ngx_http_elearn_live_deliver(p, held.items[i].seq,
                                         held.items[i].frame);

        } else {
            ngx_http_elearn_live_fanout(s, held.items[i].seq,
                                        held.items[i].frame);
        }
    }

    ngx_http_elearn_live_hold_free(&held);
}


static void
ngx_http_elearn_live_presence_send(ngx_event_t *ev)
{
    ngx_http_elearn_live_session_t *s = ev->data;

    u_char                       *p;
    ngx_http_elearn_ws_frame_t   *frame;
    u_char                        buf[64 + NGX_INT64_LEN];

    p = ngx_sprintf(buf, "{\"type\":\"presence\",\"participants\":%i}",
                    s->participants);

    frame = ngx_http_elearn_ws_frame_create(NGX_HTTP_ELEARN_WS_TEXT, buf,
                                            p - buf);
    if (frame == NULL) {
        return;
    }

    ngx_http_elearn_live_fanout(s, 0, frame);
    ngx_http_elearn_ws_frame_release(frame);
}


/* replay of what the buffer holds past s->seq: the catch-up's answer */
static void
ngx_http_elearn_live_caught_up(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_session_t *s = data;

    s->refs--;
    s->catching_up = 0;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn live: session %L: catch-up failed, messages "
                      "may be missing until the clients reconnect", s->id);
        reply = NULL;
    }

    /* what the buffer had, then what came live meanwhile */
    ngx_http_elearn_live_catch_up_send(s, NULL, reply, 1, &s->held);
    ngx_http_elearn_live_session_unref(s);
}


/* the subscription is (re)confirmed: fetch what may have been missed */
static void
ngx_http_elearn_live_subscribed(ngx_str_t *channel, ngx_uint_t subscribed,
    void *data)
{
    ngx_http_elearn_live_session_t *s = data;

    if (!subscribed) {
        return;
    }

    if (s->confirmed) {
        ngx_http_elearn_live_stats.resubscribes++;
    }

    s->confirmed = 1;

    if (s->catching_up) {
        return;
    }

    if (s->seq < 0) {
        /* the first admit's answer gives the base (its seq) */
        s->catch_up_later = 1;
        return;
    }

    ngx_http_elearn_live_catch_up(s);
}


/* delivers what the buffer holds past s->seq, before any live message */
static void
ngx_http_elearn_live_catch_up(ngx_http_elearn_live_session_t *s)
{
    ngx_int_t    rc;
    const char  *args[2];
    u_char       after[NGX_INT64_LEN + 1], ms[NGX_INT64_LEN + 1];

    s->catch_up_later = 0;

    args[0] = (char *) ngx_http_elearn_live_num(after, s->seq);
    args[1] = (char *) ngx_http_elearn_live_num(ms,
                           ngx_http_elearn_live_worker->emcf->live_replay_ttl);

    rc = ngx_http_elearn_live_eval(s->id, 0, 0, "replay", 2, args, NULL,
                                   ngx_http_elearn_live_caught_up, s);
    if (rc == NGX_AGAIN) {
        s->refs++;
        s->catching_up = 1;
    }
}


/* a message on a session's channel */
static void
ngx_http_elearn_live_message(ngx_str_t *channel, ngx_str_t *message,
    void *data)
{
    ngx_http_elearn_live_session_t *s = data;

    int64_t                       seq;
    ngx_int_t                     n;
    ngx_http_elearn_ws_frame_t   *frame;

    if (s->closing) {
        return;
    }

    if (message->len == sizeof(NGX_HTTP_ELEARN_LIVE_CLOSING) - 1
        && ngx_strncmp(message->data, NGX_HTTP_ELEARN_LIVE_CLOSING,
                       message->len) == 0)
    {
        ngx_http_elearn_live_session_close(s);
        return;
    }

    if (message->len >= sizeof("{\"type\":\"presence\",\"participants\":}")
        && ngx_strncmp(message->data, "{\"type\":\"presence\"",
                       sizeof("{\"type\":\"presence\"") - 1) == 0)
    {
        /* coalesced: at most one frame per participant per interval */
        n = ngx_atoi(message->data + sizeof("{\"type\":\"presence\","
                                            "\"participants\":") - 1,
                     message->len - sizeof("{\"type\":\"presence\","
                                           "\"participants\":}") + 1);
        if (n >= 0) {
            s->participants = n;

            if (!s->presence.timer_set) {
                ngx_add_timer(&s->presence,
                    ngx_http_elearn_live_worker->emcf->live_presence_interval);
            }
        }

        return;
    }

    seq = ngx_http_elearn_live_seq_of(message->data, message->len);
    if (seq == 0) {
        return;
    }

    /* serialized once here, shared by every local participant */
    frame = ngx_http_elearn_ws_frame_create(NGX_HTTP_ELEARN_WS_TEXT,
                                            message->data, message->len);
    if (frame == NULL) {
        return;
    }

    if (s->catching_up) {
        ngx_http_elearn_live_hold(&s->held, seq, frame);

    } else {
        ngx_http_elearn_live_fanout(s, seq, frame);
    }

    ngx_http_elearn_ws_frame_release(frame);
}


static void
ngx_http_elearn_live_announced(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_session_t *s = data;

    s->refs--;

    if (rc == NGX_OK && ngx_http_elearn_live_int(reply) >= 0) {
        ngx_http_elearn_live_stats.presence_publishes++;
    }

    ngx_http_elearn_live_session_unref(s);
}


/*
 * The count goes out once per interval after joins or leaves of this
 * worker, not once per join: a session of 1,000 filling up costs each
 * worker at most one PUBLISH per interval, and none once it is full.
 * The places of those who left go back in the same script call, so that
 * 1,000 sockets closing at once are not 1,000 Redis calls; a join may see
 * a session full for up to one interval longer than it is.
 */
static void
ngx_http_elearn_live_announce(ngx_event_t *ev)
{
    ngx_http_elearn_live_session_t *s = ev->data;

    ngx_int_t    rc;
    const char  *args[3];
    u_char       ms[NGX_INT64_LEN + 1], left[NGX_INT64_LEN + 1];

    s->refs--;

    if (!s->closing) {
        args[0] = (char *) ngx_http_elearn_live_num(ms,
                               ngx_http_elearn_live_worker->emcf->live_lease);
        args[1] = (char *) ngx_http_elearn_live_worker->worker;
        args[2] = (char *) ngx_http_elearn_live_num(left, s->leaving);

        rc = ngx_http_elearn_live_eval(s->id, 0, 0, "presence", 3, args, NULL,
                                       ngx_http_elearn_live_announced, s);
        if (rc == NGX_AGAIN) {
            s->refs++;
        }

        /* else the lease refresh sets the right count */
    }

    s->leaving = 0;

    ngx_http_elearn_live_session_unref(s);
}


/* a join or a leave here: the count is published at the interval's end */
static void
ngx_http_elearn_live_announce_later(ngx_http_elearn_live_session_t *s)
{
    if (s->announce.timer_set || s->closing) {
        return;
    }

    s->refs++;          /* the session stays until the count is out */
    ngx_add_timer(&s->announce,
                  ngx_http_elearn_live_worker->emcf->live_presence_interval);
}


/* the session's local side, created with its first participant */
static ngx_http_elearn_live_session_t *
ngx_http_elearn_live_session_get(int64_t id)
{
    ngx_http_elearn_live_session_t  *s;
    ngx_http_elearn_main_conf_t     *emcf;

    s = ngx_http_elearn_live_lookup(id);
    if (s) {
        return s;
    }

    emcf = ngx_http_elearn_live_worker->emcf;

    if (emcf->redis == NULL) {
        return NULL;
    }

    s = ngx_calloc(sizeof(ngx_http_elearn_live_session_t), ngx_cycle->log);
    if (s == NULL) {
        return NULL;
    }

    s->id = id;
    s->seq = -1;
    s->node.key = (ngx_rbtree_key_t) id;
    ngx_queue_init(&s->parts);

    s->channel.data = s->channel_data;
    s->channel.len = ngx_sprintf(s->channel_data,
                                 NGX_HTTP_ELEARN_LIVE_PREFIX "%L", id)
                     - s->channel_data;

    s->presence.handler = ngx_http_elearn_live_presence_send;
    s->presence.data = s;
    s->presence.log = ngx_cycle->log;
    s->presence.cancelable = 1;

    s->announce.handler = ngx_http_elearn_live_announce;
    s->announce.data = s;
    s->announce.log = ngx_cycle->log;
    s->announce.cancelable = 1;

    if (ngx_http_elearn_redis_subscribe(emcf->redis, &s->channel,
                                        ngx_http_elearn_live_message, s)
        != NGX_OK
        || ngx_http_elearn_redis_subscribe_state(emcf->redis, &s->channel,
                                      ngx_http_elearn_live_subscribed)
           != NGX_OK)
    {
        (void) ngx_http_elearn_redis_unsubscribe(emcf->redis, &s->channel);
        ngx_free(s);
        return NULL;
    }

    s->subscribed = 1;
    ngx_rbtree_insert(&ngx_http_elearn_live_worker->tree, &s->node);

    return s;
}


/* closing: every local participant hears it, then 1000 */
static void
ngx_http_elearn_live_session_close(ngx_http_elearn_live_session_t *s)
{
    ngx_queue_t                  *q;
    ngx_http_elearn_ws_frame_t   *frame;
    ngx_http_elearn_live_part_t  *p;

    s->closing = 1;
    s->row = 0;

    frame = ngx_http_elearn_ws_frame_create(NGX_HTTP_ELEARN_WS_TEXT,
                                    (u_char *) NGX_HTTP_ELEARN_LIVE_CLOSING,
                                    sizeof(NGX_HTTP_ELEARN_LIVE_CLOSING) - 1);

    for (q = ngx_queue_head(&s->parts);
         q != ngx_queue_sentinel(&s->parts);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_elearn_live_part_t, queue);

        if (p->state != NGX_HTTP_ELEARN_LIVE_OPEN) {
            /* a join in flight finds s->closing and answers 410 */
            continue;
        }

        if (frame) {
            (void) ngx_http_elearn_ws_send(p->ws, frame);
        }

        ngx_http_elearn_ws_close(p->ws, NGX_HTTP_ELEARN_WS_NORMAL,
                                 "session closed");
    }

    if (frame) {
        ngx_http_elearn_ws_frame_release(frame);
    }
}


/* --- participants --------------------------------------------------------- */


static void
ngx_http_elearn_live_part_free(ngx_http_elearn_live_part_t *p)
{
    ngx_http_elearn_live_session_t  *s;

    if (p->refs || p->state != NGX_HTTP_ELEARN_LIVE_GONE) {
        return;
    }

    if (p->expiry.timer_set) {
        ngx_del_timer(&p->expiry);
    }

    ngx_http_elearn_live_hold_free(&p->held);

    if (p->from) {
        ngx_free(p->from);
    }

    s = p->session;

    if (p->linked) {
        ngx_queue_remove(&p->queue);
        s->nlinked--;
    }

    ngx_free(p);

    ngx_http_elearn_live_session_unref(s);
}


/* the socket or the joining request is gone */
static void
ngx_http_elearn_live_part_gone(ngx_http_elearn_live_part_t *p)
{
    ngx_http_elearn_live_session_t  *s;

    s = p->session;

    if (p->state == NGX_HTTP_ELEARN_LIVE_OPEN) {
        ngx_http_elearn_live_stats.participants--;
    }

    p->state = NGX_HTTP_ELEARN_LIVE_GONE;
    p->ws = NULL;
    p->request = NULL;

    if (p->admitted) {
        p->admitted = 0;
        s->nparts--;

        if (!s->closing) {
            /* given back with the next presence count (one interval) */
            s->leaving++;
            ngx_http_elearn_live_announce_later(s);
        }
    }

    ngx_http_elearn_live_part_free(p);
}


static void
ngx_http_elearn_live_expiry(ngx_event_t *ev)
{
    ngx_http_elearn_live_part_t *p = ev->data;

    if (p->state != NGX_HTTP_ELEARN_LIVE_OPEN) {
        return;
    }

    if (!p->warned && ngx_time() < p->exp) {
        p->warned = 1;
        ngx_http_elearn_live_send_text(p, NGX_HTTP_ELEARN_LIVE_EXPIRING,
                                 sizeof(NGX_HTTP_ELEARN_LIVE_EXPIRING) - 1);
        ngx_add_timer(ev, (ngx_msec_t) (p->exp - ngx_time()) * 1000);
        return;
    }

    ngx_http_elearn_ws_close(p->ws, NGX_HTTP_ELEARN_LIVE_TOKEN_EXPIRED,
                             "token expired");
}


static void
ngx_http_elearn_live_on_close(ngx_http_elearn_ws_t *ws, ngx_uint_t code)
{
    ngx_http_elearn_live_part_t *p = ws->data;

    if (p) {
        ws->data = NULL;
        ngx_http_elearn_live_part_gone(p);
    }
}


/* the answer of a chat or broadcast's "pub" */
static void
ngx_http_elearn_live_published(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_part_t *p = data;

    int64_t  seq;

    p->refs--;

    seq = (rc == NGX_OK) ? ngx_http_elearn_live_int(reply) : -3;

    if (seq == -1) {
        ngx_http_elearn_live_send_text(p,
            "{\"type\":\"error\",\"code\":\"rate-limited\",\"detail\":"
            "\"too many messages per second\"}",
            sizeof("{\"type\":\"error\",\"code\":\"rate-limited\","
                   "\"detail\":\"too many messages per second\"}") - 1);

    } else if (seq == -2) {
        ngx_http_elearn_live_send_text(p,
            "{\"type\":\"error\",\"code\":\"closed\",\"detail\":"
            "\"the session is closed\"}",
            sizeof("{\"type\":\"error\",\"code\":\"closed\",\"detail\":"
                   "\"the session is closed\"}") - 1);

    } else if (seq < 0) {
        ngx_http_elearn_live_send_text(p,
            "{\"type\":\"error\",\"code\":\"unavailable\",\"detail\":"
            "\"the message could not be sent, try again\"}",
            sizeof("{\"type\":\"error\",\"code\":\"unavailable\",\"detail\":"
                   "\"the message could not be sent, try again\"}") - 1);
    }

    /* else it arrives on the channel like everyone else's */

    ngx_http_elearn_live_part_free(p);
}


static void
ngx_http_elearn_live_error(ngx_http_elearn_live_part_t *p, const char *code,
    const char *detail)
{
    u_char  *e;
    u_char   buf[256];

    e = ngx_snprintf(buf, sizeof(buf), "{\"type\":\"error\",\"code\":\"%s\","
                     "\"detail\":\"%s\"}", code, detail);

    ngx_http_elearn_live_send_text(p, (char *) buf, e - buf);
}


/* a chat or broadcast from a participant */
static void
ngx_http_elearn_live_on_message(ngx_http_elearn_ws_t *ws, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    ngx_http_elearn_live_part_t *p = ws->data;

    u_char                          *prefix, *e;
    size_t                           blen, lens[6];
    json_t                          *root, *type, *body;
    ngx_tm_t                         tm;
    ngx_int_t                        rc;
    ngx_uint_t                       broadcast;
    ngx_time_t                      *tp;
    const char                      *args[6], *t;
    ngx_http_elearn_main_conf_t     *emcf;
    u_char                           floor[NGX_INT64_LEN + 1];
    u_char                           rate[NGX_INT64_LEN + 1];
    u_char                           max[NGX_INT64_LEN + 1];
    u_char                           ms[NGX_INT64_LEN + 1];

    if (p == NULL || p->state != NGX_HTTP_ELEARN_LIVE_OPEN) {
        return;
    }

    emcf = ngx_http_elearn_live_worker->emcf;

    if (opcode != NGX_HTTP_ELEARN_WS_TEXT) {
        ngx_http_elearn_live_error(p, "bad-message", "messages are JSON text");
        return;
    }

    root = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, NULL);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        ngx_http_elearn_live_error(p, "bad-message",
                                   "a message is a JSON object");
        return;
    }

    type = json_object_get(root, "type");
    body = json_object_get(root, "body");
    t = json_is_string(type) ? json_string_value(type) : "";

    broadcast = (ngx_strcmp(t, "broadcast") == 0);

    if (!broadcast && ngx_strcmp(t, "chat") != 0) {
        json_decref(root);
        ngx_http_elearn_live_error(p, "bad-message",
                                   "type must be chat or broadcast");
        return;
    }

    if (broadcast && !p->owner) {
        json_decref(root);
        ngx_http_elearn_live_error(p, "forbidden",
                                   "only the course's instructor broadcasts");
        return;
    }

    if (!json_is_string(body) || json_string_length(body) == 0) {
        json_decref(root);
        ngx_http_elearn_live_error(p, "bad-message",
                                   "body must be a non-empty string");
        return;
    }

    blen = json_string_length(body);

    if (blen > emcf->live_chat_max_size) {
        json_decref(root);
        ngx_http_elearn_live_error(p, "too-large",
                                   "body is over the size limit");
        return;
    }

    /*
     * prefix..seq..suffix: the script numbers the message; "from", the
     * body and the time are serialized here, once
     */
    prefix = ngx_alloc(sizeof("{\"type\":\"broadcast\",\"seq\":")
                       + sizeof(",\"from\":,\"body\":\"\",\"ts\":\"\"}")
                       + p->from_len + 6 * blen + NGX_HTTP_ELEARN_LIVE_TS_LEN,
                       ngx_cycle->log);
    if (prefix == NULL) {
        json_decref(root);
        return;
    }

    e = ngx_sprintf(prefix, "{\"type\":\"%s\",\"seq\":", t);
    lens[0] = e - prefix;

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    args[1] = (char *) e;
    e = ngx_sprintf(e, ",\"from\":%*s,\"body\":\"", p->from_len, p->from);
    e = ngx_http_elearn_json_escape(e, (u_char *) json_string_value(body),
                                    blen);
    e = ngx_sprintf(e, "\",\"ts\":\"%4d-%02d-%02dT%02d:%02d:%02d.%03MZ\"}",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec, tp->msec);
    lens[1] = e - (u_char *) args[1];

    json_decref(root);

    args[0] = (char *) prefix;
    args[2] = (char *) ngx_http_elearn_live_num(floor,
                                   p->session->seq < 0 ? 0 : p->session->seq);
    args[3] = (char *) ngx_http_elearn_live_num(rate,
                                            broadcast ? 0
                                                      : emcf->live_chat_rate);
    args[4] = (char *) ngx_http_elearn_live_num(max, emcf->live_replay_max);
    args[5] = (char *) ngx_http_elearn_live_num(ms, emcf->live_replay_ttl);

    lens[2] = ngx_strlen(args[2]);
    lens[3] = ngx_strlen(args[3]);
    lens[4] = ngx_strlen(args[4]);
    lens[5] = ngx_strlen(args[5]);

    rc = ngx_http_elearn_live_eval(p->session->id, p->user_id, 0, "pub", 6,
                                   args, lens, ngx_http_elearn_live_published,
                                   p);

    ngx_free(prefix);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_live_error(p, "unavailable",
                                   "the message could not be sent, try "
                                   "again");
        return;
    }

    p->refs++;
}


/* --- joining -------------------------------------------------------------- */


/*
 * The join request's pool goes: before the session's row arrived p is
 * still only the request's; after, the client left before the upgrade
 * and its place (if any) is given back.
 */
static void
ngx_http_elearn_live_join_cleanup(void *data)
{
    ngx_http_elearn_live_part_t *p = data;

    p->cln = NULL;
    p->request = NULL;

    if (p->session == NULL) {
        if (p->from) {
            ngx_free(p->from);
        }

        ngx_free(p);
        return;
    }

    ngx_http_elearn_live_part_gone(p);
}


/* the request goes on without p (answered, or upgraded) */
static void
ngx_http_elearn_live_detach(ngx_http_elearn_live_part_t *p)
{
    if (p->cln) {
        p->cln->handler = NULL;
        p->cln = NULL;
    }

    p->request = NULL;
}


/* after the 101: the welcome, what was missed, then what came meanwhile */
static void
ngx_http_elearn_live_welcome(ngx_http_elearn_live_part_t *p,
    redisReply *reply)
{
    u_char                       *e;
    int64_t                       last;
    ngx_http_elearn_main_conf_t  *emcf;
    u_char                        buf[128];

    emcf = ngx_http_elearn_live_worker->emcf;

    last = ngx_http_elearn_live_int(reply->element[1]);
    if (p->session->seq > last) {
        last = p->session->seq;
    }

    p->state = NGX_HTTP_ELEARN_LIVE_OPEN;
    ngx_http_elearn_live_stats.participants++;

    e = ngx_sprintf(buf, "{\"type\":\"welcome\",\"sessionId\":%L,"
                    "\"participants\":%L,\"lastSeq\":%L}",
                    p->session->id, reply->element[0]->integer, last);
    ngx_http_elearn_live_send_text(p, (char *) buf, e - buf);

    /* a client ahead of the session (its numbers were reset): from now */
    p->last_seq = (p->want_seq >= 0 && p->want_seq <= last) ? p->want_seq
                                                             : last;

    ngx_http_elearn_live_catch_up_send(p->session, p, reply, 3, &p->held);

    /* the token: a warning shortly before it expires, then 4001 */
    p->expiry.handler = ngx_http_elearn_live_expiry;
    p->expiry.data = p;
    p->expiry.log = ngx_cycle->log;
    p->expiry.cancelable = 1;

    if (p->exp - (time_t) (emcf->live_token_warning / 1000) > ngx_time()) {
        ngx_add_timer(&p->expiry,
                      (ngx_msec_t) (p->exp - ngx_time()) * 1000
                      - emcf->live_token_warning);

    } else {
        ngx_add_timer(&p->expiry, 1);
    }

    /* revoked while joining: the sweeps only look at later revocations */
    (void) ngx_http_elearn_live_revoked(p);
}


/* "from" of p's messages, serialized once: every message repeats it */
static ngx_int_t
ngx_http_elearn_live_from(ngx_http_elearn_live_part_t *p, u_char *name,
    size_t len)
{
    u_char  *e;

    if (p->from) {
        ngx_free(p->from);
    }

    p->from = ngx_alloc(sizeof("{\"userId\":,\"displayName\":\"\","
                               "\"role\":\"instructor\"}")
                        + NGX_INT64_LEN + 6 * len, ngx_cycle->log);
    if (p->from == NULL) {
        return NGX_ERROR;
    }

    e = ngx_sprintf(p->from, "{\"userId\":%L,\"displayName\":\"", p->user_id);
    e = ngx_http_elearn_json_escape(e, name, len);
    e = ngx_sprintf(e, "\",\"role\":\"%s\"}",
                    ngx_http_elearn_role_name(p->role));
    p->from_len = e - p->from;

    return NGX_OK;
}


static void
ngx_http_elearn_live_admitted(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_part_t *p = data;

    int64_t                          n, seq, sid;
    ngx_http_request_t              *r;
    ngx_http_elearn_ctx_t           *ctx;
    ngx_http_elearn_ws_t            *ws;
    ngx_http_elearn_live_session_t  *s;

    p->refs--;
    s = p->session;
    r = p->request;
    sid = s->id;       /* s may go with p's place: the answers name sid */

    s->admitting--;

    n = -3;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ARRAY
        && reply->elements >= 1)
    {
        n = ngx_http_elearn_live_int(reply->element[0]);
    }

    if (n > 0) {
        p->admitted = 1;
        s->nparts++;
        ngx_http_elearn_live_announce_later(s);

        if (reply->elements >= 2) {
            seq = ngx_http_elearn_live_int(reply->element[1]);

            if (seq > s->seq) {
                s->seq = seq;
            }
        }

        if (s->catch_up_later && s->seq >= 0) {
            ngx_http_elearn_live_catch_up(s);
        }
    }

    if (r == NULL) {
        /* the client left meanwhile: give the place back */
        ngx_http_elearn_live_part_gone(p);
        return;
    }

    if (n == -5) {
        /* the enrollment status or the name is not cached: PostgreSQL */
        rc = ngx_http_elearn_live_query(r, NGX_HTTP_ELEARN_SQL_LIVE_GET,
                                        s->id, p->user_id,
                                        ngx_http_elearn_live_checked, p);
        if (rc == NGX_AGAIN) {
            return;
        }

        ngx_http_elearn_live_detach(p);
        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    ngx_http_elearn_live_detach(p);

    if (n == -4) {
        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                    "only the course's students and "
                                    "instructor may join this session"));
        return;
    }

    if (n == -1) {
        ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);
        if (ctx) {
            ctx->data = &ngx_http_elearn_live_full_mark;
        }

        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "session-full",
                                    "live session %L is full", sid));
        return;
    }

    if (n == -2 || s->closing) {
        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_ELEARN_GONE, "session-closed",
                                    "live session %L is closed", sid));
        return;
    }

    if (n < 0 || reply->elements < 3
        || reply->element[2]->type != REDIS_REPLY_STRING
        || ngx_http_elearn_live_from(p, (u_char *) reply->element[2]->str,
                                     reply->element[2]->len)
           != NGX_OK)
    {
        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r,
                rc == NGX_OK ? NGX_ERROR : rc, "redis"));
        return;
    }

    if (p->exp <= ngx_time()) {
        /* expired while waiting */
        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_UNAUTHORIZED, "invalid-token",
                                    "token expired"));
        return;
    }

    ws = ngx_http_elearn_ws_upgrade(r, &ngx_http_elearn_live_ws_handlers,
               ngx_http_elearn_ws_protocol_offered(r, "elearn.v1")
               ? &ngx_http_elearn_live_protocol : NULL);

    if (ws == NULL) {
        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ws->data = p;
    p->ws = ws;

    ngx_http_elearn_live_welcome(p, reply);

    ngx_http_elearn_finalize(r, NGX_DONE);
}


/*
 * p takes a place in s.  who: "owner" or "student" when the row came from
 * s (the script checks the cached enrollment status and display name, and
 * answers -5 on a miss), "known" when PostgreSQL just answered (name, and
 * enrolled: both stored for the next joins).
 */
static ngx_int_t
ngx_http_elearn_live_admit(ngx_http_elearn_live_part_t *p,
    ngx_http_elearn_live_session_t *s, const char *who, ngx_str_t *name,
    ngx_uint_t enrolled)
{
    ngx_int_t                     rc;
    ngx_uint_t                    i, n;
    const char                   *args[9];
    size_t                        lens[9];
    ngx_http_elearn_main_conf_t  *emcf;
    u_char                        lease[NGX_INT64_LEN + 1];
    u_char                        cap[NGX_INT64_LEN + 1];
    u_char                        last[NGX_INT64_LEN + 1];
    u_char                        ms[NGX_INT64_LEN + 1];
    u_char                        ttl[NGX_INT64_LEN + 1];

    emcf = ngx_http_elearn_live_worker->emcf;

    if (p->session == NULL) {
        /* from here p is the session's: it goes through part_gone */
        p->session = s;
        p->state = NGX_HTTP_ELEARN_LIVE_JOINING;
        ngx_queue_insert_tail(&s->parts, &p->queue);
        p->linked = 1;
        s->nlinked++;
    }

    args[0] = (char *) ngx_http_elearn_live_worker->worker;
    args[1] = (char *) ngx_http_elearn_live_num(lease, emcf->live_lease);
    args[2] = (char *) ngx_http_elearn_live_num(cap, s->capacity);
    args[3] = (char *) ngx_http_elearn_live_num(last, p->want_seq);
    args[4] = (char *) ngx_http_elearn_live_num(ms, emcf->live_replay_ttl);
    args[5] = who;
    n = 6;

    if (name) {
        args[6] = (char *) name->data;
        args[7] = (char *) ngx_http_elearn_live_num(ttl,
                                                    emcf->enroll_cache_ttl);
        args[8] = enrolled ? "1" : "0";
        n = 9;
    }

    for (i = 0; i < n; i++) {
        lens[i] = (i == 6) ? name->len : ngx_strlen(args[i]);
    }

    rc = ngx_http_elearn_live_eval(s->id, p->user_id, s->course_id, "admit",
                                   n, args, lens,
                                   ngx_http_elearn_live_admitted, p);
    if (rc == NGX_AGAIN) {
        p->refs++;
        s->admitting++;
    }

    return rc;
}


/* the session's row: who may join (PostgreSQL), then the place */
static void
ngx_http_elearn_live_checked(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_part_t *p = data;

    ngx_str_t                        name;
    ngx_uint_t                       owner;
    ngx_http_elearn_ctx_t           *ctx;
    ngx_http_elearn_live_rest_t      rest;
    ngx_http_elearn_main_conf_t     *emcf;
    ngx_http_elearn_live_session_t  *s;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);
    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    ngx_memzero(&rest, sizeof(ngx_http_elearn_live_rest_t));
    rest.id = ctx->ids[0];

    /*
     * until p joins the session, the request's cleanup frees it; after
     * (a cache miss asked here), its cleanup gives p back through part_gone
     */

    if (ngx_http_elearn_live_row(r, res, rc, &rest, ctx->user, 0, &owner, &rc)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r, rc);
        return;
    }

    if (rest.status.len != 4) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_ELEARN_GONE, "session-closed",
                                    "live session %L is closed", rest.id));
        return;
    }

    p->owner = owner;

    s = (p->session != NULL) ? p->session
                             : ngx_http_elearn_live_session_get(rest.id);
    if (s == NULL) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                            "redis"));
        return;
    }

    /* kept for the next joins of this worker, one lease period at most */
    if (!s->closing) {
        s->course_id = rest.course_id;
        s->owner_id = ngx_atoof((u_char *) PQgetvalue(res, 0, 5),
                                PQgetlength(res, 0, 5));
        s->capacity = rest.capacity;
        s->row_until = ngx_current_msec + emcf->live_lease / 3;
        s->row = 1;
    }

    name.data = (u_char *) PQgetvalue(res, 0, 7);
    name.len = PQgetlength(res, 0, 7);

    rc = ngx_http_elearn_live_admit(p, s, "known", &name,
                                    PQgetvalue(res, 0, 6)[0] == 't');
    if (rc != NGX_AGAIN) {
        ngx_http_elearn_live_detach(p);
        ngx_http_elearn_live_part_gone(p);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "redis"));
    }
}


/*
 * The token of a join: ?access_token= (then overwritten in the request
 * line, so that neither $request nor an error log line shows it) or the
 * subprotocol "bearer.<token>".  Verified as the access phase of the API
 * verifies a Bearer header.
 */
static ngx_int_t
ngx_http_elearn_live_token(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx,
    ngx_http_elearn_user_t *user)
{
    u_char                       *token, *p, *last;
    size_t                        len;
    ngx_str_t                     value, sid, jti;
    ngx_int_t                     rc;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_arg(r, (u_char *) "access_token", 12, &value) == NGX_OK
        && value.len)
    {
        token = ngx_pnalloc(r->pool, value.len);
        if (token == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(token, value.data, value.len);
        len = value.len;

        /* value points into the request line: mask it there */
        p = value.data;
        last = value.data + value.len;

        if (p >= r->request_line.data
            && last <= r->request_line.data + r->request_line.len)
        {
            ngx_memset(p, '*', last - p);
        }

    } else if (ngx_http_elearn_ws_protocol_value(r, "bearer.", &value)
               == NGX_OK)
    {
        token = value.data;
        len = value.len;

    } else {
        ctx->auth_error = "no access token";
        return NGX_DECLINED;
    }

    if (ngx_http_elearn_auth_token(r, token, len, user, &ctx->auth_error)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (emcf->revocations) {
        sid.data = user->sid;
        sid.len = ngx_strlen(user->sid);
        jti.data = user->jti;
        jti.len = ngx_strlen(user->jti);

        rc = ngx_http_elearn_revocations_check(emcf->revocations, &sid, &jti);

        if (rc == NGX_DECLINED) {
            ctx->auth_error = "token revoked";
            return NGX_DECLINED;
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_live_reject(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    ngx_table_elt_t  *h;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "elearn live: join refused: %s", ctx->auth_error);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");
    ngx_str_set(&h->value, "Bearer error=\"invalid_token\"");
    r->headers_out.www_authenticate = h;

    return ngx_http_elearn_problem(r, NGX_HTTP_UNAUTHORIZED, "invalid-token",
                                   "%s", ctx->auth_error);
}


/* the join's outcome, for the metrics: its status when the request goes */
static void
ngx_http_elearn_live_join_counted(void *data)
{
    ngx_http_elearn_ctx_t *ctx = data;

    ngx_uint_t  reason;

    switch (ctx->request->headers_out.status) {

    case NGX_HTTP_SWITCHING_PROTOCOLS:
        ngx_http_elearn_live_stats.joins++;
        return;

    case NGX_HTTP_UNAUTHORIZED:
        reason = NGX_HTTP_ELEARN_LIVE_REFUSED_TOKEN;
        break;

    case NGX_HTTP_FORBIDDEN:
        reason = NGX_HTTP_ELEARN_LIVE_REFUSED_FORBIDDEN;
        break;

    case NGX_HTTP_NOT_FOUND:
        reason = NGX_HTTP_ELEARN_LIVE_REFUSED_NOT_FOUND;
        break;

    case NGX_HTTP_ELEARN_GONE:
        reason = NGX_HTTP_ELEARN_LIVE_REFUSED_CLOSED;
        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        reason = (ctx->data == &ngx_http_elearn_live_full_mark)
                 ? NGX_HTTP_ELEARN_LIVE_REFUSED_FULL
                 : NGX_HTTP_ELEARN_LIVE_REFUSED_UNAVAILABLE;
        break;

    case 0:
        /* the client left before an answer */
        return;

    default:
        reason = (ctx->request->headers_out.status >= 500)
                 ? NGX_HTTP_ELEARN_LIVE_REFUSED_UNAVAILABLE
                 : NGX_HTTP_ELEARN_LIVE_REFUSED_BAD;
        break;
    }

    ngx_http_elearn_live_stats.refused[reason]++;
}


void
ngx_http_elearn_live_get_stats(ngx_http_elearn_live_stats_t *stats)
{
    ngx_rbtree_node_t  *root, *sentinel;

    *stats = ngx_http_elearn_live_stats;
    stats->sessions = 0;

    if (ngx_http_elearn_live_worker == NULL) {
        return;
    }

    root = ngx_http_elearn_live_worker->tree.root;
    sentinel = ngx_http_elearn_live_worker->tree.sentinel;

    if (root == sentinel) {
        return;
    }

    for (root = ngx_rbtree_min(root, sentinel);
         root != NULL;
         root = ngx_rbtree_next(&ngx_http_elearn_live_worker->tree, root))
    {
        stats->sessions++;
    }
}


/* GET /live/{sessionId} */
static ngx_int_t
ngx_http_elearn_live_handler(ngx_http_request_t *r)
{
    u_char                          *p, *last;
    int64_t                          id, want;
    ngx_str_t                        value;
    ngx_int_t                        rc;
    ngx_uint_t                       status;
    ngx_pool_cleanup_t              *cln;
    ngx_http_elearn_ctx_t           *ctx;
    ngx_http_elearn_user_t          *user;
    ngx_http_elearn_live_part_t     *part;
    ngx_http_elearn_live_session_t  *s;

    ctx = ngx_http_elearn_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->endpoint = NGX_HTTP_ELEARN_EP_LIVE_JOIN;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_elearn_live_join_counted;
    cln->data = ctx;

    /* /live/{id}: the location is a prefix, the rest is an id */
    p = r->uri.data + r->uri.len;
    last = p;

    while (p > r->uri.data && p[-1] >= '0' && p[-1] <= '9') {
        p--;
    }

    id = 0;

    if (p > r->uri.data && p[-1] == '/' && last - p <= 18) {
        for ( /* void */ ; p < last; p++) {
            id = id * 10 + (*p - '0');
        }
    }

    if (id <= 0 || ngx_http_elearn_live_worker == NULL) {
        return ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                       "no such live session");
    }

    ctx->ids[0] = id;
    ctx->nids = 1;

    status = ngx_http_elearn_ws_check(r);
    if (status) {
        return ngx_http_elearn_ws_reject(r, status);
    }

    user = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_user_t));
    if (user == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_elearn_live_token(r, ctx, user);

    if (rc == NGX_DECLINED) {
        return ngx_http_elearn_live_reject(r, ctx);
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        return ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "dependency-unavailable",
                                       "revocations cannot be checked");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->user = user;
    ctx->auth_done = 1;

    want = -1;

    if (ngx_http_arg(r, (u_char *) "lastSeq", 7, &value) == NGX_OK) {
        want = (value.len && value.len <= 18)
               ? ngx_atoof(value.data, value.len) : -1;

        if (want < 0) {
            return ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                           "bad-request",
                                           "lastSeq must be a non-negative "
                                           "integer");
        }
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    part = ngx_calloc(sizeof(ngx_http_elearn_live_part_t), ngx_cycle->log);
    if (part == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_elearn_live_join_cleanup;
    cln->data = part;
    part->cln = cln;
    part->request = r;

    part->user_id = user->user_id;
    part->role = user->role;
    part->exp = user->exp;
    ngx_memcpy(part->sid, user->sid, sizeof(part->sid));
    ngx_memcpy(part->jti, user->jti, sizeof(part->jti));
    part->want_seq = want;
    part->last_seq = 0;

    s = ngx_http_elearn_live_lookup(id);

    if (s && s->closing) {
        return ngx_http_elearn_problem(r, NGX_HTTP_ELEARN_GONE,
                                       "session-closed",
                                       "live session %L is closed", id);
    }

    if (s && s->row && (ngx_msec_int_t) (s->row_until - ngx_current_msec) > 0)
    {
        /*
         * the row is this worker's (no PostgreSQL): the script checks the
         * closed mark, the cached enrollment status and name, the place
         */
        part->owner = (s->owner_id == user->user_id
                       || user->role == NGX_HTTP_ELEARN_ROLE_ADMIN);

        rc = ngx_http_elearn_live_admit(part, s,
                                        part->owner ? "owner" : "student",
                                        NULL, 0);
        if (rc != NGX_AGAIN) {
            ngx_http_elearn_live_detach(part);
            ngx_http_elearn_live_part_gone(part);
            return ngx_http_elearn_problem_backend(r, rc, "redis");
        }

    } else {
        rc = ngx_http_elearn_live_query(r, NGX_HTTP_ELEARN_SQL_LIVE_GET, id,
                                        user->user_id,
                                        ngx_http_elearn_live_checked, part);
        if (rc != NGX_AGAIN) {
            return ngx_http_elearn_problem_backend(r, rc, "the database");
        }
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/* --- revocation on open sockets ------------------------------------------ */


/*
 * Closes an open participant whose token's login session or token id is
 * in the worker's revoked set (logout, session deleted, refresh token
 * replayed) with 4001, as an expired token is.  The set is in memory, fed
 * by Redis pub/sub: no Redis call here.  A set that cannot be trusted
 * closes nobody.  Returns whether it closed p.
 */
static ngx_uint_t
ngx_http_elearn_live_revoked(ngx_http_elearn_live_part_t *p)
{
    ngx_str_t                     sid, jti;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_elearn_live_worker->emcf;

    if (emcf->revocations == NULL || p->state != NGX_HTTP_ELEARN_LIVE_OPEN) {
        return 0;
    }

    sid.data = p->sid;
    sid.len = ngx_strlen(p->sid);
    jti.data = p->jti;
    jti.len = ngx_strlen(p->jti);

    if (ngx_http_elearn_revocations_check(emcf->revocations, &sid, &jti)
        != NGX_DECLINED)
    {
        return 0;
    }

    ngx_http_elearn_live_stats.revoked_closes++;

    /* on_close follows from an event: a caller's walk stays valid */
    ngx_http_elearn_ws_close(p->ws, NGX_HTTP_ELEARN_LIVE_TOKEN_EXPIRED,
                             "token revoked");

    return 1;
}


/*
 * Every elearn_live_revocation_check: when names were added to the
 * revoked set since the last sweep, every open participant is checked
 * (ngx_http_elearn_live_revoked).  A participant opened meanwhile checked
 * itself when it opened, so an unchanged set costs no walk.
 */
static void
ngx_http_elearn_live_revocation_sweep(ngx_event_t *ev)
{
    ngx_uint_t                       revision;
    ngx_queue_t                     *q;
    ngx_rbtree_node_t               *node, *root, *sentinel;
    ngx_http_elearn_main_conf_t     *emcf;
    ngx_http_elearn_live_session_t  *s;

    emcf = ngx_http_elearn_live_worker->emcf;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    root = ngx_http_elearn_live_worker->tree.root;
    sentinel = ngx_http_elearn_live_worker->tree.sentinel;

    revision = emcf->revocations
               ? ngx_http_elearn_revocations_revision(emcf->revocations) : 0;

    if (revision != ngx_http_elearn_live_worker->revision
        && root != sentinel)
    {
        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&ngx_http_elearn_live_worker->tree, node))
        {
            s = (ngx_http_elearn_live_session_t *) node;

            for (q = ngx_queue_head(&s->parts);
                 q != ngx_queue_sentinel(&s->parts);
                 q = ngx_queue_next(q))
            {
                (void) ngx_http_elearn_live_revoked(
                           ngx_queue_data(q, ngx_http_elearn_live_part_t,
                                          queue));
            }
        }
    }

    ngx_http_elearn_live_worker->revision = revision;

    ngx_add_timer(ev, emcf->live_revocation_check);
}


/* --- the lease ------------------------------------------------------------ */


static void
ngx_http_elearn_live_leased(ngx_http_request_t *nr, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_live_session_t *s = data;

    s->refs--;

    if (rc == NGX_OK && ngx_http_elearn_live_int(reply) == -2
        && !s->closing)
    {
        /* closed while this worker missed the message */
        ngx_http_elearn_live_session_close(s);
    }

    ngx_http_elearn_live_session_unref(s);
}


static void
ngx_http_elearn_live_lease_refresh(ngx_event_t *ev)
{
    ngx_rbtree_node_t               *node, *root, *sentinel;
    ngx_http_elearn_live_session_t  *s;
    ngx_http_elearn_main_conf_t     *emcf;
    const char                      *args[3];
    u_char                           lease[NGX_INT64_LEN + 1];
    u_char                           count[NGX_INT64_LEN + 1];

    emcf = ngx_http_elearn_live_worker->emcf;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    root = ngx_http_elearn_live_worker->tree.root;
    sentinel = ngx_http_elearn_live_worker->tree.sentinel;

    if (root != sentinel) {
        args[0] = (char *) ngx_http_elearn_live_worker->worker;
        args[1] = (char *) ngx_http_elearn_live_num(lease, emcf->live_lease);

        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&ngx_http_elearn_live_worker->tree, node))
        {
            s = (ngx_http_elearn_live_session_t *) node;

            if (s->closing) {
                continue;
            }

            /*
             * Redis runs the commands of this connection in order: an
             * admit sent before this one has taken its place by then,
             * though its answer is not here yet, so it counts (one that
             * is refused is counted until the next refresh: a session
             * looks fuller than it is, never emptier)
             */
            args[2] = (char *) ngx_http_elearn_live_num(count,
                                                 s->nparts + s->admitting);

            if (ngx_http_elearn_live_eval(s->id, 0, 0, "set", 3, args, NULL,
                                          ngx_http_elearn_live_leased, s)
                == NGX_AGAIN)
            {
                s->refs++;

                /* the count is absolute: those who left are in it */
                s->leaving = 0;
            }
        }
    }

    ngx_add_timer(ev, emcf->live_lease / 3);
}


/* --- configuration and process -------------------------------------------- */


char *
ngx_http_elearn_live_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_elearn_module);
    emcf->live_used = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate: the location has a handler already";
    }

    clcf->handler = ngx_http_elearn_live_handler;

    return NGX_CONF_OK;
}


char *
ngx_http_elearn_live_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf)
{
    ngx_conf_init_uint_value(emcf->live_capacity_max, 1000);
    ngx_conf_init_uint_value(emcf->live_capacity,
                             ngx_min(1000, emcf->live_capacity_max));
    ngx_conf_init_size_value(emcf->live_chat_max_size, 2048);
    ngx_conf_init_uint_value(emcf->live_chat_rate, 5);
    ngx_conf_init_uint_value(emcf->live_replay_max, 1000);
    ngx_conf_init_msec_value(emcf->live_replay_ttl, 300000);
    ngx_conf_init_msec_value(emcf->live_lease, 30000);
    ngx_conf_init_msec_value(emcf->live_token_warning, 30000);
    ngx_conf_init_msec_value(emcf->live_presence_interval, 1000);
    ngx_conf_init_msec_value(emcf->live_revocation_check, 1000);

    if (emcf->live_used && emcf->redis_addr.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_live\" needs \"elearn_redis_addr\": "
                           "live sessions are numbered and counted there");
        return NGX_CONF_ERROR;
    }

    if (emcf->live_capacity > emcf->live_capacity_max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_live_capacity\" must not be above "
                           "\"elearn_live_capacity_max\"");
        return NGX_CONF_ERROR;
    }

    if (emcf->live_chat_max_size == 0 || emcf->live_chat_max_size > 65536) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_live_chat_max_size\" must be between 1 "
                           "and 64k");
        return NGX_CONF_ERROR;
    }

    if (emcf->live_replay_ttl < 1000 || emcf->live_lease < 3000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_live_replay_ttl\" must be at least 1s "
                           "and \"elearn_live_lease\" at least 3s");
        return NGX_CONF_ERROR;
    }

    if (emcf->live_revocation_check > 0
        && (emcf->live_revocation_check < 100
            || emcf->live_revocation_check > 3600000))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_live_revocation_check\" must be 0 "
                           "(off) or between 100ms and 1h");
        return NGX_CONF_ERROR;
    }

    if (emcf->live_presence_interval < 10
        || emcf->live_presence_interval > 60000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_live_presence_interval\" must be "
                           "between 10ms and 60s");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_elearn_live_init_process(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf)
{
    u_char                         *p;
    ngx_http_elearn_live_worker_t  *w;
    u_char                          md[SHA_DIGEST_LENGTH];

    if (emcf->redis == NULL) {
        return NGX_OK;
    }

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_elearn_live_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&w->tree, &w->sentinel, ngx_rbtree_insert_value);

    w->emcf = emcf;

    /* EVALSHA's name of the script */
    (void) SHA1((u_char *) ngx_http_elearn_live_lua,
                sizeof(ngx_http_elearn_live_lua) - 1, md);

    (void) ngx_hex_dump(w->sha, md, SHA_DIGEST_LENGTH);

    /* unique among the nodes and over restarts: host, pid, start time */
    p = ngx_snprintf(w->worker, sizeof(w->worker) - 1, "%V:%P:%T",
                     &cycle->hostname, ngx_pid, ngx_time());
    *p = '\0';
    w->worker_len = p - w->worker;

    w->lease.handler = ngx_http_elearn_live_lease_refresh;
    w->lease.data = w;
    w->lease.log = cycle->log;
    w->lease.cancelable = 1;

    ngx_add_timer(&w->lease, emcf->live_lease / 3);

    if (emcf->live_revocation_check) {
        w->revoked.handler = ngx_http_elearn_live_revocation_sweep;
        w->revoked.data = w;
        w->revoked.log = cycle->log;
        w->revoked.cancelable = 1;

        ngx_add_timer(&w->revoked, emcf->live_revocation_check);
    }

    ngx_http_elearn_live_worker = w;

    return NGX_OK;
}


void
ngx_http_elearn_live_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_elearn_live_worker == NULL) {
        return;
    }

    if (ngx_http_elearn_live_worker->lease.timer_set) {
        ngx_del_timer(&ngx_http_elearn_live_worker->lease);
    }

    if (ngx_http_elearn_live_worker->revoked.timer_set) {
        ngx_del_timer(&ngx_http_elearn_live_worker->revoked);
    }

    /*
     * The sockets are closed by the ws layer; Redis goes before their
     * releases could be sent: this worker's places expire with its lease.
     */
}
