
/*
 * elearn pg: the worker's pool of non-blocking libpq connections.
 *
 * Each worker owns elearn_pg_pool_size slots.  A slot is closed,
 * connecting, idle or busy; connections are opened lazily for requests
 * that wait, and an idle one is closed after elearn_pg_idle_timeout.
 * Every socket libpq owns is wrapped in an nginx connection so that
 * nginx's events (edge-triggered epoll) drive libpq; each event drains
 * the socket completely, because a missed edge never comes back.
 *
 * A statement run through ngx_http_elearn_pg_query_prepared() is
 * prepared by each connection the first time it runs it (Parse, then
 * its Execute once the Parse is answered) and only executed after that.
 *
 * What this file must never do: block the worker (no PQexec, no
 * PQgetResult while PQisBusy, no PQcancel), call a handler from inside
 * ngx_http_elearn_pg_query(), or touch a request after its pool is gone.
 * A query's state lives in ngx_alloc()ed memory owned by the pool, not
 * in r->pool, and a pool cleanup on r->pool cancels it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <sys/stat.h>

#include "ngx_http_elearn_event.h"
#include "ngx_http_elearn_pg.h"


/* first reconnect delay; doubles up to elearn_pg_reconnect_max */
#define NGX_HTTP_ELEARN_PG_BACKOFF_MIN   100

/* how many times one event may loop on a socket that stays ready */
#define NGX_HTTP_ELEARN_PG_LOOPS         64
#define NGX_HTTP_ELEARN_PG_READ_LOOPS    1024

/*
 * With TLS, OpenSSL may hold decrypted bytes that the socket no longer
 * shows: libpq reads at most its free buffer space per call, and a TLS
 * record can be larger.  While a result is incomplete, read this many
 * more times before waiting for the socket.
 */
#define NGX_HTTP_ELEARN_PG_SSL_RETRIES   4

#define NGX_HTTP_ELEARN_PG_MAX_PARAMS    65535


typedef enum {
    NGX_HTTP_ELEARN_PG_CLOSED = 0,
    NGX_HTTP_ELEARN_PG_CONNECTING,
    NGX_HTTP_ELEARN_PG_IDLE,
    NGX_HTTP_ELEARN_PG_BUSY
} ngx_http_elearn_pg_state_e;


typedef struct ngx_http_elearn_pg_op_s    ngx_http_elearn_pg_op_t;
typedef struct ngx_http_elearn_pg_slot_s  ngx_http_elearn_pg_slot_t;


/*
 * One query.  Allocated with ngx_alloc() together with copies of the
 * statement and its parameters, freed by whoever answers it.  While the
 * request lives, op->cln is a cleanup on r->pool pointing here.
 */
struct ngx_http_elearn_pg_op_s {
    ngx_http_request_t             *request;    /* NULL: nobody to answer */
    ngx_pool_cleanup_t             *cln;
    ngx_http_elearn_pg_handler_pt   handler;
    void                           *data;
    ngx_http_elearn_pg_pool_t      *pool;
    ngx_http_elearn_pg_slot_t      *slot;       /* while running */
    ngx_queue_t                     queue;      /* while waiting */
    ngx_event_t                     wait;       /* queue timeout */
    char                           *sql;
    char                          **values;
    int                             nparams;
    ngx_http_elearn_pg_stmt_t      *stmt;       /* prepared, or NULL */
    unsigned                        running:1;
    unsigned                        own:1;      /* the worker's, no r */
};


struct ngx_http_elearn_pg_slot_s {
    ngx_http_elearn_pg_pool_t      *pool;
    PGconn                         *pg;
    ngx_connection_t               *c;          /* wraps PQsocket(pg) */
    ino_t                           ino;        /* tells sockets apart */
    ngx_http_elearn_pg_op_t        *op;         /* while busy */
    PGresult                       *res;        /* being collected */
    ngx_event_t                     timer;      /* connect, query, idle */
    ngx_http_elearn_pg_state_e      state;
    short                           want;       /* POLLIN or POLLOUT */
    uint32_t                        prepared;   /* stmt index bits */
    unsigned                        flushing:1;
    unsigned                        preparing:1; /* op's Parse is out */
};


struct ngx_http_elearn_pg_pool_s {
    ngx_http_elearn_pg_slot_t      *slots;
    ngx_uint_t                      nslots;

    ngx_queue_t                     waiters;
    ngx_uint_t                      nwaiting;
    ngx_uint_t                      nconnecting;
    ngx_uint_t                      nconnected;
    ngx_uint_t                      nbusy;

    ngx_event_t                     dispatch;   /* posted */
    ngx_event_t                     reconnect;  /* end of a backoff */
    ngx_msec_t                      backoff;

    const char                     *keywords[4];
    const char                     *values[4];

    ngx_uint_t                      queue_size;
    ngx_msec_t                      connect_timeout;
    ngx_msec_t                      query_timeout;
    ngx_msec_t                      queue_timeout;
    ngx_msec_t                      idle_timeout;
    ngx_msec_t                      reconnect_max;

    ngx_uint_t                      connect_failures;
    ngx_uint_t                      queue_rejects;
    ngx_uint_t                      timeouts;

    unsigned                        prepare:1;  /* elearn_pg_prepare */
    unsigned                        hold:1;     /* no new connects yet */
    unsigned                        down:1;     /* server unreachable */
    unsigned                        destroyed:1;
};


static void ngx_http_elearn_pg_check_hosts(const char *conninfo);
static ngx_http_elearn_pg_op_t *ngx_http_elearn_pg_op_create(
    ngx_http_elearn_pg_pool_t *pool, const char *sql, int nparams,
    const char *const *values);
static void ngx_http_elearn_pg_op_free(ngx_http_elearn_pg_op_t *op);
static void ngx_http_elearn_pg_op_disarm(ngx_http_elearn_pg_op_t *op);
static void ngx_http_elearn_pg_op_cleanup(void *data);
static void ngx_http_elearn_pg_answer(ngx_http_elearn_pg_op_t *op,
    PGresult *res, ngx_int_t rc);
static void ngx_http_elearn_pg_wait_timeout(ngx_event_t *ev);
static void ngx_http_elearn_pg_fail_waiters(ngx_http_elearn_pg_pool_t *pool);

