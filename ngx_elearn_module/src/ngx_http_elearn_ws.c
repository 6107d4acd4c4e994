
/*
 * elearn ws: RFC 6455 WebSocket connections on nginx's event loop (see
 * ngx_http_elearn_ws.h for the contract and the life of a connection).
 *
 * The framing is our own rather than libwslay's: wslay keeps a 4 KiB input
 * buffer inside every connection's frame context and copies each queued
 * message into the context, where elearn wants no buffer at all on an idle
 * connection and one serialized frame shared by every recipient of a
 * broadcast (docs/ARCHITECTURE.md, "WebSocket layer").
 *
 * Input is read into one scratch buffer per worker; a frame that arrives
 * whole is unmasked and delivered in place, and only a frame or message
 * split over reads gets a buffer of its own, freed when it is delivered.
 * Output is a queue of references to shared frames.  This file never
 * blocks, never calls a callback from inside an API call, and frees a
 * connection only from its own event handlers, after on_close.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/sha.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_ws.h"


#define NGX_HTTP_ELEARN_WS_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* a read takes at most this much at a time; the worker holds one */
#define NGX_HTTP_ELEARN_WS_SCRATCH  16384

/* reads per read event, so that one sender cannot hold the worker */
#define NGX_HTTP_ELEARN_WS_READS  32

/* queue nodes kept for reuse per worker, beyond which they are freed */
#define NGX_HTTP_ELEARN_WS_FREE_NODES  4096

#define NGX_HTTP_ELEARN_UTF8_OK   0
#define NGX_HTTP_ELEARN_UTF8_BAD  8


/* an echo connection, in the worker's list for "broadcast:" */
typedef struct {
    ngx_queue_t                  queue;
    ngx_http_elearn_ws_t        *ws;
} ngx_http_elearn_ws_echo_t;


struct ngx_http_elearn_ws_out_s {
    ngx_http_elearn_ws_out_t    *next;
    ngx_http_elearn_ws_frame_t  *frame;
};


static void ngx_http_elearn_ws_takeover(ngx_event_t *ev);
static void ngx_http_elearn_ws_request_gone(void *data);
static void ngx_http_elearn_ws_read_handler(ngx_event_t *rev);
static void ngx_http_elearn_ws_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_http_elearn_ws_input(ngx_http_elearn_ws_t *ws,
    u_char *p, size_t size);
static void ngx_http_elearn_ws_unmask(ngx_http_elearn_ws_t *ws, u_char *p,
    size_t n);
static ngx_int_t ngx_http_elearn_ws_header(ngx_http_elearn_ws_t *ws);
static void ngx_http_elearn_ws_control(ngx_http_elearn_ws_t *ws, u_char *p,
    size_t len);
static ngx_int_t ngx_http_elearn_ws_keep(ngx_http_elearn_ws_t *ws,
    u_char *p, size_t n);
static void ngx_http_elearn_ws_fail(ngx_http_elearn_ws_t *ws,
    ngx_uint_t code, const char *reason);
static void ngx_http_elearn_ws_start_close(ngx_http_elearn_ws_t *ws,
    ngx_uint_t code, const u_char *reason, size_t len, ngx_uint_t empty);
static ngx_int_t ngx_http_elearn_ws_enqueue(ngx_http_elearn_ws_t *ws,
    ngx_http_elearn_ws_frame_t *frame);
static void ngx_http_elearn_ws_drop_queue(ngx_http_elearn_ws_t *ws,
    ngx_uint_t keep_started);
static ngx_int_t ngx_http_elearn_ws_flush(ngx_http_elearn_ws_t *ws);
static ngx_int_t ngx_http_elearn_ws_progress(ngx_http_elearn_ws_t *ws);
static void ngx_http_elearn_ws_kick(ngx_http_elearn_ws_t *ws);
static void ngx_http_elearn_ws_finalize(ngx_http_elearn_ws_t *ws);
static void ngx_http_elearn_ws_free_input(ngx_http_elearn_ws_t *ws);
static uint32_t ngx_http_elearn_ws_utf8(uint32_t state, u_char *p,
    size_t len);
static ngx_uint_t ngx_http_elearn_ws_code_valid(ngx_uint_t code);
static ngx_table_elt_t *ngx_http_elearn_ws_find_header(ngx_http_request_t *r,
    const char *name, ngx_table_elt_t *after);
static ngx_uint_t ngx_http_elearn_ws_has_token(ngx_http_request_t *r,
    const char *name, const char *token);
static ngx_int_t ngx_http_elearn_ws_token(u_char **pos, u_char *last,
    ngx_str_t *tok);
static void ngx_http_elearn_ws_echo_message(ngx_http_elearn_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len);
static void ngx_http_elearn_ws_echo_close(ngx_http_elearn_ws_t *ws,
    ngx_uint_t code);
static void ngx_http_elearn_ws_echo_free(ngx_http_elearn_ws_frame_t *frame);


static u_char                     ngx_http_elearn_ws_scratch[
                                      NGX_HTTP_ELEARN_WS_SCRATCH];
static ngx_http_elearn_ws_out_t  *ngx_http_elearn_ws_free_nodes;
static ngx_queue_t                ngx_http_elearn_ws_echo_all;
static ngx_http_elearn_ws_stats_t  ngx_http_elearn_ws_stats;
static ngx_uint_t                  ngx_http_elearn_ws_echo_frames;
static ngx_uint_t                  ngx_http_elearn_ws_echo_fanout_n;
static ngx_uint_t                  ngx_http_elearn_ws_echo_fanout_us;
static ngx_uint_t                 ngx_http_elearn_ws_nfree;

/* the server's ping: one static frame shared by every connection */
static u_char                      ngx_http_elearn_ws_ping_bytes[] = {
    0x89, 0x00
};
static ngx_http_elearn_ws_frame_t  ngx_http_elearn_ws_ping = {
    1, ngx_http_elearn_ws_ping_bytes, 2, ngx_http_elearn_ws_ping_bytes + 2,
    0, NULL, NULL
};


static ngx_http_elearn_ws_handlers_t  ngx_http_elearn_ws_echo_handlers = {
    NULL,
    ngx_http_elearn_ws_echo_message,
    ngx_http_elearn_ws_echo_close
};


/* the opening handshake */


ngx_uint_t
ngx_http_elearn_ws_check(ngx_http_request_t *r)
{
    u_char            key[32];
    ngx_str_t         src, dst;
    ngx_table_elt_t  *h;

    if (r->method != NGX_HTTP_GET) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r->http_version != NGX_HTTP_VERSION_11 || r != r->main) {
        return NGX_HTTP_BAD_REQUEST;
    }

    if (!ngx_http_elearn_ws_has_token(r, "upgrade", "websocket")
        || !ngx_http_elearn_ws_has_token(r, "connection", "upgrade"))
    {
        return 426;
    }

    h = ngx_http_elearn_ws_find_header(r, "sec-websocket-version", NULL);
    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0
        || ngx_http_elearn_ws_find_header(r, "sec-websocket-version", h))
    {
        return 426;
    }

    h = ngx_http_elearn_ws_find_header(r, "sec-websocket-key", NULL);
    if (h == NULL || h->value.len != 24
        || ngx_http_elearn_ws_find_header(r, "sec-websocket-key", h))
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    src = h->value;
    dst.data = key;

    if (ngx_decode_base64(&dst, &src) != NGX_OK || dst.len != 16) {
        return NGX_HTTP_BAD_REQUEST;
    }

    return 0;
}


