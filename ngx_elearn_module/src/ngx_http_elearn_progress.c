
/*
 * elearn progress: POST and GET /api/v1/videos/{id}/progress (contract
 * section 4, issue 5).
 *
 * A report is checked (body size, JSON, numbers, intervals), then the
 * caller's enrollment in the video's course (video metadata and the
 * enrollment status are cache-aside in Redis, video:{id} and
 * enroll:{user}:{course}), then written behind: one Lua script merges it
 * into progress:{user}:{video} in Redis (resume), one event goes to
 * elearn.progress keyed by the user, and the elearn-progress daemon
 * writes PostgreSQL in batches.  PostgreSQL is never touched on the
 * report path, except for cache misses of the two lookups and in the
 * bench-only naive location (elearn_progress_naive), which upserts one
 * row per report to show what write-behind saves.  When both lookups
 * hit, the whole report (lookups, bounds, merge) is one Redis script.
 * GET answers from the Redis hash, which its first read of a key seeds
 * once from video_progress.
 *
 * elearn_progress_ack chooses when the 204 is sent: "queued" once Redis
 * has the report and librdkafka accepted the event; "durable" only after
 * the broker's delivery report (the producer is idempotent, acks=all).
 * A durable request waits for that report at most
 * elearn_progress_ack_timeout; the report's memory is not in the
 * request's pool, and a request that goes first (timeout, client gone)
 * detaches from it in its pool cleanup, so a late report touches nothing
 * of it.  docs/progress.md gives each mode's loss window.
 *
 * Bad input is a problem response and writes nothing.  No SQL is built
 * from request text.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <math.h>
#include <jansson.h>
#include <openssl/rand.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_body.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_kafka.h"
#include "ngx_http_elearn_sql.h"
#include "ngx_http_elearn_progress.h"


#define NGX_HTTP_ELEARN_PROGRESS_BODY_MAX   4096
#define NGX_HTTP_ELEARN_PROGRESS_IV_MAX     64
#define NGX_HTTP_ELEARN_PROGRESS_ERR_MAX    8
#define NGX_HTTP_ELEARN_PROGRESS_KEY_LEN    (sizeof("progress::")          \
                                             + 2 * NGX_INT64_LEN)


/*
 * merge(): merges one report into progress:{user}:{video}, a hash:
 *   pos  the position of the newest report (by reportedAtMs)
 *   at   that report's reportedAtMs (the resource's updatedAt)
 *   w    the union of watched intervals, "from-to,from-to", sorted
 *   ws   the seconds the union covers
 *   x    when the key's TTL was last set to expire (ms, module clock)
 * k the key; pos the position; at reportedAtMs; list the report's
 * intervals in the same form as w (sorted, disjoint); ttl in seconds; d
 * the duration, which clamps positions and intervals; now the module's
 * clock in ms, or nil.  A late report (older reportedAtMs) still adds its
 * intervals but does not move the position back.
 *
 * It runs on every report, so it is written for Redis's CPU: one HMGET
 * and at most one HSET; the union is a linear merge of the two sorted
 * lists, and w and ws are rewritten only when the report adds something
 * (a report inside what was watched, the usual resend, writes pos and at
 * only).  The EXPIRE is renewed when a sixteenth of the TTL has passed
 * since the last renewal (x), so a key lives between 15/16 of the TTL
 * and the TTL after its last report; with now nil it is renewed always.
 */
#define NGX_HTTP_ELEARN_PROGRESS_MERGE_FN                                     \
    "local function merge(k, pos, at, list, ttl, d, now)\n"                   \
    "  local cur = redis.call('HMGET', k, 'at', 'w', 'x')\n"                  \
    "  local w, f, n = cur[2] or '', {}, 0\n"                                 \
    "  if tonumber(at) >= (tonumber(cur[1]) or -1) then\n"                    \
    "    f[1], f[2] = 'pos', math.min(tonumber(pos), d)\n"                    \
    "    f[3], f[4] = 'at', at\n"                                             \
    "    n = 4\n"                                                             \
    "  end\n"                                                                 \
    "  local A, B, na, nb = {}, {}, 0, 0\n"                                   \
    "  for a, b in string.gmatch(list, '(%d+)-(%d+)') do\n"                   \
    "    a, b = math.min(tonumber(a), d), math.min(tonumber(b), d)\n"         \
    "    if a < b then B[nb + 1], B[nb + 2], nb = a, b, nb + 2 end\n"         \
    "  end\n"                                                                 \
    "  for a, b in string.gmatch(w, '(%d+)-(%d+)') do\n"                      \
    "    A[na + 1], A[na + 2], na = tonumber(a), tonumber(b), na + 2\n"       \
    "  end\n"                                                                 \
    "  local i, j, same = 1, 1, cur[2] ~= false\n"                            \
    "  while same and j < nb do\n"                                            \
    "    while i < na and A[i + 1] < B[j + 1] do i = i + 2 end\n"             \
    "    if i > na or A[i] > B[j] then same = false end\n"                    \
    "    j = j + 2\n"                                                         \
    "  end\n"                                                                 \
    "  if not same then\n"                                                    \
    "    local out, ws, s, t = {}, 0, nil, nil\n"                             \
    "    i, j = 1, 1\n"                                                       \
    "    while i < na or j < nb do\n"                                         \
    "      local a, b\n"                                                      \
    "      if j >= nb or (i < na and A[i] <= B[j]) then\n"                    \
    "        a, b, i = A[i], A[i + 1], i + 2\n"                               \
    "      else\n"                                                            \
    "        a, b, j = B[j], B[j + 1], j + 2\n"                               \
    "      end\n"                                                             \
    "      if s ~= nil and a <= t then\n"                                     \
    "        if b > t then t = b end\n"                                       \
    "      else\n"                                                            \
    "        if s ~= nil then\n"                                              \
    "          out[#out + 1] = s .. '-' .. t\n"                               \
    "          ws = ws + t - s\n"                                             \
    "        end\n"                                                           \
    "        s, t = a, b\n"                                                   \
    "      end\n"                                                             \
    "    end\n"                                                               \
    "    if s ~= nil then\n"                                                  \
    "      out[#out + 1] = s .. '-' .. t\n"                                   \
    "      ws = ws + t - s\n"                                                 \
    "    end\n"                                                               \
    "    f[n + 1], f[n + 2] = 'w', table.concat(out, ',')\n"                  \
    "    f[n + 3], f[n + 4] = 'ws', ws\n"                                     \
    "    n = n + 4\n"                                                         \
    "  end\n"                                                                 \
    "  local x = tonumber(cur[3]) or 0\n"                                     \
    "  local renew = now == nil or x < now + ttl * 937.5\n"                   \
    "                or x > now + ttl * 1000\n"                               \
    "  if renew and now ~= nil then\n"                                        \
    "    f[n + 1], f[n + 2], n = 'x', now + ttl * 1000, n + 2\n"              \
    "  end\n"                                                                 \
    "  if n > 0 then redis.call('HSET', k, unpack(f)) end\n"                  \
    "  if renew then redis.call('EXPIRE', k, ttl) end\n"                      \
    "end\n"


/*
 * The merge alone, for a report whose lookups went to PostgreSQL: KEYS[1]
 * progress:{user}:{video}; ARGV[1] position, ARGV[2] reportedAtMs,
 * ARGV[3] intervals, ARGV[4] TTL, ARGV[5] duration.
 */
static const char  ngx_http_elearn_progress_merge_lua[] =
    NGX_HTTP_ELEARN_PROGRESS_MERGE_FN
    "merge(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),\n"
    "      tonumber(ARGV[5]), tonumber(ARGV[2]))\n"
    "return 1\n";


/*
 * A report in one round trip when both lookups hit: KEYS[1] video:{id},
 * KEYS[2] progress:{user}:{video}; ARGV[1] user id, ARGV[2] position,
 * ARGV[3] reportedAtMs, ARGV[4] intervals (rounded, not clamped yet),
 * ARGV[5] TTL, ARGV[6] the largest number of the report as sent (rounded
 * up to 1 ms), ARGV[7] elearn_progress_slack.  Returns nil when video:{id}
 * is not cached, else "what courseId durationSeconds": what is "-" when
 * enroll:{user}:{course} is not cached, "0" when not enrolled, "bounds"
 * when the report reaches past the video, all three without writing;
 * "ok" when merged.  One string, not a list: Redis builds a list reply
 * from a Lua table at about 1.3 us, a sixth of the whole script.  It
 * reads a key it is not given (enroll:...): fine on one Redis, not on a
 * Redis Cluster.
 */
