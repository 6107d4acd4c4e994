
/*
 * elearn ws: the server side of RFC 6455 WebSocket connections inside the
 * module, for the live sessions (and the test/bench echo location).
 *
 * What it does: checks the opening handshake of an nginx request, answers
 * 101 through nginx's header filter, then takes the connection over from
 * HTTP (the request and its pool are freed, as nginx's own keep-alive does)
 * and speaks the framing: masking, fragmentation, control frames, UTF-8 of
 * text, size limits, pings, the close handshake.  Output is a queue of
 * shared, reference-counted, pre-serialized frames, so that one message is
 * serialized once and written to any number of connections.
 *
 * What it must never do: block, grow memory for a slow reader (it is
 * closed with 1008 past elearn_ws_max_queue), keep buffers on an idle
 * connection (a read buffer exists only while a frame or message is in
 * flight), or call a callback after its connection is gone.
 *
 * Life of a connection, and the order in which things are freed:
 *
 *   1. The caller (a content handler, or an asynchronous callback that owns
 *      a reference on the request) calls ngx_http_elearn_ws_check() and,
 *      when it fails, ngx_http_elearn_ws_reject().  It may inspect the
 *      offered subprotocols (ngx_http_elearn_ws_protocol_*), authenticate,
 *      check capacity: all before the upgrade, all as normal HTTP answers.
 *   2. ngx_http_elearn_ws_upgrade() sends the 101 and returns the ws; the
 *      caller then ends its part of the request as usual with NGX_DONE
 *      (returns NGX_DONE from a content handler, or passes NGX_DONE to
 *      ngx_http_elearn_finalize() from a callback).  r must not be used
 *      after that: copy what you need from it (user id, session id) into
 *      your own data before.  ws->data is yours from the start.
 *   3. From a posted event right after, the request is freed and the
 *      connection belongs to this layer; handlers->on_open runs (if set).
 *      Frames sent before that are queued and go out then.  (Should the
 *      request be finalized otherwise before that event, e.g. with an
 *      error, on_close(1006) runs from that finalization instead, and
 *      on_open never.)
 *   4. on_message runs for each complete data message, from the read event
 *      handler.  It may call ngx_http_elearn_ws_send()/_close() on any ws.
 *   5. on_close runs exactly once, from an event handler of this layer
 *      (never from inside an API call such as _send or _close), when the
 *      connection is about to be freed: after a close handshake, a protocol
 *      error, a timeout, a slow reader, an I/O error, or a worker shutdown.
 *      It receives the close code (the peer's, ours, or 1006 when the
 *      connection was dropped without one).  Remove the ws from your lists
 *      there: when on_close returns, the ws, its queue and everything
 *      allocated with ngx_http_elearn_ws_alloc() are freed and no callback
 *      runs for it again.  Frames queued on it are released.
 *
 * The API calls never call back synchronously, so a caller may loop over
 * its connections calling _send() and _close() without its list changing
 * under it.  Everything here runs in one worker process: frames are
 * reference-counted without atomics and must not cross processes (a frame
 * whose bytes live elsewhere, e.g. in shared memory, can be wrapped with a
 * free handler; see ngx_http_elearn_ws_frame_wrap()).
 */


#ifndef _NGX_HTTP_ELEARN_WS_H_INCLUDED_
#define _NGX_HTTP_ELEARN_WS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* opcodes (RFC 6455 section 5.2) */
#define NGX_HTTP_ELEARN_WS_CONT    0x0
#define NGX_HTTP_ELEARN_WS_TEXT    0x1
#define NGX_HTTP_ELEARN_WS_BINARY  0x2
#define NGX_HTTP_ELEARN_WS_CLOSE   0x8
#define NGX_HTTP_ELEARN_WS_PING    0x9
#define NGX_HTTP_ELEARN_WS_PONG    0xa

/* close codes (RFC 6455 section 7.4.1) */
#define NGX_HTTP_ELEARN_WS_NORMAL        1000
#define NGX_HTTP_ELEARN_WS_GOING_AWAY    1001
#define NGX_HTTP_ELEARN_WS_PROTOCOL      1002
#define NGX_HTTP_ELEARN_WS_UNACCEPTABLE  1003
#define NGX_HTTP_ELEARN_WS_NO_STATUS     1005   /* never sent */
#define NGX_HTTP_ELEARN_WS_ABNORMAL      1006   /* never sent */
#define NGX_HTTP_ELEARN_WS_BAD_DATA      1007
#define NGX_HTTP_ELEARN_WS_POLICY        1008
#define NGX_HTTP_ELEARN_WS_TOO_BIG       1009
#define NGX_HTTP_ELEARN_WS_SERVER_ERROR  1011

/* the largest frame header the server writes: 2 + 8 bytes, never masked */
#define NGX_HTTP_ELEARN_WS_HEADER_MAX  10


typedef struct ngx_http_elearn_ws_s        ngx_http_elearn_ws_t;
typedef struct ngx_http_elearn_ws_frame_s  ngx_http_elearn_ws_frame_t;
typedef struct ngx_http_elearn_ws_out_s    ngx_http_elearn_ws_out_t;