static ngx_http_elearn_pg_slot_t *ngx_http_elearn_pg_find(
    ngx_http_elearn_pg_pool_t *pool, ngx_http_elearn_pg_state_e state);
static void ngx_http_elearn_pg_dispatch(ngx_http_elearn_pg_pool_t *pool);
static void ngx_http_elearn_pg_dispatch_handler(ngx_event_t *ev);
static void ngx_http_elearn_pg_reconnect_handler(ngx_event_t *ev);

static ngx_int_t ngx_http_elearn_pg_connect(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_connect_step(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_connected(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_connect_failed(ngx_http_elearn_pg_slot_t *slot,
    const char *reason);

static ngx_int_t ngx_http_elearn_pg_start(ngx_http_request_t *r,
    ngx_http_elearn_pg_stmt_t *stmt, const char *sql, int nparams,
    const char *const *values, ngx_http_elearn_pg_handler_pt handler,
    void *data);
static ngx_int_t ngx_http_elearn_pg_send(ngx_http_elearn_pg_slot_t *slot,
    ngx_http_elearn_pg_op_t *op);
static ngx_int_t ngx_http_elearn_pg_transmit(ngx_http_elearn_pg_slot_t *slot,
    ngx_http_elearn_pg_op_t *op);
static ngx_int_t ngx_http_elearn_pg_flush(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_process(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_read_idle(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_read_busy(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_done(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_lost(ngx_http_elearn_pg_slot_t *slot,
    const char *what);
static void ngx_http_elearn_pg_set_idle(ngx_http_elearn_pg_slot_t *slot);
static void ngx_http_elearn_pg_close(ngx_http_elearn_pg_slot_t *slot);

static ngx_int_t ngx_http_elearn_pg_attach(ngx_http_elearn_pg_slot_t *slot);
static ngx_int_t ngx_http_elearn_pg_want_write(
    ngx_http_elearn_pg_slot_t *slot, ngx_uint_t on);
static void ngx_http_elearn_pg_event_handler(ngx_event_t *ev);
static void ngx_http_elearn_pg_timer_handler(ngx_event_t *ev);
static size_t ngx_http_elearn_pg_errlen(const char *msg);


ngx_http_elearn_pg_pool_t *
ngx_http_elearn_pg_pool_create(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf)
{
    char                       *conninfo;
    ngx_uint_t                  i;
    ngx_http_elearn_pg_slot_t  *slot;
    ngx_http_elearn_pg_pool_t  *pool;

    /*
     * Everything comes from the cycle pool: it outlives every request of
     * this worker, so a late call after destroy finds a valid, destroyed
     * pool instead of freed memory.
     */

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_http_elearn_pg_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->nslots = emcf->pg_pool_size;
    if (pool->nslots == 0 || pool->nslots == NGX_CONF_UNSET_UINT) {
        pool->nslots = 1;
    }

    pool->slots = ngx_pcalloc(cycle->pool,
                              pool->nslots * sizeof(ngx_http_elearn_pg_slot_t));
    if (pool->slots == NULL) {
        return NULL;
    }

    conninfo = ngx_pnalloc(cycle->pool, emcf->pg_conninfo.len + 1);
    if (conninfo == NULL) {
        return NULL;
    }

    ngx_memcpy(conninfo, emcf->pg_conninfo.data, emcf->pg_conninfo.len);
    conninfo[emcf->pg_conninfo.len] = '\0';

    ngx_http_elearn_pg_check_hosts(conninfo);

    /*
     * Entries before "dbname" are defaults that the conninfo string
     * (expanded because expand_dbname is 1) may override.  GSS encryption
     * is off by default: probing for Kerberos credentials reads files and
     * may talk to a KDC, synchronously, inside PQconnectPoll().
     */

    pool->keywords[0] = "fallback_application_name";
    pool->values[0] = "elearn-nginx";
    pool->keywords[1] = "gssencmode";
    pool->values[1] = "disable";
    pool->keywords[2] = "dbname";
    pool->values[2] = conninfo;
    pool->keywords[3] = NULL;
    pool->values[3] = NULL;

    pool->queue_size = emcf->pg_queue_size;
    pool->connect_timeout = emcf->pg_connect_timeout;
    pool->query_timeout = emcf->pg_query_timeout;
    pool->queue_timeout = emcf->pg_queue_timeout;
    pool->idle_timeout = emcf->pg_idle_timeout;
    pool->prepare = emcf->pg_prepare;
    pool->reconnect_max = ngx_max(emcf->pg_reconnect_max,
                                  NGX_HTTP_ELEARN_PG_BACKOFF_MIN);

    ngx_queue_init(&pool->waiters);

    pool->dispatch.handler = ngx_http_elearn_pg_dispatch_handler;
    pool->dispatch.data = pool;
    pool->dispatch.log = cycle->log;

    pool->reconnect.handler = ngx_http_elearn_pg_reconnect_handler;
    pool->reconnect.data = pool;
    pool->reconnect.log = cycle->log;
    pool->reconnect.cancelable = 1;

    for (i = 0; i < pool->nslots; i++) {
        slot = &pool->slots[i];

        slot->pool = pool;
        slot->state = NGX_HTTP_ELEARN_PG_CLOSED;
        slot->timer.handler = ngx_http_elearn_pg_timer_handler;
        slot->timer.data = slot;
        slot->timer.log = cycle->log;
    }

    return pool;
}


void
ngx_http_elearn_pg_pool_destroy(ngx_http_elearn_pg_pool_t *pool)
{
    ngx_uint_t                  i;
    ngx_queue_t                *q;
    ngx_http_elearn_pg_op_t    *op;
    ngx_http_elearn_pg_slot_t  *slot;

    if (pool == NULL || pool->destroyed) {
        return;
    }

    pool->destroyed = 1;

    if (pool->dispatch.posted) {
        ngx_delete_posted_event(&pool->dispatch);
    }

    if (pool->reconnect.timer_set) {
        ngx_del_timer(&pool->reconnect);
    }

    /* the worker is exiting: cancel, answer nobody */

    while (!ngx_queue_empty(&pool->waiters)) {
        q = ngx_queue_head(&pool->waiters);
        op = ngx_queue_data(q, ngx_http_elearn_pg_op_t, queue);

        ngx_queue_remove(q);
        pool->nwaiting--;

        ngx_http_elearn_pg_op_disarm(op);
        ngx_http_elearn_pg_op_free(op);
    }

    for (i = 0; i < pool->nslots; i++) {
        slot = &pool->slots[i];

        op = slot->op;
        slot->op = NULL;

        ngx_http_elearn_pg_close(slot);

        if (op != NULL) {
            ngx_http_elearn_pg_op_disarm(op);
            ngx_http_elearn_pg_op_free(op);
        }
    }
}


ngx_int_t
ngx_http_elearn_pg_query(ngx_http_request_t *r, const char *sql,
    int nparams, const char *const *values,
    ngx_http_elearn_pg_handler_pt handler, void *data)
{
    return ngx_http_elearn_pg_start(r, NULL, sql, nparams, values, handler,
                                    data);
}


ngx_int_t
ngx_http_elearn_pg_query_prepared(ngx_http_request_t *r,
    ngx_http_elearn_pg_stmt_t *stmt, int nparams, const char *const *values,
    ngx_http_elearn_pg_handler_pt handler, void *data)
{
    if (stmt->index >= NGX_HTTP_ELEARN_PG_STMTS) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn pg: statement \"%s\" has no valid index",
                      stmt->name);
        return NGX_ERROR;
    }

    return ngx_http_elearn_pg_start(r, stmt, stmt->sql, nparams, values,
                                    handler, data);
}


static ngx_int_t
ngx_http_elearn_pg_start(ngx_http_request_t *r,
    ngx_http_elearn_pg_stmt_t *stmt, const char *sql, int nparams,
    const char *const *values, ngx_http_elearn_pg_handler_pt handler,
    void *data)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_elearn_pg_op_t      *op;
    ngx_http_elearn_pg_slot_t    *slot;
    ngx_http_elearn_pg_pool_t    *pool;
    ngx_http_elearn_main_conf_t  *emcf;

    if (sql == NULL || handler == NULL || nparams < 0
        || nparams > NGX_HTTP_ELEARN_PG_MAX_PARAMS
        || (nparams > 0 && values == NULL))
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn pg: invalid query arguments");
        return NGX_ERROR;
    }

    emcf = (r == NULL)
           ? ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                 ngx_http_elearn_module)
           : ngx_http_get_module_main_conf(r, ngx_http_elearn_module);
    pool = emcf->pg;

    if (pool == NULL || pool->destroyed) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* fail fast: the server is known to be unreachable */

    if (pool->down) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    op = ngx_http_elearn_pg_op_create(pool, sql, nparams, values);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->handler = handler;
    op->data = data;
    op->stmt = pool->prepare ? stmt : NULL;

    if (r == NULL) {
        op->own = 1;

    } else {
        /* before anything is sent: a failure here leaves no trace */

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            ngx_http_elearn_pg_op_free(op);
            return NGX_ERROR;
        }

        cln->handler = ngx_http_elearn_pg_op_cleanup;
        cln->data = op;

        op->request = r;
        op->cln = cln;
    }

    /*
     * An idle connection takes the query at once.  A send that fails here
     * means the connection died while idle: close it and try the next
     * one; no handler runs from here.
     */

    while ((slot = ngx_http_elearn_pg_find(pool, NGX_HTTP_ELEARN_PG_IDLE))
           != NULL)
    {
        if (ngx_http_elearn_pg_send(slot, op) == NGX_OK) {
            return NGX_AGAIN;
        }

        ngx_http_elearn_pg_close(slot);
    }

    if (pool->nwaiting >= pool->queue_size) {
        pool->queue_rejects++;
        ngx_http_elearn_pg_op_disarm(op);
        ngx_http_elearn_pg_op_free(op);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_queue_insert_tail(&pool->waiters, &op->queue);
    pool->nwaiting++;

    if (pool->queue_timeout) {
        ngx_add_timer(&op->wait, pool->queue_timeout);
    }

    /* opening a connection may fail and answer waiters: not from here */

    if (!pool->hold
        && pool->nwaiting > pool->nconnecting
        && pool->nconnecting + pool->nconnected < pool->nslots
        && !pool->dispatch.posted)
    {
        ngx_post_event(&pool->dispatch, &ngx_posted_events);
    }

    return NGX_AGAIN;
}


void
ngx_http_elearn_pg_get_stats(ngx_http_elearn_pg_pool_t *pool,
    ngx_http_elearn_pg_stats_t *stats)
{
    ngx_memzero(stats, sizeof(ngx_http_elearn_pg_stats_t));

    if (pool == NULL) {
        return;
    }

    stats->size = pool->nslots;
    stats->connected = pool->nconnected;
    stats->busy = pool->nbusy;
    stats->waiting = pool->nwaiting;
    stats->connect_failures = pool->connect_failures;
    stats->queue_rejects = pool->queue_rejects;
    stats->timeouts = pool->timeouts;
}


/*
 * libpq resolves host names with a blocking getaddrinfo() inside
 * PQconnectStartParams(): warn once at worker start when the conninfo
 * would make it do so.  Neither the conninfo nor libpq's message is
 * logged: both may quote the password.
 */

static void
ngx_http_elearn_pg_check_hosts(const char *conninfo)
{
    u_char              buf[16];
    size_t              len;
    const char         *host, *hostaddr, *p, *e;
    PQconninfoOption   *opts, *o;

    opts = PQconninfoParse(conninfo, NULL);
    if (opts == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn pg: elearn_pg_conninfo could not be parsed");
        return;
    }

    host = NULL;
    hostaddr = NULL;

    for (o = opts; o->keyword != NULL; o++) {
        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = o->val;
        }
    }

    if (host == NULL || *host == '\0'
        || (hostaddr != NULL && *hostaddr != '\0'))
    {
        PQconninfoFree(opts);
        return;
    }

    for (p = host; *p; p = (*e == ',') ? e + 1 : e) {

        for (e = p; *e && *e != ','; e++) { /* void */ }

        len = e - p;

        if (len == 0 || p[0] == '/' || p[0] == '@') {
            continue;    /* a unix socket directory */
        }

        if (ngx_inet_addr((u_char *) p, len) != INADDR_NONE) {
            continue;
        }

#if (NGX_HAVE_INET6)
        if (ngx_inet6_addr((u_char *) p, len, buf) == NGX_OK) {
            continue;
        }
#else
        (void) buf;
#endif

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "elearn pg: host \"%*s\" is a name: libpq resolves it "
                      "with a blocking getaddrinfo() in the worker; use an "
                      "IP address, hostaddr= or a unix socket", len, p);
    }

    PQconninfoFree(opts);
}


/* ops */

static ngx_http_elearn_pg_op_t *
ngx_http_elearn_pg_op_create(ngx_http_elearn_pg_pool_t *pool,
    const char *sql, int nparams, const char *const *values)
{
    int                       i;
    char                     *p;
    size_t                    size, len;
    ngx_http_elearn_pg_op_t  *op;

    /*
     * One block: the op, the array of parameter pointers, the statement
     * and every parameter value.  A queued query must own its text: the
     * caller's buffers may be gone by the time a connection is free.
     */

    size = sizeof(ngx_http_elearn_pg_op_t) + nparams * sizeof(char *)
           + ngx_strlen(sql) + 1;

    for (i = 0; i < nparams; i++) {
        if (values[i] != NULL) {
            size += ngx_strlen(values[i]) + 1;
        }
    }

    op = ngx_alloc(size, ngx_cycle->log);
    if (op == NULL) {
        return NULL;
    }

    ngx_memzero(op, sizeof(ngx_http_elearn_pg_op_t));

    op->pool = pool;
    op->nparams = nparams;
    op->values = (char **) ((u_char *) op + sizeof(ngx_http_elearn_pg_op_t));

    p = (char *) (op->values + nparams);

    len = ngx_strlen(sql) + 1;
    ngx_memcpy(p, sql, len);
    op->sql = p;
    p += len;

    for (i = 0; i < nparams; i++) {
        if (values[i] == NULL) {
            op->values[i] = NULL;
            continue;
        }

        len = ngx_strlen(values[i]) + 1;
        ngx_memcpy(p, values[i], len);
        op->values[i] = p;
        p += len;
    }

    op->wait.handler = ngx_http_elearn_pg_wait_timeout;
    op->wait.data = op;
    op->wait.log = ngx_cycle->log;

    return op;
}


static void
ngx_http_elearn_pg_op_free(ngx_http_elearn_pg_op_t *op)
{
    if (op->wait.timer_set) {
        ngx_del_timer(&op->wait);
    }

    ngx_free(op);
}


/* forget the request without answering it */

static void
ngx_http_elearn_pg_op_disarm(ngx_http_elearn_pg_op_t *op)
{
    if (op->cln != NULL) {
        op->cln->handler = NULL;
        op->cln = NULL;
    }

    op->request = NULL;
}


/* r->pool is going away: from now on nobody is to be answered */

static void
ngx_http_elearn_pg_op_cleanup(void *data)
{
    ngx_http_elearn_pg_op_t  *op = data;

    op->request = NULL;
    op->cln = NULL;

    if (op->running) {
        /*
         * The query is on the wire: the slot clears its result and frees
         * op when it ends.  Its timer no longer guards a request, so it
         * must not hold up a graceful shutdown.
         */

        if (op->slot != NULL) {
            op->slot->timer.cancelable = 1;
        }

        return;
    }

    ngx_queue_remove(&op->queue);
    op->pool->nwaiting--;

    ngx_http_elearn_pg_op_free(op);
}


/*
 * Calls the handler if the request still lives, then clears res and
 * frees op.  The cleanup is disarmed first: the handler may finalize the
 * request and destroy r->pool, which must then find nothing of ours.
 */

static void
ngx_http_elearn_pg_answer(ngx_http_elearn_pg_op_t *op, PGresult *res,
    ngx_int_t rc)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = op->request;

    ngx_http_elearn_pg_op_disarm(op);

    if (r != NULL && !op->pool->destroyed) {
        c = r->connection;

        op->handler(r, res, rc, op->data);

        ngx_http_run_posted_requests(c);

    } else if (op->own && !op->pool->destroyed) {
        op->handler(NULL, res, rc, op->data);
    }

    if (res != NULL) {
        PQclear(res);
    }

    ngx_http_elearn_pg_op_free(op);
}


