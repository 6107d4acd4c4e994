
/*
 * elearn redis: async hiredis on nginx's event loop.
 *
 * Each worker keeps two connections: one for commands (many requests
 * share it, so they pipeline naturally) and one for pub/sub.  Both
 * reconnect with capped exponential backoff; the pub/sub connection
 * re-issues every subscription after a reconnect.  Every command has a
 * timeout.  Addresses are IPs or unix sockets: hiredis resolves names
 * with a blocking getaddrinfo, so names are refused at configuration time.
 */


#ifndef _NGX_HTTP_ELEARN_REDIS_H_INCLUDED_
#define _NGX_HTTP_ELEARN_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>

#include "ngx_http_elearn_module.h"


/*
 * Called once per command while its request is alive, never from inside
 * ngx_http_elearn_redis_command().  rc is NGX_OK with reply set (which may
 * be a REDIS_REPLY_ERROR), or NGX_HTTP_SERVICE_UNAVAILABLE (not
 * connected, or the connection dropped) or NGX_HTTP_GATEWAY_TIME_OUT (no
 * reply within elearn_redis_timeout) with reply NULL.  hiredis owns the
 * reply; it is valid only during the call.  For a worker's own command
 * (r NULL) the handler gets r NULL and is called unless the redis object
 * is destroyed first.
 */
typedef void (*ngx_http_elearn_redis_handler_pt)(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data);

/*
 * Called for each message on a subscribed channel.  channel and message
 * point into hiredis's reply: valid only during the call, not
 * NUL-terminated.  The handler may unsubscribe, even its own channel.
 */
typedef void (*ngx_http_elearn_redis_message_pt)(ngx_str_t *channel,
    ngx_str_t *message, void *data);

/*
 * Called with subscribed 1 each time Redis confirms the SUBSCRIBE of the
 * channel (the first time and after every reconnect), and with 0 when
 * the pub/sub connection that carried it is lost.  Messages published
 * between a 0 and the next 1 are never delivered: a subscriber that
 * must not miss any reloads its state on 1.  The handler must not
 * unsubscribe.
 */
typedef void (*ngx_http_elearn_redis_state_pt)(ngx_str_t *channel,
    ngx_uint_t subscribed, void *data);


typedef struct {
    ngx_uint_t   connected;     /* command connection up: 1 or 0 */
    ngx_uint_t   pubsub_connected;
    ngx_uint_t   pending;       /* commands awaiting a reply */
    ngx_uint_t   reconnects;
    ngx_uint_t   timeouts;
} ngx_http_elearn_redis_stats_t;


ngx_http_elearn_redis_t *ngx_http_elearn_redis_create(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf);

void ngx_http_elearn_redis_destroy(ngx_http_elearn_redis_t *redis);

/*
 * Sends one command (argv form, binary safe).  r may be NULL for a
 * fire-and-forget command (cache fill, invalidation; handler NULL) or
 * for the worker's own command (handler set, called with r NULL).
 * Returns NGX_AGAIN when sent (the handler will be called),
 * NGX_HTTP_SERVICE_UNAVAILABLE when not connected (it will not).
 */
ngx_int_t ngx_http_elearn_redis_command(ngx_http_request_t *r,
    ngx_http_elearn_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);

/*
 * A Lua script of the module: static text, hashed on first use.  Scripts
 * name every key they touch in KEYS unless their comment says otherwise.
 */
typedef struct {
    const char  *name;          /* for the log */
    const char  *text;
    size_t       len;
    u_char       sha[40];       /* SHA-1 of text, hex */
    unsigned     hashed:1;
} ngx_http_elearn_redis_script_t;

#define ngx_http_elearn_redis_script(name, text)                              \
    { name, text, sizeof(text) - 1, { 0 }, 0 }

/*
 * Runs a script for r with EVALSHA, and once more with EVAL and its text
 * when Redis answers NOSCRIPT (restarted, or its scripts flushed).  argv
 * holds nkeys keys, then the arguments (argc in all); they are not
 * copied, so they must live in r->pool (or be static) until the handler
 * runs.  The handler gets the script's reply, an error reply other than
 * NOSCRIPT included.  Returns as ngx_http_elearn_redis_command(), or
 * NGX_ERROR (no memory).
 */
ngx_int_t ngx_http_elearn_redis_eval(ngx_http_request_t *r,
    ngx_http_elearn_redis_script_t *script,
    ngx_http_elearn_redis_handler_pt handler, void *data, int nkeys,
    int argc, const char **argv, const size_t *argvlen);

/*
 * Subscribes the worker to a channel for its lifetime (or until
 * unsubscribed); survives reconnects.  One handler per channel:
 * subscribing again replaces handler and data.  The channel name is
 * copied.  Returns NGX_OK, or NGX_ERROR (no memory, destroyed).
 */
ngx_int_t ngx_http_elearn_redis_subscribe(ngx_http_elearn_redis_t *redis,
    ngx_str_t *channel, ngx_http_elearn_redis_message_pt handler, void *data);

/*
 * Adds a state handler to a channel subscribed with
 * ngx_http_elearn_redis_subscribe() (called right after it, before any
 * confirmation can arrive); it gets the subscription's data.  NGX_OK, or
 * NGX_DECLINED when the channel is not subscribed.
 */
ngx_int_t ngx_http_elearn_redis_subscribe_state(
    ngx_http_elearn_redis_t *redis, ngx_str_t *channel,
    ngx_http_elearn_redis_state_pt state);

/* NGX_OK, or NGX_DECLINED when the channel was not subscribed. */
ngx_int_t ngx_http_elearn_redis_unsubscribe(ngx_http_elearn_redis_t *redis,
    ngx_str_t *channel);

void ngx_http_elearn_redis_get_stats(ngx_http_elearn_redis_t *redis,
    ngx_http_elearn_redis_stats_t *stats);


#endif /* _NGX_HTTP_ELEARN_REDIS_H_INCLUDED_ */
