
/*
 * elearn metrics: counters in a shared-memory zone, written by each
 * worker in a slot of its own, read by /metrics in the Prometheus text
 * format.
 *
 * Per worker slot and endpoint: requests by status code and a latency
 * histogram, bumped with atomic adds and summed over the slots by
 * /metrics.  Per worker slot: gauges of the PostgreSQL pool, Redis and
 * the Kafka producer, refreshed by each worker once a second.
 */


#ifndef _NGX_HTTP_ELEARN_METRICS_H_INCLUDED_
#define _NGX_HTTP_ELEARN_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


/* the caches whose lookups are counted */
typedef enum {
    NGX_HTTP_ELEARN_CACHE_COURSE = 0,
    NGX_HTTP_ELEARN_CACHE_SEARCH,
    NGX_HTTP_ELEARN_CACHE_FACETS,
    NGX_HTTP_ELEARN_CACHE_SUGGEST,
    NGX_HTTP_ELEARN_CACHE_MAX
} ngx_http_elearn_cache_e;


/* the "elearn_metrics_zone" directive's handler */
char *ngx_http_elearn_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* the default zone, when the directive is absent */
ngx_int_t ngx_http_elearn_metrics_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf);

/* Records one finished request (log phase). */
void ngx_http_elearn_metrics_record(ngx_http_request_t *r,
    ngx_http_elearn_endpoint_e endpoint, ngx_uint_t status,
    ngx_msec_t elapsed);

/*
 * Counts one lookup in a cache (elearn_cache_requests_total): hit 1 when
 * the answer came from Redis, 0 when it had to be built.
 */
void ngx_http_elearn_metrics_cache(ngx_http_request_t *r,
    ngx_http_elearn_cache_e cache, ngx_uint_t hit);

/* Starts the worker's once-a-second gauge refresh (init_process). */
ngx_int_t ngx_http_elearn_metrics_init_process(ngx_cycle_t *cycle);

/*
 * Stops the refresh and frees the worker's slot (exit_process; optional:
 * without it the slot is hidden once it is 10 s stale).  Added by the
 * metrics implementation.
 */
void ngx_http_elearn_metrics_exit_process(ngx_cycle_t *cycle);

/* The /metrics content handler. */
ngx_int_t ngx_http_elearn_metrics_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_ELEARN_METRICS_H_INCLUDED_ */
