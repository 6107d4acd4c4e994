
/*
 * elearn redis: async hiredis on nginx's event loop.
 *
 * Each worker keeps two connections to Redis: one for commands, shared by
 * every request (they pipeline on it), and one for pub/sub.  hiredis's
 * socket is wrapped in an nginx connection and driven by nginx events;
 * under edge-triggered epoll every event drains the socket, since hiredis
 * reads at most 16 KB per call.  A lost connection is re-opened with a
 * capped exponential backoff, and the pub/sub connection re-subscribes
 * every channel.  Each command carries its own timer.
 *
 * What this file must never do: block the worker (addresses are IPs or
 * unix sockets, never names), call a handler from inside
 * ngx_http_elearn_redis_command(), or touch a request after its pool is
 * gone: a command's state is ngx_alloc()ed, freed only when hiredis hands
 * its callback back, and a pool cleanup on r->pool detaches the request.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <hiredis/async.h>
#include <openssl/sha.h>

#include "ngx_http_elearn_event.h"
#include "ngx_http_elearn_redis.h"


/* first reconnect delay; doubles up to elearn_redis_reconnect_max */
#define NGX_HTTP_ELEARN_REDIS_BACKOFF_MIN     100

/* a connect gets elearn_redis_timeout, but at least this */
#define NGX_HTTP_ELEARN_REDIS_CONNECT_MIN     1000

/* a connection that lived less than this counts as a failed connect */
#define NGX_HTTP_ELEARN_REDIS_STABLE          1000

/* that many timeouts in a row: the server is stuck, reconnect */
#define NGX_HTTP_ELEARN_REDIS_MAX_TIMEOUTS    3

/* how many times one event may loop on a socket that stays ready */
#define NGX_HTTP_ELEARN_REDIS_READ_LOOPS      256
#define NGX_HTTP_ELEARN_REDIS_WRITE_LOOPS     16


typedef struct {
    ngx_http_elearn_redis_t           *redis;
    redisAsyncContext                 *ac;       /* NULL: not connected */
    ngx_connection_t                  *c;        /* wraps ac->c.fd */
    ngx_event_t                        timer;    /* connect or reconnect */
    ngx_msec_t                         connected_at;
    ngx_uint_t                         failures; /* connects in a row */
    const char                        *name;
    unsigned                           connected:1;
    unsigned                           pubsub:1;
    unsigned                           want_write:1;
    unsigned                           in_write:1;
    unsigned                           started:1;
} ngx_http_elearn_redis_conn_t;


/*
 * One command.  hiredis holds it as privdata and hands it back exactly
 * once (with a reply, or NULL when the context is freed): that callback
 * frees it.  Whoever answers first (reply, timeout, disconnect) sets
 * answered.
 */
typedef struct {
    ngx_http_request_t                *request;  /* NULL: nobody to answer */
    ngx_pool_cleanup_t                *cln;
    ngx_http_elearn_redis_handler_pt   handler;
    void                              *data;
    ngx_http_elearn_redis_t           *redis;
    ngx_event_t                        timer;
    unsigned                           answered:1;
    unsigned                           worker:1; /* answers with r NULL */
} ngx_http_elearn_redis_op_t;


/* one subscribed channel; the name is stored right after the struct */
typedef struct {
    ngx_str_node_t                     sn;
    ngx_http_elearn_redis_message_pt   handler;
    ngx_http_elearn_redis_state_pt     state;
    void                              *data;
} ngx_http_elearn_redis_sub_t;


struct ngx_http_elearn_redis_s {
    char                              *host;     /* IP, or the unix path */
    int                                port;     /* 0 for a unix socket */
    ngx_msec_t                         timeout;
    ngx_msec_t                         reconnect_max;

    ngx_http_elearn_redis_conn_t       cmd;
    ngx_http_elearn_redis_conn_t       sub;

    ngx_rbtree_t                       subs;
    ngx_rbtree_node_t                  sentinel;

    ngx_uint_t                         pending;
    ngx_uint_t                         reconnects;
    ngx_uint_t                         timeouts;
    ngx_uint_t                         stalled;  /* timeouts in a row */

    void                              *expiring; /* op whose timer fired */

    unsigned                           destroyed:1;
};


static ngx_int_t ngx_http_elearn_redis_parse_addr(ngx_cycle_t *cycle,
    ngx_http_elearn_redis_t *redis, ngx_str_t *addr);
static void ngx_http_elearn_redis_connect(ngx_http_elearn_redis_conn_t *conn);
static void ngx_http_elearn_redis_schedule(ngx_http_elearn_redis_conn_t *conn);
static void ngx_http_elearn_redis_drop(ngx_http_elearn_redis_conn_t *conn);
static void ngx_http_elearn_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_elearn_redis_connect_cb(const redisAsyncContext *ac,
    int status);
static void ngx_http_elearn_redis_disconnect_cb(const redisAsyncContext *ac,
    int status);
