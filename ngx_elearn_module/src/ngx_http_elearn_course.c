
/*
 * elearn course: GET /api/v1/courses/{courseId}, cache-aside in Redis.
 *
 * The course document is built by PostgreSQL as one JSON text (course,
 * instructor, videos, quizzes) and kept verbatim in Redis under
 * "course:{id}" for elearn_course_cache_ttl, so a cache hit is one GET
 * and a copy.  Redis is only a cache: when it is down or slow the request
 * goes to PostgreSQL.  Unpublished courses are not visible here (owners
 * will see them once authentication exists).
 *
 * A miss must not become a stampede (docs/caching.md).  Within a worker,
 * the first request that misses a course leads a "flight" and the others
 * for the same id wait for its answer (at most elearn_cache_lock_timeout,
 * then they ask PostgreSQL themselves).  Across workers, the leader takes
 * a short Redis lock (SET course:{id}:lock NX PX) before it queries; a
 * leader that finds the lock taken polls the cache while the lock lives
 * (at most elearn_cache_lock_timeout) and falls back to PostgreSQL only
 * when the lock is gone without a document or its time is up.  Waiters
 * are plain requests that may die at any moment: their pool cleanup
 * leaves the flight, and a dead leader hands the flight to its first
 * waiter.  This file must never let a callback touch a request that is
 * gone.
 *
 * A fill must not put back a document that a write has just replaced: a
 * lookup reads the catalog version with the entry (MGET), and the fill
 * stores the document only while the version is still the one seen
 * before the query (one script).  A course write commits, bumps the
 * version, then deletes the entry: a read that began before the commit
 * either fills before the bump (and the delete removes it) or finds the
 * version moved and stores nothing.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_metrics.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_sql.h"


#define NGX_HTTP_ELEARN_COURSE_KEY_LEN                                        \
    (sizeof("course::lock") - 1 + NGX_INT64_LEN)

/* how often a leader that lost the Redis lock looks for the winner's fill */
#define NGX_HTTP_ELEARN_COURSE_POLL_MSEC    20

/* in-flight fills per worker; past it a miss simply queries */
#define NGX_HTTP_ELEARN_COURSE_FLIGHTS_MAX  1024

/* elearn:catalog:version is an INCR counter */
#define NGX_HTTP_ELEARN_COURSE_VERSION_MAX  20


/*
 * KEYS[1] course:{id}, KEYS[2] elearn:catalog:version; ARGV[1] the
 * version seen before the document was read ("0": none yet), ARGV[2] the
 * document, ARGV[3] the TTL in seconds.  Sent with EVAL (fire and forget:
 * nobody would be left to resend the text after a NOSCRIPT).
 */
static char  ngx_http_elearn_course_fill_lua[] =
    "if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";


typedef struct ngx_http_elearn_course_flight_s  ngx_http_elearn_course_flight_t;


/* what the timer of a course request is for */
typedef enum {
    NGX_HTTP_ELEARN_COURSE_WAIT = 0,    /* waiter: give up on the leader */
    NGX_HTTP_ELEARN_COURSE_POLL,        /* leader: look at the cache again */
    NGX_HTTP_ELEARN_COURSE_TAKEOVER     /* new leader: query */
} ngx_http_elearn_course_timer_e;


typedef struct {
    ngx_http_request_t               *request;
    int64_t                           course_id;
    u_char                            key[NGX_HTTP_ELEARN_COURSE_KEY_LEN];
    size_t                            key_len;
    u_char                            lock[NGX_HTTP_ELEARN_COURSE_KEY_LEN];
    size_t                            lock_len;
    u_char                            id[NGX_INT64_LEN + 1];
    size_t                            id_len;
    u_char                            version[
                                          NGX_HTTP_ELEARN_COURSE_VERSION_MAX];
    size_t                            version_len;  /* 0: not seen */

    ngx_http_elearn_course_flight_t  *flight;     /* NULL: in none */
    ngx_queue_t                       queue;      /* in flight->waiters */
    ngx_event_t                       timer;
    ngx_http_elearn_course_timer_e    timer_for;
    ngx_uint_t                        polls;
    unsigned                          leader:1;
    unsigned                          locked:1;     /* the lock is ours */
    unsigned                          lock_held:1;  /* by anyone, at lookup */
} ngx_http_elearn_course_t;