static const char  ngx_http_elearn_progress_report_lua[] =
    NGX_HTTP_ELEARN_PROGRESS_MERGE_FN
    "local m = redis.call('HMGET', KEYS[1], 'courseId', 'durationSeconds')\n"
    "if not m[1] or not m[2] then return false end\n"
    "local e = redis.call('GET', 'enroll:' .. ARGV[1] .. ':' .. m[1])\n"
    "if e ~= '1' then return (e or '-') .. ' ' .. m[1] .. ' ' .. m[2] end\n"
    "local d = tonumber(m[2])\n"
    "if tonumber(ARGV[6]) > d + tonumber(ARGV[7]) then\n"
    "  return 'bounds ' .. m[1] .. ' ' .. m[2]\n"
    "end\n"
    "merge(KEYS[2], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), d,\n"
    "      tonumber(ARGV[3]))\n"
    "return 'ok ' .. m[1] .. ' ' .. m[2]\n";


/*
 * GET seeds progress:{user}:{video} from PostgreSQL once (a key that
 * reports created after it expired knows only those reports): KEYS[1] the
 * key; ARGV[1] PostgreSQL's position, ARGV[2] its updated_at in ms,
 * ARGV[3] its union, ARGV[4] TTL, ARGV[5] duration, ARGV[6] "1" when it
 * has completed_at, ARGV[7] "1" when it has a row at all.  The union is
 * merged in; the position only when Redis has none (PostgreSQL's
 * updated_at is when the daemon wrote, not when the report was made);
 * c = 1 keeps PostgreSQL's completion; s = 1 marks the key seeded.
 * Returns {pos, at, ws, c}, or {} when neither had anything.
 */
static const char  ngx_http_elearn_progress_seed_lua[] =
    NGX_HTTP_ELEARN_PROGRESS_MERGE_FN
    "local k, d, ttl = KEYS[1], tonumber(ARGV[5]), tonumber(ARGV[4])\n"
    "if ARGV[7] == '1' then\n"
    "  if redis.call('HEXISTS', k, 'at') == 0 then\n"
    "    merge(k, ARGV[1], ARGV[2], ARGV[3], ttl, d, nil)\n"
    "  else\n"
    "    merge(k, 0, -2, ARGV[3], ttl, d, nil)\n"
    "  end\n"
    "  if ARGV[6] == '1' then redis.call('HSET', k, 'c', 1) end\n"
    "end\n"
    "if redis.call('EXISTS', k) == 0 then return {} end\n"
    "redis.call('HSET', k, 's', 1)\n"
    "return redis.call('HMGET', k, 'pos', 'at', 'ws', 'c')\n";


/*
 * Both lookups for GET and the naive location: KEYS[1] video:{id},
 * ARGV[1] the user id.  Returns nil or "enrolled courseId
 * durationSeconds", enrolled "1", "0" or "-" (not cached).
 */
static const char  ngx_http_elearn_progress_lookup_lua[] =
    "local m = redis.call('HMGET', KEYS[1], 'courseId', 'durationSeconds')\n"
    "if not m[1] or not m[2] then return false end\n"
    "local e = redis.call('GET', 'enroll:' .. ARGV[1] .. ':' .. m[1])\n"
    "return (e or '-') .. ' ' .. m[1] .. ' ' .. m[2]\n";


#define NGX_HTTP_ELEARN_PROGRESS_MERGE   0
#define NGX_HTTP_ELEARN_PROGRESS_LOOKUP  1
#define NGX_HTTP_ELEARN_PROGRESS_REPORT  2
#define NGX_HTTP_ELEARN_PROGRESS_SEED    3

static ngx_http_elearn_redis_script_t  ngx_http_elearn_progress_scripts[] = {
    ngx_http_elearn_redis_script("progress merge",
                                 ngx_http_elearn_progress_merge_lua),
    ngx_http_elearn_redis_script("progress lookup",
                                 ngx_http_elearn_progress_lookup_lua),
    ngx_http_elearn_redis_script("progress report",
                                 ngx_http_elearn_progress_report_lua),
    ngx_http_elearn_redis_script("progress seed",
                                 ngx_http_elearn_progress_seed_lua)
};


typedef struct ngx_http_elearn_progress_s  ngx_http_elearn_progress_t;


/* the durable wait: malloc'ed, freed by the delivery report */
typedef struct {
    ngx_http_elearn_kafka_report_t   report;    /* first: the cast back */
    ngx_http_elearn_progress_t      *progress;  /* NULL: detached */
} ngx_http_elearn_progress_ticket_t;


struct ngx_http_elearn_progress_s {
    ngx_http_request_t                *request;
    int64_t                            user_id;
    int64_t                            video_id;
    int64_t                            course_id;
    ngx_int_t                          duration;   /* -1: not transcoded */

    /* the report as sent, checked for shape only */
    double                             position;
    ngx_uint_t                         nraw;
    double                             raw[NGX_HTTP_ELEARN_PROGRESS_IV_MAX][2];

    /* normalized: whole seconds within the video, merged */
    int64_t                            pos;
    ngx_uint_t                         niv;
    int64_t                            iv[NGX_HTTP_ELEARN_PROGRESS_IV_MAX][2];
    int64_t                            reported_ms;

    u_char                             user[NGX_INT64_LEN + 1];
    u_char                             video[NGX_INT64_LEN + 1];
    u_char                             course[NGX_INT64_LEN + 1];
    const char                        *values[5];
    int                                nvalues;

    /* a script's argv (kept for the EVAL retry) and reply handler */
    ngx_http_elearn_redis_handler_pt   handler;
    int                                argc;
    const char                        *argv[12];
    size_t                             argvlen[12];
    u_char                             vkey[sizeof("video:")
                                            + NGX_INT64_LEN];

    ngx_http_elearn_progress_ticket_t *ticket;
    ngx_event_t                        ack_timer;

    /* GET: what PostgreSQL said, for when Redis fails meanwhile */
    int64_t                            pg_pos;
    int64_t                            pg_watched;
    ngx_str_t                          pg_updated;
    unsigned                           pg_completed:1;
    unsigned                           had:1;      /* Redis had the key */

    unsigned                           report:1;   /* POST, not GET */
    unsigned                           enrolled:1;
};


