
/*
 * elearn metrics: counters in one shared-memory zone, read by /metrics in
 * the Prometheus text format (version 0.0.4).
 *
 * The zone holds one fixed structure, allocated once from its slab pool
 * and kept across reloads.  Per worker slot (indexed by ngx_worker):
 * per endpoint, requests by status code and a latency histogram, bumped
 * with atomic adds by the slot's worker on every request; and gauges and
 * counters of the worker's PostgreSQL pool, Redis connections and Kafka
 * producer, written only by that worker once a second from a cancelable
 * timer.  /metrics sums the request counters of all slots.
 *
 * The request counters are per slot so that workers on different cores
 * never write the same cache line: one shared set of counters made every
 * request pull its lines from the last core that wrote them.  A slot's
 * counters outlive its worker (its successor after a reload or a crash
 * adds to them), so that the sums never go backwards.
 *
 * Nothing here allocates shared memory after start-up, takes a lock or
 * blocks: the zone cannot run out, and a slow scrape cannot stall a
 * request.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_metrics.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_kafka.h"
#include "ngx_http_elearn_ws.h"
#include "ngx_http_elearn_live.h"
#include "ngx_http_elearn_problem.h"


#define NGX_HTTP_ELEARN_METRICS_MAGIC       0x656c6d33   /* "elm3" */
#define NGX_HTTP_ELEARN_METRICS_WORKERS     64
#define NGX_HTTP_ELEARN_METRICS_DEFAULT     (1024 * 1024)

/* what two slots' request counters must never share */
#if (NGX_CPU_CACHE_LINE > 64)
#define NGX_HTTP_ELEARN_METRICS_LINE        NGX_CPU_CACHE_LINE
#else
#define NGX_HTTP_ELEARN_METRICS_LINE        64
#endif

/* a worker slot not refreshed for this long belongs to a dead worker */
#define NGX_HTTP_ELEARN_METRICS_STALE       10

#define NGX_HTTP_ELEARN_METRICS_INTERVAL    1000

/* output: no line is longer than this; buffers are allocated this big */
#define NGX_HTTP_ELEARN_METRICS_LINE_MAX    512
#define NGX_HTTP_ELEARN_METRICS_BUF_SIZE    16384


static ngx_uint_t  ngx_http_elearn_metrics_codes[] = {
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 409, 413,
    415, 422, 429, 499, 500, 502, 503, 504
};

#define NGX_HTTP_ELEARN_METRICS_NCODES                                        \
    (sizeof(ngx_http_elearn_metrics_codes) / sizeof(ngx_uint_t))


/* bucket upper bounds in microseconds, and as Prometheus prints them */
static ngx_uint_t  ngx_http_elearn_metrics_bounds[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000
};

static char  *ngx_http_elearn_metrics_le[] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "+Inf"
};

#define NGX_HTTP_ELEARN_METRICS_NBOUNDS                                       \
    (sizeof(ngx_http_elearn_metrics_bounds) / sizeof(ngx_uint_t))

/* the last bucket is +Inf */
#define NGX_HTTP_ELEARN_METRICS_NBUCKETS  (NGX_HTTP_ELEARN_METRICS_NBOUNDS + 1)


typedef struct {
    /* the last counter is "other" */
    ngx_atomic_t      codes[NGX_HTTP_ELEARN_METRICS_NCODES + 1];
    /* not cumulative: buckets[i] counts bounds[i - 1] < t <= bounds[i] */
    ngx_atomic_t      buckets[NGX_HTTP_ELEARN_METRICS_NBUCKETS];
    ngx_atomic_t      sum_ms;
} ngx_http_elearn_metrics_endpoint_t;


/*
 * One slot's request counters, in whole cache lines.  Only the slot's
 * worker writes them, except during a reload, when the old worker with
 * the same ngx_worker finishes its requests: hence still atomic adds,
 * which cost little on a line that no other core holds.
 */
typedef struct {
    ngx_http_elearn_metrics_endpoint_t  endpoints[NGX_HTTP_ELEARN_EP_MAX];

    /* cache lookups: [cache][0 miss, 1 hit] */
    ngx_atomic_t                        cache[NGX_HTTP_ELEARN_CACHE_MAX][2];
} ngx_http_elearn_metrics_slot_t;


typedef union {
    ngx_http_elearn_metrics_slot_t      s;
    u_char                              pad[ngx_align(
                                  sizeof(ngx_http_elearn_metrics_slot_t),
                                  NGX_HTTP_ELEARN_METRICS_LINE)];
} ngx_http_elearn_metrics_requests_t;