static void
ngx_http_elearn_pg_wait_timeout(ngx_event_t *ev)
{
    ngx_http_elearn_pg_op_t    *op = ev->data;
    ngx_http_elearn_pg_pool_t  *pool;

    pool = op->pool;

    ngx_queue_remove(&op->queue);
    pool->nwaiting--;
    pool->queue_rejects++;

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "elearn pg: no connection free within %M ms",
                  pool->queue_timeout);

    ngx_http_elearn_pg_answer(op, NULL, NGX_HTTP_SERVICE_UNAVAILABLE);
}


/*
 * Handlers may queue new queries or finalize requests whose ops are
 * queued too: take the head afresh each time.
 */

static void
ngx_http_elearn_pg_fail_waiters(ngx_http_elearn_pg_pool_t *pool)
{
    ngx_queue_t              *q;
    ngx_http_elearn_pg_op_t  *op;

    while (!ngx_queue_empty(&pool->waiters)) {
        q = ngx_queue_head(&pool->waiters);
        op = ngx_queue_data(q, ngx_http_elearn_pg_op_t, queue);

        ngx_queue_remove(q);
        pool->nwaiting--;

        ngx_http_elearn_pg_answer(op, NULL, NGX_HTTP_SERVICE_UNAVAILABLE);
    }
}