static ngx_int_t ngx_http_elearn_progress_video(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_looked_up(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_eval(ngx_http_elearn_progress_t *p,
    ngx_uint_t script, ngx_http_elearn_redis_handler_pt handler);
static void ngx_http_elearn_progress_script_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_video_query(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_video_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_enrollment(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_enroll_cached(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_enroll_query(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_enroll_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_decide(
    ngx_http_elearn_progress_t *p);
static ngx_int_t ngx_http_elearn_progress_check(
    ngx_http_elearn_progress_t *p, ngx_int_t *answer);
static void ngx_http_elearn_progress_normalize(ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_clamp(ngx_http_elearn_progress_t *p);
static ngx_int_t ngx_http_elearn_progress_broker(
    ngx_http_elearn_progress_t *p, ngx_int_t *answer);
static ngx_int_t ngx_http_elearn_progress_fast(ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_reported(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_naive(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_naive_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_store(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_stored(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_produce(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_delivered(
    ngx_http_elearn_kafka_report_t *report, ngx_int_t rc);
static void ngx_http_elearn_progress_ack_timeout(ngx_event_t *ev);
static void ngx_http_elearn_progress_cleanup(void *data);
static ngx_int_t ngx_http_elearn_progress_read(ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_read_cached(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_read_query(
    ngx_http_elearn_progress_t *p);
static void ngx_http_elearn_progress_seeded(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_elearn_progress_read_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_progress_answer(
    ngx_http_elearn_progress_t *p, int64_t pos, int64_t watched,
    ngx_uint_t completed, ngx_str_t *updated);


/* --- configuration ------------------------------------------------------ */

char *
ngx_http_elearn_progress_set_ratio(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    u_char      *p, *last;
    ngx_str_t   *value;
    ngx_uint_t  *field, n, scale, frac;

    field = (ngx_uint_t *) ((u_char *) conf + cmd->offset);

    if (*field != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    p = value[1].data;
    last = p + value[1].len;

    n = 0;
    frac = 0;
    scale = 1000000;

    if (p == last || *p < '0' || *p > '9') {
        goto invalid;
    }

    for ( /* void */ ; p < last && *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');

        if (n > 1) {
            goto invalid;
        }
    }

    if (p < last && *p == '.') {
        p++;

        if (p == last) {
            goto invalid;
        }

        for ( /* void */ ; p < last && *p >= '0' && *p <= '9'; p++) {
            if (scale > 1) {
                scale /= 10;
                frac += (*p - '0') * scale;
            }
        }
    }

    if (p != last) {
        goto invalid;
    }

    n = n * 1000000 + frac;

    if (n == 0 || n > 1000000) {
        goto invalid;
    }

    *field = n;

    return NGX_CONF_OK;

invalid:

    return "must be a ratio above 0 and at most 1, such as 0.9";
}


char *
ngx_http_elearn_progress_set_ack(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t        *value;
    ngx_uint_t       *field;
    ngx_conf_enum_t  *e;

    field = (ngx_uint_t *) ((u_char *) conf + cmd->offset);

    if (*field != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (e = cmd->post; e->name.len; e++) {
        if (e->name.len == value[1].len
            && ngx_strncmp(e->name.data, value[1].data, value[1].len) == 0)
        {
            *field = e->value;
            return NGX_CONF_OK;
        }
    }

    return "must be \"queued\" or \"durable\"";
}


char *
ngx_http_elearn_progress_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf)
{
    ngx_conf_init_value(emcf->video_cache_ttl, 600);
    ngx_conf_init_value(emcf->enroll_cache_ttl, 300);
    ngx_conf_init_value(emcf->enroll_negative_ttl, 10);
    ngx_conf_init_value(emcf->progress_ttl, 30 * 86400);
    ngx_conf_init_value(emcf->progress_slack, 5);
    ngx_conf_init_uint_value(emcf->progress_completion, 900000);

    if (emcf->video_cache_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_video_cache_ttl\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (emcf->enroll_cache_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_enrollment_cache_ttl\" must be "
                           "positive");
        return NGX_CONF_ERROR;
    }

    if (emcf->enroll_negative_ttl <= 0
        || emcf->enroll_negative_ttl > emcf->enroll_cache_ttl)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_enrollment_negative_ttl\" must be "
                           "positive and at most "
                           "\"elearn_enrollment_cache_ttl\"");
        return NGX_CONF_ERROR;
    }

    if (emcf->progress_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_progress_ttl\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (emcf->progress_slack < 0 || emcf->progress_slack > 3600) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_progress_slack\" must be between 0 "
                           "and 1h");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* --- the handlers ------------------------------------------------------- */

static ngx_http_elearn_progress_t *
ngx_http_elearn_progress_create(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx, ngx_uint_t report)
{
    ngx_time_t                  *tp;
    ngx_pool_cleanup_t          *cln;
    ngx_http_elearn_progress_t  *p;

    p = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_progress_t));
    if (p == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_elearn_progress_cleanup;
    cln->data = p;

    tp = ngx_timeofday();

    p->request = r;
    p->report = report;
    p->user_id = ctx->user->user_id;
    p->video_id = ctx->ids[0];
    p->duration = -1;
    p->reported_ms = (int64_t) tp->sec * 1000 + tp->msec;

    *ngx_sprintf(p->user, "%L", p->user_id) = '\0';
    *ngx_sprintf(p->video, "%L", p->video_id) = '\0';

    p->ack_timer.handler = ngx_http_elearn_progress_ack_timeout;
    p->ack_timer.data = p;
    p->ack_timer.log = ngx_cycle->log;

    return p;
}


static void
ngx_http_elearn_progress_cleanup(void *data)
{
    ngx_http_elearn_progress_t *p = data;

    if (p->ticket) {
        /* the delivery report comes later and frees the ticket alone */
        p->ticket->progress = NULL;
        p->ticket = NULL;
    }

    if (p->ack_timer.timer_set) {
        ngx_del_timer(&p->ack_timer);
    }
}


/*
 * Adds a field error: field, or "field[index]" (built in r->pool) when
 * index >= 0; message must live as long as the request.  At most ERR_MAX
 * are kept.
 */
static void
ngx_http_elearn_progress_error(ngx_http_request_t *r,
    ngx_http_elearn_field_error_t *errors, ngx_uint_t *n, const char *field,
    ngx_int_t index, const char *message)
{
    u_char  *s;

    if (*n == NGX_HTTP_ELEARN_PROGRESS_ERR_MAX) {
        return;
    }

    if (index >= 0) {
        s = ngx_pnalloc(r->pool, sizeof("watched[]") + NGX_INT_T_LEN);
        if (s == NULL) {
            return;
        }

        *ngx_sprintf(s, "%s[%i]", field, index) = '\0';
        field = (char *) s;
    }

    errors[*n].field = field;
    errors[*n].message = message;
    (*n)++;
}


/*
 * The shape of the report, before anything is known of the video.
 * NGX_OK, or NGX_DECLINED with the 422 sent and *answer holding what
 * sending it returned.
 */
static ngx_int_t
ngx_http_elearn_progress_parse(ngx_http_elearn_progress_t *p, json_t *body,
    ngx_int_t *answer)
{
    size_t                          i;
    double                          from, to, prev;
    json_t                         *pos, *watched, *iv, *a, *b;
    ngx_uint_t                      n;
    ngx_http_request_t             *r;
    ngx_http_elearn_field_error_t   errors[NGX_HTTP_ELEARN_PROGRESS_ERR_MAX];

    r = p->request;
    n = 0;

    pos = json_object_get(body, "positionSeconds");

    if (pos == NULL) {
        ngx_http_elearn_progress_error(r, errors, &n, "positionSeconds", -1,
                                       "is required");

    } else if (!json_is_number(pos)) {
        ngx_http_elearn_progress_error(r, errors, &n, "positionSeconds", -1,
                                       "must be a number");

    } else {
        p->position = json_number_value(pos);

        if (!isfinite(p->position) || p->position < 0) {
            ngx_http_elearn_progress_error(r, errors, &n, "positionSeconds",
                                           -1, "must not be negative");
        }
    }

    watched = json_object_get(body, "watched");

    if (watched == NULL) {
        ngx_http_elearn_progress_error(r, errors, &n, "watched", -1,
                                       "is required (an empty list when "
                                       "nothing was played)");

    } else if (!json_is_array(watched)) {
        ngx_http_elearn_progress_error(r, errors, &n, "watched", -1,
                                       "must be a list of [from, to] "
                                       "intervals");

    } else if (json_array_size(watched) > NGX_HTTP_ELEARN_PROGRESS_IV_MAX) {
        ngx_http_elearn_progress_error(r, errors, &n, "watched", -1,
                                       "at most 64 intervals per report");

    } else {
        prev = 0;

        json_array_foreach(watched, i, iv) {
            a = json_array_get(iv, 0);
            b = json_array_get(iv, 1);

            if (!json_is_array(iv) || json_array_size(iv) != 2
                || !json_is_number(a) || !json_is_number(b))
            {
                ngx_http_elearn_progress_error(r, errors, &n, "watched", i,
                                               "must be [from, to], two "
                                               "numbers of seconds");
                continue;
            }

            from = json_number_value(a);
            to = json_number_value(b);

            if (!isfinite(from) || !isfinite(to) || from < 0) {
                ngx_http_elearn_progress_error(r, errors, &n, "watched", i,
                                               "must not be negative");
                continue;
            }

            if (from >= to) {
                ngx_http_elearn_progress_error(r, errors, &n, "watched", i,
                                               "from must be less than to");
                continue;
            }

            if (from < prev) {
                ngx_http_elearn_progress_error(r, errors, &n, "watched", i,
                                               "intervals must be in order "
                                               "and must not overlap");
            }

            prev = to;
            p->raw[p->nraw][0] = from;
            p->raw[p->nraw][1] = to;
            p->nraw++;
        }
    }

    if (n) {
        *answer = ngx_http_elearn_problem_fields(r, "invalid progress report",
                                                 errors, n);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_elearn_progress_body(ngx_http_request_t *r, json_t *body)
{
    size_t                       len;
    ngx_int_t                    rc, answer;
    ngx_chain_t                 *cl;
    ngx_http_elearn_loc_conf_t  *elcf;
    ngx_http_elearn_ctx_t       *ctx;
    ngx_http_elearn_progress_t  *p;

    ctx = ngx_http_elearn_get_ctx(r);

    /* a chunked body has no Content-Length to refuse it by */
    len = 0;

    for (cl = r->request_body ? r->request_body->bufs : NULL; cl;
         cl = cl->next)
    {
        len += ngx_buf_size(cl->buf);
    }

    if (len > NGX_HTTP_ELEARN_PROGRESS_BODY_MAX) {
        json_decref(body);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "body-too-large",
                                    "a progress report is at most %d bytes",
                                    NGX_HTTP_ELEARN_PROGRESS_BODY_MAX));
        return;
    }

    p = ngx_http_elearn_progress_create(r, ctx, 1);
    if (p == NULL) {
        json_decref(body);
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_elearn_progress_parse(p, body, &answer);
    json_decref(body);

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    if (rc != NGX_OK) {
        rc = answer;

    } else if (elcf->progress_naive) {
        rc = ngx_http_elearn_progress_video(p);

    } else {
        if (ngx_http_elearn_progress_broker(p, &rc) == NGX_OK) {
            rc = ngx_http_elearn_progress_fast(p);
        }
    }

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r, rc);
        return;
    }

    /* a client that goes away now ends the request (499) */
    r->read_event_handler = ngx_http_test_reading;
}


/* POST /api/v1/videos/{id}/progress */
ngx_int_t
ngx_http_elearn_progress_report(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    if (r->headers_in.content_length_n > NGX_HTTP_ELEARN_PROGRESS_BODY_MAX) {
        return ngx_http_elearn_problem(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "body-too-large",
                                       "a progress report is at most %d "
                                       "bytes",
                                       NGX_HTTP_ELEARN_PROGRESS_BODY_MAX);
    }

    return ngx_http_elearn_read_json(r, ngx_http_elearn_progress_body);
}


/* GET /api/v1/videos/{id}/progress */
ngx_int_t
ngx_http_elearn_progress_get(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_http_elearn_progress_t  *p;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_http_elearn_progress_create(r, ctx, 0);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_elearn_progress_video(p);

    if (rc != NGX_AGAIN) {
        return rc;
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/*
 * Each step below returns NGX_AGAIN when it waits for a backend (its
 * callback goes on), or what a content handler returns once the request
 * is answered; callbacks finalize with that.
 */

#define ngx_http_elearn_progress_next(r, rc)                                  \
    if ((rc) != NGX_AGAIN) {                                                  \
        ngx_http_elearn_finalize(r, rc);                                      \
    }


/*
 * Runs sql for p's request with $1 the user and $2 second, or, second
 * NULL, with the p->nvalues parameters in p->values:
 * NGX_AGAIN (handler follows), or the 503 answered when the query could
 * not even be queued.
 */
static ngx_int_t
ngx_http_elearn_progress_query(ngx_http_elearn_progress_t *p, u_char *second,
    const char *sql, ngx_http_elearn_pg_handler_pt handler)
{
    ngx_int_t  rc;

    if (second != NULL) {
        p->values[0] = (char *) p->user;
        p->values[1] = (char *) second;
        p->nvalues = 2;
    }

    rc = ngx_http_elearn_pg_query(p->request, sql, p->nvalues, p->values,
                                  handler, p);
    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_elearn_problem_backend(p->request, rc, "the database");
}


/*
 * A cache read: the Redis command, whose handler goes on; or, with Redis
 * not connected, what fallback (the PostgreSQL query) returns.
 */
static ngx_int_t
ngx_http_elearn_progress_cached(ngx_http_elearn_progress_t *p, int argc,
    const char **argv, const size_t *argvlen,
    ngx_http_elearn_redis_handler_pt handler,
    ngx_int_t (*fallback)(ngx_http_elearn_progress_t *p))
{
    if (ngx_http_elearn_redis_command(p->request, handler, p, argc, argv,
                                      argvlen)
        == NGX_AGAIN)
    {
        return NGX_AGAIN;
    }

    return fallback(p);
}


/*
 * NGX_OK when a query handler got a result of the expected status;
 * otherwise the request is answered (503/504) and NGX_ERROR returned.
 */
static ngx_int_t
ngx_http_elearn_progress_result(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, ExecStatusType status, const char *what)
{
    if (rc == NGX_OK && PQresultStatus(res) != status) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn progress: %s failed: %s", what,
                      PQresultErrorMessage(res));
        rc = NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* --- video metadata: video:{id} -> courseId, durationSeconds ------------ */

static ngx_int_t
ngx_http_elearn_progress_video(ngx_http_elearn_progress_t *p)
{
    ngx_int_t  rc;

    p->argv[2] = "1";
    p->argvlen[2] = 1;
    p->argv[3] = (char *) p->vkey;
    p->argvlen[3] = ngx_sprintf(p->vkey, "video:%L", p->video_id) - p->vkey;
    p->argv[4] = (char *) p->user;
    p->argvlen[4] = ngx_strlen(p->user);
    p->argc = 5;

    rc = ngx_http_elearn_progress_eval(p, NGX_HTTP_ELEARN_PROGRESS_LOOKUP,
                                       ngx_http_elearn_progress_looked_up);
    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    /* Redis down: PostgreSQL answers, as for any miss */
    return ngx_http_elearn_progress_video_query(p);
}


static ngx_int_t
ngx_http_elearn_progress_number(const char *s, size_t len, int64_t *n)
{
    off_t  v;

    v = ngx_atoof((u_char *) s, len);
    if (v == NGX_ERROR) {
        return NGX_ERROR;
    }

    *n = v;

    return NGX_OK;
}


/*
 * The "what courseId durationSeconds" answer of the lookup and report
 * scripts: sets p's course and duration and what, and returns NGX_OK; or
 * NGX_DECLINED when the video is not cached (or the answer is not that).
 */
static ngx_int_t
ngx_http_elearn_progress_meta(ngx_http_elearn_progress_t *p,
    redisReply *reply, ngx_int_t rc, ngx_str_t *what)
{
    u_char   *s, *last, *c, *d;
    int64_t   course, duration;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_STRING) {
        return NGX_DECLINED;
    }

    s = (u_char *) reply->str;
    last = s + reply->len;

    c = ngx_strlchr(s, last, ' ');
    if (c == NULL) {
        return NGX_DECLINED;
    }

    d = ngx_strlchr(c + 1, last, ' ');
    if (d == NULL
        || ngx_http_elearn_progress_number((char *) c + 1, d - c - 1,
                                           &course)
           != NGX_OK
        || ngx_http_elearn_progress_number((char *) d + 1, last - d - 1,
                                           &duration)
           != NGX_OK
        || duration > NGX_MAX_INT32_VALUE)
    {
        return NGX_DECLINED;
    }

    p->course_id = course;
    p->duration = (ngx_int_t) duration;
    *ngx_sprintf(p->course, "%L", p->course_id) = '\0';

    what->data = s;
    what->len = c - s;

    return NGX_OK;
}


/* the lookup script's answer: both cached, one, or none */
static void
ngx_http_elearn_progress_looked_up(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    ngx_str_t  e;

    if (ngx_http_elearn_progress_meta(p, reply, rc, &e) != NGX_OK) {
        rc = ngx_http_elearn_progress_video_query(p);

    } else if (e.len == 1 && (e.data[0] == '1' || e.data[0] == '0')) {
        p->enrolled = (e.data[0] == '1');
        rc = ngx_http_elearn_progress_decide(p);

    } else {
        rc = ngx_http_elearn_progress_enroll_query(p);
    }

    ngx_http_elearn_progress_next(r, rc);
}


/*
 * Runs one of the scripts with p->argv[2 .. p->argc - 1] (numkeys, keys,
 * args) through ngx_http_elearn_redis_eval() (EVALSHA, EVAL once after a
 * NOSCRIPT).  handler gets the reply; an error reply (logged there)
 * becomes rc NGX_HTTP_SERVICE_UNAVAILABLE with reply NULL.
 */
static ngx_int_t
ngx_http_elearn_progress_eval(ngx_http_elearn_progress_t *p,
    ngx_uint_t script, ngx_http_elearn_redis_handler_pt handler)
{
    ngx_int_t  nkeys;

    nkeys = ngx_atoi((u_char *) p->argv[2], p->argvlen[2]);
    if (nkeys == NGX_ERROR) {
        return NGX_ERROR;
    }

    p->handler = handler;

    return ngx_http_elearn_redis_eval(p->request,
                                      &ngx_http_elearn_progress_scripts[script],
                                      ngx_http_elearn_progress_script_reply,
                                      p, nkeys, p->argc - 3, p->argv + 3,
                                      p->argvlen + 3);
}


static void
ngx_http_elearn_progress_script_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ERROR) {
        rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        reply = NULL;
    }

    p->handler(r, reply, rc, p);
}


static ngx_int_t
ngx_http_elearn_progress_video_query(ngx_http_elearn_progress_t *p)
{
    p->values[0] = (char *) p->video;
    p->nvalues = 1;

    return ngx_http_elearn_progress_query(p, NULL,
               NGX_HTTP_ELEARN_SQL_PROGRESS_VIDEO_META,
               ngx_http_elearn_progress_video_done);
}


/* HSET video:{id} ... EXPIRE, fire and forget */
static void
ngx_http_elearn_progress_video_fill(ngx_http_elearn_progress_t *p)
{
    u_char                       *last;
    const char                   *argv[6];
    size_t                        argvlen[6];
    ngx_http_elearn_main_conf_t  *emcf;
    u_char                        key[sizeof("video:") + NGX_INT64_LEN];
    u_char                        dur[NGX_INT_T_LEN];
    u_char                        ttl[NGX_TIME_T_LEN];

    emcf = ngx_http_get_module_main_conf(p->request, ngx_http_elearn_module);

    last = ngx_sprintf(key, "video:%L", p->video_id);

    argv[0] = "HSET";
    argvlen[0] = sizeof("HSET") - 1;
    argv[1] = (char *) key;
    argvlen[1] = last - key;
    argv[2] = "courseId";
    argvlen[2] = sizeof("courseId") - 1;
    argv[3] = (char *) p->course;
    argvlen[3] = ngx_strlen(p->course);
    argv[4] = "durationSeconds";
    argvlen[4] = sizeof("durationSeconds") - 1;
    argv[5] = (char *) dur;
    argvlen[5] = ngx_sprintf(dur, "%i", p->duration) - dur;

    if (ngx_http_elearn_redis_command(NULL, NULL, NULL, 6, argv, argvlen)
        != NGX_AGAIN)
    {
        return;
    }

    argv[0] = "EXPIRE";
    argvlen[0] = sizeof("EXPIRE") - 1;
    argv[2] = (char *) ttl;
    argvlen[2] = ngx_sprintf(ttl, "%T", emcf->video_cache_ttl) - ttl;

    (void) ngx_http_elearn_redis_command(NULL, NULL, NULL, 3, argv, argvlen);
}


static void
ngx_http_elearn_progress_video_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    int64_t  n;

    if (ngx_http_elearn_progress_result(r, res, rc, PGRES_TUPLES_OK,
                                        "video lookup")
        != NGX_OK)
    {
        return;
    }

    if (PQntuples(res) != 1
        || ngx_http_elearn_progress_number(PQgetvalue(res, 0, 0),
                                           PQgetlength(res, 0, 0), &n)
           != NGX_OK)
    {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                    "video %L does not exist",
                                    p->video_id));
        return;
    }

    p->course_id = n;
    *ngx_sprintf(p->course, "%L", p->course_id) = '\0';

    if (!PQgetisnull(res, 0, 1)
        && ngx_http_elearn_progress_number(PQgetvalue(res, 0, 1),
                                           PQgetlength(res, 0, 1), &n)
           == NGX_OK
        && n <= NGX_MAX_INT32_VALUE)
    {
        p->duration = (ngx_int_t) n;

        /* only transcoded videos: a 409 must turn 2xx once they are */
        ngx_http_elearn_progress_video_fill(p);
    }

    rc = ngx_http_elearn_progress_enrollment(p);
    ngx_http_elearn_progress_next(r, rc);
}


/* --- enrollment status: enroll:{user}:{course} -> "1" or "0" ------------- */

static size_t
ngx_http_elearn_progress_enroll_key(ngx_http_elearn_progress_t *p,
    u_char *key)
{
    return ngx_sprintf(key, "enroll:%L:%L", p->user_id, p->course_id) - key;
}


static ngx_int_t
ngx_http_elearn_progress_enrollment(ngx_http_elearn_progress_t *p)
{
    const char  *argv[2];
    size_t       argvlen[2];
    u_char       key[sizeof("enroll::") + 2 * NGX_INT64_LEN];

    *ngx_sprintf(p->course, "%L", p->course_id) = '\0';

    argv[0] = "GET";
    argvlen[0] = sizeof("GET") - 1;
    argv[1] = (char *) key;
    argvlen[1] = ngx_http_elearn_progress_enroll_key(p, key);

    return ngx_http_elearn_progress_cached(p, 2, argv, argvlen,
                                       ngx_http_elearn_progress_enroll_cached,
                                       ngx_http_elearn_progress_enroll_query);
}


static ngx_int_t
ngx_http_elearn_progress_enroll_query(ngx_http_elearn_progress_t *p)
{
    return ngx_http_elearn_progress_query(p, p->course,
               NGX_HTTP_ELEARN_SQL_PROGRESS_ENROLLED,
               ngx_http_elearn_progress_enroll_done);
}


static void
ngx_http_elearn_progress_enroll_cached(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_STRING && reply->len == 1
        && (reply->str[0] == '1' || reply->str[0] == '0'))
    {
        p->enrolled = (reply->str[0] == '1');

        rc = ngx_http_elearn_progress_decide(p);
        ngx_http_elearn_progress_next(r, rc);
        return;
    }

    rc = ngx_http_elearn_progress_enroll_query(p);
    ngx_http_elearn_progress_next(r, rc);
}


static void
ngx_http_elearn_progress_enroll_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    const char                   *argv[5];
    size_t                        argvlen[5];
    ngx_http_elearn_main_conf_t  *emcf;
    u_char                        key[sizeof("enroll::") + 2 * NGX_INT64_LEN];
    u_char                        ttl[NGX_TIME_T_LEN];

    if (ngx_http_elearn_progress_result(r, res, rc, PGRES_TUPLES_OK,
                                        "enrollment lookup")
        != NGX_OK)
    {
        return;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    p->enrolled = (PQntuples(res) == 1);

    /*
     * "not enrolled" briefly: a student who enrolls drops the key anyway,
     * this only bounds what a stray client costs the database
     */
    argv[0] = "SET";
    argvlen[0] = sizeof("SET") - 1;
    argv[1] = (char *) key;
    argvlen[1] = ngx_http_elearn_progress_enroll_key(p, key);
    argv[2] = p->enrolled ? "1" : "0";
    argvlen[2] = 1;
    argv[3] = "EX";
    argvlen[3] = 2;
    argv[4] = (char *) ttl;
    argvlen[4] = ngx_sprintf(ttl, "%T", p->enrolled ? emcf->enroll_cache_ttl
                                        : emcf->enroll_negative_ttl)
                 - ttl;

    (void) ngx_http_elearn_redis_command(NULL, NULL, NULL, 5, argv, argvlen);

    rc = ngx_http_elearn_progress_decide(p);
    ngx_http_elearn_progress_next(r, rc);
}


/* --- the decision --------------------------------------------------------- */

static ngx_int_t
ngx_http_elearn_progress_decide(ngx_http_elearn_progress_t *p)
{
    ngx_int_t                    rc;
    ngx_http_request_t          *r;
    ngx_http_elearn_loc_conf_t  *elcf;

    r = p->request;

    if (!p->enrolled) {
        return ngx_http_elearn_problem(r, NGX_HTTP_FORBIDDEN, "not-enrolled",
                                       "you are not enrolled in course %L "
                                       "of this video", p->course_id);
    }

    if (p->duration < 0) {
        return ngx_http_elearn_problem(r, NGX_HTTP_CONFLICT, "not-ready",
                                       "video %L is not transcoded yet: it "
                                       "has no duration", p->video_id);
    }

    if (!p->report) {
        return ngx_http_elearn_progress_read(p);
    }

    if (ngx_http_elearn_progress_check(p, &rc) != NGX_OK) {
        return rc;
    }

    ngx_http_elearn_progress_normalize(p);
    ngx_http_elearn_progress_clamp(p);

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    if (elcf->progress_naive) {
        return ngx_http_elearn_progress_naive(p);
    }

    return ngx_http_elearn_progress_store(p);
}


/* the report against the video's duration; answers like _parse() */
static ngx_int_t
ngx_http_elearn_progress_check(ngx_http_elearn_progress_t *p,
    ngx_int_t *answer)
{
    u_char                         *msg;
    double                          limit;
    ngx_uint_t                      i, n;
    ngx_http_request_t             *r;
    ngx_http_elearn_main_conf_t    *emcf;
    ngx_http_elearn_field_error_t   errors[NGX_HTTP_ELEARN_PROGRESS_ERR_MAX];

    r = p->request;
    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    limit = (double) p->duration + (double) emcf->progress_slack;

    msg = ngx_pnalloc(r->pool, 96 + 2 * NGX_INT_T_LEN);
    if (msg == NULL) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    *ngx_sprintf(msg, "must lie within the video: 0 to %i seconds "
                 "(plus %T s of slack)", p->duration, emcf->progress_slack)
        = '\0';

    n = 0;

    if (p->position > limit) {
        ngx_http_elearn_progress_error(r, errors, &n, "positionSeconds", -1,
                                       (char *) msg);
    }

    for (i = 0; i < p->nraw; i++) {
        if (p->raw[i][1] > limit) {
            ngx_http_elearn_progress_error(r, errors, &n, "watched", i,
                                           (char *) msg);
        }
    }

    if (n) {
        *answer = ngx_http_elearn_problem_fields(r, "invalid progress report",
                                                 errors, n);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static int64_t
ngx_http_elearn_progress_round(double v)
{
    /* beyond any video: the bounds check refuses it, still an integer */
    if (v > 1e12) {
        v = 1e12;
    }

    return (int64_t) floor(v + 0.5);
}


/*
 * Whole seconds, empty intervals dropped, touching ones joined; not yet
 * clamped to the video (its duration may not be known yet).
 */
static void
ngx_http_elearn_progress_normalize(ngx_http_elearn_progress_t *p)
{
    int64_t     from, to;
    ngx_uint_t  i;

    p->pos = ngx_http_elearn_progress_round(p->position);
    p->niv = 0;

    for (i = 0; i < p->nraw; i++) {
        from = ngx_http_elearn_progress_round(p->raw[i][0]);
        to = ngx_http_elearn_progress_round(p->raw[i][1]);

        if (from >= to) {
            continue;
        }

        /* ordered input stays ordered after rounding: join with the last */
        if (p->niv && from <= p->iv[p->niv - 1][1]) {
            if (to > p->iv[p->niv - 1][1]) {
                p->iv[p->niv - 1][1] = to;
            }

            continue;
        }

        p->iv[p->niv][0] = from;
        p->iv[p->niv][1] = to;
        p->niv++;
    }
}


/*
 * Clamps the normalized report to [0, duration], as the merge script
 * does: an interval past the end becomes empty and goes.  Sorted,
 * disjoint, non-touching intervals stay so.
 */
static void
ngx_http_elearn_progress_clamp(ngx_http_elearn_progress_t *p)
{
    int64_t     d;
    ngx_uint_t  i, n;

    d = p->duration;

    p->pos = ngx_min(p->pos, d);

    for (i = 0, n = 0; i < p->niv; i++) {
        if (p->iv[i][0] >= d) {
            continue;
        }

        p->iv[n][0] = p->iv[i][0];
        p->iv[n][1] = ngx_min(p->iv[i][1], d);
        n++;
    }

    p->niv = n;
}


/*
 * The largest number of the report as sent, rounded up to a millisecond,
 * for the report script's bounds check ("605.001" refuses 605.0004 with
 * a duration of 600 and 5 s of slack, as the check here does).
 */
static u_char *
ngx_http_elearn_progress_max(ngx_http_elearn_progress_t *p, u_char *s)
{
    double      mx;
    ngx_uint_t  i;

    mx = p->position;

    for (i = 0; i < p->nraw; i++) {
        mx = ngx_max(mx, p->raw[i][1]);
    }

    mx = ceil(ngx_min(mx, 1e12) * 1000) / 1000;

    return ngx_sprintf(s, "%.3f", mx);
}


/* --- naive: one upsert per report (bench only) ---------------------------- */

static ngx_int_t
ngx_http_elearn_progress_naive(ngx_http_elearn_progress_t *p)
{
    u_char                       *buf, *s;
    ngx_uint_t                    i;
    ngx_http_request_t           *r;
    ngx_http_elearn_main_conf_t  *emcf;

    r = p->request;
    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    buf = ngx_pnalloc(r->pool, 2 * NGX_INT64_LEN + 16
                               + p->niv * (2 * NGX_INT64_LEN + 4) + 16);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* position, then the multirange literal "{[a,b),[c,d)}", then ratio */
    s = buf;
    p->values[2] = (char *) s;
    s = ngx_sprintf(s, "%L", p->pos);
    *s++ = '\0';

    p->values[3] = (char *) s;
    *s++ = '{';

    for (i = 0; i < p->niv; i++) {
        s = ngx_sprintf(s, "%s[%L,%L)", i ? "," : "", p->iv[i][0],
                        p->iv[i][1]);
    }

    *s++ = '}';
    *s++ = '\0';

    p->values[4] = (char *) s;
    s = ngx_sprintf(s, "0.%06ui", emcf->progress_completion);
    *s++ = '\0';

    if (emcf->progress_completion == 1000000) {
        p->values[4] = "1";
    }

    p->values[0] = (char *) p->user;
    p->values[1] = (char *) p->video;
    p->nvalues = 5;

    return ngx_http_elearn_progress_query(p, NULL,
               NGX_HTTP_ELEARN_SQL_PROGRESS_NAIVE_UPSERT,
               ngx_http_elearn_progress_naive_done);
}


static void
ngx_http_elearn_progress_naive_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    if (ngx_http_elearn_progress_result(r, res, rc, PGRES_COMMAND_OK,
                                        "naive upsert")
        != NGX_OK)
    {
        return;
    }

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_send_json(r, NGX_HTTP_NO_CONTENT, "", 0));
}


/* --- write-behind: Redis, then Kafka ---------------------------------- */

/*
 * Appends one argument to p->argv, printed into *s (which moves on).
 */
#define ngx_http_elearn_progress_arg(p, s, ...)                               \
    (p)->argv[(p)->argc] = (char *) (s);                                      \
    (s) = ngx_sprintf((s), __VA_ARGS__);                                      \
    (p)->argvlen[(p)->argc] = (s) - (u_char *) (p)->argv[(p)->argc];          \
    (p)->argc++


/*
 * The report's part of a script's arguments: position, reportedAtMs, the
 * intervals, the TTL.  A buffer of ARGS_LEN(p) holds them, the keys and
 * three more numbers.
 */
#define NGX_HTTP_ELEARN_PROGRESS_ARGS_LEN(p)                                  \
    (NGX_HTTP_ELEARN_PROGRESS_KEY_LEN + 6 * NGX_INT64_LEN + NGX_TIME_T_LEN   \
     + (p)->niv * (2 * NGX_INT64_LEN + 2))

static u_char *
ngx_http_elearn_progress_report_args(ngx_http_elearn_progress_t *p,
    u_char *s)
{
    ngx_uint_t                    i;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(p->request, ngx_http_elearn_module);

    ngx_http_elearn_progress_arg(p, s, "%L", p->pos);
    ngx_http_elearn_progress_arg(p, s, "%L", p->reported_ms);

    p->argv[p->argc] = (char *) s;

    for (i = 0; i < p->niv; i++) {
        s = ngx_sprintf(s, "%s%L-%L", i ? "," : "", p->iv[i][0],
                        p->iv[i][1]);
    }

    p->argvlen[p->argc] = s - (u_char *) p->argv[p->argc];
    p->argc++;

    ngx_http_elearn_progress_arg(p, s, "%T", emcf->progress_ttl);

    return s;
}


/*
 * Before anything is written: a durable report is refused at once while
 * the producer sees no broker up.  NGX_OK to go on, or NGX_DECLINED once
 * the 503 is sent (the caller finalizes with *answer).  A problem's own
 * return value is the output filter's, NGX_OK included: it cannot tell
 * "go on" from "answered".
 */
static ngx_int_t
ngx_http_elearn_progress_broker(ngx_http_elearn_progress_t *p,
    ngx_int_t *answer)
{
    ngx_http_request_t           *r;
    ngx_http_elearn_loc_conf_t   *elcf;
    ngx_http_elearn_main_conf_t  *emcf;

    r = p->request;
    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);
    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    if (emcf->kafka == NULL) {
        *answer = ngx_http_elearn_problem_backend(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the event broker");
        return NGX_DECLINED;
    }

    if (elcf->progress_ack == NGX_HTTP_ELEARN_PROGRESS_ACK_DURABLE
        && (emcf->kafka_durable == NULL
            || ngx_http_elearn_kafka_ready(emcf->kafka_durable) != NGX_OK))
    {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "unavailable", "the event broker "
                                          "is unreachable: retry later");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * The usual report: both lookups, the bounds and the merge in one script
 * (see the report script); whatever it cannot decide alone goes the long
 * way, through ngx_http_elearn_progress_video().
 */
static ngx_int_t
ngx_http_elearn_progress_fast(ngx_http_elearn_progress_t *p)
{
    u_char                       *s;
    ngx_int_t                     rc;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(p->request, ngx_http_elearn_module);

    ngx_http_elearn_progress_normalize(p);

    s = ngx_pnalloc(p->request->pool, NGX_HTTP_ELEARN_PROGRESS_ARGS_LEN(p)
                                      + 2 * NGX_INT64_LEN);
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p->argc = 2;
    ngx_http_elearn_progress_arg(p, s, "2");
    ngx_http_elearn_progress_arg(p, s, "video:%L", p->video_id);
    ngx_http_elearn_progress_arg(p, s, "progress:%L:%L", p->user_id,
                                 p->video_id);
    ngx_http_elearn_progress_arg(p, s, "%L", p->user_id);
    s = ngx_http_elearn_progress_report_args(p, s);
    p->argv[p->argc] = (char *) s;
    s = ngx_http_elearn_progress_max(p, s);
    p->argvlen[p->argc] = s - (u_char *) p->argv[p->argc];
    p->argc++;
    ngx_http_elearn_progress_arg(p, s, "%T", emcf->progress_slack);

    rc = ngx_http_elearn_progress_eval(p, NGX_HTTP_ELEARN_PROGRESS_REPORT,
                                       ngx_http_elearn_progress_reported);
    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    /* Redis down: the lookups go to PostgreSQL, the merge then fails */
    return ngx_http_elearn_progress_video_query(p);
}


static void
ngx_http_elearn_progress_reported(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    ngx_str_t  e;

    if (ngx_http_elearn_progress_meta(p, reply, rc, &e) != NGX_OK) {
        /* video:{id} not cached (or Redis failed): the long way */
        rc = ngx_http_elearn_progress_video_query(p);

    } else if (e.len == 2 && ngx_strncmp(e.data, "ok", 2) == 0) {
        p->enrolled = 1;
        ngx_http_elearn_progress_clamp(p);
        rc = ngx_http_elearn_progress_produce(p);

    } else if (e.len == 1 && e.data[0] == '0') {
        p->enrolled = 0;
        rc = ngx_http_elearn_progress_decide(p);

    } else if (e.len == sizeof("bounds") - 1
               && ngx_strncmp(e.data, "bounds", e.len) == 0)
    {
        /* the 422 with its field errors (decide() checks the bounds) */
        p->enrolled = 1;
        rc = ngx_http_elearn_progress_decide(p);

    } else {
        /* enroll:{user}:{course} not cached */
        rc = ngx_http_elearn_progress_enroll_query(p);
    }

    ngx_http_elearn_progress_next(r, rc);
}


static ngx_int_t
ngx_http_elearn_progress_store(ngx_http_elearn_progress_t *p)
{
    u_char     *s;
    ngx_int_t   rc;

    s = ngx_pnalloc(p->request->pool, NGX_HTTP_ELEARN_PROGRESS_ARGS_LEN(p));
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p->argc = 2;
    ngx_http_elearn_progress_arg(p, s, "1");
    ngx_http_elearn_progress_arg(p, s, "progress:%L:%L", p->user_id,
                                 p->video_id);
    s = ngx_http_elearn_progress_report_args(p, s);
    ngx_http_elearn_progress_arg(p, s, "%i", p->duration);

    rc = ngx_http_elearn_progress_eval(p, NGX_HTTP_ELEARN_PROGRESS_MERGE,
                                       ngx_http_elearn_progress_stored);
    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_elearn_problem_backend(p->request, rc, "the cache");
}


static void
ngx_http_elearn_progress_stored(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the cache"));
        return;
    }

    rc = ngx_http_elearn_progress_produce(p);
    ngx_http_elearn_progress_next(r, rc);
}


/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of a time in milliseconds */
static u_char *
ngx_http_elearn_progress_time(u_char *s, int64_t ms)
{
    ngx_tm_t  tm;

    ngx_gmtime((time_t) (ms / 1000), &tm);

    return ngx_sprintf(s, "%4d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int) (ms % 1000));
}


/*
 * 16 random bytes for an event id.  The worker draws them from OpenSSL's
 * generator 4 KiB at a time: RAND_bytes() per report (its locks, its
 * fork check) was 1.3 us of the worker's CPU per report, the largest
 * single user-space cost of the report path.  The buffer starts empty in
 * every worker (the master never takes from it), so forked workers never
 * share bytes.
 */
static ngx_int_t
ngx_http_elearn_progress_random(u_char *out)
{
    static u_char  pool[4096];
    static size_t  used = sizeof(pool);

    if (used == sizeof(pool)) {
        if (RAND_bytes(pool, sizeof(pool)) != 1) {
            return NGX_ERROR;
        }

        used = 0;
    }

    ngx_memcpy(out, pool + used, 16);
    ngx_memzero(pool + used, 16);
    used += 16;

    return NGX_OK;
}


/* the event of docs/progress.md, field for field */
static u_char *
ngx_http_elearn_progress_event(ngx_http_elearn_progress_t *p, u_char *s)
{
    ngx_uint_t  i;
    u_char      uuid[16];

    if (ngx_http_elearn_progress_random(uuid) != NGX_OK) {
        return NULL;
    }

    uuid[6] = (uuid[6] & 0x0f) | 0x40;      /* version 4 */
    uuid[8] = (uuid[8] & 0x3f) | 0x80;      /* RFC 4122 variant */

    s = ngx_cpymem(s, "{\"eventId\":\"", sizeof("{\"eventId\":\"") - 1);

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *s++ = '-';
        }

        s = ngx_hex_dump(s, &uuid[i], 1);
    }

    s = ngx_cpymem(s, "\",\"type\":\"progress.reported\",\"occurredAt\":\"",
                   sizeof("\",\"type\":\"progress.reported\","
                          "\"occurredAt\":\"") - 1);
    s = ngx_http_elearn_progress_time(s, p->reported_ms);
    s = ngx_sprintf(s, "\",\"schemaVersion\":1,\"data\":{\"userId\":%L,"
                    "\"videoId\":%L,\"courseId\":%L,\"positionSeconds\":%L,"
                    "\"watched\":[",
                    p->user_id, p->video_id, p->course_id, p->pos);

    for (i = 0; i < p->niv; i++) {
        s = ngx_sprintf(s, "%s[%L,%L]", i ? "," : "", p->iv[i][0],
                        p->iv[i][1]);
    }

    return ngx_sprintf(s, "],\"durationSeconds\":%i,\"reportedAtMs\":%L}}",
                       p->duration, p->reported_ms);
}


static ngx_int_t
ngx_http_elearn_progress_produce(ngx_http_elearn_progress_t *p)
{
    u_char                             *buf, *last;
    ngx_int_t                           rc;
    ngx_http_request_t                 *r;
    ngx_http_elearn_loc_conf_t         *elcf;
    ngx_http_elearn_main_conf_t        *emcf;
    ngx_http_elearn_progress_ticket_t  *t;

    r = p->request;
    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);
    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    buf = ngx_pnalloc(r->pool, 384 + 5 * NGX_INT64_LEN
                               + p->niv * (2 * NGX_INT64_LEN + 4));
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ngx_http_elearn_progress_event(p, buf);
    if (last == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (elcf->progress_ack == NGX_HTTP_ELEARN_PROGRESS_ACK_QUEUED) {
        rc = ngx_http_elearn_kafka_produce(emcf->kafka,
                                           NGX_HTTP_ELEARN_PROGRESS_TOPIC,
                                           p->user, ngx_strlen(p->user),
                                           buf, last - buf);
        t = NULL;

    } else {
        t = ngx_alloc(sizeof(ngx_http_elearn_progress_ticket_t),
                      ngx_cycle->log);
        if (t == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        t->report.handler = ngx_http_elearn_progress_delivered;
        t->report.data = t;
        t->progress = p;

        /* its own producer: a short linger, the 204 waits for it */
        rc = ngx_http_elearn_kafka_produce_report(emcf->kafka_durable,
                                           NGX_HTTP_ELEARN_PROGRESS_TOPIC,
                                           p->user, ngx_strlen(p->user),
                                           buf, last - buf, &t->report);
    }

    if (rc == NGX_BUSY) {
        ngx_free(t);
        return ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "unavailable", "the event queue is "
                                       "full: retry later");
    }

    if (rc != NGX_OK) {
        ngx_free(t);
        return ngx_http_elearn_problem_backend(r, rc, "the event broker");
    }

    if (t == NULL) {
        return ngx_http_elearn_send_json(r, NGX_HTTP_NO_CONTENT, "", 0);
    }

    p->ticket = t;
    ngx_add_timer(&p->ack_timer, elcf->progress_ack_timeout);

    return NGX_AGAIN;
}


static void
ngx_http_elearn_progress_delivered(ngx_http_elearn_kafka_report_t *report,
    ngx_int_t rc)
{
    ngx_http_elearn_progress_ticket_t  *t = report->data;

    ngx_http_request_t          *r;
    ngx_http_elearn_progress_t  *p;

    p = t->progress;
    ngx_free(t);

    /*
     * p NULL: the request answered already (timeout) or is gone.  A fast
     * shutdown (ngx_terminate) gets here from the producer's flush in
     * exit_process, with requests abandoned, not finalized: leave them.
     */
    if (p == NULL || ngx_terminate) {
        return;
    }

    p->ticket = NULL;

    if (p->ack_timer.timer_set) {
        ngx_del_timer(&p->ack_timer);
    }

    r = p->request;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "unavailable", "the event broker did "
                                    "not take the report: retry later"));
        return;
    }

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_send_json(r, NGX_HTTP_NO_CONTENT, "", 0));
}


static void
ngx_http_elearn_progress_ack_timeout(ngx_event_t *ev)
{
    ngx_http_elearn_progress_t *p = ev->data;

    ngx_http_request_t  *r;

    if (p->ticket) {
        p->ticket->progress = NULL;
        p->ticket = NULL;
    }

    r = p->request;

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "unavailable", "the event broker did not "
                                "acknowledge the report in time: retry "
                                "later"));
}


/* --- GET: Redis, seeded once from PostgreSQL ---------------------------- */

static ngx_int_t
ngx_http_elearn_progress_read(ngx_http_elearn_progress_t *p)
{
    u_char      *last;
    const char  *argv[7];
    size_t       argvlen[7];
    u_char       key[NGX_HTTP_ELEARN_PROGRESS_KEY_LEN];

    last = ngx_sprintf(key, "progress:%L:%L", p->user_id, p->video_id);

    argv[0] = "HMGET";
    argvlen[0] = sizeof("HMGET") - 1;
    argv[1] = (char *) key;
    argvlen[1] = last - key;
    argv[2] = "pos";
    argvlen[2] = 3;
    argv[3] = "at";
    argvlen[3] = 2;
    argv[4] = "ws";
    argvlen[4] = 2;
    argv[5] = "c";
    argvlen[5] = 1;
    argv[6] = "s";
    argvlen[6] = 1;

    return ngx_http_elearn_progress_cached(p, 7, argv, argvlen,
                                           ngx_http_elearn_progress_read_cached,
                                           ngx_http_elearn_progress_read_query);
}


static ngx_int_t
ngx_http_elearn_progress_read_query(ngx_http_elearn_progress_t *p)
{
    return ngx_http_elearn_progress_query(p, p->video,
               NGX_HTTP_ELEARN_SQL_PROGRESS_READ,
               ngx_http_elearn_progress_read_done);
}


/*
 * Answers from {pos, at, ws, c, ...} of the hash; NGX_DECLINED when the
 * reply is not that (no key).
 */
static ngx_int_t
ngx_http_elearn_progress_answer_hash(ngx_http_elearn_progress_t *p,
    redisReply *reply, ngx_int_t *answer)
{
    u_char      *s;
    int64_t      v[3];
    ngx_str_t    updated;
    ngx_uint_t   i;
    redisReply  *e;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 4) {
        return NGX_DECLINED;
    }

    for (i = 0; i < 3; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING
            || ngx_http_elearn_progress_number(e->str, e->len, &v[i])
               != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    s = ngx_pnalloc(p->request->pool, sizeof("YYYY-MM-DDTHH:MM:SS.mmmZ"));
    if (s == NULL) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_OK;
    }

    updated.data = s;
    updated.len = ngx_http_elearn_progress_time(s, v[1]) - s;

    e = reply->element[3];

    *answer = ngx_http_elearn_progress_answer(p, v[0], v[2],
                                              e->type == REDIS_REPLY_STRING
                                              && e->len == 1
                                              && e->str[0] == '1',
                                              &updated);
    return NGX_OK;
}


static void
ngx_http_elearn_progress_read_cached(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    ngx_int_t    answer;
    redisReply  *e;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 5)
    {
        e = reply->element[4];
        p->had = (reply->element[0]->type == REDIS_REPLY_STRING);

        if (e->type == REDIS_REPLY_STRING && e->len == 1 && e->str[0] == '1'
            && ngx_http_elearn_progress_answer_hash(p, reply, &answer)
               == NGX_OK)
        {
            ngx_http_elearn_finalize(r, answer);
            return;
        }
    }

    /* no key, or one never seeded: PostgreSQL's row joins it */
    rc = ngx_http_elearn_progress_read_query(p);
    ngx_http_elearn_progress_next(r, rc);
}