typedef struct {
    ngx_atomic_t                      pid;
    ngx_atomic_t                      updated;      /* ngx_time() */

    ngx_atomic_t                      has_pg;
    ngx_atomic_t                      pg_size;
    ngx_atomic_t                      pg_connected;
    ngx_atomic_t                      pg_busy;
    ngx_atomic_t                      pg_waiting;
    ngx_atomic_t                      pg_connect_failures;
    ngx_atomic_t                      pg_queue_rejects;
    ngx_atomic_t                      pg_timeouts;

    ngx_atomic_t                      has_redis;
    ngx_atomic_t                      redis_connected;
    ngx_atomic_t                      redis_pubsub_connected;
    ngx_atomic_t                      redis_pending;
    ngx_atomic_t                      redis_reconnects;
    ngx_atomic_t                      redis_timeouts;

    ngx_atomic_t                      has_kafka;
    ngx_atomic_t                      kafka_queued;
    ngx_atomic_t                      kafka_delivered;
    ngx_atomic_t                      kafka_delivery_errors;
    ngx_atomic_t                      kafka_queue_full;
    ngx_atomic_t                      kafka_brokers_up;

    /* WebSocket layer and live sessions (ngx_http_elearn_live.c) */
    ngx_atomic_t                      has_ws;
    ngx_atomic_t                      ws_open;
    ngx_atomic_t                      ws_upgrades;
    ngx_atomic_t                      ws_queued;
    ngx_atomic_t                      ws_slow_readers;
    ngx_atomic_t                      ws_ping_timeouts;
    ngx_atomic_t                      ws_failed;
    ngx_atomic_t                      live_participants;
    ngx_atomic_t                      live_sessions;
    ngx_atomic_t                      live_joins;
    ngx_atomic_t                      live_refused[
                                          NGX_HTTP_ELEARN_LIVE_REFUSED_MAX];
    ngx_atomic_t                      live_delivered;
    ngx_atomic_t                      live_resubscribes;
    ngx_atomic_t                      live_presence_publishes;
    ngx_atomic_t                      live_revoked_closes;
} ngx_http_elearn_metrics_worker_t;


typedef struct {
    /* a reload with a differently built module must not reuse the data */
    ngx_uint_t                        magic;
    size_t                            size;

    /*
     * The structure is page aligned (the slab pool gives an allocation
     * this big whole pages): the padding puts requests[] on a line of
     * its own.
     */
    u_char                            pad[NGX_HTTP_ELEARN_METRICS_LINE
                                          - sizeof(ngx_uint_t)
                                          - sizeof(size_t)];

    ngx_http_elearn_metrics_requests_t
                                  requests[NGX_HTTP_ELEARN_METRICS_WORKERS];
    ngx_http_elearn_metrics_worker_t  workers[NGX_HTTP_ELEARN_METRICS_WORKERS];
} ngx_http_elearn_metrics_shctx_t;


typedef struct {
    ngx_pool_t                       *pool;
    ngx_chain_t                      *out;
    ngx_chain_t                     **last;
    ngx_buf_t                        *buf;
    off_t                             size;
} ngx_http_elearn_metrics_output_t;


typedef struct {
    char                             *name;
    char                             *help;
    char                             *type;
    size_t                            offset;
    char                             *labels;     /* extra labels or NULL */
} ngx_http_elearn_metrics_family_t;


static ngx_int_t ngx_http_elearn_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_shm_zone_t *ngx_http_elearn_metrics_add_zone(ngx_conf_t *cf,
    size_t size);
static void ngx_http_elearn_metrics_update(ngx_event_t *ev);
static ngx_uint_t ngx_http_elearn_metrics_live(
    ngx_http_elearn_metrics_worker_t *w, time_t now);
static ngx_int_t ngx_http_elearn_metrics_print(
    ngx_http_elearn_metrics_output_t *o, const char *fmt, ...);
static ngx_int_t ngx_http_elearn_metrics_caches(
    ngx_http_elearn_metrics_output_t *o,
    ngx_http_elearn_metrics_shctx_t *sh);
static ngx_int_t ngx_http_elearn_metrics_http(
    ngx_http_elearn_metrics_output_t *o, ngx_http_elearn_metrics_shctx_t *sh);
static ngx_int_t ngx_http_elearn_metrics_workers(
    ngx_http_elearn_metrics_output_t *o, ngx_http_elearn_metrics_shctx_t *sh,
    size_t has, ngx_http_elearn_metrics_family_t *families, time_t now);


static ngx_str_t  ngx_http_elearn_metrics_zone_name =
    ngx_string("elearn_metrics");

static ngx_event_t  ngx_http_elearn_metrics_timer;


#define ngx_http_elearn_metrics_field(f)                                      \
    offsetof(ngx_http_elearn_metrics_worker_t, f)