ngx_int_t
ngx_http_elearn_ws_reject(ngx_http_request_t *r, ngx_uint_t status)
{
    ngx_table_elt_t  *h;

    if (status == NGX_HTTP_NOT_ALLOWED) {
        return ngx_http_elearn_problem_method(r, "GET");
    }

    if (status != 426) {
        return ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                       "websocket-handshake",
                                       "not a valid WebSocket opening "
                                       "handshake (RFC 6455 section 4.2.1): "
                                       "GET over HTTP/1.1 with a "
                                       "Sec-WebSocket-Key of 16 bytes in "
                                       "base64");
    }

    ngx_str_set(&r->headers_out.status_line, "426 Upgrade Required");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, "websocket");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Version");
    ngx_str_set(&h->value, "13");

    r->keepalive = 0;

    return ngx_http_elearn_problem(r, 426, "upgrade-required",
                                   "this resource is a WebSocket: send "
                                   "\"Upgrade: websocket\", \"Connection: "
                                   "Upgrade\" and \"Sec-WebSocket-Version: "
                                   "13\"");
}


/*
 * Walks the comma-separated values of every Sec-WebSocket-Protocol
 * header; returns the one matched by name (exact) or prefix.
 */
static ngx_int_t
ngx_http_elearn_ws_protocol_find(ngx_http_request_t *r, const char *name,
    ngx_uint_t prefix, ngx_str_t *value)
{
    u_char           *p, *last;
    size_t            len;
    ngx_str_t         tok;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    h = NULL;

    while ((h = ngx_http_elearn_ws_find_header(r, "sec-websocket-protocol",
                                               h)))
    {
        p = h->value.data;
        last = p + h->value.len;

        while (ngx_http_elearn_ws_token(&p, last, &tok) == NGX_OK) {
            if (tok.len < len || ngx_strncmp(tok.data, name, len) != 0
                || (!prefix && tok.len != len))
            {
                continue;
            }

            value->data = tok.data + len;
            value->len = tok.len - len;

            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


ngx_uint_t
ngx_http_elearn_ws_protocol_offered(ngx_http_request_t *r, const char *name)
{
    ngx_str_t  value;

    return ngx_http_elearn_ws_protocol_find(r, name, 0, &value) == NGX_OK;
}


ngx_int_t
ngx_http_elearn_ws_protocol_value(ngx_http_request_t *r, const char *prefix,
    ngx_str_t *value)
{
    return ngx_http_elearn_ws_protocol_find(r, prefix, 1, value);
}


static ngx_table_elt_t *
ngx_http_elearn_ws_push_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return h;
}


ngx_http_elearn_ws_t *
ngx_http_elearn_ws_upgrade(ngx_http_request_t *r,
    ngx_http_elearn_ws_handlers_t *handlers, ngx_str_t *protocol)
{
    u_char                 *accept;
    ngx_int_t               rc;
    ngx_str_t               src, dst;
    ngx_event_t            *ev;
    SHA_CTX                 sha;
    ngx_table_elt_t        *key;
    ngx_connection_t       *c;
    ngx_pool_cleanup_t     *cln;
    ngx_http_elearn_ws_t   *ws;
    u_char                  digest[SHA_DIGEST_LENGTH];

    c = r->connection;

    key = ngx_http_elearn_ws_find_header(r, "sec-websocket-key", NULL);
    if (key == NULL || r != r->main || handlers->on_close == NULL) {
        return NULL;
    }

    ev = ngx_pcalloc(r->pool, sizeof(ngx_event_t));
    if (ev == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    accept = ngx_pnalloc(r->pool, ngx_base64_encoded_length(sizeof(digest)));
    if (accept == NULL) {
        return NULL;
    }

    SHA1_Init(&sha);
    SHA1_Update(&sha, key->value.data, key->value.len);
    SHA1_Update(&sha, NGX_HTTP_ELEARN_WS_GUID,
                sizeof(NGX_HTTP_ELEARN_WS_GUID) - 1);
    SHA1_Final(digest, &sha);

    src.data = digest;
    src.len = sizeof(digest);
    dst.data = accept;
    ngx_encode_base64(&dst, &src);

    if (ngx_http_elearn_ws_push_header(r, "Upgrade", (u_char *) "websocket",
                                       sizeof("websocket") - 1) == NULL
        || ngx_http_elearn_ws_push_header(r, "Sec-WebSocket-Accept",
                                          dst.data, dst.len) == NULL
        || (protocol
            && ngx_http_elearn_ws_push_header(r, "Sec-WebSocket-Protocol",
                                              protocol->data, protocol->len)
               == NULL))
    {
        return NULL;
    }

    /*
     * Not from c->pool: its first block is nearly full after the request
     * (a second 512-byte block would be taken for 136 bytes), and what
     * room is left there is the caller's, through ngx_http_elearn_ws_alloc.
     */
    ws = ngx_calloc(sizeof(ngx_http_elearn_ws_t), c->log);
    if (ws == NULL) {
        return NULL;
    }

    ws->connection = c;
    ws->handlers = handlers;
    ws->conf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);
    ws->out_last = &ws->out;

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    ngx_str_set(&r->headers_out.status_line, "101 Switching Protocols");
    r->headers_out.content_length_n = -1;
    r->header_only = 1;
    r->keepalive = 0;

    rc = ngx_http_send_header(r);

    /* nginx would hold the short header back for postpone_output */
    if (rc == NGX_ERROR || rc > NGX_OK
        || ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR)
    {
        ngx_free(ws);
        return NULL;
    }

    /*
     * Our reference on the request: the caller's NGX_DONE leaves it, and
     * the takeover event frees the request with it.
     */
    r->main->count++;
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    ev->handler = ngx_http_elearn_ws_takeover;
    ev->data = ws;
    ev->log = c->log;

    cln->handler = ngx_http_elearn_ws_request_gone;
    cln->data = ev;

    ngx_post_event(ev, &ngx_posted_events);

    ngx_http_elearn_ws_stats.upgrades++;
    ngx_http_elearn_ws_stats.open++;

    return ws;
}


/*
 * A request that ends before the takeover (a caller that finalized it
 * with an error): the connection goes with it, so the ws ends here.
 */
static void
ngx_http_elearn_ws_request_gone(void *data)
{
    ngx_event_t *ev = data;

    ngx_http_elearn_ws_t  *ws;

    ws = ev->data;

    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }

    if (ws->opened || ws->closed) {
        return;
    }

    ws->closed = 1;
    ngx_http_elearn_ws_stats.open--;
    ngx_http_elearn_ws_drop_queue(ws, 0);
    ws->handlers->on_close(ws, NGX_HTTP_ELEARN_WS_ABNORMAL);

    ngx_free(ws);
}


/*
 * Turns the upgraded request into a bare connection, as nginx's keep-alive
 * does: the request and its pool are freed, the header buffers too, and
 * only the connection's small pool with the ws stays.
 */
static void
ngx_http_elearn_ws_takeover(ngx_event_t *ev)
{
    ngx_http_elearn_ws_t *ws = ev->data;

    size_t                       size, left;
    u_char                      *p;
    ngx_buf_t                   *b;
    ngx_flag_t                   nodelay;
    ngx_chain_t                 *cl, *ln;
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_connection_t       *hc;
    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_elearn_ws_out_t    *saved, **saved_last;
    ngx_http_elearn_ws_frame_t  *f;
    ngx_http_elearn_loc_conf_t  *elcf;

    c = ws->connection;
    r = c->data;
    elcf = ws->conf;

    if (r->main->count != 1) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "elearn ws: upgraded request still has %d references",
                      (int) r->main->count);
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    nodelay = clcf->tcp_nodelay;
    hc = r->http_connection;

    /* what of the 101 the socket did not take yet goes out first */
    size = 0;

    for (cl = r->out; cl; cl = cl->next) {
        if (ngx_buf_in_memory(cl->buf)) {
            size += cl->buf->last - cl->buf->pos;
        }
    }

    f = size ? ngx_http_elearn_ws_frame_create(0, NULL, size) : NULL;

    if (f) {
        /* raw bytes, not a frame: no header of ours */
        f->data = f->payload;
        f->len = size;
        p = f->data;

        for (cl = r->out; cl; cl = cl->next) {
            if (ngx_buf_in_memory(cl->buf)) {
                p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
            }
        }

        /* before the frames queued meanwhile */
        saved = ws->out;
        saved_last = ws->out_last;
        ws->out = NULL;
        ws->out_last = &ws->out;

        if (ngx_http_elearn_ws_enqueue(ws, f) != NGX_OK) {
            ws->error = 1;

        } else if (saved) {
            ws->out->next = saved;
            ws->out_last = saved_last;
        }

        ngx_http_elearn_ws_frame_release(f);

    } else if (size) {
        ws->error = 1;
    }

    /* a client that did not wait for the 101: keep what it sent */
    b = r->header_in;
    left = 0;

    if (b && b->pos < b->last) {
        left = ngx_min((size_t) (b->last - b->pos),
                       NGX_HTTP_ELEARN_WS_SCRATCH);
        ngx_memcpy(ngx_http_elearn_ws_scratch, b->pos, left);
    }

    ws->opened = 1;

    ngx_http_free_request(r, 0);

    c->destroyed = 0;
    c->data = ws;
    c->log->action = "websocket";

    b = c->buffer;

    if (b && ngx_pfree(c->pool, b->start) == NGX_OK) {
        c->buffer = NULL;

    } else if (b) {
        b->pos = b->start;
        b->last = b->start;
    }

    for (cl = hc->free; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    hc->free = NULL;

    for (cl = hc->busy; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    hc->busy = NULL;
    hc->nbusy = 0;

    c->read->handler = ngx_http_elearn_ws_read_handler;
    c->write->handler = ngx_http_elearn_ws_write_handler;

    /* a graceful shutdown of the worker ends us with "going away" */
    c->idle = 1;

    if (ws->error || (nodelay && ngx_tcp_nodelay(c) != NGX_OK)) {
        ws->error = 1;
        ngx_http_elearn_ws_finalize(ws);
        return;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    ngx_add_timer(c->read, ws->closing ? elcf->ws_close_timeout
                                       : elcf->ws_ping_interval);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ws->error = 1;
        ngx_http_elearn_ws_finalize(ws);
        return;
    }

    if (ws->handlers->on_open && !ws->closing) {
        ws->handlers->on_open(ws);
    }

    if (left && !ws->closing) {
        (void) ngx_http_elearn_ws_input(ws, ngx_http_elearn_ws_scratch, left);
    }

    if (ngx_http_elearn_ws_progress(ws) == NGX_DONE) {
        return;
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


/* events */


static void
ngx_http_elearn_ws_read_handler(ngx_event_t *rev)
{
    ssize_t                      n;
    ngx_uint_t                   reads;
    ngx_connection_t            *c;
    ngx_http_elearn_ws_t        *ws;
    ngx_http_elearn_loc_conf_t  *elcf;

    c = rev->data;
    ws = c->data;
    elcf = ws->conf;

    if (c->close) {
        /* the worker is shutting down */
        c->close = 0;
        c->idle = 0;

        if (c->error) {
            /* worker_shutdown_timeout: no more waiting */
            ws->error = 1;
            ngx_http_elearn_ws_finalize(ws);
            return;
        }

        ngx_http_elearn_ws_close(ws, NGX_HTTP_ELEARN_WS_GOING_AWAY,
                                 "server shutting down");
    }

    if (rev->timedout) {
        rev->timedout = 0;

        if (ws->closing) {
            /* the peer did not finish the close handshake in time */
            ngx_http_elearn_ws_finalize(ws);
            return;
        }

        if (ws->missed_pongs >= 2) {
            ngx_http_elearn_ws_stats.ping_timeouts++;
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_POLICY,
                                    "ping timeout");

        } else {
            ws->missed_pongs++;

            if (ngx_http_elearn_ws_enqueue(ws, &ngx_http_elearn_ws_ping)
                == NGX_OK)
            {
                ngx_add_timer(rev, elcf->ws_ping_interval);
            }
        }
    }

    for (reads = 0; rev->ready && !ws->error; reads++) {

        if (reads == NGX_HTTP_ELEARN_WS_READS) {
            /* a fast sender: let other connections have their turn */
            ngx_post_event(rev, &ngx_posted_next_events);
            break;
        }

        n = c->recv(c, ngx_http_elearn_ws_scratch,
                    NGX_HTTP_ELEARN_WS_SCRATCH);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            /* the peer went away, with or without a close handshake */
            ws->error = 1;
            break;
        }

        if (ws->discard) {
            continue;
        }

        (void) ngx_http_elearn_ws_input(ws, ngx_http_elearn_ws_scratch, n);
    }

    if (ws->error) {
        ngx_http_elearn_ws_finalize(ws);
        return;
    }

    if (ngx_http_elearn_ws_progress(ws) == NGX_DONE) {
        return;
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ws->error = 1;
        ngx_http_elearn_ws_finalize(ws);
    }
}


static void
ngx_http_elearn_ws_write_handler(ngx_event_t *wev)
{
    ngx_connection_t      *c;
    ngx_http_elearn_ws_t  *ws;

    c = wev->data;
    ws = c->data;

    if (ws->error) {
        ngx_http_elearn_ws_finalize(ws);
        return;
    }

    (void) ngx_http_elearn_ws_progress(ws);
}


/*
 * Writes what it can and ends the connection when its close is done;
 * only for event handlers.  NGX_DONE: the ws is gone.
 */
static ngx_int_t
ngx_http_elearn_ws_progress(ngx_http_elearn_ws_t *ws)
{
    ngx_connection_t  *c;

    c = ws->connection;

    if (ngx_http_elearn_ws_flush(ws) == NGX_ERROR || ws->error) {
        ngx_http_elearn_ws_finalize(ws);
        return NGX_DONE;
    }

    if (ws->out || !ws->close_sent) {
        return NGX_OK;
    }

    if (ws->close_received) {
        /* the handshake is complete: the server closes TCP first */
        ngx_http_elearn_ws_finalize(ws);
        return NGX_DONE;
    }

    if (ws->discard && !ws->shut) {
        /*
         * A failed connection: our close frame is out; half-close and
         * read until the peer closes too, so that unread input does not
         * reset the connection before the peer reads our close frame.
         */
        ws->shut = 1;

        if (shutdown(c->fd, SHUT_WR) == -1) {
            ngx_http_elearn_ws_finalize(ws);
            return NGX_DONE;
        }
    }

    return NGX_OK;
}


/*
 * From an API call: the connection needs its write handler (an error to
 * finalize or a close to finish), which runs from the posted events.
 */
static void
ngx_http_elearn_ws_kick(ngx_http_elearn_ws_t *ws)
{
    ngx_event_t  *wev;

    wev = ws->connection->write;

    if (ws->opened && !wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


/* input */


static ngx_int_t
ngx_http_elearn_ws_input(ngx_http_elearn_ws_t *ws, u_char *p, size_t size)
{
    size_t      n, need;
    u_char     *last;
    ngx_uint_t  data;

    last = p + size;

    while (p < last && !ws->discard && !ws->error) {

        if (!ws->in_frame) {
            need = 2;

            if (ws->hdr_len >= 2) {
                need += (ws->hdr[1] & 0x7f) == 126 ? 2
                        : (ws->hdr[1] & 0x7f) == 127 ? 8 : 0;
                need += 4;
            }

            while (p < last && ws->hdr_len < need) {
                ws->hdr[ws->hdr_len++] = *p++;

                if (ws->hdr_len == 2) {
                    need += (ws->hdr[1] & 0x7f) == 126 ? 2
                            : (ws->hdr[1] & 0x7f) == 127 ? 8 : 0;
                    need += 4;
                }
            }

            if (ws->hdr_len < need) {
                return NGX_AGAIN;
            }

            if (ngx_http_elearn_ws_header(ws) != NGX_OK) {
                return NGX_ERROR;
            }

            if (ws->frame_left) {
                continue;
            }

            n = 0;
            goto frame_done;
        }

        n = ngx_min((uint64_t) (last - p), ws->frame_left);

        ngx_http_elearn_ws_unmask(ws, p, n);
        ws->frame_left -= n;

        data = !(ws->opcode & 0x8);

        if (data && ws->msg_opcode == NGX_HTTP_ELEARN_WS_TEXT) {
            ws->utf8 = ngx_http_elearn_ws_utf8(ws->utf8, p, n);

            if (ws->utf8 == NGX_HTTP_ELEARN_UTF8_BAD) {
                ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_BAD_DATA,
                                        "invalid UTF-8 in a text message");
                return NGX_ERROR;
            }
        }

        if (ws->frame_left == 0
            && (data ? (ws->fin && ws->buf == NULL) : ws->ctrl == NULL))
        {
            /* the whole frame is here: use it in place */
            p += n;
            goto frame_done;
        }

        if (ngx_http_elearn_ws_keep(ws, p, n) != NGX_OK) {
            return NGX_ERROR;
        }

        p += n;

        if (ws->frame_left) {
            continue;
        }

        n = 0;

    frame_done:

        /* the frame's payload: p - n .. p, or the kept buffer */

        ws->in_frame = 0;
        ws->hdr_len = 0;

        if (ws->opcode & 0x8) {
            if (ws->ctrl) {
                ngx_http_elearn_ws_control(ws, ws->ctrl, ws->ctrl_len);
                ngx_free(ws->ctrl);
                ws->ctrl = NULL;
                ws->ctrl_len = 0;

            } else {
                ngx_http_elearn_ws_control(ws, p - n, n);
            }

            continue;
        }

        if (!ws->fin) {
            continue;
        }

        ws->in_message = 0;

        if (ws->msg_opcode == NGX_HTTP_ELEARN_WS_TEXT
            && ws->utf8 != NGX_HTTP_ELEARN_UTF8_OK)
        {
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_BAD_DATA,
                                    "truncated UTF-8 in a text message");
            return NGX_ERROR;
        }

        if (ws->closing) {
            /* after our close frame, data is not delivered */
            ngx_http_elearn_ws_free_input(ws);
            continue;
        }

        if (ws->buf) {
            ws->handlers->on_message(ws, ws->msg_opcode, ws->buf,
                                     ws->buf_len);
            ngx_http_elearn_ws_free_input(ws);

        } else {
            ws->handlers->on_message(ws, ws->msg_opcode, p - n, n);
        }
    }

    return NGX_OK;
}


/* Unmasks n payload bytes in place, eight at a time where it can. */
static void
ngx_http_elearn_ws_unmask(ngx_http_elearn_ws_t *ws, u_char *p, size_t n)
{
    size_t    i;
    u_char    m[8];
    uint64_t  w, k;

    for (i = 0; i < 8; i++) {
        m[i] = ws->mask[(ws->mask_pos + i) & 3];
    }

    ngx_memcpy(&k, m, 8);

    /* the mask repeats every 4 bytes, so its phase is kept by 8-byte steps */
    for (i = 0; i + 8 <= n; i += 8) {
        ngx_memcpy(&w, p + i, 8);
        w ^= k;
        ngx_memcpy(p + i, &w, 8);
    }

    for ( /* void */ ; i < n; i++) {
        p[i] ^= m[i & 7];
    }

    ws->mask_pos = (ws->mask_pos + n) & 3;
}


/* A complete frame header in ws->hdr: checks it and starts the frame. */
static ngx_int_t
ngx_http_elearn_ws_header(ngx_http_elearn_ws_t *ws)
{
    u_char                      *h;
    uint64_t                     len, total;
    ngx_uint_t                   opcode, i, k;
    ngx_http_elearn_loc_conf_t  *elcf;

    h = ws->hdr;
    elcf = ws->conf;
    opcode = h[0] & 0x0f;

    if (h[0] & 0x70) {
        ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                "reserved bits set");
        return NGX_ERROR;
    }

    if ((opcode > NGX_HTTP_ELEARN_WS_BINARY && opcode < 0x8) || opcode > 0xa)
    {
        ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                "reserved opcode");
        return NGX_ERROR;
    }

    if (!(h[1] & 0x80)) {
        ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                "client frames must be masked");
        return NGX_ERROR;
    }

    len = h[1] & 0x7f;
    k = 2;

    if (len == 126) {
        len = ((uint64_t) h[2] << 8) | h[3];
        k = 4;

    } else if (len == 127) {
        len = 0;

        for (i = 0; i < 8; i++) {
            len = (len << 8) | h[2 + i];
        }

        k = 10;

        if (len >> 63) {
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                    "frame length with its top bit set");
            return NGX_ERROR;
        }
    }

    ngx_memcpy(ws->mask, &h[k], 4);
    ws->mask_pos = 0;
    ws->fin = (h[0] & 0x80) ? 1 : 0;
    ws->opcode = opcode;
    ws->frame_left = len;
    ws->in_frame = 1;

    if (opcode & 0x8) {
        if (!ws->fin || len > 125) {
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                    "control frames must be whole and at "
                                    "most 125 bytes");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (opcode == NGX_HTTP_ELEARN_WS_CONT) {
        if (!ws->in_message) {
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                    "continuation without a message");
            return NGX_ERROR;
        }

        total = ws->buf_len + len;

    } else {
        if (ws->in_message) {
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                    "a new message inside a fragmented "
                                    "one");
            return NGX_ERROR;
        }

        ws->in_message = 1;
        ws->msg_opcode = opcode;
        ws->utf8 = NGX_HTTP_ELEARN_UTF8_OK;
        total = len;
    }

    if (total > elcf->ws_max_message) {
        ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_TOO_BIG,
                                "message too big");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Keeps n unmasked payload bytes of a frame split over reads: a control
 * frame's in ws->ctrl, a data message's in ws->buf, each allocated only
 * for as long as the frame or message is in flight.
 */