/* a rebuild of course:{id} under way in this worker */
struct ngx_http_elearn_course_flight_s {
    ngx_queue_t                       queue;      /* in the worker's list */
    int64_t                           course_id;
    ngx_http_elearn_course_t         *leader;
    ngx_queue_t                       waiters;
};


static ngx_int_t ngx_http_elearn_course_fetch(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course);
static void ngx_http_elearn_course_fetch_or_fail(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course);


/* the document of a cache miss: prepared once per pool connection */
static ngx_http_elearn_pg_stmt_t  ngx_http_elearn_course_get_stmt = {
    NGX_HTTP_ELEARN_PG_STMT_COURSE_GET, "elearn_course_get_json",
    NGX_HTTP_ELEARN_SQL_COURSE_GET_JSON
};

/* the worker's flights: few at a time, so a list is enough */
static ngx_queue_t  ngx_http_elearn_course_flights;
static ngx_uint_t   ngx_http_elearn_course_nflights;


/* the answer for a course request: rc NGX_OK sends json */
static ngx_int_t
ngx_http_elearn_course_answer(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course, ngx_int_t rc, const char *json,
    size_t len)
{
    if (rc == NGX_OK) {
        return ngx_http_elearn_send_json(r, NGX_HTTP_OK, json, len);
    }

    if (rc == NGX_HTTP_NOT_FOUND) {
        return ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                       "course %s does not exist",
                                       course->id);
    }

    return ngx_http_elearn_problem_backend(r, rc, "the database");
}


/*
 * Ends course's flight, if it leads one: every waiter gets the same
 * answer.  Each waiter leaves the flight before it is finalized, so its
 * cleanup finds nothing to do.
 */
static void
ngx_http_elearn_course_land(ngx_http_elearn_course_t *course, ngx_int_t rc,
    const char *json, size_t len)
{
    ngx_queue_t                      *q;
    ngx_http_request_t               *wr;
    ngx_http_elearn_course_t         *w;
    ngx_http_elearn_course_flight_t  *flight;

    flight = course->flight;

    if (flight == NULL || !course->leader) {
        return;
    }

    ngx_queue_remove(&flight->queue);
    ngx_http_elearn_course_nflights--;
    course->flight = NULL;

    while (!ngx_queue_empty(&flight->waiters)) {
        q = ngx_queue_head(&flight->waiters);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_http_elearn_course_t, queue);
        w->flight = NULL;

        if (w->timer.timer_set) {
            ngx_del_timer(&w->timer);
        }

        wr = w->request;
        ngx_http_elearn_finalize(wr,
            ngx_http_elearn_course_answer(wr, w, rc, json, len));
    }

    ngx_free(flight);
}


/* the request is gone (answered or terminated): leave its flight */
static void
ngx_http_elearn_course_cleanup(void *data)
{
    ngx_http_elearn_course_t *course = data;

    ngx_queue_t                      *q;
    ngx_http_elearn_course_t         *next;
    ngx_http_elearn_course_flight_t  *flight;

    if (course->timer.timer_set) {
        ngx_del_timer(&course->timer);
    }

    if (course->timer.posted) {
        ngx_delete_posted_event(&course->timer);
    }

    flight = course->flight;

    if (flight == NULL) {
        return;
    }

    course->flight = NULL;

    if (!course->leader) {
        ngx_queue_remove(&course->queue);
        return;
    }

    if (ngx_queue_empty(&flight->waiters)) {
        ngx_queue_remove(&flight->queue);
        ngx_http_elearn_course_nflights--;
        ngx_free(flight);
        return;
    }

    /*
     * The leader's query died with it.  Its first waiter takes over from
     * a timer rather than from inside this cleanup, where the backends
     * may be cancelling the leader's work.  The Redis lock may still be
     * the dead leader's: the new leader goes to PostgreSQL directly.
     */
    q = ngx_queue_head(&flight->waiters);
    ngx_queue_remove(q);

    next = ngx_queue_data(q, ngx_http_elearn_course_t, queue);
    next->leader = 1;
    flight->leader = next;

    if (next->timer.timer_set) {
        ngx_del_timer(&next->timer);
    }

    next->timer_for = NGX_HTTP_ELEARN_COURSE_TAKEOVER;
    ngx_add_timer(&next->timer, 1);
}