static ngx_http_elearn_metrics_family_t  ngx_http_elearn_metrics_pg[] = {

    { "elearn_pg_pool_size",
      "Connections the worker's PostgreSQL pool is configured to hold.",
      "gauge", ngx_http_elearn_metrics_field(pg_size), NULL },

    /* the state label is printed by hand, see below */
    { "elearn_pg_pool_connections",
      "Open PostgreSQL connections by state.",
      "gauge", 0, NULL },

    { "elearn_pg_pool_waiting",
      "Requests queued for a PostgreSQL connection.",
      "gauge", ngx_http_elearn_metrics_field(pg_waiting), NULL },

    { "elearn_pg_connect_failures_total",
      "Failed PostgreSQL connection attempts.",
      "counter", ngx_http_elearn_metrics_field(pg_connect_failures), NULL },

    { "elearn_pg_queue_rejects_total",
      "Requests refused because the PostgreSQL queue was full or the "
      "wait expired.",
      "counter", ngx_http_elearn_metrics_field(pg_queue_rejects), NULL },

    { "elearn_pg_query_timeouts_total",
      "PostgreSQL queries that ran past elearn_pg_query_timeout.",
      "counter", ngx_http_elearn_metrics_field(pg_timeouts), NULL },

    { NULL, NULL, NULL, 0, NULL }
};


static ngx_http_elearn_metrics_family_t  ngx_http_elearn_metrics_redis[] = {

    { "elearn_redis_connected",
      "Whether the worker's Redis connection is up (1) or not (0).",
      "gauge", ngx_http_elearn_metrics_field(redis_connected),
      "connection=\"command\"" },

    /* continues the family above */
    { "elearn_redis_connected", NULL,
      NULL, ngx_http_elearn_metrics_field(redis_pubsub_connected),
      "connection=\"pubsub\"" },

    { "elearn_redis_pending_commands",
      "Redis commands awaiting a reply.",
      "gauge", ngx_http_elearn_metrics_field(redis_pending), NULL },

    { "elearn_redis_reconnects_total",
      "Redis reconnections.",
      "counter", ngx_http_elearn_metrics_field(redis_reconnects), NULL },

    { "elearn_redis_command_timeouts_total",
      "Redis commands that got no reply within elearn_redis_timeout.",
      "counter", ngx_http_elearn_metrics_field(redis_timeouts), NULL },

    { NULL, NULL, NULL, 0, NULL }
};


static ngx_http_elearn_metrics_family_t  ngx_http_elearn_metrics_kafka[] = {

    { "elearn_kafka_queue_messages",
      "Messages in the Kafka producer's local queue.",
      "gauge", ngx_http_elearn_metrics_field(kafka_queued), NULL },

    { "elearn_kafka_delivered_total",
      "Messages acknowledged by Kafka.",
      "counter", ngx_http_elearn_metrics_field(kafka_delivered), NULL },

    { "elearn_kafka_delivery_errors_total",
      "Messages Kafka failed to take.",
      "counter", ngx_http_elearn_metrics_field(kafka_delivery_errors), NULL },

    { "elearn_kafka_queue_full_total",
      "Messages refused because the producer's queue was full.",
      "counter", ngx_http_elearn_metrics_field(kafka_queue_full), NULL },

    { "elearn_kafka_brokers_up",
      "Kafka brokers the producer is connected to.",
      "gauge", ngx_http_elearn_metrics_field(kafka_brokers_up), NULL },

    { NULL, NULL, NULL, 0, NULL }
};


#define ngx_http_elearn_metrics_refused(reason)                               \
    ngx_http_elearn_metrics_field(live_refused)                               \
    + NGX_HTTP_ELEARN_LIVE_REFUSED_ ## reason * sizeof(ngx_atomic_t)


static ngx_http_elearn_metrics_family_t  ngx_http_elearn_metrics_ws[] = {

    { "elearn_ws_connections",
      "Open WebSocket connections (live participants and echo).",
      "gauge", ngx_http_elearn_metrics_field(ws_open), NULL },

    { "elearn_ws_upgrades_total",
      "WebSocket handshakes answered with 101.",
      "counter", ngx_http_elearn_metrics_field(ws_upgrades), NULL },

    { "elearn_ws_queued_bytes",
      "Bytes queued for WebSocket clients, all connections.",
      "gauge", ngx_http_elearn_metrics_field(ws_queued), NULL },

    { "elearn_ws_closed_total",
      "WebSocket connections closed by the server, by reason.",
      "counter", ngx_http_elearn_metrics_field(ws_slow_readers),
      "reason=\"slow-reader\"" },

    { "elearn_ws_closed_total", NULL,
      NULL, ngx_http_elearn_metrics_field(ws_ping_timeouts),
      "reason=\"ping-timeout\"" },

    { "elearn_ws_closed_total", NULL,
      NULL, ngx_http_elearn_metrics_field(ws_failed),
      "reason=\"protocol\"" },

    { "elearn_live_participants",
      "Open live-session sockets (participants past their welcome).",
      "gauge", ngx_http_elearn_metrics_field(live_participants), NULL },

    { "elearn_live_sessions",
      "Live sessions with participants in the worker.",
      "gauge", ngx_http_elearn_metrics_field(live_sessions), NULL },

    { "elearn_live_joins_total",
      "Live-session joins, accepted or refused by reason.",
      "counter", ngx_http_elearn_metrics_field(live_joins),
      "result=\"accepted\"" },

    { "elearn_live_joins_total", NULL, NULL,
      ngx_http_elearn_metrics_refused(TOKEN), "result=\"token\"" },

    { "elearn_live_joins_total", NULL, NULL,
      ngx_http_elearn_metrics_refused(FORBIDDEN), "result=\"forbidden\"" },

    { "elearn_live_joins_total", NULL, NULL,
      ngx_http_elearn_metrics_refused(NOT_FOUND), "result=\"not-found\"" },

    { "elearn_live_joins_total", NULL, NULL,
      ngx_http_elearn_metrics_refused(CLOSED), "result=\"closed\"" },

    { "elearn_live_joins_total", NULL, NULL,
      ngx_http_elearn_metrics_refused(FULL), "result=\"full\"" },

    { "elearn_live_joins_total", NULL, NULL,
      ngx_http_elearn_metrics_refused(UNAVAILABLE),
      "result=\"unavailable\"" },

    { "elearn_live_joins_total", NULL, NULL,
      ngx_http_elearn_metrics_refused(BAD), "result=\"bad-request\"" },

    { "elearn_live_delivered_total",
      "Live frames queued to participants (messages, presence, system).",
      "counter", ngx_http_elearn_metrics_field(live_delivered), NULL },

    { "elearn_live_resubscribes_total",
      "Session channels subscribed again after a Redis reconnect.",
      "counter", ngx_http_elearn_metrics_field(live_resubscribes), NULL },

    { "elearn_live_presence_publishes_total",
      "Participant counts published to Redis (at most one per session "
      "per elearn_live_presence_interval).",
      "counter", ngx_http_elearn_metrics_field(live_presence_publishes),
      NULL },

    { "elearn_live_revoked_closes_total",
      "Open live-session sockets closed (4001) because their token was "
      "revoked.",
      "counter", ngx_http_elearn_metrics_field(live_revoked_closes), NULL },

    { NULL, NULL, NULL, 0, NULL }
};