/* the pool */

static ngx_http_elearn_pg_slot_t *
ngx_http_elearn_pg_find(ngx_http_elearn_pg_pool_t *pool,
    ngx_http_elearn_pg_state_e state)
{
    ngx_uint_t  i;

    for (i = 0; i < pool->nslots; i++) {
        if (pool->slots[i].state == state) {
            return &pool->slots[i];
        }
    }

    return NULL;
}


/*
 * Gives idle connections to waiters, then opens connections for those
 * still waiting.  Runs from events only, never from inside
 * ngx_http_elearn_pg_query(): a connect that fails at once answers
 * waiters.
 */

static void
ngx_http_elearn_pg_dispatch(ngx_http_elearn_pg_pool_t *pool)
{
    ngx_queue_t                *q;
    ngx_http_elearn_pg_op_t    *op;
    ngx_http_elearn_pg_slot_t  *slot;

    for ( ;; ) {
        if (pool->destroyed || ngx_queue_empty(&pool->waiters)) {
            return;
        }

        slot = ngx_http_elearn_pg_find(pool, NGX_HTTP_ELEARN_PG_IDLE);
        if (slot == NULL) {
            break;
        }

        q = ngx_queue_head(&pool->waiters);
        op = ngx_queue_data(q, ngx_http_elearn_pg_op_t, queue);

        if (ngx_http_elearn_pg_send(slot, op) != NGX_OK) {
            /* the query stays first in line */
            ngx_http_elearn_pg_close(slot);
            continue;
        }

        ngx_queue_remove(q);
        pool->nwaiting--;

        if (op->wait.timer_set) {
            ngx_del_timer(&op->wait);
        }
    }

    while (!pool->hold && !pool->down && !pool->destroyed
           && pool->nwaiting > pool->nconnecting)
    {
        slot = ngx_http_elearn_pg_find(pool, NGX_HTTP_ELEARN_PG_CLOSED);
        if (slot == NULL) {
            return;
        }

        if (ngx_http_elearn_pg_connect(slot) != NGX_OK) {
            return;
        }
    }
}