/*
 * One serialized frame (header and payload), shared by every connection it
 * is queued on.  Created with one reference (the creator's); each queue
 * holding it adds one; the last release frees it.
 */
struct ngx_http_elearn_ws_frame_s {
    ngx_uint_t                   refs;
    u_char                      *data;       /* header + payload */
    size_t                       len;
    u_char                      *payload;    /* data + header length */
    size_t                       payload_len;
    /* NULL: the frame and its bytes are one ngx_alloc() block */
    void                       (*free)(ngx_http_elearn_ws_frame_t *frame);
    void                        *free_data;
};


typedef struct {
    /*
     * Called from the posted event that completes the upgrade, once the
     * connection belongs to this layer.  May be NULL.
     */
    void     (*on_open)(ngx_http_elearn_ws_t *ws);

    /*
     * One complete data message: opcode NGX_HTTP_ELEARN_WS_TEXT (valid
     * UTF-8, checked) or _BINARY.  data is valid only during the call (it
     * may point into a worker-wide scratch buffer).
     */
    void     (*on_message)(ngx_http_elearn_ws_t *ws, ngx_uint_t opcode,
                           u_char *data, size_t len);

    /* See the life of a connection above.  Must be set. */
    void     (*on_close)(ngx_http_elearn_ws_t *ws, ngx_uint_t code);
} ngx_http_elearn_ws_handlers_t;


/*
 * A connection after the upgrade: one heap block of its own, freed after
 * on_close; fields other than data are this layer's.
 */
struct ngx_http_elearn_ws_s {
    void                             *data;      /* the caller's */
    ngx_connection_t                 *connection;
    ngx_http_elearn_ws_handlers_t    *handlers;
    void                             *conf;      /* loc conf at upgrade */

    /* output */
    ngx_http_elearn_ws_out_t         *out;       /* first queued frame */
    ngx_http_elearn_ws_out_t        **out_last;
    size_t                            out_sent;  /* of the first frame */
    size_t                            queued;    /* bytes not yet sent */

    /* input: the frame being read (state of ngx_http_elearn_ws.c) */
    u_char                           *buf;       /* NULL while idle */
    size_t                            buf_size;
    size_t                            buf_len;   /* message bytes kept */
    u_char                           *ctrl;      /* a partial control frame */
    uint64_t                          frame_left;
    uint32_t                          utf8;      /* UTF-8 decoder state */
    u_char                            mask[4];
    u_char                            hdr[14];   /* a partial header */
    u_char                            hdr_len;
    u_char                            ctrl_len;

    unsigned                          opcode:4;  /* of the frame */
    unsigned                          msg_opcode:4; /* of the message */
    unsigned                          fin:1;
    unsigned                          mask_pos:2;
    unsigned                          in_frame:1;   /* header complete */
    unsigned                          in_message:1; /* fragments pending */

    unsigned                          opened:1;     /* request freed */
    unsigned                          close_sent:1;
    unsigned                          close_received:1;
    unsigned                          closing:1;    /* our close queued */
    unsigned                          closed:1;     /* on_close ran */
    unsigned                          error:1;      /* drop, no close frame */
    unsigned                          discard:1;    /* input not parsed */
    unsigned                          shut:1;       /* SHUT_WR done */
    unsigned                          missed_pongs:2;
    unsigned                          close_code:16;  /* for on_close */
};


/*
 * Checks that r is an RFC 6455 opening handshake: GET, HTTP/1.1, "Upgrade:
 * websocket", "Connection" with the token "upgrade", "Sec-WebSocket-Version:
 * 13" and a Sec-WebSocket-Key that is base64 of 16 bytes.  Returns 0 when
 * it is, otherwise the HTTP status to refuse it with (400, 405 or 426):
 * pass it to ngx_http_elearn_ws_reject().
 */
ngx_uint_t ngx_http_elearn_ws_check(ngx_http_request_t *r);

/*
 * Sends the RFC 9457 problem for a status from ngx_http_elearn_ws_check()
 * (426 carries "Upgrade: websocket" and "Sec-WebSocket-Version: 13", 405
 * "Allow: GET").  Returns like ngx_http_elearn_problem().
 */
ngx_int_t ngx_http_elearn_ws_reject(ngx_http_request_t *r, ngx_uint_t status);

/*
 * Whether the client offered subprotocol name (exact, case-sensitive, as
 * RFC 6455 compares them) in Sec-WebSocket-Protocol.
 */
ngx_uint_t ngx_http_elearn_ws_protocol_offered(ngx_http_request_t *r,
    const char *name);

/*
 * Finds the first offered subprotocol that starts with prefix (such as
 * "bearer.") and sets *value to the rest of it, pointing into r's headers
 * (valid until the request is freed: copy it).  NGX_OK or NGX_DECLINED.
 */