char *
ngx_http_elearn_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_elearn_main_conf_t *emcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (emcf->metrics_zone != NULL
        && emcf->metrics_zone != NGX_CONF_UNSET_PTR)
    {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"elearn_metrics_zone\" size \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* the slab pool's own pages, and the structure in whole pages */
    if ((size_t) size < 8 * ngx_pagesize
                        + sizeof(ngx_http_elearn_metrics_shctx_t))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_metrics_zone\" %V is too small, "
                           "at least %uzk needed",
                           &value[1],
                           (8 * ngx_pagesize
                            + sizeof(ngx_http_elearn_metrics_shctx_t)
                            + 1023) / 1024);
        return NGX_CONF_ERROR;
    }

    emcf->metrics_zone = ngx_http_elearn_metrics_add_zone(cf, size);
    if (emcf->metrics_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_elearn_metrics_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf)
{
    if (emcf->metrics_zone != NULL
        && emcf->metrics_zone != NGX_CONF_UNSET_PTR)
    {
        return NGX_OK;
    }

    emcf->metrics_zone = ngx_http_elearn_metrics_add_zone(cf,
                                              NGX_HTTP_ELEARN_METRICS_DEFAULT);
    if (emcf->metrics_zone == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_shm_zone_t *
ngx_http_elearn_metrics_add_zone(ngx_conf_t *cf, size_t size)
{
    ngx_shm_zone_t  *shm_zone;

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_elearn_metrics_zone_name,
                                     size, &ngx_http_elearn_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used",
                           &ngx_http_elearn_metrics_zone_name);
        return NULL;
    }

    shm_zone->init = ngx_http_elearn_metrics_init_zone;
    shm_zone->data = &ngx_http_elearn_metrics_zone_name;  /* "in use" */

    return shm_zone;
}


static ngx_int_t
ngx_http_elearn_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_elearn_metrics_shctx_t  *osh = data;

    size_t                            len;
    ngx_slab_pool_t                  *shpool;
    ngx_http_elearn_metrics_shctx_t  *sh;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /* a reload: the counters live on */
    if (osh != NULL
        && osh->magic == NGX_HTTP_ELEARN_METRICS_MAGIC
        && osh->size == sizeof(ngx_http_elearn_metrics_shctx_t))
    {
        shm_zone->data = osh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    /*
     * First start, or a reload with a module whose layout differs: the
     * old structure (if any) is left behind, unused.
     */
    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_elearn_metrics_shctx_t));
    if (sh == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "elearn metrics: zone \"%V\" is too small",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    sh->magic = NGX_HTTP_ELEARN_METRICS_MAGIC;
    sh->size = sizeof(ngx_http_elearn_metrics_shctx_t);

    shpool->data = sh;
    shm_zone->data = sh;

    len = sizeof(" in elearn_metrics_zone \"\"") + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx != NULL) {
        ngx_sprintf(shpool->log_ctx, " in elearn_metrics_zone \"%V\"%Z",
                    &shm_zone->shm.name);
    }

    return NGX_OK;
}


