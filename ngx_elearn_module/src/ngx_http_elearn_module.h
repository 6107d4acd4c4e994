
/*
 * elearn: the nginx module that serves the whole elearn request path.
 *
 * This header holds what every part of the module shares: the
 * configuration structures, the per-request context and the table of
 * endpoints (used by the router and by the metrics).  Each capability
 * lives in its own ngx_http_elearn_<capability>.c with its own header.
 *
 * Nothing in the module may block a worker process: every backend
 * (PostgreSQL, Redis, Kafka) is driven by nginx events, and every
 * asynchronous callback checks that its request still exists before it
 * touches it.
 */


#ifndef _NGX_HTTP_ELEARN_MODULE_H_INCLUDED_
#define _NGX_HTTP_ELEARN_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* nginx 1.22 has no name for it */
#define NGX_HTTP_ELEARN_UNPROCESSABLE  422


/*
 * Endpoints, as the router names them.  The metrics keep one set of
 * counters per endpoint, so a new endpoint is added here and in
 * ngx_http_elearn_endpoint_names (ngx_http_elearn_module.c).
 */
typedef enum {
    NGX_HTTP_ELEARN_EP_OTHER = 0,       /* unknown path, 404/405 */
    NGX_HTTP_ELEARN_EP_HEALTHZ,
    NGX_HTTP_ELEARN_EP_READYZ,
    NGX_HTTP_ELEARN_EP_METRICS,
    NGX_HTTP_ELEARN_EP_COURSE_GET,
    NGX_HTTP_ELEARN_EP_JSON_ECHO,
    NGX_HTTP_ELEARN_EP_MAX
} ngx_http_elearn_endpoint_e;


#define NGX_HTTP_ELEARN_ID_MAX  4


/* what a location serves: set by the elearn_api/_healthz/... directives */
typedef enum {
    NGX_HTTP_ELEARN_LOC_NONE = 0,
    NGX_HTTP_ELEARN_LOC_API,
    NGX_HTTP_ELEARN_LOC_HEALTHZ,
    NGX_HTTP_ELEARN_LOC_READYZ,
    NGX_HTTP_ELEARN_LOC_METRICS,
    NGX_HTTP_ELEARN_LOC_JSON_ECHO
} ngx_http_elearn_loc_e;


typedef struct ngx_http_elearn_pg_pool_s     ngx_http_elearn_pg_pool_t;
typedef struct ngx_http_elearn_redis_s       ngx_http_elearn_redis_t;
typedef struct ngx_http_elearn_kafka_s       ngx_http_elearn_kafka_t;


typedef struct {
    /* PostgreSQL */
    ngx_str_t                    pg_conninfo;
    ngx_uint_t                   pg_pool_size;
    ngx_uint_t                   pg_queue_size;
    ngx_msec_t                   pg_connect_timeout;
    ngx_msec_t                   pg_query_timeout;
    ngx_msec_t                   pg_queue_timeout;
    ngx_msec_t                   pg_idle_timeout;
    ngx_msec_t                   pg_reconnect_max;

    /* Redis */
    ngx_str_t                    redis_addr;     /* host:port, unix:/path */
    ngx_msec_t                   redis_timeout;
    ngx_msec_t                   redis_reconnect_max;

    /* Kafka */
    ngx_str_t                    kafka_brokers;
    ngx_uint_t                   kafka_queue_max;
    ngx_msec_t                   kafka_flush_timeout;
    ngx_msec_t                   kafka_linger;

    /* metrics */
    ngx_shm_zone_t              *metrics_zone;

    /* caches */
    time_t                       course_cache_ttl;

    /* per worker process, created in init_process */
    ngx_http_elearn_pg_pool_t   *pg;
    ngx_http_elearn_redis_t     *redis;
    ngx_http_elearn_kafka_t     *kafka;
} ngx_http_elearn_main_conf_t;


typedef struct {
    ngx_http_elearn_loc_e        serve;
    size_t                       body_max_size;
    ngx_uint_t                   retry_after;
} ngx_http_elearn_loc_conf_t;


/*
 * Per-request context.  Asynchronous work never keeps a raw request
 * pointer beyond the request's life: backends register a pool cleanup
 * on r->pool that cancels what is still pending, so their callbacks find
 * the request gone and do nothing.
 */
typedef struct {
    ngx_http_request_t          *request;
    ngx_http_elearn_endpoint_e   endpoint;
    ngx_msec_t                   start;          /* ngx_current_msec */
    ngx_uint_t                   nids;
    int64_t                      ids[NGX_HTTP_ELEARN_ID_MAX];
    void                        *data;           /* endpoint's own state */
} ngx_http_elearn_ctx_t;


extern ngx_module_t  ngx_http_elearn_module;
extern ngx_str_t     ngx_http_elearn_endpoint_names[];


/*
 * Returns the request's context, creating it on first use; NULL only
 * when memory runs out.
 */
ngx_http_elearn_ctx_t *ngx_http_elearn_get_ctx(ngx_http_request_t *r);

/*
 * Sends a JSON body with the given status and finalizes nothing: returns
 * what ngx_http_output_filter returned, to be passed to
 * ngx_http_finalize_request() by the caller.  The body is copied.
 */
ngx_int_t ngx_http_elearn_send_json(ngx_http_request_t *r, ngx_uint_t status,
    const char *json, size_t len);

/* Endpoint handlers, one file per capability; each returns what a content
 * handler returns. */
ngx_int_t ngx_http_elearn_healthz(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_readyz(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_course_get(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_json_echo(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/*
 * Finalizes r with rc from a backend's event handler (not from a phase
 * handler) and then runs the posted requests of its connection, as nginx
 * does after its own upstream events.
 */
void ngx_http_elearn_finalize(ngx_http_request_t *r, ngx_int_t rc);

/*
 * Marks r as waiting for asynchronous work started by a content handler:
 * the handler then returns NGX_DONE and the work ends with
 * ngx_http_elearn_finalize().  A client that closes its connection
 * meanwhile terminates the request at once (499), which cancels the work
 * through the backends' pool cleanups and frees their queue slots.
 */
void ngx_http_elearn_wait(ngx_http_request_t *r);


#endif /* _NGX_HTTP_ELEARN_MODULE_H_INCLUDED_ */