static ngx_int_t
ngx_http_elearn_ws_keep(ngx_http_elearn_ws_t *ws, u_char *p, size_t n)
{
    u_char                      *nb;
    size_t                       size;
    ngx_http_elearn_loc_conf_t  *elcf;

    if (ws->opcode & 0x8) {
        if (ws->ctrl == NULL) {
            ws->ctrl = ngx_alloc(125, ngx_cycle->log);
            if (ws->ctrl == NULL) {
                ws->error = 1;
                return NGX_ERROR;
            }

            ws->ctrl_len = 0;
        }

        ngx_memcpy(ws->ctrl + ws->ctrl_len, p, n);
        ws->ctrl_len += n;

        return NGX_OK;
    }

    if (ws->buf_len + n > ws->buf_size) {
        /*
         * Room for the rest of this frame at once (its size is known),
         * and at least twice the old size, so that a message of many
         * small fragments is not copied over and over; never past the
         * limit, which the whole message is known to respect.
         */
        elcf = ws->conf;
        size = ngx_max(ws->buf_len + n + ws->frame_left, 2 * ws->buf_size);
        size = ngx_min(size, elcf->ws_max_message);
        size = ngx_max(size, ws->buf_len + n + ws->frame_left);

        nb = ngx_alloc(size, ngx_cycle->log);
        if (nb == NULL) {
            ws->error = 1;
            return NGX_ERROR;
        }

        if (ws->buf) {
            ngx_memcpy(nb, ws->buf, ws->buf_len);
            ngx_free(ws->buf);
        }

        ws->buf = nb;
        ws->buf_size = size;
    }

    ngx_memcpy(ws->buf + ws->buf_len, p, n);
    ws->buf_len += n;

    return NGX_OK;
}