/*
 * Stores a document read while the catalog version was "version" (NULL:
 * unconditionally, for the warming at start).  Fire and forget: a failed
 * fill only costs the next reader a query.
 */
static ngx_int_t
ngx_http_elearn_course_cache_fill(ngx_http_elearn_main_conf_t *emcf,
    u_char *key, size_t key_len, ngx_str_t *version, char *json, size_t len)
{
    u_char       ttl[NGX_TIME_T_LEN];
    size_t       ttl_len;
    const char  *argv[8];
    size_t       argvlen[8];

    if (emcf->redis == NULL) {
        return NGX_DECLINED;
    }

    ttl_len = ngx_sprintf(ttl, "%T", emcf->course_cache_ttl) - ttl;

    if (version == NULL) {
        argv[0] = "SET";
        argvlen[0] = 3;
        argv[1] = (char *) key;
        argvlen[1] = key_len;
        argv[2] = json;
        argvlen[2] = len;
        argv[3] = "EX";
        argvlen[3] = 2;
        argv[4] = (char *) ttl;
        argvlen[4] = ttl_len;

        return ngx_http_elearn_redis_command(NULL, NULL, NULL, 5, argv,
                                             argvlen);
    }

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_http_elearn_course_fill_lua;
    argvlen[1] = sizeof(ngx_http_elearn_course_fill_lua) - 1;
    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = key_len;
    argv[4] = "elearn:catalog:version";
    argvlen[4] = sizeof("elearn:catalog:version") - 1;
    argv[5] = (char *) version->data;
    argvlen[5] = version->len;
    argv[6] = json;
    argvlen[6] = len;
    argv[7] = (char *) ttl;
    argvlen[7] = ttl_len;

    return ngx_http_elearn_redis_command(NULL, NULL, NULL, 8, argv, argvlen);
}


/*
 * Drops the lock once the document is in the cache (the DEL follows the
 * SET on the same connection).  A leader slower than the lock's life may
 * drop another worker's lock: that costs at most one more query.
 */
static void
ngx_http_elearn_course_unlock(ngx_http_elearn_course_t *course)
{
    const char  *argv[2];
    size_t       argvlen[2];

    if (!course->locked) {
        return;
    }

    course->locked = 0;

    argv[0] = "DEL";
    argvlen[0] = 3;
    argv[1] = (char *) course->lock;
    argvlen[1] = course->lock_len;

    (void) ngx_http_elearn_redis_command(NULL, NULL, NULL, 2, argv, argvlen);
}


static void
ngx_http_elearn_course_pg_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_t *course = data;

    char       *json;
    int         len;
    ngx_str_t   version;

    json = NULL;
    len = 0;

    if (rc == NGX_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn course: course_get failed: %s",
                      PQresultErrorMessage(res));
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK && PQntuples(res) == 0) {
        rc = NGX_HTTP_NOT_FOUND;
    }

    if (rc == NGX_OK) {
        json = PQgetvalue(res, 0, 0);
        len = PQgetlength(res, 0, 0);

        /* no version seen (Redis down at the lookup): nothing to keep */

        if (course->version_len) {
            version.data = course->version;
            version.len = course->version_len;

            (void) ngx_http_elearn_course_cache_fill(
                      ngx_http_get_module_main_conf(r, ngx_http_elearn_module),
                      course->key, course->key_len, &version, json, len);
        }
    }

    ngx_http_elearn_course_unlock(course);
    ngx_http_elearn_course_land(course, rc, json, len);

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_course_answer(r, course, rc, json, len));
}