static ngx_http_elearn_metrics_shctx_t *
ngx_http_elearn_metrics_shctx(ngx_http_elearn_main_conf_t *emcf)
{
    ngx_http_elearn_metrics_shctx_t  *sh;

    if (emcf == NULL
        || emcf->metrics_zone == NULL
        || emcf->metrics_zone == NGX_CONF_UNSET_PTR)
    {
        return NULL;
    }

    sh = emcf->metrics_zone->data;

    /* before init_zone, data is the "in use" mark */
    if (sh == NULL || (void *) sh == &ngx_http_elearn_metrics_zone_name
        || sh->magic != NGX_HTTP_ELEARN_METRICS_MAGIC)
    {
        return NULL;
    }

    return sh;
}


void
ngx_http_elearn_metrics_record(ngx_http_request_t *r,
    ngx_http_elearn_endpoint_e endpoint, ngx_uint_t status,
    ngx_msec_t elapsed)
{
    ngx_uint_t                           i, us;
    ngx_http_elearn_main_conf_t         *emcf;
    ngx_http_elearn_metrics_shctx_t     *sh;
    ngx_http_elearn_metrics_endpoint_t  *ep;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    sh = ngx_http_elearn_metrics_shctx(emcf);
    if (sh == NULL) {
        return;
    }

    if ((ngx_uint_t) endpoint >= NGX_HTTP_ELEARN_EP_MAX) {
        endpoint = NGX_HTTP_ELEARN_EP_OTHER;
    }

    /*
     * Workers past the last slot share one; the atomic adds keep its
     * counts exact.
     */
    ep = &sh->requests[ngx_worker % NGX_HTTP_ELEARN_METRICS_WORKERS]
              .s.endpoints[endpoint];

    for (i = 0; i < NGX_HTTP_ELEARN_METRICS_NCODES; i++) {
        if (ngx_http_elearn_metrics_codes[i] == status) {
            break;
        }
    }

    /* i == NCODES is "other" */
    (void) ngx_atomic_fetch_add(&ep->codes[i], 1);

    us = (elapsed > NGX_MAX_UINT32_VALUE) ? NGX_MAX_UINT32_VALUE * 1000
                                          : (ngx_uint_t) elapsed * 1000;

    for (i = 0; i < NGX_HTTP_ELEARN_METRICS_NBOUNDS; i++) {
        if (us <= ngx_http_elearn_metrics_bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&ep->buckets[i], 1);
    (void) ngx_atomic_fetch_add(&ep->sum_ms, (ngx_atomic_int_t) elapsed);
}


void
ngx_http_elearn_metrics_cache(ngx_http_request_t *r,
    ngx_http_elearn_cache_e cache, ngx_uint_t hit)
{
    ngx_http_elearn_main_conf_t      *emcf;
    ngx_http_elearn_metrics_shctx_t  *sh;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    sh = ngx_http_elearn_metrics_shctx(emcf);
    if (sh == NULL || (ngx_uint_t) cache >= NGX_HTTP_ELEARN_CACHE_MAX) {
        return;
    }

    (void) ngx_atomic_fetch_add(
        &sh->requests[ngx_worker % NGX_HTTP_ELEARN_METRICS_WORKERS]
             .s.cache[cache][hit ? 1 : 0], 1);
}


ngx_int_t
ngx_http_elearn_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t  *ev;

    ev = &ngx_http_elearn_metrics_timer;

    ngx_memzero(ev, sizeof(ngx_event_t));

    ev->handler = ngx_http_elearn_metrics_update;
    ev->log = cycle->log;
    ev->data = NULL;

    /* the refresh must not keep a gracefully exiting worker alive */
    ev->cancelable = 1;

    /*
     * the first refresh runs on the first pass of the event loop, after
     * every init_process (the backends are created there too)
     */
    ngx_add_timer(ev, 0);

    return NGX_OK;
}


void
ngx_http_elearn_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_elearn_main_conf_t       *emcf;
    ngx_http_elearn_metrics_shctx_t   *sh;

    if (ngx_http_elearn_metrics_timer.timer_set) {
        ngx_del_timer(&ngx_http_elearn_metrics_timer);
    }

    emcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_elearn_module);

    sh = ngx_http_elearn_metrics_shctx(emcf);
    if (sh == NULL || ngx_worker >= NGX_HTTP_ELEARN_METRICS_WORKERS) {
        return;
    }

    /*
     * Only the gauges go: the slot's request counters stay for its next
     * worker, as the counters' sums must never go backwards.  After a
     * reload the slot may already be the new worker's.
     */
    (void) ngx_atomic_cmp_set(&sh->workers[ngx_worker].pid,
                              (ngx_atomic_uint_t) ngx_pid, 0);
}