static void
ngx_http_elearn_ws_free_input(ngx_http_elearn_ws_t *ws)
{
    if (ws->buf) {
        ngx_free(ws->buf);
        ws->buf = NULL;
    }

    ws->buf_size = 0;
    ws->buf_len = 0;

    if (ws->ctrl) {
        ngx_free(ws->ctrl);
        ws->ctrl = NULL;
    }

    ws->ctrl_len = 0;
}


static void
ngx_http_elearn_ws_control(ngx_http_elearn_ws_t *ws, u_char *p, size_t len)
{
    ngx_uint_t                   code;
    ngx_http_elearn_ws_frame_t  *f;

    switch (ws->opcode) {

    case NGX_HTTP_ELEARN_WS_PING:
        if (ws->closing) {
            return;
        }

        f = ngx_http_elearn_ws_frame_create(NGX_HTTP_ELEARN_WS_PONG, p, len);
        if (f == NULL) {
            ws->error = 1;
            return;
        }

        (void) ngx_http_elearn_ws_enqueue(ws, f);
        ngx_http_elearn_ws_frame_release(f);
        return;

    case NGX_HTTP_ELEARN_WS_PONG:
        ws->missed_pongs = 0;
        return;

    default: /* NGX_HTTP_ELEARN_WS_CLOSE */
        break;
    }

    if (len == 1) {
        ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                "close payload of one byte");
        return;
    }

    code = NGX_HTTP_ELEARN_WS_NO_STATUS;

    if (len >= 2) {
        code = (p[0] << 8) | p[1];

        if (!ngx_http_elearn_ws_code_valid(code)) {
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_PROTOCOL,
                                    "invalid close code");
            return;
        }

        if (ngx_http_elearn_ws_utf8(NGX_HTTP_ELEARN_UTF8_OK, p + 2, len - 2)
            != NGX_HTTP_ELEARN_UTF8_OK)
        {
            ngx_http_elearn_ws_fail(ws, NGX_HTTP_ELEARN_WS_BAD_DATA,
                                    "invalid UTF-8 in a close reason");
            return;
        }
    }

    ws->close_received = 1;

    if (!ws->closing) {
        /* echo the peer's code, as RFC 6455 section 5.5.1 suggests */
        ngx_http_elearn_ws_start_close(ws, code, NULL, 0, len == 0);
        ws->close_code = code;
    }

    /* anything after a close frame is not looked at */
    ws->discard = 1;
}


