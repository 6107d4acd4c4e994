
/*
 * elearn pg: a per-worker pool of non-blocking libpq connections driven
 * by nginx events.
 *
 * Connections are opened with PQconnectStartParams/PQconnectPoll, queries
 * sent with PQsendQueryParams and PQflush until sent, results read with
 * PQconsumeInput until the connection is not busy.  A request that finds
 * every connection busy waits in a bounded queue for at most
 * elearn_pg_queue_timeout; a full queue, an expired wait or an unreachable
 * server is answered at once with NGX_HTTP_SERVICE_UNAVAILABLE.  Nothing
 * here ever blocks the worker.
 */


#ifndef _NGX_HTTP_ELEARN_PG_H_INCLUDED_
#define _NGX_HTTP_ELEARN_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <libpq-fe.h>

#include "ngx_http_elearn_module.h"


/*
 * Called once per query, only while its request is alive, never from
 * inside ngx_http_elearn_pg_query() itself.  rc is
 *   NGX_OK                          res holds the result (any status:
 *                                   the handler checks PQresultStatus);
 *   NGX_HTTP_SERVICE_UNAVAILABLE    no connection could be had in time,
 *                                   or the server went away (res NULL);
 *   NGX_HTTP_GATEWAY_TIME_OUT       the query ran past
 *                                   elearn_pg_query_timeout (res NULL).
 * The pool owns res and clears it after the handler returns.  The handler
 * usually ends with ngx_http_finalize_request().
 */
typedef void (*ngx_http_elearn_pg_handler_pt)(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc, void *data);


typedef struct {
    ngx_uint_t   size;          /* configured connections */
    ngx_uint_t   connected;     /* open and ready */
    ngx_uint_t   busy;          /* running a query */
    ngx_uint_t   waiting;       /* requests queued for a connection */
    ngx_uint_t   connect_failures;
    ngx_uint_t   queue_rejects; /* 503 for a full queue or expired wait */
    ngx_uint_t   timeouts;
} ngx_http_elearn_pg_stats_t;


/* Creates the worker's pool from the main conf; connects lazily. */
ngx_http_elearn_pg_pool_t *ngx_http_elearn_pg_pool_create(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf);

/* Closes every connection and cancels every waiter (at worker exit). */
void ngx_http_elearn_pg_pool_destroy(ngx_http_elearn_pg_pool_t *pool);

/*
 * Runs one parameterised statement for r, or with r NULL for the worker
 * itself (the handler gets r NULL, and is not called once the pool is
 * destroyed; such a query never holds up a graceful shutdown).  nparams
 * values are text (NULL for SQL NULL) and are copied, so the caller's
 * buffers may go.
 * Returns NGX_AGAIN when the query is under way or queued (the handler
 * will be called), or NGX_HTTP_SERVICE_UNAVAILABLE / NGX_ERROR when it
 * could not even be queued (the handler will not be called).
 */
ngx_int_t ngx_http_elearn_pg_query(ngx_http_request_t *r, const char *sql,
    int nparams, const char *const *values,
    ngx_http_elearn_pg_handler_pt handler, void *data);

/*
 * A statement that each connection prepares once, under its name, the
 * first time it runs it (elearn_pg_prepare on): its later runs are not
 * parsed, analysed and planned again.  For hot statements whose one plan
 * suits every parameter.  index is the statement's bit in a connection's
 * set of prepared statements: unique, below NGX_HTTP_ELEARN_PG_STMTS.
 */
typedef struct {
    ngx_uint_t    index;
    const char   *name;
    const char   *sql;
} ngx_http_elearn_pg_stmt_t;

#define NGX_HTTP_ELEARN_PG_STMTS           32
#define NGX_HTTP_ELEARN_PG_STMT_BY_IDS     0
#define NGX_HTTP_ELEARN_PG_STMT_COURSE_GET 1

/* ngx_http_elearn_pg_query() of a statement that is prepared once */
ngx_int_t ngx_http_elearn_pg_query_prepared(ngx_http_request_t *r,
    ngx_http_elearn_pg_stmt_t *stmt, int nparams, const char *const *values,
    ngx_http_elearn_pg_handler_pt handler, void *data);

void ngx_http_elearn_pg_get_stats(ngx_http_elearn_pg_pool_t *pool,
    ngx_http_elearn_pg_stats_t *stats);


#endif /* _NGX_HTTP_ELEARN_PG_H_INCLUDED_ */