static void
ngx_http_elearn_metrics_update(ngx_event_t *ev)
{
    ngx_http_elearn_pg_stats_t         pg;
    ngx_http_elearn_main_conf_t       *emcf;
    ngx_http_elearn_kafka_stats_t      kafka;
    ngx_http_elearn_redis_stats_t      redis;
    ngx_http_elearn_ws_stats_t         ws;
    ngx_http_elearn_live_stats_t       live;
    ngx_uint_t                         i;
    ngx_http_elearn_metrics_shctx_t   *sh;
    ngx_http_elearn_metrics_worker_t  *w;

    /*
     * An exiting worker leaves its slot to its successor after a reload
     * (same ngx_worker); the stale check hides it if there is none.
     */
    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    emcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_elearn_module);

    sh = ngx_http_elearn_metrics_shctx(emcf);

    if (sh == NULL || ngx_worker >= NGX_HTTP_ELEARN_METRICS_WORKERS) {
        return;
    }

    w = &sh->workers[ngx_worker];

    if (emcf->pg != NULL) {
        ngx_memzero(&pg, sizeof(ngx_http_elearn_pg_stats_t));
        ngx_http_elearn_pg_get_stats(emcf->pg, &pg);

        w->pg_size = pg.size;
        w->pg_connected = pg.connected;
        w->pg_busy = pg.busy;
        w->pg_waiting = pg.waiting;
        w->pg_connect_failures = pg.connect_failures;
        w->pg_queue_rejects = pg.queue_rejects;
        w->pg_timeouts = pg.timeouts;
    }

    w->has_pg = (emcf->pg != NULL);

    if (emcf->redis != NULL) {
        ngx_memzero(&redis, sizeof(ngx_http_elearn_redis_stats_t));
        ngx_http_elearn_redis_get_stats(emcf->redis, &redis);

        w->redis_connected = redis.connected;
        w->redis_pubsub_connected = redis.pubsub_connected;
        w->redis_pending = redis.pending;
        w->redis_reconnects = redis.reconnects;
        w->redis_timeouts = redis.timeouts;
    }

    w->has_redis = (emcf->redis != NULL);

    if (emcf->kafka != NULL) {
        ngx_memzero(&kafka, sizeof(ngx_http_elearn_kafka_stats_t));
        ngx_http_elearn_kafka_get_stats(emcf->kafka, &kafka);

        w->kafka_queued = kafka.queued;
        w->kafka_delivered = kafka.delivered;
        w->kafka_delivery_errors = kafka.delivery_errors;
        w->kafka_queue_full = kafka.queue_full;
        w->kafka_brokers_up = kafka.brokers_up;

        if (emcf->kafka_durable != NULL) {
            /* the durable reports' producer counts with the other */
            ngx_memzero(&kafka, sizeof(ngx_http_elearn_kafka_stats_t));
            ngx_http_elearn_kafka_get_stats(emcf->kafka_durable, &kafka);

            w->kafka_queued += kafka.queued;
            w->kafka_delivered += kafka.delivered;
            w->kafka_delivery_errors += kafka.delivery_errors;
            w->kafka_queue_full += kafka.queue_full;
        }
    }

    w->has_kafka = (emcf->kafka != NULL);

    ngx_http_elearn_ws_get_stats(&ws);

    w->ws_open = ws.open;
    w->ws_upgrades = ws.upgrades;
    w->ws_queued = ws.queued;
    w->ws_slow_readers = ws.slow_readers;
    w->ws_ping_timeouts = ws.ping_timeouts;
    w->ws_failed = ws.failed;

    ngx_http_elearn_live_get_stats(&live);

    w->live_participants = live.participants;
    w->live_sessions = live.sessions;
    w->live_joins = live.joins;

    for (i = 0; i < NGX_HTTP_ELEARN_LIVE_REFUSED_MAX; i++) {
        w->live_refused[i] = live.refused[i];
    }

    w->live_delivered = live.delivered;
    w->live_resubscribes = live.resubscribes;
    w->live_presence_publishes = live.presence_publishes;
    w->live_revoked_closes = live.revoked_closes;

    w->has_ws = 1;

    w->pid = (ngx_atomic_uint_t) ngx_pid;
    w->updated = (ngx_atomic_uint_t) ngx_time();

    ngx_add_timer(ev, NGX_HTTP_ELEARN_METRICS_INTERVAL);
}