/*
 * Fails the connection (RFC 6455 section 7.1.7): a close frame with code,
 * then no more input is read as frames.
 */
static void
ngx_http_elearn_ws_fail(ngx_http_elearn_ws_t *ws, ngx_uint_t code,
    const char *reason)
{
    ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                  "elearn ws: closing with %ui: %s", code, reason);

    ngx_http_elearn_ws_free_input(ws);

    if (code != NGX_HTTP_ELEARN_WS_POLICY) {
        ngx_http_elearn_ws_stats.failed++;
    }

    if (!ws->closing) {
        ngx_http_elearn_ws_start_close(ws, code, (u_char *) reason,
                                       ngx_strlen(reason), 0);
    }

    ws->discard = 1;
}


static void
ngx_http_elearn_ws_start_close(ngx_http_elearn_ws_t *ws, ngx_uint_t code,
    const u_char *reason, size_t len, ngx_uint_t empty)
{
    u_char                       payload[125];
    ngx_connection_t            *c;
    ngx_http_elearn_ws_frame_t  *f;
    ngx_http_elearn_loc_conf_t  *elcf;

    c = ws->connection;
    elcf = ws->conf;

    ws->closing = 1;
    ws->close_code = code;
    c->idle = 0;

    len = ngx_min(len, 123);
    payload[0] = (u_char) (code >> 8);
    payload[1] = (u_char) (code & 0xff);

    if (len) {
        ngx_memcpy(payload + 2, reason, len);
    }

    f = ngx_http_elearn_ws_frame_create(NGX_HTTP_ELEARN_WS_CLOSE, payload,
                                        empty ? 0 : len + 2);
    if (f == NULL) {
        ws->error = 1;
        return;
    }

    ws->close_sent = 1;

    if (ngx_http_elearn_ws_enqueue(ws, f) != NGX_OK) {
        ws->error = 1;
    }

    ngx_http_elearn_ws_frame_release(f);

    if (ws->opened) {
        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        ngx_add_timer(c->read, elcf->ws_close_timeout);
    }
}