static void
ngx_http_elearn_progress_read_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    u_char                       *s, *list;
    int64_t                       at;
    ngx_uint_t                    row;
    ngx_http_elearn_main_conf_t  *emcf;

    if (ngx_http_elearn_progress_result(r, res, rc, PGRES_TUPLES_OK,
                                        "progress read")
        != NGX_OK)
    {
        return;
    }

    row = (PQntuples(res) == 1
           && ngx_http_elearn_progress_number(PQgetvalue(res, 0, 0),
                                              PQgetlength(res, 0, 0),
                                              &p->pg_pos)
              == NGX_OK
           && ngx_http_elearn_progress_number(PQgetvalue(res, 0, 1),
                                              PQgetlength(res, 0, 1),
                                              &p->pg_watched)
              == NGX_OK
           && ngx_http_elearn_progress_number(PQgetvalue(res, 0, 4),
                                              PQgetlength(res, 0, 4), &at)
              == NGX_OK);

    if (!row && !p->had) {
        /* nothing reported yet, anywhere */
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_progress_answer(p, 0, 0, 0, NULL));
        return;
    }

    if (row) {
        p->pg_completed = (PQgetvalue(res, 0, 2)[0] == 't');
        p->pg_updated.len = PQgetlength(res, 0, 3);
        p->pg_updated.data = ngx_pnalloc(r->pool, p->pg_updated.len);
        list = ngx_pnalloc(r->pool, PQgetlength(res, 0, 5) + 1);
        if (p->pg_updated.data == NULL || list == NULL) {
            ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_memcpy(p->pg_updated.data, PQgetvalue(res, 0, 3),
                   p->pg_updated.len);
        *ngx_cpymem(list, PQgetvalue(res, 0, 5), PQgetlength(res, 0, 5))
            = '\0';

    } else {
        at = -2;
        list = (u_char *) "";
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    s = ngx_pnalloc(r->pool, NGX_HTTP_ELEARN_PROGRESS_KEY_LEN
                             + 3 * NGX_INT64_LEN + NGX_TIME_T_LEN + 8);
    if (s == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p->argc = 2;
    ngx_http_elearn_progress_arg(p, s, "1");
    ngx_http_elearn_progress_arg(p, s, "progress:%L:%L", p->user_id,
                                 p->video_id);
    ngx_http_elearn_progress_arg(p, s, "%L", ngx_min(p->pg_pos,
                                                     p->duration));
    ngx_http_elearn_progress_arg(p, s, "%L", at);
    p->argv[p->argc] = (char *) list;
    p->argvlen[p->argc++] = ngx_strlen(list);
    ngx_http_elearn_progress_arg(p, s, "%T", emcf->progress_ttl);
    ngx_http_elearn_progress_arg(p, s, "%i", p->duration);
    p->argv[p->argc] = p->pg_completed ? "1" : "0";
    p->argvlen[p->argc++] = 1;
    p->argv[p->argc] = row ? "1" : "0";
    p->argvlen[p->argc++] = 1;

    rc = ngx_http_elearn_progress_eval(p, NGX_HTTP_ELEARN_PROGRESS_SEED,
                                       ngx_http_elearn_progress_seeded);
    if (rc != NGX_AGAIN) {
        ngx_http_elearn_progress_seeded(r, NULL, rc, p);
    }
}


static void
ngx_http_elearn_progress_seeded(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_progress_t *p = data;

    ngx_int_t  answer;

    if (rc == NGX_OK
        && ngx_http_elearn_progress_answer_hash(p, reply, &answer) == NGX_OK)
    {
        ngx_http_elearn_finalize(r, answer);
        return;
    }

    /* Redis failed meanwhile (or the key expired): PostgreSQL's view */
    if (p->pg_updated.data == NULL) {
        answer = ngx_http_elearn_progress_answer(p, 0, 0, 0, NULL);

    } else {
        answer = ngx_http_elearn_progress_answer(p, p->pg_pos, p->pg_watched,
                                                 p->pg_completed,
                                                 &p->pg_updated);
    }

    ngx_http_elearn_finalize(r, answer);
}


static ngx_int_t
ngx_http_elearn_progress_answer(ngx_http_elearn_progress_t *p, int64_t pos,
    int64_t watched, ngx_uint_t completed, ngx_str_t *updated)
{
    u_char                       *buf, *s;
    int64_t                       need, percent;
    ngx_http_request_t           *r;
    ngx_http_elearn_main_conf_t  *emcf;

    r = p->request;
    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    /* the same rule as the daemon's: ceil(ratio * duration) seconds */
    need = ((int64_t) p->duration * (int64_t) emcf->progress_completion
            + 999999) / 1000000;

    if (p->duration > 0 && watched >= need) {
        completed = 1;
    }

    percent = p->duration > 0 ? watched * 100 / p->duration : 0;
    if (percent > 100) {
        percent = 100;
    }

    buf = ngx_pnalloc(r->pool, 160 + 4 * NGX_INT64_LEN
                               + (updated ? updated->len : 0));
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = ngx_sprintf(buf, "{\"videoId\":%L,\"positionSeconds\":%L,"
                    "\"watchedSeconds\":%L,\"watchedPercent\":%L,"
                    "\"completed\":%s,\"updatedAt\":",
                    p->video_id, pos, watched, percent,
                    completed ? "true" : "false");

    if (updated) {
        s = ngx_sprintf(s, "\"%V\"}", updated);

    } else {
        s = ngx_cpymem(s, "null}", sizeof("null}") - 1);
    }

    return ngx_http_elearn_send_json(r, NGX_HTTP_OK, (char *) buf, s - buf);
}