ngx_int_t
ngx_http_elearn_metrics_handler(ngx_http_request_t *r)
{
    time_t                             now;
    ngx_int_t                          rc;
    ngx_http_elearn_main_conf_t       *emcf;
    ngx_http_elearn_metrics_shctx_t   *sh;
    ngx_http_elearn_metrics_output_t   o;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_elearn_problem_method(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    sh = ngx_http_elearn_metrics_shctx(emcf);
    if (sh == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn metrics: no metrics zone");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&o, sizeof(ngx_http_elearn_metrics_output_t));
    o.pool = r->pool;
    o.last = &o.out;

    now = ngx_time();

    if (ngx_http_elearn_metrics_http(&o, sh) != NGX_OK
        || ngx_http_elearn_metrics_caches(&o, sh) != NGX_OK
        || ngx_http_elearn_metrics_workers(&o, sh,
                   ngx_http_elearn_metrics_field(has_pg),
                   ngx_http_elearn_metrics_pg, now)
           != NGX_OK
        || ngx_http_elearn_metrics_workers(&o, sh,
                   ngx_http_elearn_metrics_field(has_redis),
                   ngx_http_elearn_metrics_redis, now)
           != NGX_OK
        || ngx_http_elearn_metrics_workers(&o, sh,
                   ngx_http_elearn_metrics_field(has_kafka),
                   ngx_http_elearn_metrics_kafka, now)
           != NGX_OK
        || ngx_http_elearn_metrics_workers(&o, sh,
                   ngx_http_elearn_metrics_field(has_ws),
                   ngx_http_elearn_metrics_ws, now)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = o.size;

    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;
    r->headers_out.content_type_lowcase = NULL;

    if (o.out == NULL) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    o.buf->last_buf = (r == r->main) ? 1 : 0;
    o.buf->last_in_chain = 1;

    return ngx_http_output_filter(r, o.out);
}


static ngx_int_t
ngx_http_elearn_metrics_http(ngx_http_elearn_metrics_output_t *o,
    ngx_http_elearn_metrics_shctx_t *sh)
{
    u_char                              *p, code[NGX_INT_T_LEN];
    ngx_str_t                           *name;
    ngx_uint_t                           e, i, s, total, n;
    ngx_atomic_uint_t                    v;
    ngx_http_elearn_metrics_endpoint_t  *ep, *sums, *src;

    /*
     * One pass over the slots into a private copy: each slot only grows,
     * so the sums do too, and every series below is printed from the
     * same numbers.
     */
    sums = ngx_pcalloc(o->pool, sizeof(ngx_http_elearn_metrics_endpoint_t)
                                * NGX_HTTP_ELEARN_EP_MAX);
    if (sums == NULL) {
        return NGX_ERROR;
    }

    for (s = 0; s < NGX_HTTP_ELEARN_METRICS_WORKERS; s++) {
        for (e = 0; e < NGX_HTTP_ELEARN_EP_MAX; e++) {
            src = &sh->requests[s].s.endpoints[e];
            ep = &sums[e];

            for (i = 0; i <= NGX_HTTP_ELEARN_METRICS_NCODES; i++) {
                ep->codes[i] += src->codes[i];
            }

            for (i = 0; i < NGX_HTTP_ELEARN_METRICS_NBUCKETS; i++) {
                ep->buckets[i] += src->buckets[i];
            }

            ep->sum_ms += src->sum_ms;
        }
    }

    if (ngx_http_elearn_metrics_print(o,
            "# HELP elearn_http_requests_total Requests served, by endpoint "
            "and status code.\n"
            "# TYPE elearn_http_requests_total counter\n")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (e = 0; e < NGX_HTTP_ELEARN_EP_MAX; e++) {
        ep = &sums[e];
        name = &ngx_http_elearn_endpoint_names[e];

        for (i = 0; i <= NGX_HTTP_ELEARN_METRICS_NCODES; i++) {
            v = ep->codes[i];

            /* series appear with their first request */
            if (v == 0) {
                continue;
            }

            if (i < NGX_HTTP_ELEARN_METRICS_NCODES) {
                p = ngx_sprintf(code, "%ui", ngx_http_elearn_metrics_codes[i]);

            } else {
                p = ngx_cpymem(code, "other", sizeof("other") - 1);
            }

            if (ngx_http_elearn_metrics_print(o,
                    "elearn_http_requests_total{endpoint=\"%V\","
                    "code=\"%*s\"} %uA\n", name, (size_t) (p - code), code, v)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (ngx_http_elearn_metrics_print(o,
            "# HELP elearn_http_request_duration_seconds Time from reading "
            "the request to logging it, by endpoint.\n"
            "# TYPE elearn_http_request_duration_seconds histogram\n")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (e = 0; e < NGX_HTTP_ELEARN_EP_MAX; e++) {
        ep = &sums[e];
        name = &ngx_http_elearn_endpoint_names[e];

        n = 0;
        for (i = 0; i < NGX_HTTP_ELEARN_METRICS_NBUCKETS; i++) {
            n += ep->buckets[i];
        }

        if (n == 0) {
            continue;
        }

        /* cumulative counts; _count is the +Inf bucket */
        total = 0;

        for (i = 0; i < NGX_HTTP_ELEARN_METRICS_NBUCKETS; i++) {
            total += ep->buckets[i];

            if (ngx_http_elearn_metrics_print(o,
                    "elearn_http_request_duration_seconds_bucket"
                    "{endpoint=\"%V\",le=\"%s\"} %ui\n",
                    name, ngx_http_elearn_metrics_le[i], total)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        v = ep->sum_ms;

        if (ngx_http_elearn_metrics_print(o,
                "elearn_http_request_duration_seconds_sum{endpoint=\"%V\"} "
                "%uA.%03uA\n"
                "elearn_http_request_duration_seconds_count{endpoint=\"%V\"} "
                "%ui\n",
                name, v / 1000, v % 1000, name, total)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* elearn_cache_requests_total: every series from the start, as zeros */
static ngx_int_t
ngx_http_elearn_metrics_caches(ngx_http_elearn_metrics_output_t *o,
    ngx_http_elearn_metrics_shctx_t *sh)
{
    ngx_uint_t          c, h, s;
    ngx_atomic_uint_t   v;

    static char  *names[] = { "course", "search", "facets", "suggest" };
    static char  *results[] = { "miss", "hit" };

    if (ngx_http_elearn_metrics_print(o,
            "# HELP elearn_cache_requests_total Cache lookups, by cache and "
            "result.\n"
            "# TYPE elearn_cache_requests_total counter\n")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (c = 0; c < NGX_HTTP_ELEARN_CACHE_MAX; c++) {
        for (h = 0; h < 2; h++) {
            v = 0;

            for (s = 0; s < NGX_HTTP_ELEARN_METRICS_WORKERS; s++) {
                v += sh->requests[s].s.cache[c][h];
            }

            if (ngx_http_elearn_metrics_print(o,
                    "elearn_cache_requests_total{cache=\"%s\","
                    "result=\"%s\"} %uA\n", names[c], results[h], v)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/*
 * Prints one family of per-worker series, for the live workers whose
 * backend is configured (the has flag at offset has); a family whose
 * backend no live worker has is left out.
 */
static ngx_int_t
ngx_http_elearn_metrics_workers(ngx_http_elearn_metrics_output_t *o,
    ngx_http_elearn_metrics_shctx_t *sh, size_t has,
    ngx_http_elearn_metrics_family_t *families, time_t now)
{
    u_char                            *base;
    ngx_uint_t                         i, any;
    ngx_atomic_uint_t                  v, busy;
    ngx_http_elearn_metrics_worker_t  *w;
    ngx_http_elearn_metrics_family_t  *f;

    any = 0;

    for (i = 0; i < NGX_HTTP_ELEARN_METRICS_WORKERS; i++) {
        w = &sh->workers[i];

        if (ngx_http_elearn_metrics_live(w, now)
            && *(ngx_atomic_t *) ((u_char *) w + has))
        {
            any = 1;
            break;
        }
    }

    if (!any) {
        return NGX_OK;
    }

    for (f = families; f->name != NULL; f++) {

        if (f->help != NULL) {
            if (ngx_http_elearn_metrics_print(o, "# HELP %s %s\n"
                                              "# TYPE %s %s\n",
                                              f->name, f->help,
                                              f->name, f->type)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        for (i = 0; i < NGX_HTTP_ELEARN_METRICS_WORKERS; i++) {
            w = &sh->workers[i];
            base = (u_char *) w;

            if (!ngx_http_elearn_metrics_live(w, now)
                || *(ngx_atomic_t *) (base + has) == 0)
            {
                continue;
            }

            if (f->offset == 0) {
                /* elearn_pg_pool_connections: one series per state */
                busy = w->pg_busy;
                v = w->pg_connected;
                v = (v > busy) ? v - busy : 0;

                if (ngx_http_elearn_metrics_print(o,
                        "%s{worker=\"%ui\",state=\"idle\"} %uA\n"
                        "%s{worker=\"%ui\",state=\"busy\"} %uA\n",
                        f->name, i, v, f->name, i, busy)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                continue;
            }

            v = *(ngx_atomic_t *) (base + f->offset);

            if (ngx_http_elearn_metrics_print(o,
                                              "%s{worker=\"%ui\"%s%s} %uA\n",
                                              f->name, i,
                                              f->labels ? "," : "",
                                              f->labels ? f->labels : "", v)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_elearn_metrics_live(ngx_http_elearn_metrics_worker_t *w, time_t now)
{
    time_t  updated;

    if (w->pid == 0) {
        return 0;
    }

    updated = (time_t) w->updated;

    return (now - updated <= NGX_HTTP_ELEARN_METRICS_STALE) ? 1 : 0;
}


/*
 * Appends one or more lines, at most NGX_HTTP_ELEARN_METRICS_LINE_MAX
 * bytes in all, to the output chain.
 */
static ngx_int_t
ngx_http_elearn_metrics_print(ngx_http_elearn_metrics_output_t *o,
    const char *fmt, ...)
{
    u_char       *p;
    va_list       args;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = o->buf;

    if (b == NULL || b->end - b->last < NGX_HTTP_ELEARN_METRICS_LINE_MAX) {
        b = ngx_create_temp_buf(o->pool, NGX_HTTP_ELEARN_METRICS_BUF_SIZE);
        if (b == NULL) {
            return NGX_ERROR;
        }

        cl = ngx_alloc_chain_link(o->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;

        *o->last = cl;
        o->last = &cl->next;
        o->buf = b;
    }

    va_start(args, fmt);
    p = ngx_vslprintf(b->last, b->last + NGX_HTTP_ELEARN_METRICS_LINE_MAX,
                      fmt, args);
    va_end(args);

    o->size += p - b->last;
    b->last = p;

    return NGX_OK;
}