/* RFC 6455 section 7.4 and IANA's registry: the codes a peer may send */
static ngx_uint_t
ngx_http_elearn_ws_code_valid(ngx_uint_t code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    switch (code) {
    case 1000: case 1001: case 1002: case 1003:
    case 1007: case 1008: case 1009: case 1010: case 1011:
    case 1012: case 1013: case 1014:
        return 1;
    }

    return 0;
}


/*
 * Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates,
 * nothing past U+10FFFF).  The state says what the next byte must be:
 * 0 accepts, 1-3 need that many continuation bytes, 4-7 need a
 * restricted first continuation (after E0, ED, F0, F4), 8 is an error.
 * A message is valid when it ends in state 0.
 */
static uint32_t
ngx_http_elearn_ws_utf8(uint32_t s, u_char *p, size_t len)
{
    u_char    *last, b;
    uint64_t   w;

    last = p + len;

    while (p < last) {

        if (s == 0) {
            /* ASCII runs, eight bytes at a time */
            while (last - p >= 8) {
                ngx_memcpy(&w, p, 8);

                if (w & 0x8080808080808080ULL) {
                    break;
                }

                p += 8;
            }

            if (p == last) {
                break;
            }
        }

        b = *p++;

        switch (s) {

        case 0:
            if (b < 0x80) {
                continue;
            }

            s = (b < 0xc2) ? 8 : (b < 0xe0) ? 1 : (b == 0xe0) ? 4
                : (b == 0xed) ? 5 : (b < 0xf0) ? 2 : (b == 0xf0) ? 6
                : (b < 0xf4) ? 3 : (b == 0xf4) ? 7 : 8;
            break;

        case 1: case 2: case 3:
            s = ((b & 0xc0) == 0x80) ? s - 1 : 8;
            break;

        case 4:
            s = (b >= 0xa0 && b <= 0xbf) ? 1 : 8;
            break;

        case 5:
            s = (b >= 0x80 && b <= 0x9f) ? 1 : 8;
            break;

        case 6:
            s = (b >= 0x90 && b <= 0xbf) ? 2 : 8;
            break;

        case 7:
            s = (b >= 0x80 && b <= 0x8f) ? 2 : 8;
            break;

        default:
            return NGX_HTTP_ELEARN_UTF8_BAD;
        }

        if (s == NGX_HTTP_ELEARN_UTF8_BAD) {
            return s;
        }
    }

    return s;
}


/* output */


size_t
ngx_http_elearn_ws_frame_header(u_char *buf, ngx_uint_t opcode, size_t len)
{
    ngx_uint_t  i;

    buf[0] = (u_char) (0x80 | (opcode & 0x0f));

    if (len < 126) {
        buf[1] = (u_char) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (u_char) (len >> 8);
        buf[3] = (u_char) (len & 0xff);
        return 4;
    }

    buf[1] = 127;

    for (i = 0; i < 8; i++) {
        buf[2 + i] = (u_char) ((uint64_t) len >> (56 - 8 * i));
    }

    return 10;
}


ngx_http_elearn_ws_frame_t *
ngx_http_elearn_ws_frame_create(ngx_uint_t opcode, const u_char *data,
    size_t len)
{
    size_t                       hlen;
    u_char                       header[NGX_HTTP_ELEARN_WS_HEADER_MAX];
    ngx_http_elearn_ws_frame_t  *f;

    hlen = ngx_http_elearn_ws_frame_header(header, opcode, len);

    f = ngx_alloc(sizeof(ngx_http_elearn_ws_frame_t) + hlen + len,
                  ngx_cycle->log);
    if (f == NULL) {
        return NULL;
    }

    f->refs = 1;
    f->data = (u_char *) (f + 1);
    f->len = hlen + len;
    f->payload = f->data + hlen;
    f->payload_len = len;
    f->free = NULL;
    f->free_data = NULL;

    ngx_memcpy(f->data, header, hlen);

    if (data && len) {
        ngx_memcpy(f->payload, data, len);
    }

    return f;
}


ngx_http_elearn_ws_frame_t *
ngx_http_elearn_ws_frame_retain(ngx_http_elearn_ws_frame_t *frame)
{
    frame->refs++;
    return frame;
}


void
ngx_http_elearn_ws_frame_release(ngx_http_elearn_ws_frame_t *frame)
{
    if (--frame->refs) {
        return;
    }

    if (frame->free) {
        frame->free(frame);
        return;
    }

    ngx_free(frame);
}


/* appends a reference to frame to ws's queue; no cap, no write */
static ngx_int_t
ngx_http_elearn_ws_enqueue(ngx_http_elearn_ws_t *ws,
    ngx_http_elearn_ws_frame_t *frame)
{
    ngx_http_elearn_ws_out_t  *o;

    o = ngx_http_elearn_ws_free_nodes;

    if (o) {
        ngx_http_elearn_ws_free_nodes = o->next;
        ngx_http_elearn_ws_nfree--;

    } else {
        o = ngx_alloc(sizeof(ngx_http_elearn_ws_out_t), ngx_cycle->log);
        if (o == NULL) {
            return NGX_ERROR;
        }
    }

    o->next = NULL;
    o->frame = ngx_http_elearn_ws_frame_retain(frame);

    *ws->out_last = o;
    ws->out_last = &o->next;
    ws->queued += frame->len;
    ngx_http_elearn_ws_stats.queued += frame->len;

    return NGX_OK;
}


