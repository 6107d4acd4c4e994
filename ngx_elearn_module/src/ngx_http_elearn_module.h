
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

#if !(NGX_THREADS)
/* passwords are hashed on nginx's thread pool */
#error "elearn needs nginx built --with-threads"
#endif

#include <ngx_thread_pool.h>


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
    NGX_HTTP_ELEARN_EP_AUTH_REGISTER,
    NGX_HTTP_ELEARN_EP_AUTH_LOGIN,
    NGX_HTTP_ELEARN_EP_AUTH_REFRESH,
    NGX_HTTP_ELEARN_EP_AUTH_LOGOUT,
    NGX_HTTP_ELEARN_EP_ME,
    NGX_HTTP_ELEARN_EP_ME_SESSIONS,
    NGX_HTTP_ELEARN_EP_ME_SESSION_DELETE,
    NGX_HTTP_ELEARN_EP_ADMIN_USER_CREATE,
    NGX_HTTP_ELEARN_EP_COURSE_SEARCH,
    NGX_HTTP_ELEARN_EP_COURSE_SUGGEST,
    NGX_HTTP_ELEARN_EP_COURSE_CREATE,
    NGX_HTTP_ELEARN_EP_COURSE_UPDATE,
    NGX_HTTP_ELEARN_EP_ENROLL,
    NGX_HTTP_ELEARN_EP_UNENROLL,
    NGX_HTTP_ELEARN_EP_MY_ENROLLMENTS,
    NGX_HTTP_ELEARN_EP_COURSE_ENROLLMENTS,
    NGX_HTTP_ELEARN_EP_WS_ECHO,
    NGX_HTTP_ELEARN_EP_LIVE_CREATE,
    NGX_HTTP_ELEARN_EP_LIVE_GET,
    NGX_HTTP_ELEARN_EP_LIVE_CLOSE,
    NGX_HTTP_ELEARN_EP_LIVE_JOIN,
    NGX_HTTP_ELEARN_EP_PROGRESS_REPORT,
    NGX_HTTP_ELEARN_EP_PROGRESS_GET,
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
    NGX_HTTP_ELEARN_LOC_JSON_ECHO,
    NGX_HTTP_ELEARN_LOC_WS_ECHO
} ngx_http_elearn_loc_e;


typedef struct ngx_http_elearn_pg_pool_s     ngx_http_elearn_pg_pool_t;
typedef struct ngx_http_elearn_redis_s       ngx_http_elearn_redis_t;
typedef struct ngx_http_elearn_kafka_s       ngx_http_elearn_kafka_t;
typedef struct ngx_http_elearn_jwt_key_s     ngx_http_elearn_jwt_key_t;
typedef struct ngx_http_elearn_jwt_cache_s   ngx_http_elearn_jwt_cache_t;
typedef struct ngx_http_elearn_revocations_s ngx_http_elearn_revocations_t;


/* what the access phase learned from a valid access token */
typedef struct {
    int64_t                      user_id;
    ngx_uint_t                   role;           /* NGX_HTTP_ELEARN_ROLE_* */
    u_char                       sid[40];        /* login session, NUL-ended */
    u_char                       jti[40];
    time_t                       exp;
} ngx_http_elearn_user_t;


#define NGX_HTTP_ELEARN_ROLE_STUDENT     0x01
#define NGX_HTTP_ELEARN_ROLE_INSTRUCTOR  0x02
#define NGX_HTTP_ELEARN_ROLE_ADMIN       0x04
#define NGX_HTTP_ELEARN_ROLE_ANY         0x07


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
    ngx_flag_t                   pg_prepare;

    /* Redis */
    ngx_str_t                    redis_addr;     /* host:port, unix:/path */
    ngx_msec_t                   redis_timeout;
    ngx_msec_t                   redis_reconnect_max;

    /* Kafka */
    ngx_str_t                    kafka_brokers;
    ngx_uint_t                   kafka_queue_max;
    ngx_msec_t                   kafka_flush_timeout;
    ngx_msec_t                   kafka_linger;
    ngx_msec_t                   kafka_durable_linger;
    ngx_uint_t                   progress_durable;  /* some durable */

    /* metrics */
    ngx_shm_zone_t              *metrics_zone;

    /* caches */
    time_t                       course_cache_ttl;
    time_t                       search_cache_ttl;
    ngx_uint_t                   search_local_cache;  /* entries, 0 off */
    ngx_msec_t                   cache_lock_timeout;
    ngx_uint_t                   cache_warm;     /* courses at start */

    /* video progress (ngx_http_elearn_progress.c) */
    time_t                       video_cache_ttl;
    time_t                       enroll_cache_ttl;
    time_t                       enroll_negative_ttl;
    time_t                       progress_ttl;
    time_t                       progress_slack;
    ngx_uint_t                   progress_completion;  /* per million */

    /* auth: tokens */
    ngx_uint_t                   jwt_alg;        /* NGX_HTTP_ELEARN_JWT_* */
    ngx_str_t                    jwt_key_file;
    ngx_str_t                    jwt_public_key_file;
    ngx_str_t                    jwt_issuer;
    time_t                       jwt_ttl;
    time_t                       jwt_leeway;
    ngx_uint_t                   jwt_cache_size;
    ngx_http_elearn_jwt_key_t   *jwt_key;        /* loaded at config time */

    /* search: the HMAC-SHA256 key that signs cursors */
    ngx_str_t                    cursor_key_file;
    ngx_str_t                    cursor_key;     /* loaded at config time */

    /* auth: sessions, passwords, brute force */
    time_t                       refresh_ttl;
    ngx_uint_t                   session_max;
    ngx_flag_t                   revocation_fail_open;
    ngx_uint_t                   login_max_failures;
    time_t                       login_failure_window;
    ngx_str_t                    thread_pool_name;
    ngx_thread_pool_t           *thread_pool;
    ngx_uint_t                   api_used;       /* some elearn_api */

    /* live sessions (ngx_http_elearn_live.c) */
    ngx_uint_t                   live_capacity;  /* default */
    ngx_uint_t                   live_capacity_max;
    size_t                       live_chat_max_size;
    ngx_uint_t                   live_chat_rate; /* per user per second */
    ngx_uint_t                   live_replay_max;
    ngx_msec_t                   live_replay_ttl;
    ngx_msec_t                   live_lease;
    ngx_msec_t                   live_token_warning;
    ngx_msec_t                   live_presence_interval;
    ngx_msec_t                   live_revocation_check;
    ngx_uint_t                   live_used;      /* some elearn_live */

    /* per worker process, created in init_process */
    ngx_http_elearn_pg_pool_t   *pg;
    ngx_http_elearn_redis_t     *redis;
    ngx_http_elearn_kafka_t     *kafka;
    ngx_http_elearn_kafka_t     *kafka_durable;  /* NULL: none */
    ngx_http_elearn_jwt_cache_t *jwt_cache;
    ngx_http_elearn_revocations_t  *revocations;
} ngx_http_elearn_main_conf_t;