static void ngx_http_elearn_redis_resubscribe(ngx_http_elearn_redis_t *redis);
static void ngx_http_elearn_redis_unsubscribed(ngx_http_elearn_redis_t *redis);
static ngx_int_t ngx_http_elearn_redis_send_sub(ngx_http_elearn_redis_t *redis,
    const char *cmd, ngx_str_t *channel);

static void ngx_http_elearn_redis_add_read(void *privdata);
static void ngx_http_elearn_redis_del_read(void *privdata);
static void ngx_http_elearn_redis_add_write(void *privdata);
static void ngx_http_elearn_redis_del_write(void *privdata);
static void ngx_http_elearn_redis_cleanup(void *privdata);
static redisAsyncContext *ngx_http_elearn_redis_event_ac(ngx_connection_t *c);
static void ngx_http_elearn_redis_read_handler(ngx_event_t *rev);
static void ngx_http_elearn_redis_write_handler(ngx_event_t *wev);

static void ngx_http_elearn_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_http_elearn_redis_op_timeout(ngx_event_t *ev);
static void ngx_http_elearn_redis_op_cleanup(void *data);
static void ngx_http_elearn_redis_message(redisAsyncContext *ac, void *reply,
    void *privdata);
static ngx_http_elearn_redis_sub_t *ngx_http_elearn_redis_find(
    ngx_http_elearn_redis_t *redis, ngx_str_t *channel);


ngx_http_elearn_redis_t *
ngx_http_elearn_redis_create(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf)
{
    ngx_http_elearn_redis_t  *redis;

    /*
     * From the cycle pool: it outlives every request of this worker, so a
     * late call finds a valid, destroyed object rather than freed memory.
     */

    redis = ngx_pcalloc(cycle->pool, sizeof(ngx_http_elearn_redis_t));
    if (redis == NULL) {
        return NULL;
    }

    if (ngx_http_elearn_redis_parse_addr(cycle, redis, &emcf->redis_addr)
        != NGX_OK)
    {
        return NULL;
    }

    redis->timeout = emcf->redis_timeout;
    redis->reconnect_max = ngx_max(emcf->redis_reconnect_max,
                                   NGX_HTTP_ELEARN_REDIS_BACKOFF_MIN);

    ngx_rbtree_init(&redis->subs, &redis->sentinel,
                    ngx_str_rbtree_insert_value);

    redis->cmd.redis = redis;
    redis->cmd.name = "command";

    redis->sub.redis = redis;
    redis->sub.name = "pub/sub";
    redis->sub.pubsub = 1;

    redis->cmd.timer.handler = ngx_http_elearn_redis_timer_handler;
    redis->cmd.timer.data = &redis->cmd;
    redis->cmd.timer.log = cycle->log;
    redis->cmd.timer.cancelable = 1;

    redis->sub.timer.handler = ngx_http_elearn_redis_timer_handler;
    redis->sub.timer.data = &redis->sub;
    redis->sub.timer.log = cycle->log;
    redis->sub.timer.cancelable = 1;

    ngx_http_elearn_redis_connect(&redis->cmd);
    ngx_http_elearn_redis_connect(&redis->sub);

    return redis;
}


void
ngx_http_elearn_redis_destroy(ngx_http_elearn_redis_t *redis)
{
    ngx_rbtree_node_t            *node;
    ngx_http_elearn_redis_sub_t  *sub;

    if (redis == NULL || redis->destroyed) {
        return;
    }

    /*
     * With destroyed set, the callbacks hiredis runs while freeing each
     * context answer nobody and schedule no reconnect.
     */

    redis->destroyed = 1;

    ngx_http_elearn_redis_drop(&redis->cmd);
    ngx_http_elearn_redis_drop(&redis->sub);

    if (redis->cmd.timer.timer_set) {
        ngx_del_timer(&redis->cmd.timer);
    }

    if (redis->sub.timer.timer_set) {
        ngx_del_timer(&redis->sub.timer);
    }

    while (redis->subs.root != redis->subs.sentinel) {
        node = ngx_rbtree_min(redis->subs.root, redis->subs.sentinel);
        ngx_rbtree_delete(&redis->subs, node);

        sub = (ngx_http_elearn_redis_sub_t *) node;
        ngx_free(sub);
    }
}