/*
 * Sends MGET course:{id} elearn:catalog:version, and course:{id}:lock
 * for a leader's second look (with_lock); NGX_AGAIN when the handler
 * will be called.
 */
static ngx_int_t
ngx_http_elearn_course_lookup(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course, ngx_uint_t with_lock,
    ngx_http_elearn_redis_handler_pt h)
{
    const char                   *argv[4];
    size_t                        argvlen[4];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->redis == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    argv[0] = "MGET";
    argvlen[0] = 4;
    argv[1] = (char *) course->key;
    argvlen[1] = course->key_len;
    argv[2] = "elearn:catalog:version";
    argvlen[2] = sizeof("elearn:catalog:version") - 1;
    argv[3] = (char *) course->lock;
    argvlen[3] = course->lock_len;

    return ngx_http_elearn_redis_command(r, h, course, with_lock ? 4 : 3,
                                         argv, argvlen);
}


/*
 * The entry of an MGET of ngx_http_elearn_course_lookup(), the version
 * beside it kept for the fill, and whether the lock was held.  NULL when
 * Redis failed.
 */
static redisReply *
ngx_http_elearn_course_entry(ngx_http_elearn_course_t *course,
    redisReply *reply, ngx_int_t rc)
{
    redisReply  *v;

    course->version_len = 0;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2 || reply->elements > 3)
    {
        return NULL;
    }

    course->lock_held = (reply->elements == 3
                         && reply->element[2]->type != REDIS_REPLY_NIL);

    v = reply->element[1];

    if (v->type == REDIS_REPLY_NIL) {
        course->version[0] = '0';          /* no course written yet */
        course->version_len = 1;

    } else if (v->type == REDIS_REPLY_STRING && v->len > 0
               && v->len <= NGX_HTTP_ELEARN_COURSE_VERSION_MAX)
    {
        ngx_memcpy(course->version, v->str, v->len);
        course->version_len = v->len;
    }

    return reply->element[0];
}


/* a leader's second look at the cache (after the lock or a poll) */
static void
ngx_http_elearn_course_recheck_done(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_t *course = data;

    redisReply                   *entry;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    entry = ngx_http_elearn_course_entry(course, reply, rc);

    if (entry != NULL && entry->type == REDIS_REPLY_STRING) {
        ngx_http_elearn_course_unlock(course);
        ngx_http_elearn_course_land(course, NGX_OK, entry->str, entry->len);
        ngx_http_elearn_finalize(r,
                                 ngx_http_elearn_send_json(r, NGX_HTTP_OK,
                                                           entry->str,
                                                           entry->len));
        return;
    }

    /*
     * Another worker holds the lock: it is building the document (a busy
     * database may take a while), look again while its lock lives
     */
    if (entry != NULL && entry->type == REDIS_REPLY_NIL && !course->locked
        && course->lock_held
        && ++course->polls * NGX_HTTP_ELEARN_COURSE_POLL_MSEC
           < emcf->cache_lock_timeout)
    {
        course->timer_for = NGX_HTTP_ELEARN_COURSE_POLL;
        ngx_add_timer(&course->timer, NGX_HTTP_ELEARN_COURSE_POLL_MSEC);
        return;
    }

    /*
     * ours to build, or the other worker gave up (its lock is gone with
     * no document) or took too long, or Redis failed
     */

    ngx_http_elearn_course_fetch_or_fail(r, course);
}


static void
ngx_http_elearn_course_lock_done(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_t *course = data;

    if (rc != NGX_OK
        || (reply->type != REDIS_REPLY_STATUS
            && reply->type != REDIS_REPLY_NIL))
    {
        ngx_http_elearn_course_fetch_or_fail(r, course);
        return;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        /* another worker is building it: give it a moment */
        course->polls = 0;
        course->timer_for = NGX_HTTP_ELEARN_COURSE_POLL;
        ngx_add_timer(&course->timer, NGX_HTTP_ELEARN_COURSE_POLL_MSEC);
        return;
    }

    /*
     * Locked.  Look once more: a worker that held the lock may have
     * filled the cache and unlocked since our first GET.
     */
    course->locked = 1;

    rc = ngx_http_elearn_course_lookup(r, course, 0,
                                       ngx_http_elearn_course_recheck_done);
    if (rc != NGX_AGAIN) {
        ngx_http_elearn_course_fetch_or_fail(r, course);
    }
}