static void
ngx_http_elearn_pg_dispatch_handler(ngx_event_t *ev)
{
    ngx_http_elearn_pg_dispatch(ev->data);
}


/* a backoff ended: probe the server if it is down, else serve waiters */

static void
ngx_http_elearn_pg_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_elearn_pg_pool_t  *pool = ev->data;
    ngx_http_elearn_pg_slot_t  *slot;

    pool->hold = 0;

    if (pool->destroyed) {
        return;
    }

    if (!pool->down) {
        ngx_http_elearn_pg_dispatch(pool);
        return;
    }

    if (pool->nconnecting) {
        return;
    }

    slot = ngx_http_elearn_pg_find(pool, NGX_HTTP_ELEARN_PG_CLOSED);
    if (slot != NULL) {
        (void) ngx_http_elearn_pg_connect(slot);
    }
}


/* connecting */

/*
 * Starts a non-blocking connect.  Returns NGX_ERROR when it failed at
 * once; the failure is then already handled (backoff, and waiters
 * answered if the server is down), so the caller must re-read the pool.
 */

static ngx_int_t
ngx_http_elearn_pg_connect(ngx_http_elearn_pg_slot_t *slot)
{
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    slot->pg = PQconnectStartParams(pool->keywords, pool->values, 1);

    slot->state = NGX_HTTP_ELEARN_PG_CONNECTING;
    pool->nconnecting++;

    if (slot->pg == NULL) {
        ngx_http_elearn_pg_connect_failed(slot, "out of memory");
        return NGX_ERROR;
    }

    if (PQstatus(slot->pg) == CONNECTION_BAD) {
        ngx_http_elearn_pg_connect_failed(slot, NULL);
        return NGX_ERROR;
    }

    if (ngx_http_elearn_pg_attach(slot) != NGX_OK) {
        ngx_http_elearn_pg_connect_failed(slot, "cannot watch the socket");
        return NGX_ERROR;
    }

    /* libpq: "behave as if PQconnectPoll last returned WRITING" */

    slot->want = POLLOUT;

    if (ngx_http_elearn_pg_want_write(slot, 1) != NGX_OK) {
        ngx_http_elearn_pg_connect_failed(slot, "cannot watch the socket");
        return NGX_ERROR;
    }

    if (pool->connect_timeout) {
        slot->timer.cancelable = 1;
        ngx_add_timer(&slot->timer, pool->connect_timeout);
    }

    return NGX_OK;
}


/*
 * PQconnectPoll() is called only once the socket is ready for what libpq
 * last asked: called early on a socket still connecting, libpq takes the
 * connect as done and fails to send its startup packet.  Readiness is
 * checked with poll() on the socket itself, not with nginx's flags: under
 * edge-triggered epoll a socket that is already writable when libpq asks
 * for WRITING gives no new event, so libpq is polled again at once.
 */

static void
ngx_http_elearn_pg_connect_step(ngx_http_elearn_pg_slot_t *slot)
{
    ngx_uint_t                 n;
    PostgresPollingStatusType  st;

    for (n = 0; n < NGX_HTTP_ELEARN_PG_LOOPS; n++) {

        if (!ngx_http_elearn_event_ready(slot->c->fd, slot->want, "pg")) {
            if (ngx_http_elearn_pg_want_write(slot, slot->want == POLLOUT)
                != NGX_OK)
            {
                ngx_http_elearn_pg_connect_failed(slot,
                                                  "cannot watch the socket");
            }

            return;
        }

        st = PQconnectPoll(slot->pg);

        switch (st) {

        case PGRES_POLLING_OK:
            ngx_http_elearn_pg_connected(slot);
            return;

        case PGRES_POLLING_FAILED:
            ngx_http_elearn_pg_connect_failed(slot, NULL);
            return;

        case PGRES_POLLING_READING:
            slot->want = POLLIN;
            break;

        default: /* PGRES_POLLING_WRITING */
            slot->want = POLLOUT;
            break;
        }

        /* libpq opens a new socket for each address and host it tries */

        if (ngx_http_elearn_pg_attach(slot) != NGX_OK) {
            ngx_http_elearn_pg_connect_failed(slot, "cannot watch the socket");
            return;
        }
    }

    /* still more to do at once: let other events run first */

    ngx_post_event(slot->c->read, &ngx_posted_events);
}


/*
 * libpq prints notices on stderr, which is nginx's error log; a client
 * could fill it with them (a search of stop words only draws a NOTICE
 * from websearch_to_tsquery), so they go to the debug log.
 */
static void
ngx_http_elearn_pg_notice(void *arg, const char *message)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "elearn pg: %s", message);
}