static void
ngx_http_elearn_ws_free_node(ngx_http_elearn_ws_out_t *o)
{
    ngx_http_elearn_ws_frame_release(o->frame);

    if (ngx_http_elearn_ws_nfree < NGX_HTTP_ELEARN_WS_FREE_NODES) {
        o->next = ngx_http_elearn_ws_free_nodes;
        ngx_http_elearn_ws_free_nodes = o;
        ngx_http_elearn_ws_nfree++;
        return;
    }

    ngx_free(o);
}


/*
 * Releases the queue; with keep_started, a frame partly written stays so
 * that the stream keeps its framing.
 */
static void
ngx_http_elearn_ws_drop_queue(ngx_http_elearn_ws_t *ws,
    ngx_uint_t keep_started)
{
    ngx_http_elearn_ws_out_t  *o, *next;

    o = ws->out;
    ws->out = NULL;
    ws->out_last = &ws->out;
    ngx_http_elearn_ws_stats.queued -= ws->queued;
    ws->queued = 0;

    if (o && keep_started && ws->out_sent) {
        next = o->next;
        o->next = NULL;
        ws->out = o;
        ws->out_last = &o->next;
        ws->queued = o->frame->len - ws->out_sent;
        ngx_http_elearn_ws_stats.queued += ws->queued;
        o = next;

    } else {
        ws->out_sent = 0;
    }

    while (o) {
        next = o->next;
        ngx_http_elearn_ws_free_node(o);
        o = next;
    }
}


