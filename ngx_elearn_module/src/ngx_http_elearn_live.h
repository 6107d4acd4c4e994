
/*
 * elearn live: live sessions (contract section 7), the REST calls that
 * create, inspect and close them and the WebSocket /live/{sessionId} that
 * participants join.
 *
 * Each message gets its sequence number from one Redis script per session
 * (INCR, append to the replay buffer, PUBLISH: one publish per message);
 * every worker process that has participants of a session subscribes to
 * its channel and serializes each message into one WebSocket frame that
 * all its local participants share.  Capacity is counted in Redis with a
 * lease per worker process, so a crashed node's participants expire.
 */


#ifndef _NGX_HTTP_ELEARN_LIVE_H_INCLUDED_
#define _NGX_HTTP_ELEARN_LIVE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


/* POST /api/v1/courses/{courseId}/live-sessions (owner: the router) */
ngx_int_t ngx_http_elearn_live_create(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* GET /api/v1/live-sessions/{sessionId} (enrolled, owner or admin) */
ngx_int_t ngx_http_elearn_live_get(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* POST /api/v1/live-sessions/{sessionId}/close (owner or admin) */
ngx_int_t ngx_http_elearn_live_close(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* The "elearn_live" location directive: the WebSocket /live/{id}. */
char *ngx_http_elearn_live_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* $elearn_live_session: the module's preconfiguration adds them */
extern ngx_http_variable_t  ngx_http_elearn_live_vars[];

/* Checks the elearn_live_* settings (init_main_conf). */
char *ngx_http_elearn_live_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf);

/* why a join was refused, for the metrics */
typedef enum {
    NGX_HTTP_ELEARN_LIVE_REFUSED_TOKEN = 0,   /* 401: none, bad, revoked */
    NGX_HTTP_ELEARN_LIVE_REFUSED_FORBIDDEN,   /* 403: not enrolled */
    NGX_HTTP_ELEARN_LIVE_REFUSED_NOT_FOUND,   /* 404 */
    NGX_HTTP_ELEARN_LIVE_REFUSED_CLOSED,      /* 410 */
    NGX_HTTP_ELEARN_LIVE_REFUSED_FULL,        /* 503 session-full */
    NGX_HTTP_ELEARN_LIVE_REFUSED_UNAVAILABLE, /* 503: Redis, PostgreSQL */
    NGX_HTTP_ELEARN_LIVE_REFUSED_BAD,         /* 400: handshake, lastSeq */
    NGX_HTTP_ELEARN_LIVE_REFUSED_MAX
} ngx_http_elearn_live_refused_e;


/* this worker's live figures, for the metrics */
typedef struct {
    ngx_uint_t                   participants;   /* open sockets now */
    ngx_uint_t                   sessions;       /* with participants here */
    ngx_uint_t                   joins;          /* accepted (101) */
    ngx_uint_t                   refused[NGX_HTTP_ELEARN_LIVE_REFUSED_MAX];
    ngx_uint_t                   delivered;      /* frames to participants */
    ngx_uint_t                   resubscribes;   /* after a Redis reconnect */
    ngx_uint_t                   presence_publishes;
    ngx_uint_t                   revoked_closes; /* 4001 on revocation */
} ngx_http_elearn_live_stats_t;

/* Copies this worker's figures into *stats (zeros without live). */
void ngx_http_elearn_live_get_stats(ngx_http_elearn_live_stats_t *stats);


/* The worker's registry of local sessions and its lease timer. */
ngx_int_t ngx_http_elearn_live_init_process(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf);
void ngx_http_elearn_live_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_ELEARN_LIVE_H_INCLUDED_ */