static void
ngx_http_elearn_pg_connected(ngx_http_elearn_pg_slot_t *slot)
{
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    if (PQsetnonblocking(slot->pg, 1) != 0) {
        ngx_http_elearn_pg_connect_failed(slot, NULL);
        return;
    }

    (void) PQsetNoticeProcessor(slot->pg, ngx_http_elearn_pg_notice, NULL);

    if (slot->timer.timer_set) {
        ngx_del_timer(&slot->timer);
    }

    pool->nconnecting--;
    pool->nconnected++;

    if (pool->down) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "elearn pg: server reachable again");
    }

    /*
     * A hold set by another slot's failure ends with its own timer: it
     * only delays new connects, and lifting it here would let a server
     * that refuses extra connections be hammered.
     */

    pool->down = 0;
    pool->backoff = 0;

    (void) ngx_http_elearn_pg_want_write(slot, 0);

    ngx_http_elearn_pg_set_idle(slot);

    ngx_http_elearn_pg_dispatch(pool);
}


/*
 * A connect failed: back off before the next one.  With no connection
 * open or opening, the server is down: every waiter is answered 503 and
 * new queries fail fast until a probe after the backoff succeeds.
 */

static void
ngx_http_elearn_pg_connect_failed(ngx_http_elearn_pg_slot_t *slot,
    const char *reason)
{
    const char                 *msg;
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    if (reason != NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn pg: could not connect: %s", reason);

    } else {
        msg = PQerrorMessage(slot->pg);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn pg: could not connect: %*s",
                      ngx_http_elearn_pg_errlen(msg), msg);
    }

    ngx_http_elearn_pg_close(slot);

    pool->connect_failures++;

    /* one doubling per backoff period, however many slots failed in it */

    if (!pool->reconnect.timer_set) {
        if (pool->backoff == 0) {
            pool->backoff = NGX_HTTP_ELEARN_PG_BACKOFF_MIN;

        } else {
            pool->backoff = ngx_min(pool->backoff * 2, pool->reconnect_max);
        }

        ngx_add_timer(&pool->reconnect, pool->backoff);
    }

    pool->hold = 1;

    if (pool->destroyed || pool->nconnected || pool->nconnecting) {
        return;
    }

    if (!pool->down) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn pg: server unreachable, answering 503 "
                      "until it is back");
        pool->down = 1;
    }

    ngx_http_elearn_pg_fail_waiters(pool);
}


/* queries */

/*
 * Sends op's query on an idle slot.  On NGX_ERROR nothing of op has
 * changed and the slot is to be closed by the caller: a query whose send
 * failed never ran (the server executes nothing of a half-sent message,
 * and without its Sync it commits nothing), so it may go elsewhere.
 */

static ngx_int_t
ngx_http_elearn_pg_send(ngx_http_elearn_pg_slot_t *slot,
    ngx_http_elearn_pg_op_t *op)
{
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    if (ngx_http_elearn_pg_transmit(slot, op) != NGX_OK) {
        return NGX_ERROR;
    }

    slot->state = NGX_HTTP_ELEARN_PG_BUSY;
    slot->op = op;
    pool->nbusy++;

    op->slot = slot;
    op->running = 1;

    if (pool->query_timeout) {
        /* a request waits on it: keep a graceful shutdown waiting too */
        slot->timer.cancelable = (op->request == NULL);
        ngx_add_timer(&slot->timer, pool->query_timeout);

    } else if (slot->timer.timer_set) {
        ngx_del_timer(&slot->timer);     /* the idle timer */
    }

    return NGX_OK;
}


/*
 * Puts op's statement on the wire: as an unnamed statement, or for a
 * prepared one its Parse first when this connection has not prepared it
 * yet (its Execute follows from ngx_http_elearn_pg_done()), else its
 * Execute alone.
 */

static ngx_int_t
ngx_http_elearn_pg_transmit(ngx_http_elearn_pg_slot_t *slot,
    ngx_http_elearn_pg_op_t *op)
{
    int          ok;
    const char  *msg;

    if (op->stmt == NULL) {
        ok = PQsendQueryParams(slot->pg, op->sql, op->nparams, NULL,
                               (const char *const *) op->values, NULL, NULL,
                               0);

    } else if (slot->prepared & (1U << op->stmt->index)) {
        ok = PQsendQueryPrepared(slot->pg, op->stmt->name, op->nparams,
                                 (const char *const *) op->values, NULL,
                                 NULL, 0);

    } else {
        ok = PQsendPrepare(slot->pg, op->stmt->name, op->sql, op->nparams,
                           NULL);
        slot->preparing = 1;
    }

    if (!ok) {
        msg = PQerrorMessage(slot->pg);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn pg: could not send query: %*s",
                      ngx_http_elearn_pg_errlen(msg), msg);
        return NGX_ERROR;
    }

    return ngx_http_elearn_pg_flush(slot) == NGX_ERROR ? NGX_ERROR : NGX_OK;
}


/*
 * PQflush() until everything is sent or the socket is full; while data
 * remains, the write event stays armed.  NGX_OK: all sent; NGX_AGAIN:
 * waiting for the socket; NGX_ERROR: the connection is broken.
 */