ngx_int_t
ngx_http_elearn_redis_command(ngx_http_request_t *r,
    ngx_http_elearn_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_pool_cleanup_t            *cln;
    ngx_http_elearn_redis_t       *redis;
    ngx_http_elearn_redis_op_t    *op;
    ngx_http_elearn_redis_conn_t  *conn;
    ngx_http_elearn_main_conf_t   *emcf;

    if (argc <= 0 || argv == NULL || argvlen == NULL
        || (r != NULL && handler == NULL))
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn redis: invalid command arguments");
        return NGX_ERROR;
    }

    emcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_elearn_module);
    redis = (emcf != NULL) ? emcf->redis : NULL;

    if (redis == NULL || redis->destroyed) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    conn = &redis->cmd;

    /*
     * Up, or on its first attempt since it was last up: hiredis buffers
     * the command until the connect completes.  While connects keep
     * failing, answer at once.
     */

    if (conn->ac == NULL || (!conn->connected && conn->failures)) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    op = ngx_calloc(sizeof(ngx_http_elearn_redis_op_t), ngx_cycle->log);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->redis = redis;
    op->handler = handler;
    op->data = data;

    op->timer.handler = ngx_http_elearn_redis_op_timeout;
    op->timer.data = op;
    op->timer.log = ngx_cycle->log;

    if (r != NULL) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            ngx_free(op);
            return NGX_ERROR;
        }

        cln->handler = ngx_http_elearn_redis_op_cleanup;
        cln->data = op;

        op->request = r;
        op->cln = cln;

    } else {
        op->worker = (handler != NULL);
        op->timer.cancelable = 1;
    }

    /* appends to hiredis's buffer; our addWrite hook only posts an event */

    if (redisAsyncCommandArgv(conn->ac, ngx_http_elearn_redis_reply, op,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: could not queue command");

        if (op->cln) {
            op->cln->handler = NULL;
        }

        ngx_free(op);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    redis->pending++;

    ngx_add_timer(&op->timer, redis->timeout);

    return NGX_AGAIN;
}


ngx_int_t
ngx_http_elearn_redis_subscribe(ngx_http_elearn_redis_t *redis,
    ngx_str_t *channel, ngx_http_elearn_redis_message_pt handler, void *data)
{
    ngx_http_elearn_redis_sub_t  *sub;

    if (redis == NULL || redis->destroyed || channel->len == 0
        || handler == NULL)
    {
        return NGX_ERROR;
    }

    sub = ngx_http_elearn_redis_find(redis, channel);

    if (sub != NULL) {
        /* one handler per channel: the newest wins */
        sub->handler = handler;
        sub->state = NULL;
        sub->data = data;
        return NGX_OK;
    }

    sub = ngx_alloc(sizeof(ngx_http_elearn_redis_sub_t) + channel->len,
                    ngx_cycle->log);
    if (sub == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(sub, sizeof(ngx_http_elearn_redis_sub_t));

    sub->sn.str.len = channel->len;
    sub->sn.str.data = (u_char *) sub + sizeof(ngx_http_elearn_redis_sub_t);
    ngx_memcpy(sub->sn.str.data, channel->data, channel->len);
    sub->sn.node.key = ngx_crc32_short(channel->data, channel->len);

    sub->handler = handler;
    sub->data = data;

    ngx_rbtree_insert(&redis->subs, &sub->sn.node);

    /* if not connected, the connect callback subscribes everything */

    if (redis->sub.connected) {
        (void) ngx_http_elearn_redis_send_sub(redis, "SUBSCRIBE",
                                              &sub->sn.str);
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_elearn_redis_unsubscribe(ngx_http_elearn_redis_t *redis,
    ngx_str_t *channel)
{
    ngx_http_elearn_redis_sub_t  *sub;

    if (redis == NULL || redis->destroyed) {
        return NGX_ERROR;
    }

    sub = ngx_http_elearn_redis_find(redis, channel);
    if (sub == NULL) {
        return NGX_DECLINED;
    }

    /*
     * hiredis's callbacks for the channel carry the redis object, never
     * sub: messages still in flight are looked up and dropped.
     */

    ngx_rbtree_delete(&redis->subs, &sub->sn.node);

    if (redis->sub.connected) {
        (void) ngx_http_elearn_redis_send_sub(redis, "UNSUBSCRIBE", channel);
    }

    ngx_free(sub);

    return NGX_OK;
}


ngx_int_t
ngx_http_elearn_redis_subscribe_state(ngx_http_elearn_redis_t *redis,
    ngx_str_t *channel, ngx_http_elearn_redis_state_pt state)
{
    ngx_http_elearn_redis_sub_t  *sub;

    if (redis == NULL || redis->destroyed) {
        return NGX_DECLINED;
    }

    sub = ngx_http_elearn_redis_find(redis, channel);
    if (sub == NULL) {
        return NGX_DECLINED;
    }

    sub->state = state;

    return NGX_OK;
}


void
ngx_http_elearn_redis_get_stats(ngx_http_elearn_redis_t *redis,
    ngx_http_elearn_redis_stats_t *stats)
{
    ngx_memzero(stats, sizeof(ngx_http_elearn_redis_stats_t));

    if (redis == NULL) {
        return;
    }

    stats->connected = redis->cmd.connected;
    stats->pubsub_connected = redis->sub.connected;
    stats->pending = redis->pending;
    stats->reconnects = redis->reconnects;
    stats->timeouts = redis->timeouts;
}


/*
 * "ip:port", "[ipv6]:port" or "unix:/path".  The configuration rejects
 * anything else already; checked again here because a name would make
 * hiredis call a blocking getaddrinfo() inside the worker.
 */

static ngx_int_t
ngx_http_elearn_redis_parse_addr(ngx_cycle_t *cycle,
    ngx_http_elearn_redis_t *redis, ngx_str_t *addr)
{
    u_char     *p, *last, *colon;
    size_t      len;
    ngx_int_t   port;
#if (NGX_HAVE_INET6)
    u_char      buf[16];
#endif

    last = addr->data + addr->len;

    if (addr->len > 5 && ngx_strncmp(addr->data, "unix:", 5) == 0) {
        p = addr->data + 5;
        len = last - p;

        if (p[0] != '/') {
            goto invalid;
        }

        redis->host = ngx_pnalloc(cycle->pool, len + 1);
        if (redis->host == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(redis->host, p, len);
        redis->host[len] = '\0';
        redis->port = 0;

        return NGX_OK;
    }

    colon = NULL;

    for (p = addr->data; p < last; p++) {
        if (*p == ':') {
            colon = p;
        }
    }

    if (colon == NULL) {
        goto invalid;
    }

    port = ngx_atoi(colon + 1, last - colon - 1);
    if (port < 1 || port > 65535) {
        goto invalid;
    }

    p = addr->data;
    len = colon - p;

    if (len > 2 && p[0] == '[' && p[len - 1] == ']') {
        p++;
        len -= 2;
    }

    if (len == 0) {
        goto invalid;
    }

    if (ngx_inet_addr(p, len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(p, len, buf) != NGX_OK
#endif
        )
    {
        goto invalid;
    }

    redis->host = ngx_pnalloc(cycle->pool, len + 1);
    if (redis->host == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(redis->host, p, len);
    redis->host[len] = '\0';
    redis->port = (int) port;

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                  "elearn redis: invalid address \"%V\": needs \"ip:port\" "
                  "or \"unix:/path\"", addr);

    return NGX_ERROR;
}


/* connections */

static void
ngx_http_elearn_redis_connect(ngx_http_elearn_redis_conn_t *conn)
{
    ngx_connection_t         *c;
    redisAsyncContext        *ac;
    ngx_http_elearn_redis_t  *redis = conn->redis;

    if (conn->started) {
        redis->reconnects++;
    }

    conn->started = 1;

    if (redis->port == 0) {
        ac = redisAsyncConnectUnix(redis->host);

    } else {
        ac = redisAsyncConnect(redis->host, redis->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: %s connection: out of memory",
                      conn->name);
        goto failed;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: %s connection to %s failed: %s",
                      conn->name, redis->host, ac->errstr);

        /* no hooks yet: hiredis just closes the socket */
        redisAsyncFree(ac);
        goto failed;
    }

    c = ngx_http_elearn_event_attach(ac->c.fd, ngx_cycle->log,
                                     ngx_http_elearn_redis_read_handler,
                                     ngx_http_elearn_redis_write_handler,
                                     conn);
    if (c == NULL) {
        /* no hooks yet: hiredis just closes the socket */
        redisAsyncFree(ac);
        goto failed;
    }

    conn->ac = ac;
    conn->c = c;
    conn->connected = 0;
    conn->want_write = 0;
    conn->in_write = 0;

    ac->data = conn;

    /* the hooks first: setting the connect callback arms the write event */

    ac->ev.data = conn;
    ac->ev.addRead = ngx_http_elearn_redis_add_read;
    ac->ev.delRead = ngx_http_elearn_redis_del_read;
    ac->ev.addWrite = ngx_http_elearn_redis_add_write;
    ac->ev.delWrite = ngx_http_elearn_redis_del_write;
    ac->ev.cleanup = ngx_http_elearn_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_elearn_redis_connect_cb);
    redisAsyncSetDisconnectCallback(ac, ngx_http_elearn_redis_disconnect_cb);

    /* hiredis has no connect timeout: a blackholed address hangs ~2 min */

    ngx_add_timer(&conn->timer, ngx_max(redis->timeout,
                                        NGX_HTTP_ELEARN_REDIS_CONNECT_MIN));

    return;

failed:

    conn->failures++;
    ngx_http_elearn_redis_schedule(conn);
}


/*
 * The next connect: at once after a connection that was up for a while
 * went away, else after 100 ms doubling up to elearn_redis_reconnect_max.
 * Always from a timer, never from inside hiredis: a context is never
 * replaced while hiredis may still be using the old one.
 */

static void
ngx_http_elearn_redis_schedule(ngx_http_elearn_redis_conn_t *conn)
{
    ngx_uint_t                n;
    ngx_msec_t                delay;
    ngx_http_elearn_redis_t  *redis = conn->redis;

    if (redis->destroyed) {
        return;
    }

    delay = 0;

    if (conn->failures) {
        n = ngx_min(conn->failures - 1, 16);
        delay = ngx_min((ngx_msec_t) NGX_HTTP_ELEARN_REDIS_BACKOFF_MIN << n,
                        redis->reconnect_max);
    }

    ngx_add_timer(&conn->timer, delay);
}


/* frees the context now; its cleanup hook schedules the reconnect */

static void
ngx_http_elearn_redis_drop(ngx_http_elearn_redis_conn_t *conn)
{
    if (conn->ac == NULL) {
        return;
    }

    /* commands issued by handlers during the free are refused at once */
    conn->connected = 0;

    redisAsyncFree(conn->ac);
}


/* while connecting: the connect timed out; else: time to reconnect */

static void
ngx_http_elearn_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_elearn_redis_conn_t  *conn = ev->data;

    if (conn->redis->destroyed) {
        return;
    }

    if (conn->ac == NULL) {
        ngx_http_elearn_redis_connect(conn);
        return;
    }

    if (!conn->connected) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: %s connection to %s timed out",
                      conn->name, conn->redis->host);

        ngx_http_elearn_redis_drop(conn);
    }
}


static void
ngx_http_elearn_redis_connect_cb(const redisAsyncContext *ac, int status)
{
    ngx_http_elearn_redis_conn_t  *conn = ac->data;

    ngx_uint_t  level;

    if (status != REDIS_OK) {
        /* hiredis frees the context next: the cleanup hook follows */
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: %s connection to %s failed: %s",
                      conn->name, conn->redis->host,
                      ac->errstr ? ac->errstr : "unknown error");
        return;
    }

    if (conn->timer.timer_set) {
        ngx_del_timer(&conn->timer);
    }

    conn->connected = 1;
    conn->connected_at = ngx_current_msec;

    level = conn->failures ? NGX_LOG_NOTICE : NGX_LOG_INFO;

    ngx_log_error(level, ngx_cycle->log, 0,
                  "elearn redis: %s connection to %s is up",
                  conn->name, conn->redis->host);

    if (conn->pubsub) {
        ngx_http_elearn_redis_resubscribe(conn->redis);
    }
}