/* a leader: take the Redis lock, then build or wait for the holder */
static ngx_int_t
ngx_http_elearn_course_lock(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course)
{
    u_char                        px[NGX_INT_T_LEN];
    const char                   *argv[6];
    size_t                        argvlen[6];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->redis == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (char *) course->lock;
    argvlen[1] = course->lock_len;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = "NX";
    argvlen[3] = 2;
    argv[4] = "PX";
    argvlen[4] = 2;
    argv[5] = (char *) px;
    argvlen[5] = ngx_sprintf(px, "%M", emcf->cache_lock_timeout) - px;

    return ngx_http_elearn_redis_command(r, ngx_http_elearn_course_lock_done,
                                         course, 6, argv, argvlen);
}


static void
ngx_http_elearn_course_timer_handler(ngx_event_t *ev)
{
    ngx_http_elearn_course_t *course = ev->data;

    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = course->request;

    switch (course->timer_for) {

    case NGX_HTTP_ELEARN_COURSE_POLL:
        rc = ngx_http_elearn_course_lookup(r, course, 1,
                                           ngx_http_elearn_course_recheck_done);
        if (rc == NGX_AGAIN) {
            return;
        }

        break;

    case NGX_HTTP_ELEARN_COURSE_WAIT:
        /* the leader is slow: leave its flight and ask for ourselves */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "elearn course: waited too long for course %s",
                      course->id);

        if (course->flight) {
            ngx_queue_remove(&course->queue);
            course->flight = NULL;
        }

        break;

    default: /* NGX_HTTP_ELEARN_COURSE_TAKEOVER */
        break;
    }

    ngx_http_elearn_course_fetch_or_fail(r, course);
}


/*
 * A miss: join this worker's flight for the id, or lead a new one.
 * Returns NGX_AGAIN when the answer will come, else what to answer.
 */
static ngx_int_t
ngx_http_elearn_course_miss(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course)
{
    ngx_int_t                         rc;
    ngx_queue_t                      *q;
    ngx_http_elearn_main_conf_t      *emcf;
    ngx_http_elearn_course_flight_t  *flight;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_elearn_course_flights.prev == NULL) {
        ngx_queue_init(&ngx_http_elearn_course_flights);
    }

    for (q = ngx_queue_head(&ngx_http_elearn_course_flights);
         q != ngx_queue_sentinel(&ngx_http_elearn_course_flights);
         q = ngx_queue_next(q))
    {
        flight = ngx_queue_data(q, ngx_http_elearn_course_flight_t, queue);

        if (flight->course_id == course->course_id) {
            ngx_queue_insert_tail(&flight->waiters, &course->queue);
            course->flight = flight;
            course->timer_for = NGX_HTTP_ELEARN_COURSE_WAIT;
            ngx_add_timer(&course->timer, emcf->cache_lock_timeout);
            return NGX_AGAIN;
        }
    }

    if (ngx_http_elearn_course_nflights >= NGX_HTTP_ELEARN_COURSE_FLIGHTS_MAX)
    {
        return ngx_http_elearn_course_fetch(r, course);
    }

    flight = ngx_alloc(sizeof(ngx_http_elearn_course_flight_t),
                       r->connection->log);
    if (flight == NULL) {
        return ngx_http_elearn_course_fetch(r, course);
    }

    flight->course_id = course->course_id;
    flight->leader = course;
    ngx_queue_init(&flight->waiters);
    ngx_queue_insert_tail(&ngx_http_elearn_course_flights, &flight->queue);
    ngx_http_elearn_course_nflights++;

    course->flight = flight;
    course->leader = 1;

    rc = ngx_http_elearn_course_lock(r, course);

    if (rc != NGX_AGAIN) {
        rc = ngx_http_elearn_course_fetch(r, course);
    }

    if (rc != NGX_AGAIN) {
        /* nothing will answer the waiters (there are none yet) */
        course->flight = NULL;
        ngx_queue_remove(&flight->queue);
        ngx_http_elearn_course_nflights--;
        ngx_free(flight);
    }

    return rc;
}