static ngx_int_t
ngx_http_elearn_pg_flush(ngx_http_elearn_pg_slot_t *slot)
{
    int          rc;
    ngx_uint_t   n;
    const char  *msg;

    for (n = 0; n < NGX_HTTP_ELEARN_PG_LOOPS; n++) {

        rc = PQflush(slot->pg);

        if (rc == 0) {
            slot->flushing = 0;
            (void) ngx_http_elearn_pg_want_write(slot, 0);
            return NGX_OK;
        }

        if (rc == -1) {
            msg = PQerrorMessage(slot->pg);
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "elearn pg: could not send query: %*s",
                          ngx_http_elearn_pg_errlen(msg), msg);
            return NGX_ERROR;
        }

        if (!ngx_http_elearn_event_ready(slot->c->fd, POLLOUT, "pg")) {
            break;
        }
    }

    slot->flushing = 1;

    if (ngx_http_elearn_pg_want_write(slot, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    if (n == NGX_HTTP_ELEARN_PG_LOOPS && !slot->c->write->posted) {
        /* the socket stays writable: no edge will come, come back */
        ngx_post_event(slot->c->write, &ngx_posted_events);
    }

    return NGX_AGAIN;
}


/* every event of a slot's socket, read or write, comes here */

static void
ngx_http_elearn_pg_process(ngx_http_elearn_pg_slot_t *slot)
{
    switch (slot->state) {

    case NGX_HTTP_ELEARN_PG_CONNECTING:
        ngx_http_elearn_pg_connect_step(slot);
        return;

    case NGX_HTTP_ELEARN_PG_IDLE:
        ngx_http_elearn_pg_read_idle(slot);
        return;

    case NGX_HTTP_ELEARN_PG_BUSY:
        ngx_http_elearn_pg_read_busy(slot);
        return;

    default:
        return;
    }
}


/*
 * An idle connection hears only notices, parameter changes or the
 * server going away.
 */

static void
ngx_http_elearn_pg_read_idle(ngx_http_elearn_pg_slot_t *slot)
{
    ngx_uint_t   n;
    PGnotify    *notify;

    for (n = 0; n < NGX_HTTP_ELEARN_PG_LOOPS; n++) {

        if (!ngx_http_elearn_event_ready(slot->c->fd, POLLIN, "pg")) {
            return;
        }

        if (!PQconsumeInput(slot->pg)) {
            ngx_http_elearn_pg_lost(slot, "idle connection lost");
            return;
        }

        (void) PQisBusy(slot->pg);       /* parses what came */

        while ((notify = PQnotifies(slot->pg)) != NULL) {
            PQfreemem(notify);
        }

        if (PQstatus(slot->pg) == CONNECTION_BAD) {
            ngx_http_elearn_pg_lost(slot, "idle connection lost");
            return;
        }
    }

    ngx_post_event(slot->c->read, &ngx_posted_events);
}


/*
 * Sends what is left of the query, reads until the result is complete
 * and drains every result until PQgetResult() returns NULL; the first
 * result is kept (or a later error).  PQgetResult() is called only when
 * !PQisBusy(): otherwise it would block.
 */

static void
ngx_http_elearn_pg_read_busy(ngx_http_elearn_pg_slot_t *slot)
{
    ngx_uint_t      n, ssl;
    PGresult       *res;
    ExecStatusType  st;

    if (slot->flushing) {
        if (ngx_http_elearn_pg_flush(slot) == NGX_ERROR) {
            ngx_http_elearn_pg_lost(slot, "connection lost while sending");
            return;
        }
    }

    ssl = 0;

    for (n = 0; n < NGX_HTTP_ELEARN_PG_READ_LOOPS; n++) {

        if (!PQconsumeInput(slot->pg)) {
            ngx_http_elearn_pg_lost(slot, "connection lost");
            return;
        }

        while (!PQisBusy(slot->pg)) {

            res = PQgetResult(slot->pg);

            if (res == NULL) {
                ngx_http_elearn_pg_done(slot);
                return;
            }

            st = PQresultStatus(res);

            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT
                || st == PGRES_COPY_BOTH)
            {
                /* no way to drain it here: drop the connection */
                PQclear(res);
                ngx_http_elearn_pg_lost(slot, "COPY is not supported");
                return;
            }

            if (slot->res == NULL) {
                slot->res = res;

            } else if (st == PGRES_FATAL_ERROR
                       && PQresultStatus(slot->res) != PGRES_FATAL_ERROR)
            {
                PQclear(slot->res);
                slot->res = res;

            } else {
                PQclear(res);
            }
        }

        if (slot->flushing) {
            if (ngx_http_elearn_pg_flush(slot) == NGX_ERROR) {
                ngx_http_elearn_pg_lost(slot, "connection lost while sending");
                return;
            }
        }

        if (ngx_http_elearn_event_ready(slot->c->fd, POLLIN, "pg")) {
            ssl = 0;
            continue;
        }

        if (PQsslInUse(slot->pg) && ssl++ < NGX_HTTP_ELEARN_PG_SSL_RETRIES) {
            continue;
        }

        return;
    }

    /* a large result: let other events run, then go on */

    ngx_post_event(slot->c->read, &ngx_posted_events);
}


/* the query finished: the slot turns idle, then the handler runs */

static void
ngx_http_elearn_pg_done(ngx_http_elearn_pg_slot_t *slot)
{
    char                       *state;
    PGresult                   *res;
    ngx_http_elearn_pg_op_t    *op;
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    res = slot->res;
    slot->res = NULL;

    op = slot->op;

    /* only a prepared statement's errors matter here */
    state = (op->stmt != NULL && res != NULL
             && PQresultStatus(res) == PGRES_FATAL_ERROR)
            ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (slot->preparing) {
        slot->preparing = 0;

        if (res != NULL
            && (PQresultStatus(res) == PGRES_COMMAND_OK
                || (state != NULL && ngx_strcmp(state, "42P05") == 0)))
        {
            /*
             * prepared (or, 42P05, it already was): now its Execute, on
             * the same query timer
             */
            PQclear(res);
            slot->prepared |= 1U << op->stmt->index;

            if (ngx_http_elearn_pg_transmit(slot, op) != NGX_OK) {
                ngx_http_elearn_pg_lost(slot, "connection lost");
            }

            return;
        }

        /* a failed Parse answers as a failed query */

    } else if (state != NULL && ngx_strcmp(state, "26000") == 0) {
        /* "does not exist": prepared again next time */
        slot->prepared &= ~(1U << op->stmt->index);
    }

    slot->op = NULL;
    op->slot = NULL;

    pool->nbusy--;
    ngx_http_elearn_pg_set_idle(slot);

    if (res == NULL) {
        /* libpq gives at least one result per query; be safe anyway */
        ngx_http_elearn_pg_answer(op, NULL, NGX_HTTP_SERVICE_UNAVAILABLE);

    } else {
        /* a cancelled op just clears res: answer() handles both */
        ngx_http_elearn_pg_answer(op, res, NGX_OK);
    }

    ngx_http_elearn_pg_dispatch(pool);
}


/*
 * The connection broke: its query, if any, is answered 503 and the slot
 * closed; waiters get the remaining connections or a new one.
 */