static ngx_int_t
ngx_http_elearn_ws_flush(ngx_http_elearn_ws_t *ws)
{
    ssize_t                      n;
    ngx_connection_t            *c;
    ngx_http_elearn_ws_out_t    *o;
    ngx_http_elearn_ws_frame_t  *f;

    c = ws->connection;

    if (!ws->opened || ws->error) {
        return NGX_OK;
    }

    while (ws->out && c->write->ready) {
        o = ws->out;
        f = o->frame;

        n = c->send(c, f->data + ws->out_sent, f->len - ws->out_sent);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            ws->error = 1;
            return NGX_ERROR;
        }

        ws->out_sent += n;
        ws->queued -= n;
        ngx_http_elearn_ws_stats.queued -= n;

        if (ws->out_sent < f->len) {
            continue;
        }

        ws->out_sent = 0;
        ws->out = o->next;

        if (ws->out == NULL) {
            ws->out_last = &ws->out;
        }

        ngx_http_elearn_ws_free_node(o);
    }

    if (ws->out && ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ws->error = 1;
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_elearn_ws_send(ngx_http_elearn_ws_t *ws,
    ngx_http_elearn_ws_frame_t *frame)
{
    ngx_http_elearn_loc_conf_t  *elcf;

    if (ws->closing || ws->closed || ws->error) {
        return NGX_DECLINED;
    }

    elcf = ws->conf;

    if (ws->queued && ws->queued + frame->len > elcf->ws_max_queue) {
        /* a slow reader: close it rather than grow its queue */
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "elearn ws: closing a slow reader with %uz bytes "
                      "queued", ws->queued);

        ngx_http_elearn_ws_stats.slow_readers++;
        ngx_http_elearn_ws_drop_queue(ws, 1);
        ngx_http_elearn_ws_start_close(ws, NGX_HTTP_ELEARN_WS_POLICY,
                                       (u_char *) "slow reader",
                                       sizeof("slow reader") - 1, 0);
        ws->discard = 1;
        ngx_http_elearn_ws_kick(ws);

        return NGX_DECLINED;
    }

    if (ngx_http_elearn_ws_enqueue(ws, frame) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ws->out->next == NULL) {
        /* nothing was waiting: try the socket now */
        if (ngx_http_elearn_ws_flush(ws) == NGX_ERROR) {
            ngx_http_elearn_ws_kick(ws);
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_elearn_ws_send_data(ngx_http_elearn_ws_t *ws, ngx_uint_t opcode,
    const u_char *data, size_t len)
{
    ngx_int_t                    rc;
    ngx_http_elearn_ws_frame_t  *f;

    if (ws->closing || ws->closed || ws->error) {
        return NGX_DECLINED;
    }

    f = ngx_http_elearn_ws_frame_create(opcode, data, len);
    if (f == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_elearn_ws_send(ws, f);
    ngx_http_elearn_ws_frame_release(f);

    return rc;
}


void
ngx_http_elearn_ws_close(ngx_http_elearn_ws_t *ws, ngx_uint_t code,
    const char *reason)
{
    if (ws->closing || ws->closed || ws->error) {
        return;
    }

    if (!ngx_http_elearn_ws_code_valid(code)) {
        code = NGX_HTTP_ELEARN_WS_SERVER_ERROR;
    }

    ngx_http_elearn_ws_start_close(ws, code, (u_char *) reason,
                                   reason ? ngx_strlen(reason) : 0, 0);

    /* the close frame goes out and the close timer runs from an event */
    ngx_http_elearn_ws_kick(ws);
}


void
ngx_http_elearn_ws_get_stats(ngx_http_elearn_ws_stats_t *stats)
{
    *stats = ngx_http_elearn_ws_stats;
}


void *
ngx_http_elearn_ws_alloc(ngx_http_elearn_ws_t *ws, size_t size)
{
    return ngx_pcalloc(ws->connection->pool, size);
}


/* The only place a connection is freed, from its own event handlers. */
static void
ngx_http_elearn_ws_finalize(ngx_http_elearn_ws_t *ws)
{
    ngx_uint_t         code;
    ngx_connection_t  *c;

    if (ws->closed) {
        return;
    }

    ws->closed = 1;
    ngx_http_elearn_ws_stats.open--;
    c = ws->connection;

    code = ws->close_code ? ws->close_code : NGX_HTTP_ELEARN_WS_ABNORMAL;

    ws->handlers->on_close(ws, code);

    ngx_http_elearn_ws_drop_queue(ws, 0);
    ngx_http_elearn_ws_free_input(ws);

    ngx_http_close_connection(c);
    ngx_free(ws);
}


/* headers */


static ngx_table_elt_t *
ngx_http_elearn_ws_find_header(ngx_http_request_t *r, const char *name,
    ngx_table_elt_t *after)
{
    size_t            len;
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    found = (after == NULL);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (&h[i] == after) {
            found = 1;
            continue;
        }

        if (found && h[i].key.len == len
            && ngx_strncmp(h[i].lowcase_key, name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* whether a comma-separated header has token, case-insensitively */
static ngx_uint_t
ngx_http_elearn_ws_has_token(ngx_http_request_t *r, const char *name,
    const char *token)
{
    u_char           *p, *last;
    size_t            len;
    ngx_str_t         tok;
    ngx_table_elt_t  *h;

    len = ngx_strlen(token);
    h = NULL;

    while ((h = ngx_http_elearn_ws_find_header(r, name, h))) {
        p = h->value.data;
        last = p + h->value.len;

        while (ngx_http_elearn_ws_token(&p, last, &tok) == NGX_OK) {
            if (tok.len == len
                && ngx_strncasecmp(tok.data, (u_char *) token, len) == 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/*
 * The next element of a comma-separated header value from *pos, without
 * the blanks around it; NGX_DONE at the end.
 */
static ngx_int_t
ngx_http_elearn_ws_token(u_char **pos, u_char *last, ngx_str_t *tok)
{
    u_char  *p, *end;

    p = *pos;

    while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
        p++;
    }

    if (p == last) {
        *pos = p;
        return NGX_DONE;
    }

    tok->data = p;

    while (p < last && *p != ',') {
        p++;
    }

    end = p;

    while (end > tok->data && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }

    tok->len = end - tok->data;
    *pos = p;

    return NGX_OK;
}


/* the echo location: the conformance and benchmark target */


ngx_int_t
ngx_http_elearn_ws_echo_handler(ngx_http_request_t *r)
{
    ngx_str_t                  *protocol;
    ngx_uint_t                  status;
    ngx_http_elearn_ws_t       *ws;
    ngx_http_elearn_ws_echo_t  *peer;

    static ngx_str_t  elearn_v1 = ngx_string("elearn.v1");

    status = ngx_http_elearn_ws_check(r);
    if (status) {
        return ngx_http_elearn_ws_reject(r, status);
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* as the live sessions will: elearn.v1 when offered, else none */
    protocol = ngx_http_elearn_ws_protocol_offered(r, "elearn.v1")
               ? &elearn_v1 : NULL;

    ws = ngx_http_elearn_ws_upgrade(r, &ngx_http_elearn_ws_echo_handlers,
                                    protocol);
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    peer = ngx_http_elearn_ws_alloc(ws, sizeof(ngx_http_elearn_ws_echo_t));
    if (peer == NULL) {
        /* the 101 is out: the connection ends without a close frame */
        ws->error = 1;
        return NGX_DONE;
    }

    if (ngx_http_elearn_ws_echo_all.next == NULL) {
        ngx_queue_init(&ngx_http_elearn_ws_echo_all);
    }

    peer->ws = ws;
    ngx_queue_insert_tail(&ngx_http_elearn_ws_echo_all, &peer->queue);
    ws->data = peer;

    return NGX_DONE;
}


/*
 * Echoes a message back, except three text commands that exercise the
 * rest of the API: "broadcast:..." sends the message as one shared frame
 * to every echo connection of this worker, "close:<code>" starts a close
 * handshake from the server with that code, "stats" answers the worker's
 * figures as JSON.
 */
static void
ngx_http_elearn_ws_echo_message(ngx_http_elearn_ws_t *ws, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    u_char                      *p;
    size_t                       n;
    ngx_int_t                    code;
    struct timespec              t0, t1;
    ngx_queue_t                 *q;
    ngx_http_elearn_ws_stats_t  *st;
    ngx_http_elearn_ws_echo_t   *peer;
    ngx_http_elearn_ws_frame_t  *f;
    u_char                       buf[256];

    if (opcode == NGX_HTTP_ELEARN_WS_TEXT && len >= 10
        && ngx_strncmp(data, "broadcast:", 10) == 0)
    {
        /*
         * Serialized by hand and wrapped, as a frame kept elsewhere would
         * be (the live sessions' shared memory): the free handler counts
         * the frames alive, which "stats" shows, so a test sees the last
         * reference go.
         */
        f = ngx_alloc(sizeof(ngx_http_elearn_ws_frame_t)
                      + NGX_HTTP_ELEARN_WS_HEADER_MAX + len, ngx_cycle->log);
        if (f == NULL) {
            return;
        }

        p = (u_char *) (f + 1);
        n = ngx_http_elearn_ws_frame_header(p, opcode, len);
        ngx_memcpy(p + n, data, len);

        ngx_http_elearn_ws_frame_wrap(f, p, n + len,
                                      ngx_http_elearn_ws_echo_free, NULL);
        ngx_http_elearn_ws_echo_frames++;

        (void) clock_gettime(CLOCK_MONOTONIC, &t0);
        ngx_http_elearn_ws_echo_fanout_n = 0;

        for (q = ngx_queue_head(&ngx_http_elearn_ws_echo_all);
             q != ngx_queue_sentinel(&ngx_http_elearn_ws_echo_all);
             q = ngx_queue_next(q))
        {
            peer = ngx_queue_data(q, ngx_http_elearn_ws_echo_t, queue);
            (void) ngx_http_elearn_ws_send(peer->ws, f);
            ngx_http_elearn_ws_echo_fanout_n++;
        }

        ngx_http_elearn_ws_frame_release(f);

        (void) clock_gettime(CLOCK_MONOTONIC, &t1);
        ngx_http_elearn_ws_echo_fanout_us = (t1.tv_sec - t0.tv_sec) * 1000000
                                            + (t1.tv_nsec - t0.tv_nsec) / 1000;
        return;
    }

    if (opcode == NGX_HTTP_ELEARN_WS_TEXT && len == 5
        && ngx_strncmp(data, "stats", 5) == 0)
    {
        st = &ngx_http_elearn_ws_stats;
        p = ngx_snprintf(buf, sizeof(buf),
                         "{\"open\":%ui,\"upgrades\":%ui,\"queued\":%uz,"
                         "\"slowReaders\":%ui,\"pingTimeouts\":%ui,"
                         "\"failed\":%ui,\"sharedFrames\":%ui,"
                         "\"lastBroadcast\":{\"receivers\":%ui,"
                         "\"micros\":%ui}}",
                         st->open, st->upgrades, st->queued, st->slow_readers,
                         st->ping_timeouts, st->failed,
                         ngx_http_elearn_ws_echo_frames,
                         ngx_http_elearn_ws_echo_fanout_n,
                         ngx_http_elearn_ws_echo_fanout_us);
        (void) ngx_http_elearn_ws_send_data(ws, opcode, buf, p - buf);
        return;
    }

    if (opcode == NGX_HTTP_ELEARN_WS_TEXT && len > 6
        && ngx_strncmp(data, "close:", 6) == 0)
    {
        code = ngx_atoi(data + 6, len - 6);
        ngx_http_elearn_ws_close(ws, code > 0 ? (ngx_uint_t) code : 0,
                                 "requested");
        return;
    }

    (void) ngx_http_elearn_ws_send_data(ws, opcode, data, len);
}


static void
ngx_http_elearn_ws_echo_free(ngx_http_elearn_ws_frame_t *frame)
{
    ngx_http_elearn_ws_echo_frames--;
    ngx_free(frame);
}


static void
ngx_http_elearn_ws_echo_close(ngx_http_elearn_ws_t *ws, ngx_uint_t code)
{
    ngx_http_elearn_ws_echo_t  *peer;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "elearn ws echo: closed with %ui", code);

    peer = ws->data;

    if (peer) {
        ngx_queue_remove(&peer->queue);
        ws->data = NULL;
    }
}