static void
ngx_http_elearn_course_cache_done(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_t *course = data;

    redisReply  *entry;

    entry = ngx_http_elearn_course_entry(course, reply, rc);

    if (entry != NULL && entry->type == REDIS_REPLY_STRING) {
        ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_COURSE, 1);
        ngx_http_elearn_finalize(r,
                                 ngx_http_elearn_send_json(r, NGX_HTTP_OK,
                                                           entry->str,
                                                           entry->len));
        return;
    }

    ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_COURSE, 0);

    if (entry != NULL && entry->type == REDIS_REPLY_NIL) {
        rc = ngx_http_elearn_course_miss(r, course);

        if (rc != NGX_AGAIN) {
            ngx_http_elearn_finalize(r,
                ngx_http_elearn_problem_backend(r, rc, "the database"));
        }

        return;
    }

    /* Redis is down or slow: ask the database, no lock to be had */

    ngx_http_elearn_course_fetch_or_fail(r, course);
}


static ngx_int_t
ngx_http_elearn_course_fetch(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course)
{
    const char                   *values[2];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->pg == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    values[0] = (char *) course->id;
    values[1] = "f";            /* published courses only */

    return ngx_http_elearn_pg_query_prepared(r,
                                             &ngx_http_elearn_course_get_stmt,
                                             2, values,
                                             ngx_http_elearn_course_pg_done,
                                             course);
}


/* from an event handler: query, or answer (and land the flight) now */
static void
ngx_http_elearn_course_fetch_or_fail(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course)
{
    ngx_int_t  rc;

    rc = ngx_http_elearn_course_fetch(r, course);

    if (rc == NGX_AGAIN) {
        return;
    }

    ngx_http_elearn_course_unlock(course);
    ngx_http_elearn_course_land(course, rc, NULL, 0);
    ngx_http_elearn_finalize(r,
        ngx_http_elearn_problem_backend(r, rc, "the database"));
}


ngx_int_t
ngx_http_elearn_course_get(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_pool_cleanup_t        *cln;
    ngx_http_elearn_course_t  *course;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    course = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_course_t));
    if (course == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* before any backend's: cleanups run last-in first-out */
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_elearn_course_cleanup;
    cln->data = course;

    course->request = r;
    course->course_id = ctx->ids[0];
    course->id_len = ngx_sprintf(course->id, "%L", ctx->ids[0]) - course->id;
    course->id[course->id_len] = '\0';
    course->key_len = ngx_sprintf(course->key, "course:%L", ctx->ids[0])
                      - course->key;
    course->lock_len = ngx_sprintf(course->lock, "course:%L:lock",
                                   ctx->ids[0])
                       - course->lock;

    course->timer.handler = ngx_http_elearn_course_timer_handler;
    course->timer.data = course;
    course->timer.log = r->connection->log;

    ctx->data = course;

    rc = ngx_http_elearn_course_lookup(r, course, 0,
                                       ngx_http_elearn_course_cache_done);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_COURSE, 0);
        rc = ngx_http_elearn_course_fetch(r, course);
    }

    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/* --- warming at start --------------------------------------------------- */

/*
 * A second after it starts, worker 0 reads the ids of the
 * elearn_cache_warm most popular published courses and fills their
 * course:{id} entries with the statement and the key of a miss.  One
 * statement at a time, on the worker's own queries, so requests never
 * wait behind the warming for long; nothing here runs once the pool is
 * destroyed.  Entries already there are simply rewritten.
 */

typedef struct {
    ngx_event_t                    timer;
    ngx_http_elearn_main_conf_t   *emcf;
    int64_t                       *ids;
    ngx_uint_t                     n;
    ngx_uint_t                     next;
    ngx_uint_t                     stored;
    ngx_msec_t                     start;
} ngx_http_elearn_course_warm_t;