static void
ngx_http_elearn_pg_lost(ngx_http_elearn_pg_slot_t *slot, const char *what)
{
    ngx_uint_t                  level;
    const char                 *msg;
    ngx_http_elearn_pg_op_t    *op;
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    msg = PQerrorMessage(slot->pg);
    level = (slot->op != NULL) ? NGX_LOG_ERR : NGX_LOG_WARN;

    ngx_log_error(level, ngx_cycle->log, 0,
                  "elearn pg: %s: %*s",
                  what, ngx_http_elearn_pg_errlen(msg), msg);

    op = slot->op;
    slot->op = NULL;

    ngx_http_elearn_pg_close(slot);

    if (op != NULL) {
        op->slot = NULL;
        ngx_http_elearn_pg_answer(op, NULL, NGX_HTTP_SERVICE_UNAVAILABLE);
    }

    ngx_http_elearn_pg_dispatch(pool);
}


static void
ngx_http_elearn_pg_set_idle(ngx_http_elearn_pg_slot_t *slot)
{
    slot->state = NGX_HTTP_ELEARN_PG_IDLE;

    if (slot->pool->idle_timeout) {
        slot->timer.cancelable = 1;
        ngx_add_timer(&slot->timer, slot->pool->idle_timeout);

    } else if (slot->timer.timer_set) {
        ngx_del_timer(&slot->timer);
    }
}


/* PQfinish() and account; the caller has taken slot->op away */

static void
ngx_http_elearn_pg_close(ngx_http_elearn_pg_slot_t *slot)
{
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    switch (slot->state) {

    case NGX_HTTP_ELEARN_PG_CONNECTING:
        pool->nconnecting--;
        break;

    case NGX_HTTP_ELEARN_PG_BUSY:
        pool->nbusy--;
        pool->nconnected--;
        break;

    case NGX_HTTP_ELEARN_PG_IDLE:
        pool->nconnected--;
        break;

    default:
        break;
    }

    slot->state = NGX_HTTP_ELEARN_PG_CLOSED;
    slot->flushing = 0;
    slot->preparing = 0;
    slot->prepared = 0;

    if (slot->timer.timer_set) {
        ngx_del_timer(&slot->timer);
    }

    /* PQfinish() closes the socket: only nginx's view of it goes here */

    ngx_http_elearn_event_detach(slot->c);
    slot->c = NULL;

    if (slot->res != NULL) {
        PQclear(slot->res);
        slot->res = NULL;
    }

    if (slot->pg != NULL) {
        /* non-blocking by now: the Terminate message is never waited for */
        PQfinish(slot->pg);
        slot->pg = NULL;
    }
}


/* sockets */

/*
 * Makes slot->c wrap PQsocket(): libpq closes its socket and opens a new
 * one for each address and host it tries while connecting, and the new
 * socket may get the old descriptor number, so sockets are told apart by
 * inode.
 */

static ngx_int_t
ngx_http_elearn_pg_attach(ngx_http_elearn_pg_slot_t *slot)
{
    int                fd;
    struct stat        st;
    ngx_connection_t  *c;

    fd = PQsocket(slot->pg);

    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn pg: libpq has no socket");
        return NGX_ERROR;
    }

    if (fstat(fd, &st) == -1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "elearn pg: fstat() failed");
        return NGX_ERROR;
    }

    if (slot->c != NULL) {
        if (slot->c->fd == fd && slot->ino == st.st_ino) {
            return NGX_OK;
        }

        /* libpq has closed the old socket already */

        ngx_http_elearn_event_detach(slot->c);
        slot->c = NULL;
    }

    c = ngx_http_elearn_event_attach(fd, ngx_cycle->log,
                                     ngx_http_elearn_pg_event_handler,
                                     ngx_http_elearn_pg_event_handler, slot);
    if (c == NULL) {
        return NGX_ERROR;
    }

    slot->c = c;
    slot->ino = st.st_ino;

    return NGX_OK;
}


/*
 * The read event stays armed for the slot's life.  The write event is
 * armed while libpq has something to send; under edge-triggered epoll it
 * then stays registered (a spurious event costs a poll()), under
 * level-triggered methods it is removed to avoid spinning.
 */

static ngx_int_t
ngx_http_elearn_pg_want_write(ngx_http_elearn_pg_slot_t *slot, ngx_uint_t on)
{
    ngx_event_t  *wev;

    wev = slot->c->write;

    if (on) {
        return ngx_handle_write_event(wev, 0);
    }

    if (!(ngx_event_flags & NGX_USE_CLEAR_EVENT) && wev->active) {
        return ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }

    return NGX_OK;
}


static void
ngx_http_elearn_pg_event_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    ngx_http_elearn_pg_process(c->data);
}


static void
ngx_http_elearn_pg_timer_handler(ngx_event_t *ev)
{
    ngx_http_elearn_pg_op_t    *op;
    ngx_http_elearn_pg_slot_t  *slot = ev->data;
    ngx_http_elearn_pg_pool_t  *pool = slot->pool;

    switch (slot->state) {

    case NGX_HTTP_ELEARN_PG_CONNECTING:
        ngx_http_elearn_pg_connect_failed(slot, "timed out");
        return;

    case NGX_HTTP_ELEARN_PG_BUSY:

        /*
         * Cancelling the query would take PQcancel(), which opens a new
         * connection to the server and waits for it: it blocks the worker.
         * Closing the connection is the non-blocking way to give the query
         * up: the backend notices when it next writes to the socket (or
         * at once with client_connection_check_interval set) and aborts;
         * statement_timeout in the conninfo options bounds it anyway.  A
         * new connection is opened lazily.
         */

        pool->timeouts++;

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn pg: query timed out after %M ms, "
                      "closing its connection", pool->query_timeout);

        op = slot->op;
        slot->op = NULL;

        ngx_http_elearn_pg_close(slot);

        if (op != NULL) {
            op->slot = NULL;
            ngx_http_elearn_pg_answer(op, NULL, NGX_HTTP_GATEWAY_TIME_OUT);
        }

        ngx_http_elearn_pg_dispatch(pool);
        return;

    case NGX_HTTP_ELEARN_PG_IDLE:
        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "elearn pg: closing idle connection");
        ngx_http_elearn_pg_close(slot);
        return;

    default:
        return;
    }
}


/* libpq's messages end with a newline */

static size_t
ngx_http_elearn_pg_errlen(const char *msg)
{
    size_t  len;

    len = ngx_strlen(msg);

    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r')) {
        len--;
    }

    return len;
}