ngx_int_t ngx_http_elearn_ws_protocol_value(ngx_http_request_t *r,
    const char *prefix, ngx_str_t *value);

/*
 * Answers 101 (with Sec-WebSocket-Accept, and Sec-WebSocket-Protocol:
 * protocol when protocol is not NULL: it must be one the client offered)
 * and starts the takeover described above.  r must have passed
 * ngx_http_elearn_ws_check() and must be a main request.  The location's
 * elearn_ws_* settings apply.  Returns the ws, whose data the caller sets;
 * NULL on failure (nothing sent: answer 500 as usual).  On success the
 * caller ends its part of r with NGX_DONE.
 */
ngx_http_elearn_ws_t *ngx_http_elearn_ws_upgrade(ngx_http_request_t *r,
    ngx_http_elearn_ws_handlers_t *handlers, ngx_str_t *protocol);

/*
 * Memory that lives as long as the ws (its connection's pool), for the
 * caller's per-connection state.  NULL when memory runs out.
 */
void *ngx_http_elearn_ws_alloc(ngx_http_elearn_ws_t *ws, size_t size);

/*
 * Writes a server frame header (FIN set, unmasked) for a payload of len
 * bytes into buf (NGX_HTTP_ELEARN_WS_HEADER_MAX bytes); returns its length.
 */
size_t ngx_http_elearn_ws_frame_header(u_char *buf, ngx_uint_t opcode,
    size_t len);

/*
 * A new frame (FIN set) of len payload bytes copied from data (data may be
 * NULL: then fill frame->payload yourself before sending it), with one
 * reference.  NULL when memory runs out.
 */
ngx_http_elearn_ws_frame_t *ngx_http_elearn_ws_frame_create(
    ngx_uint_t opcode, const u_char *data, size_t len);

/*
 * A frame around bytes the caller serialized already (header included,
 * e.g. with ngx_http_elearn_ws_frame_header()) and keeps elsewhere; when
 * the last reference goes, free_handler(frame) runs and must free the
 * bytes and the frame.  The frame itself is allocated by the caller, who
 * sets refs = 1, data, len, free and free_data; this only documents the
 * contract.
 */
#define ngx_http_elearn_ws_frame_wrap(frame, d, l, handler, fdata)            \
    ((frame)->refs = 1, (frame)->data = (d), (frame)->len = (l),              \
     (frame)->payload = NULL, (frame)->payload_len = 0,                       \
     (frame)->free = (handler), (frame)->free_data = (fdata))

/* Adds a reference; returns frame. */
ngx_http_elearn_ws_frame_t *ngx_http_elearn_ws_frame_retain(
    ngx_http_elearn_ws_frame_t *frame);

/* Drops a reference; the last one frees the frame. */
void ngx_http_elearn_ws_frame_release(ngx_http_elearn_ws_frame_t *frame);

/*
 * Queues frame on ws (taking a reference of its own: the caller keeps and
 * releases its own) and writes what the socket takes now.  NGX_OK: queued
 * or sent.  NGX_DECLINED: the ws is closing, or this frame would pass
 * elearn_ws_max_queue, in which case the ws is being closed with 1008
 * (on_close follows from an event, never from inside this call).
 * NGX_ERROR: out of memory.
 */
ngx_int_t ngx_http_elearn_ws_send(ngx_http_elearn_ws_t *ws,
    ngx_http_elearn_ws_frame_t *frame);

/* The same for one message of its own: creates, sends, releases. */
ngx_int_t ngx_http_elearn_ws_send_data(ngx_http_elearn_ws_t *ws,
    ngx_uint_t opcode, const u_char *data, size_t len);

/*
 * Starts the close handshake: what is queued goes out, then a close frame
 * with code (1000-4999, not 1004-1006, 1015) and reason (at most 123 bytes
 * of UTF-8, may be NULL); the connection is dropped when the peer answers
 * or after elearn_ws_close_timeout.  Input is ignored from now on.  Does
 * nothing on a ws that is closing already.  on_close follows from an
 * event.
 */
void ngx_http_elearn_ws_close(ngx_http_elearn_ws_t *ws, ngx_uint_t code,
    const char *reason);

/* this worker's WebSocket figures, for the metrics */
typedef struct {
    ngx_uint_t                   open;           /* connections now */
    ngx_uint_t                   upgrades;       /* 101s answered */
    size_t                       queued;         /* bytes queued, all */
    ngx_uint_t                   slow_readers;   /* closed: max queue */
    ngx_uint_t                   ping_timeouts;  /* closed: no pongs */
    ngx_uint_t                   failed;         /* closed: 1002/7/9 */
} ngx_http_elearn_ws_stats_t;

/* Copies this worker's figures into *stats. */
void ngx_http_elearn_ws_get_stats(ngx_http_elearn_ws_stats_t *stats);

/*
 * The location handler of "elearn_ws_echo on": echoes every text and
 * binary message back (the conformance and benchmark target).
 */
ngx_int_t ngx_http_elearn_ws_echo_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_ELEARN_WS_H_INCLUDED_ */