static void
ngx_http_elearn_redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
    ngx_http_elearn_redis_conn_t  *conn = ac->data;

    if (status == REDIS_OK || conn->redis->destroyed) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "elearn redis: %s connection to %s lost: %s",
                  conn->name, conn->redis->host,
                  ac->errstr ? ac->errstr : "unknown error");
}


/*
 * Redis forgets a client's subscriptions with its connection: after
 * every connect, subscribe again to every channel.
 */

static void
ngx_http_elearn_redis_resubscribe(ngx_http_elearn_redis_t *redis)
{
    ngx_rbtree_node_t            *node;
    ngx_http_elearn_redis_sub_t  *sub;

    if (redis->subs.root == redis->subs.sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(redis->subs.root, redis->subs.sentinel);
         node;
         node = ngx_rbtree_next(&redis->subs, node))
    {
        sub = (ngx_http_elearn_redis_sub_t *) node;

        if (ngx_http_elearn_redis_send_sub(redis, "SUBSCRIBE", &sub->sn.str)
            != NGX_OK)
        {
            return;
        }
    }
}


/* the pub/sub connection is gone: every channel's state handler learns */

static void
ngx_http_elearn_redis_unsubscribed(ngx_http_elearn_redis_t *redis)
{
    ngx_rbtree_node_t            *node;
    ngx_http_elearn_redis_sub_t  *sub;

    if (redis->subs.root == redis->subs.sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(redis->subs.root, redis->subs.sentinel);
         node;
         node = ngx_rbtree_next(&redis->subs, node))
    {
        sub = (ngx_http_elearn_redis_sub_t *) node;

        if (sub->state != NULL) {
            sub->state(&sub->sn.str, 0, sub->data);
        }
    }
}