typedef struct {
    ngx_http_elearn_loc_e        serve;
    size_t                       body_max_size;
    ngx_uint_t                   retry_after;

    /* WebSocket connections (ngx_http_elearn_ws.c) */
    size_t                       ws_max_message;
    size_t                       ws_max_queue;
    ngx_msec_t                   ws_ping_interval;
    ngx_msec_t                   ws_close_timeout;
    /* video progress: NGX_HTTP_ELEARN_PROGRESS_ACK_* */
    ngx_uint_t                   progress_ack;
    ngx_msec_t                   progress_ack_timeout;
    ngx_flag_t                   progress_naive;
} ngx_http_elearn_loc_conf_t;


#define NGX_HTTP_ELEARN_PROGRESS_ACK_QUEUED   0
#define NGX_HTTP_ELEARN_PROGRESS_ACK_DURABLE  1


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
    ngx_str_t                    arg;            /* a "*" path segment */
    void                        *route;          /* matched in access */
    ngx_http_elearn_user_t      *user;           /* NULL: anonymous */
    const char                  *auth_error;     /* why user is NULL */
    unsigned                     auth_done:1;
    void                        *data;           /* endpoint's own state */
} ngx_http_elearn_ctx_t;


extern ngx_module_t  ngx_http_elearn_module;
extern ngx_str_t     ngx_http_elearn_endpoint_names[];


typedef ngx_int_t (*ngx_http_elearn_route_pt)(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);


/*
 * A route: a path pattern below /api/v1/ whose segments are literals, "#"
 * for a positive integer id or "*" for an opaque token; the methods it
 * answers; the roles allowed (0: public, no token needed); its handler;
 * and whether the caller must own the course of the path's first id
 * (admins pass, a missing course is 404, another's course 403).  Roles
 * and ownership are checked by the router, never by the endpoints.
 */
typedef struct {
    const char                  *pattern;
    ngx_uint_t                   method;
    ngx_http_elearn_endpoint_e   endpoint;
    ngx_uint_t                   roles;
    ngx_http_elearn_route_pt     handler;
    ngx_uint_t                   owner;
} ngx_http_elearn_route_t;


#define NGX_HTTP_ELEARN_OWNER_NONE    0
#define NGX_HTTP_ELEARN_OWNER_COURSE  1


/*
 * Finds r's route (once: it is kept in ctx->route, with the path's ids
 * and argument).  NULL when no route matches; then *allowed holds the
 * methods the path answers (0: no such path).
 */
ngx_http_elearn_route_t *ngx_http_elearn_route_find(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx, ngx_uint_t *allowed);

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
ngx_int_t ngx_http_elearn_set_link(ngx_http_request_t *r, ngx_str_t *link);

/* Endpoint handlers, one file per capability; each returns what a content
 * handler returns. */
ngx_int_t ngx_http_elearn_healthz(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_readyz(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_course_get(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
/* worker 0 fills course:{id} for the elearn_cache_warm most popular */
void ngx_http_elearn_course_warm(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf);
ngx_int_t ngx_http_elearn_json_echo(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* ngx_http_elearn_catalog.c: course writes (contract section 3) */
ngx_int_t ngx_http_elearn_catalog_create(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_catalog_update(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* ngx_http_elearn_enrollment.c: enrollments (contract section 3) */
ngx_int_t ngx_http_elearn_enrollment_create(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_enrollment_delete(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_enrollment_mine(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_enrollment_of_course(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* ngx_http_elearn_progress.c: video progress (contract section 4) */
ngx_int_t ngx_http_elearn_progress_report(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_progress_get(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* ngx_http_elearn_account.c: contract section 2 */
ngx_int_t ngx_http_elearn_account_register(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_account_login(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_account_refresh(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_account_logout(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_account_me(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_account_sessions(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_account_session_delete(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);
ngx_int_t ngx_http_elearn_account_admin_create(ngx_http_request_t *r,
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