static void ngx_http_elearn_course_warm_next(
    ngx_http_elearn_course_warm_t *w);


static void
ngx_http_elearn_course_warm_doc(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_warm_t *w = data;

    u_char  key[NGX_HTTP_ELEARN_COURSE_KEY_LEN];
    size_t  len;

    if (rc == NGX_OK && PQresultStatus(res) == PGRES_TUPLES_OK
        && PQntuples(res) == 1)
    {
        len = ngx_sprintf(key, "course:%L", w->ids[w->next]) - key;

        if (ngx_http_elearn_course_cache_fill(w->emcf, key, len, NULL,
                                              PQgetvalue(res, 0, 0),
                                              PQgetlength(res, 0, 0))
            == NGX_AGAIN)
        {
            w->stored++;
        }

    } else if (rc != NGX_OK || PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn course: warming stopped at course %L: %s",
                      w->ids[w->next],
                      rc == NGX_OK ? PQresultErrorMessage(res)
                                   : "the database is unavailable");
        w->n = w->next;
        ngx_http_elearn_course_warm_next(w);
        return;
    }

    w->next++;
    ngx_http_elearn_course_warm_next(w);
}


static void
ngx_http_elearn_course_warm_next(ngx_http_elearn_course_warm_t *w)
{
    u_char      *p, id[NGX_INT64_LEN + 1];
    ngx_int_t    rc;
    const char  *values[2];

    if (w->next < w->n) {
        p = ngx_sprintf(id, "%L", w->ids[w->next]);
        *p = '\0';

        values[0] = (char *) id;
        values[1] = "false";

        rc = ngx_http_elearn_pg_query_prepared(NULL,
                                           &ngx_http_elearn_course_get_stmt,
                                           2, values,
                                           ngx_http_elearn_course_warm_doc,
                                           w);
        if (rc == NGX_AGAIN) {
            return;
        }
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "elearn course: warmed %ui of the %ui most popular "
                  "courses in %M ms", w->stored, w->emcf->cache_warm,
                  ngx_current_msec - w->start);
}


static void
ngx_http_elearn_course_warm_ids(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_warm_t *w = data;

    int  i, n;

    if (rc != NGX_OK || PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn course: no warming: %s",
                      rc == NGX_OK ? PQresultErrorMessage(res)
                                   : "the database is unavailable");
        return;
    }

    n = PQntuples(res);

    w->ids = ngx_palloc(ngx_cycle->pool, (n + 1) * sizeof(int64_t));
    if (w->ids == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        w->ids[i] = ngx_atoof((u_char *) PQgetvalue(res, i, 0),
                              PQgetlength(res, i, 0));
        if (w->ids[i] == NGX_ERROR) {
            return;
        }
    }

    w->n = n;
    ngx_http_elearn_course_warm_next(w);
}


static void
ngx_http_elearn_course_warm_start(ngx_event_t *ev)
{
    ngx_http_elearn_course_warm_t *w = ev->data;

    u_char      *p, n[NGX_INT_T_LEN + 1];
    ngx_int_t    rc;
    const char  *values[1];

    p = ngx_sprintf(n, "%ui", w->emcf->cache_warm);
    *p = '\0';
    values[0] = (char *) n;

    w->start = ngx_current_msec;

    rc = ngx_http_elearn_pg_query(NULL, NGX_HTTP_ELEARN_SQL_COURSE_POPULAR, 1,
                                  values, ngx_http_elearn_course_warm_ids, w);
    if (rc != NGX_AGAIN) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn course: no warming: the database is "
                      "unavailable");
    }
}


void
ngx_http_elearn_course_warm(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf)
{
    ngx_http_elearn_course_warm_t  *w;

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_elearn_course_warm_t));
    if (w == NULL) {
        return;
    }

    w->emcf = emcf;
    w->timer.handler = ngx_http_elearn_course_warm_start;
    w->timer.data = w;
    w->timer.log = cycle->log;
    w->timer.cancelable = 1;

    /* the pools connect lazily: give them a moment */
    ngx_add_timer(&w->timer, 1000);
}