/*
 * Every channel's callback carries the redis object, not its sub: a sub
 * can then be freed at once on unsubscribe, though hiredis keeps the
 * callback until Redis confirms.
 */

static ngx_int_t
ngx_http_elearn_redis_send_sub(ngx_http_elearn_redis_t *redis,
    const char *cmd, ngx_str_t *channel)
{
    size_t       argvlen[2];
    const char  *argv[2];

    if (redis->sub.ac == NULL) {
        return NGX_ERROR;
    }

    argv[0] = cmd;
    argvlen[0] = ngx_strlen(cmd);
    argv[1] = (const char *) channel->data;
    argvlen[1] = channel->len;

    if (redisAsyncCommandArgv(redis->sub.ac, ngx_http_elearn_redis_message,
                              redis, 2, argv, argvlen)
        != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: %s \"%V\" failed", cmd, channel);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* hiredis's event hooks */

static void
ngx_http_elearn_redis_add_read(void *privdata)
{
    ngx_http_elearn_redis_conn_t  *conn = privdata;

    /* edge-triggered: registered once, stays so */

    if (conn->c != NULL && ngx_handle_read_event(conn->c->read, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn redis: cannot watch the %s socket", conn->name);
    }
}


static void
ngx_http_elearn_redis_del_read(void *privdata)
{
    /* hiredis 0.14 never asks; reads stay armed for the context's life */
}


/*
 * hiredis wants to write.  Under edge-triggered epoll an event that is
 * already armed on a writable socket brings no new edge, so once
 * connected the write event is posted: it runs after the current
 * handler, never inside ngx_http_elearn_redis_command(), and the commands
 * of one loop iteration go out together.  While connecting, the edge of
 * the connect completing comes by itself.
 */

static void
ngx_http_elearn_redis_add_write(void *privdata)
{
    ngx_http_elearn_redis_conn_t  *conn = privdata;

    ngx_event_t  *wev;

    if (conn->c == NULL) {
        return;
    }

    conn->want_write = 1;

    wev = conn->c->write;

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn redis: cannot watch the %s socket", conn->name);
    }

    if (conn->ac != NULL && (conn->ac->c.flags & REDIS_CONNECTED)
        && !conn->in_write && !wev->posted)
    {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


static void
ngx_http_elearn_redis_del_write(void *privdata)
{
    ngx_http_elearn_redis_conn_t  *conn = privdata;

    ngx_event_t  *wev;

    conn->want_write = 0;

    if (conn->c == NULL) {
        return;
    }

    wev = conn->c->write;

    /* level-triggered methods would report a writable socket forever */

    if (!(ngx_event_flags & NGX_USE_CLEAR_EVENT) && wev->active) {
        (void) ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


/*
 * hiredis is freeing the context (after running every pending callback
 * with a NULL reply); it closes the socket right after.
 */

static void
ngx_http_elearn_redis_cleanup(void *privdata)
{
    ngx_http_elearn_redis_conn_t  *conn = privdata;

    ngx_uint_t  was_connected;

    if (conn->timer.timer_set) {
        ngx_del_timer(&conn->timer);
    }

    was_connected = conn->connected;

    if (conn->connected
        && ngx_current_msec - conn->connected_at
           >= NGX_HTTP_ELEARN_REDIS_STABLE)
    {
        conn->failures = 0;

    } else {
        /* never up, or up so briefly that the server may be refusing us */
        conn->failures++;
    }

    /* hiredis closes the socket: only nginx's view of it goes here */

    ngx_http_elearn_event_detach(conn->c);

    conn->c = NULL;
    conn->ac = NULL;
    conn->connected = 0;
    conn->want_write = 0;
    conn->in_write = 0;

    if (conn->pubsub && was_connected && !conn->redis->destroyed) {
        ngx_http_elearn_redis_unsubscribed(conn->redis);
    }

    ngx_http_elearn_redis_schedule(conn);
}


/*
 * The context an event of c may drive, or NULL: none once hiredis has
 * freed it, and none while connecting until the socket is writable, as a
 * spurious event then would pass for a connect.
 */

static redisAsyncContext *
ngx_http_elearn_redis_event_ac(ngx_connection_t *c)
{
    ngx_http_elearn_redis_conn_t  *conn = c->data;

    redisAsyncContext  *ac;

    ac = conn->ac;

    if (ac == NULL) {
        return NULL;
    }

    if (!(ac->c.flags & REDIS_CONNECTED)
        && !ngx_http_elearn_event_ready(c->fd, POLLOUT, "redis"))
    {
        return NULL;
    }

    return ac;
}


/*
 * Reads until the socket is empty: hiredis reads at most 16 KB per call
 * and under edge-triggered epoll no event comes for what is left.  poll()
 * rather than FIONREAD so that a pending end of file is seen as well.
 * Any call may free the context (end of file, error): conn->ac then is
 * NULL, and the wrapped connection is gone.
 */

static void
ngx_http_elearn_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t              *c = rev->data;
    ngx_http_elearn_redis_conn_t  *conn = c->data;

    ngx_uint_t          n;
    ngx_socket_t        fd;
    redisAsyncContext  *ac;

    ac = ngx_http_elearn_redis_event_ac(c);
    if (ac == NULL) {
        return;
    }

    fd = c->fd;

    for (n = 0; n < NGX_HTTP_ELEARN_REDIS_READ_LOOPS; n++) {

        redisAsyncHandleRead(ac);

        if (conn->ac == NULL) {
            return;
        }

        if (!ngx_http_elearn_event_ready(fd, POLLIN, "redis")) {
            return;
        }
    }

    /* a flood: let other events run, then go on */

    ngx_post_event(rev, &ngx_posted_events);
}


static void
ngx_http_elearn_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t              *c = wev->data;
    ngx_http_elearn_redis_conn_t  *conn = c->data;

    ngx_uint_t          n;
    ngx_socket_t        fd;
    redisAsyncContext  *ac;

    ac = ngx_http_elearn_redis_event_ac(c);
    if (ac == NULL) {
        return;
    }

    fd = c->fd;

    for (n = 0; n < NGX_HTTP_ELEARN_REDIS_WRITE_LOOPS; n++) {

        conn->in_write = 1;

        redisAsyncHandleWrite(ac);

        if (conn->ac == NULL) {
            return;
        }

        conn->in_write = 0;

        if (!conn->want_write
            || !ngx_http_elearn_event_ready(fd, POLLOUT, "redis"))
        {
            return;
        }
    }

    if (!wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


/* commands */

/*
 * hiredis hands the op back: with the reply, or with NULL when the
 * context is being freed.  Answers unless a timeout did already, then
 * frees the op.
 */

static void
ngx_http_elearn_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_elearn_redis_op_t  *op = privdata;

    ngx_int_t                 rc;
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_elearn_redis_t  *redis;

    redis = op->redis;
    redis->pending--;

    if (redis->expiring == op) {
        /* answered while its timeout read the socket: see op_timeout */
        redis->expiring = NULL;
    }

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    if (reply != NULL) {
        redis->stalled = 0;
    }

    r = op->request;

    /* disarmed before the handler, which may destroy r->pool */

    op->request = NULL;

    if (op->cln != NULL) {
        op->cln->handler = NULL;
        op->cln = NULL;
    }

    if (!op->answered && (r != NULL || op->worker) && !redis->destroyed) {
        op->answered = 1;

        rc = (reply != NULL) ? NGX_OK : NGX_HTTP_SERVICE_UNAVAILABLE;

        if (r == NULL) {
            op->handler(NULL, reply, rc, op->data);

        } else {
            c = r->connection;

            op->handler(r, reply, rc, op->data);

            ngx_http_run_posted_requests(c);
        }
    }

    ngx_free(op);
}


/*
 * No reply in time: answer 504 now; the op stays with hiredis until the
 * reply or the disconnect hands it back.  Several timeouts in a row mean
 * the server or the connection is stuck: start afresh.
 */

static void
ngx_http_elearn_redis_op_timeout(ngx_event_t *ev)
{
    ngx_http_elearn_redis_op_t  *op = ev->data;

    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_elearn_redis_t  *redis;

    redis = op->redis;

    if (op->answered) {
        return;
    }

    /*
     * A busy worker (thousands of sockets ready) handles its events 512 at
     * a time and expires timers between the batches: the reply may be in
     * the socket already.  Read first; if this op was answered, it is
     * freed, and nothing timed out.
     */
    if (redis->cmd.ac != NULL && redis->cmd.c != NULL && !redis->destroyed) {
        redis->expiring = op;

        ngx_http_elearn_redis_read_handler(redis->cmd.c->read);

        if (redis->expiring == NULL) {
            return;
        }

        redis->expiring = NULL;
    }

    op->answered = 1;

    redis->timeouts++;
    redis->stalled++;

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "elearn redis: no reply within %M ms", redis->timeout);

    r = op->request;

    if (r != NULL) {
        op->request = NULL;

        if (op->cln != NULL) {
            op->cln->handler = NULL;
            op->cln = NULL;
        }

        c = r->connection;

        op->handler(r, NULL, NGX_HTTP_GATEWAY_TIME_OUT, op->data);

        ngx_http_run_posted_requests(c);

    } else if (op->worker && !redis->destroyed) {
        op->handler(NULL, NULL, NGX_HTTP_GATEWAY_TIME_OUT, op->data);
    }

    /* op may be freed from here on */

    if (redis->stalled >= NGX_HTTP_ELEARN_REDIS_MAX_TIMEOUTS
        && redis->cmd.connected && !redis->destroyed)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: %ui commands in a row timed out, "
                      "reconnecting", redis->stalled);

        redis->stalled = 0;

        ngx_http_elearn_redis_drop(&redis->cmd);
    }
}


/* r->pool is going away: the op stays with hiredis, answering nobody */

static void
ngx_http_elearn_redis_op_cleanup(void *data)
{
    ngx_http_elearn_redis_op_t  *op = data;

    op->request = NULL;
    op->cln = NULL;

    /* the timer no longer guards a request: let shutdown go on */
    op->timer.cancelable = 1;
}


/* pub/sub */

static void
ngx_http_elearn_redis_message(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_elearn_redis_t  *redis = privdata;

    ngx_str_t                     channel, message;
    redisReply                   *rr = reply;
    ngx_http_elearn_redis_sub_t  *sub;

    /*
     * NULL: the context is being freed (the cleanup hook tells the state
     * handlers); unsubscribe: nothing; subscribe: the state handler.
     */

    if (rr == NULL || redis->destroyed
        || rr->type != REDIS_REPLY_ARRAY || rr->elements < 3
        || rr->element[0]->type != REDIS_REPLY_STRING
        || rr->element[1]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    channel.data = (u_char *) rr->element[1]->str;
    channel.len = rr->element[1]->len;

    if (rr->element[0]->len == sizeof("subscribe") - 1
        && ngx_strncmp(rr->element[0]->str, "subscribe",
                       sizeof("subscribe") - 1) == 0)
    {
        sub = ngx_http_elearn_redis_find(redis, &channel);

        if (sub != NULL && sub->state != NULL) {
            sub->state(&channel, 1, sub->data);
        }

        return;
    }

    if (rr->element[2]->type != REDIS_REPLY_STRING
        || rr->element[0]->len != sizeof("message") - 1
        || ngx_strncmp(rr->element[0]->str, "message",
                       sizeof("message") - 1) != 0)
    {
        return;
    }

    sub = ngx_http_elearn_redis_find(redis, &channel);
    if (sub == NULL) {
        return;      /* unsubscribed meanwhile */
    }

    message.data = (u_char *) rr->element[2]->str;
    message.len = rr->element[2]->len;

    sub->handler(&channel, &message, sub->data);
}


static ngx_http_elearn_redis_sub_t *
ngx_http_elearn_redis_find(ngx_http_elearn_redis_t *redis, ngx_str_t *channel)
{
    ngx_str_node_t  *sn;

    sn = ngx_str_rbtree_lookup(&redis->subs, channel,
                               ngx_crc32_short(channel->data, channel->len));

    return (ngx_http_elearn_redis_sub_t *) sn;
}


/* --- scripts ------------------------------------------------------------ */

/* one script run of a request; lives in r->pool */
typedef struct {
    ngx_http_elearn_redis_script_t    *script;
    ngx_http_elearn_redis_handler_pt   handler;
    void                              *data;
    int                                argc;
    const char                       **argv;
    size_t                            *argvlen;
    unsigned                           retried:1;
} ngx_http_elearn_redis_eval_t;


static void
ngx_http_elearn_redis_eval_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_redis_eval_t *ev = data;

    if (rc == NGX_OK
        && reply->type == REDIS_REPLY_ERROR
        && !ev->retried
        && reply->len >= sizeof("NOSCRIPT") - 1
        && ngx_strncmp(reply->str, "NOSCRIPT", sizeof("NOSCRIPT") - 1) == 0)
    {
        ev->retried = 1;
        ev->argv[0] = "EVAL";
        ev->argvlen[0] = sizeof("EVAL") - 1;
        ev->argv[1] = ev->script->text;
        ev->argvlen[1] = ev->script->len;

        rc = ngx_http_elearn_redis_command(r,
                                           ngx_http_elearn_redis_eval_reply,
                                           ev, ev->argc, ev->argv,
                                           ev->argvlen);
        if (rc == NGX_AGAIN) {
            return;
        }

        ev->handler(r, NULL, NGX_HTTP_SERVICE_UNAVAILABLE, ev->data);
        return;
    }

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn redis: script %s failed: %*s",
                      ev->script->name, (size_t) reply->len, reply->str);
    }

    ev->handler(r, reply, rc, ev->data);
}


ngx_int_t
ngx_http_elearn_redis_eval(ngx_http_request_t *r,
    ngx_http_elearn_redis_script_t *script,
    ngx_http_elearn_redis_handler_pt handler, void *data, int nkeys,
    int argc, const char **argv, const size_t *argvlen)
{
    u_char                        *p, md[SHA_DIGEST_LENGTH];
    ngx_http_elearn_redis_eval_t  *ev;

    if (!script->hashed) {
        SHA1((u_char *) script->text, script->len, md);
        ngx_hex_dump(script->sha, md, SHA_DIGEST_LENGTH);
        script->hashed = 1;
    }

    ev = ngx_palloc(r->pool, sizeof(ngx_http_elearn_redis_eval_t));
    if (ev == NULL) {
        return NGX_ERROR;
    }

    ev->argv = ngx_palloc(r->pool, (argc + 3) * sizeof(char *));
    ev->argvlen = ngx_palloc(r->pool, (argc + 3) * sizeof(size_t));
    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

    if (ev->argv == NULL || ev->argvlen == NULL || p == NULL) {
        return NGX_ERROR;
    }

    ev->script = script;
    ev->handler = handler;
    ev->data = data;
    ev->argc = argc + 3;
    ev->retried = 0;

    ev->argv[0] = "EVALSHA";
    ev->argvlen[0] = sizeof("EVALSHA") - 1;
    ev->argv[1] = (char *) script->sha;
    ev->argvlen[1] = sizeof(script->sha);
    ev->argv[2] = (char *) p;
    ev->argvlen[2] = ngx_sprintf(p, "%d", nkeys) - p;

    ngx_memcpy(ev->argv + 3, argv, argc * sizeof(char *));
    ngx_memcpy(ev->argvlen + 3, argvlen, argc * sizeof(size_t));

    return ngx_http_elearn_redis_command(r,
                                         ngx_http_elearn_redis_eval_reply,
                                         ev, ev->argc, ev->argv, ev->argvlen);
}
