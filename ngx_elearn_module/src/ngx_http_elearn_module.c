
/*
 * elearn module: directives, the per-worker start and stop of the
 * backends, the /api/v1 router and the log-phase hook that feeds the
 * metrics.
 *
 * The router only matches a method and a path to an endpoint handler;
 * the handlers live in one file per capability.  Nothing here blocks:
 * backends are created lazily-connecting in init_process and torn down
 * with bounded waits in exit_process.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_kafka.h"
#include "ngx_http_elearn_metrics.h"
#include "ngx_http_elearn_jwt.h"
#include "ngx_http_elearn_auth.h"
#include "ngx_http_elearn_session.h"
#include "ngx_http_elearn_sql.h"
#include "ngx_http_elearn_search.h"
#include "ngx_http_elearn_ws.h"
#include "ngx_http_elearn_live.h"
#include "ngx_http_elearn_progress.h"


static ngx_int_t ngx_http_elearn_api_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_elearn_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_elearn_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_elearn_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_elearn_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_elearn_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_elearn_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_elearn_serve(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_elearn_redis_addr(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_elearn_kafka_brokers(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_elearn_check_bounds(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_elearn_ws_echo(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_elearn_set_alg(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_elearn_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_elearn_init_process(ngx_cycle_t *cycle);
static void ngx_http_elearn_exit_process(ngx_cycle_t *cycle);


ngx_str_t  ngx_http_elearn_endpoint_names[] = {
    ngx_string("other"),
    ngx_string("healthz"),
    ngx_string("readyz"),
    ngx_string("metrics"),
    ngx_string("course_get"),
    ngx_string("json_echo"),
    ngx_string("auth_register"),
    ngx_string("auth_login"),
    ngx_string("auth_refresh"),
    ngx_string("auth_logout"),
    ngx_string("me"),
    ngx_string("me_sessions"),
    ngx_string("me_session_delete"),
    ngx_string("admin_user_create"),
    ngx_string("course_search"),
    ngx_string("course_suggest"),
    ngx_string("course_create"),
    ngx_string("course_update"),
    ngx_string("enroll"),
    ngx_string("unenroll"),
    ngx_string("my_enrollments"),
    ngx_string("course_enrollments"),
    ngx_string("ws_echo"),
    ngx_string("live_create"),
    ngx_string("live_get"),
    ngx_string("live_close"),
    ngx_string("live_join"),
    ngx_string("progress_report"),
    ngx_string("progress_get"),
    ngx_null_string
};


#define NGX_HTTP_ELEARN_PUBLIC  0
#define NGX_HTTP_ELEARN_ADMIN    NGX_HTTP_ELEARN_ROLE_ADMIN
#define NGX_HTTP_ELEARN_USER     NGX_HTTP_ELEARN_ROLE_ANY
#define NGX_HTTP_ELEARN_TEACHER  (NGX_HTTP_ELEARN_ROLE_INSTRUCTOR            \
                                  |NGX_HTTP_ELEARN_ROLE_ADMIN)


static ngx_http_elearn_route_t  ngx_http_elearn_routes[] = {

    { "auth/register", NGX_HTTP_POST, NGX_HTTP_ELEARN_EP_AUTH_REGISTER,
      NGX_HTTP_ELEARN_PUBLIC, ngx_http_elearn_account_register,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "auth/login", NGX_HTTP_POST, NGX_HTTP_ELEARN_EP_AUTH_LOGIN,
      NGX_HTTP_ELEARN_PUBLIC, ngx_http_elearn_account_login,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "auth/refresh", NGX_HTTP_POST, NGX_HTTP_ELEARN_EP_AUTH_REFRESH,
      NGX_HTTP_ELEARN_PUBLIC, ngx_http_elearn_account_refresh,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "auth/logout", NGX_HTTP_POST, NGX_HTTP_ELEARN_EP_AUTH_LOGOUT,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_account_logout,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "me", NGX_HTTP_GET|NGX_HTTP_HEAD, NGX_HTTP_ELEARN_EP_ME,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_account_me,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "me/sessions", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_ME_SESSIONS,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_account_sessions,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "me/sessions/*", NGX_HTTP_DELETE,
      NGX_HTTP_ELEARN_EP_ME_SESSION_DELETE,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_account_session_delete,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "admin/users", NGX_HTTP_POST, NGX_HTTP_ELEARN_EP_ADMIN_USER_CREATE,
      NGX_HTTP_ELEARN_ADMIN, ngx_http_elearn_account_admin_create,
      NGX_HTTP_ELEARN_OWNER_NONE },

    /* before "courses/#": literal segments first */
    { "courses/search", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_COURSE_SEARCH,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_search,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "courses/suggest", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_COURSE_SUGGEST,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_suggest,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "courses/#", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_COURSE_GET,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_course_get,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "courses", NGX_HTTP_POST, NGX_HTTP_ELEARN_EP_COURSE_CREATE,
      NGX_HTTP_ELEARN_TEACHER, ngx_http_elearn_catalog_create,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "courses/#", NGX_HTTP_PATCH, NGX_HTTP_ELEARN_EP_COURSE_UPDATE,
      NGX_HTTP_ELEARN_TEACHER, ngx_http_elearn_catalog_update,
      NGX_HTTP_ELEARN_OWNER_COURSE },

    { "courses/#/enrollments", NGX_HTTP_POST, NGX_HTTP_ELEARN_EP_ENROLL,
      NGX_HTTP_ELEARN_ROLE_STUDENT, ngx_http_elearn_enrollment_create,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "courses/#/enrollments/me", NGX_HTTP_DELETE,
      NGX_HTTP_ELEARN_EP_UNENROLL,
      NGX_HTTP_ELEARN_ROLE_STUDENT, ngx_http_elearn_enrollment_delete,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "me/enrollments", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_MY_ENROLLMENTS,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_enrollment_mine,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "courses/#/enrollments", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_COURSE_ENROLLMENTS,
      NGX_HTTP_ELEARN_TEACHER, ngx_http_elearn_enrollment_of_course,
      NGX_HTTP_ELEARN_OWNER_COURSE },

    /* live sessions: who may read or close one is decided by its course */
    { "courses/#/live-sessions", NGX_HTTP_POST,
      NGX_HTTP_ELEARN_EP_LIVE_CREATE,
      NGX_HTTP_ELEARN_TEACHER, ngx_http_elearn_live_create,
      NGX_HTTP_ELEARN_OWNER_COURSE },

    { "live-sessions/#", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_LIVE_GET,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_live_get,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "live-sessions/#/close", NGX_HTTP_POST,
      NGX_HTTP_ELEARN_EP_LIVE_CLOSE,
      NGX_HTTP_ELEARN_TEACHER, ngx_http_elearn_live_close,
      NGX_HTTP_ELEARN_OWNER_NONE },

    /* enrollment is checked by the endpoint (cached), not by roles */
    { "videos/#/progress", NGX_HTTP_POST,
      NGX_HTTP_ELEARN_EP_PROGRESS_REPORT,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_progress_report,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { "videos/#/progress", NGX_HTTP_GET|NGX_HTTP_HEAD,
      NGX_HTTP_ELEARN_EP_PROGRESS_GET,
      NGX_HTTP_ELEARN_USER, ngx_http_elearn_progress_get,
      NGX_HTTP_ELEARN_OWNER_NONE },

    { NULL, 0, 0, 0, NULL, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_elearn_pool_size_bounds = {
    ngx_http_elearn_check_bounds, 1, 1024
};

static ngx_conf_num_bounds_t  ngx_http_elearn_queue_size_bounds = {
    ngx_http_elearn_check_bounds, 0, 65536
};

static ngx_conf_num_bounds_t  ngx_http_elearn_kafka_queue_bounds = {
    ngx_http_elearn_check_bounds, 1, 10000000
};

static ngx_conf_num_bounds_t  ngx_http_elearn_retry_after_bounds = {
    ngx_http_elearn_check_bounds, 1, 3600
};

static ngx_conf_num_bounds_t  ngx_http_elearn_session_max_bounds = {
    ngx_http_elearn_check_bounds, 1, 100
};

/* 0 turns warming off; each course is one query at start */
static ngx_conf_num_bounds_t  ngx_http_elearn_cache_warm_bounds = {
    ngx_http_elearn_check_bounds, 0, 10000
};

static ngx_conf_num_bounds_t  ngx_http_elearn_login_failures_bounds = {
    ngx_http_elearn_check_bounds, 1, 1000
};

static ngx_conf_num_bounds_t  ngx_http_elearn_jwt_cache_bounds = {
    ngx_http_elearn_check_bounds, 0, 10000000
};

static ngx_conf_num_bounds_t  ngx_http_elearn_live_capacity_bounds = {
    ngx_http_elearn_check_bounds, 1, 1000000
};

static ngx_conf_num_bounds_t  ngx_http_elearn_live_rate_bounds = {
    ngx_http_elearn_check_bounds, 0, 10000
};

static ngx_conf_num_bounds_t  ngx_http_elearn_live_replay_bounds = {
    ngx_http_elearn_check_bounds, 1, 100000
};

static ngx_conf_enum_t  ngx_http_elearn_jwt_algs[] = {
    { ngx_string("HS256"), NGX_HTTP_ELEARN_JWT_HS256 },
    { ngx_string("RS256"), NGX_HTTP_ELEARN_JWT_RS256 },
    { ngx_string("ES256"), NGX_HTTP_ELEARN_JWT_ES256 },
    { ngx_null_string, 0 }
};

static ngx_conf_enum_t  ngx_http_elearn_progress_acks[] = {
    { ngx_string("queued"), NGX_HTTP_ELEARN_PROGRESS_ACK_QUEUED },
    { ngx_string("durable"), NGX_HTTP_ELEARN_PROGRESS_ACK_DURABLE },
    { ngx_null_string, 0 }
};

static ngx_conf_post_t  ngx_http_elearn_redis_addr_post = {
    ngx_http_elearn_redis_addr
};

static ngx_conf_post_t  ngx_http_elearn_kafka_brokers_post = {
    ngx_http_elearn_kafka_brokers
};


static ngx_command_t  ngx_http_elearn_commands[] = {

    { ngx_string("elearn_pg_conninfo"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_conninfo),
      NULL },

    { ngx_string("elearn_pg_pool_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_pool_size),
      &ngx_http_elearn_pool_size_bounds },

    { ngx_string("elearn_pg_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_queue_size),
      &ngx_http_elearn_queue_size_bounds },

    { ngx_string("elearn_pg_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_connect_timeout),
      NULL },

    { ngx_string("elearn_pg_query_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_query_timeout),
      NULL },

    { ngx_string("elearn_pg_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_queue_timeout),
      NULL },

    { ngx_string("elearn_pg_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_idle_timeout),
      NULL },

    { ngx_string("elearn_pg_reconnect_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_reconnect_max),
      NULL },

    { ngx_string("elearn_pg_prepare"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, pg_prepare),
      NULL },

    { ngx_string("elearn_redis_addr"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, redis_addr),
      &ngx_http_elearn_redis_addr_post },

    { ngx_string("elearn_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("elearn_redis_reconnect_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, redis_reconnect_max),
      NULL },

    { ngx_string("elearn_kafka_brokers"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, kafka_brokers),
      &ngx_http_elearn_kafka_brokers_post },

    { ngx_string("elearn_kafka_queue_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, kafka_queue_max),
      &ngx_http_elearn_kafka_queue_bounds },

    { ngx_string("elearn_kafka_flush_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, kafka_flush_timeout),
      NULL },

    { ngx_string("elearn_kafka_linger"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, kafka_linger),
      NULL },

    { ngx_string("elearn_kafka_durable_linger"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, kafka_durable_linger),
      NULL },

    { ngx_string("elearn_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_elearn_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_course_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, course_cache_ttl),
      NULL },

    { ngx_string("elearn_search_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, search_cache_ttl),
      NULL },

    { ngx_string("elearn_search_local_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_elearn_search_set_local_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, search_local_cache),
      NULL },

    { ngx_string("elearn_cache_lock_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, cache_lock_timeout),
      NULL },

    { ngx_string("elearn_cache_warm"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, cache_warm),
      &ngx_http_elearn_cache_warm_bounds },

    { ngx_string("elearn_jwt_alg"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_elearn_set_alg,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_jwt_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, jwt_key_file),
      NULL },

    { ngx_string("elearn_cursor_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, cursor_key_file),
      NULL },

    { ngx_string("elearn_jwt_public_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, jwt_public_key_file),
      NULL },

    { ngx_string("elearn_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, jwt_issuer),
      NULL },

    { ngx_string("elearn_jwt_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, jwt_ttl),
      NULL },

    { ngx_string("elearn_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, jwt_leeway),
      NULL },

    { ngx_string("elearn_jwt_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, jwt_cache_size),
      &ngx_http_elearn_jwt_cache_bounds },

    { ngx_string("elearn_refresh_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, refresh_ttl),
      NULL },

    { ngx_string("elearn_session_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, session_max),
      &ngx_http_elearn_session_max_bounds },

    { ngx_string("elearn_revocation_fail_open"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, revocation_fail_open),
      NULL },

    { ngx_string("elearn_login_max_failures"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, login_max_failures),
      &ngx_http_elearn_login_failures_bounds },

    { ngx_string("elearn_login_failure_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, login_failure_window),
      NULL },

    { ngx_string("elearn_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, thread_pool_name),
      NULL },

    { ngx_string("elearn_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_elearn_serve,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_healthz"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_elearn_serve,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_readyz"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_elearn_serve,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_elearn_serve,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_json_echo"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_elearn_serve,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_body_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, body_max_size),
      NULL },

    { ngx_string("elearn_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, retry_after),
      &ngx_http_elearn_retry_after_bounds },

    { ngx_string("elearn_ws_echo"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_elearn_ws_echo,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_ws_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, ws_max_message),
      NULL },

    { ngx_string("elearn_ws_max_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, ws_max_queue),
      NULL },

    { ngx_string("elearn_ws_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, ws_ping_interval),
      NULL },

    { ngx_string("elearn_ws_close_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, ws_close_timeout),
      NULL },

    { ngx_string("elearn_live"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_elearn_live_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("elearn_live_capacity"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_capacity),
      &ngx_http_elearn_live_capacity_bounds },

    { ngx_string("elearn_live_capacity_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_capacity_max),
      &ngx_http_elearn_live_capacity_bounds },

    { ngx_string("elearn_live_chat_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_chat_max_size),
      NULL },

    { ngx_string("elearn_live_chat_rate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_chat_rate),
      &ngx_http_elearn_live_rate_bounds },

    { ngx_string("elearn_live_replay_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_replay_max),
      &ngx_http_elearn_live_replay_bounds },

    { ngx_string("elearn_live_replay_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_replay_ttl),
      NULL },

    { ngx_string("elearn_live_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_lease),
      NULL },

    { ngx_string("elearn_live_presence_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_presence_interval),
      NULL },

    { ngx_string("elearn_live_revocation_check"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_revocation_check),
      NULL },

    { ngx_string("elearn_live_token_warning"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, live_token_warning),
      NULL },

    { ngx_string("elearn_video_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, video_cache_ttl),
      NULL },

    { ngx_string("elearn_enrollment_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, enroll_cache_ttl),
      NULL },

    { ngx_string("elearn_enrollment_negative_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, enroll_negative_ttl),
      NULL },

    { ngx_string("elearn_progress_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, progress_ttl),
      NULL },

    { ngx_string("elearn_progress_slack"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, progress_slack),
      NULL },

    { ngx_string("elearn_progress_completion"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_elearn_progress_set_ratio,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_elearn_main_conf_t, progress_completion),
      NULL },

    { ngx_string("elearn_progress_ack"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_elearn_progress_set_ack,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, progress_ack),
      &ngx_http_elearn_progress_acks },

    { ngx_string("elearn_progress_ack_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, progress_ack_timeout),
      NULL },

    { ngx_string("elearn_progress_naive"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_elearn_loc_conf_t, progress_naive),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_elearn_module_ctx = {
    ngx_http_elearn_preconfiguration,      /* preconfiguration */
    ngx_http_elearn_postconfiguration,     /* postconfiguration */

    ngx_http_elearn_create_main_conf,      /* create main configuration */
    ngx_http_elearn_init_main_conf,        /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_elearn_create_loc_conf,       /* create location configuration */
    ngx_http_elearn_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_elearn_module = {
    NGX_MODULE_V1,
    &ngx_http_elearn_module_ctx,           /* module context */
    ngx_http_elearn_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_elearn_init_process,          /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_elearn_exit_process,          /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


ngx_http_elearn_ctx_t *
ngx_http_elearn_get_ctx(ngx_http_request_t *r)
{
    ngx_http_elearn_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request = r;
    ctx->start = ngx_current_msec;

    ngx_http_set_ctx(r, ctx, ngx_http_elearn_module);

    return ctx;
}


void
ngx_http_elearn_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


void
ngx_http_elearn_wait(ngx_http_request_t *r)
{
    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
}


/* adds a Link header (pagination), unless empty; the value is not copied */
ngx_int_t
ngx_http_elearn_set_link(ngx_http_request_t *r, ngx_str_t *link)
{
    ngx_table_elt_t  *h;

    if (link->len == 0) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Link");
    h->value = *link;

    return NGX_OK;
}


ngx_int_t
ngx_http_elearn_send_json(ngx_http_request_t *r, ngx_uint_t status,
    const char *json, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (len == 0) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, json, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the base64url alphabet of opaque ids in paths */
#define ngx_http_elearn_token_char(c)                                         \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                \
     || ((c) >= '0' && (c) <= '9') || (c) == '-' || (c) == '_')


/*
 * Matches one path below /api/v1/ against a pattern; collects "#" ids
 * and the "*" argument.
 */
static ngx_int_t
ngx_http_elearn_route_match(const char *pattern, u_char *p, u_char *last,
    ngx_http_elearn_ctx_t *ctx)
{
    u_char      *seg;
    int64_t      id;
    ngx_uint_t   nids;

    nids = 0;

    for ( ;; ) {
        seg = p;

        while (p < last && *p != '/') {
            p++;
        }

        if (*pattern == '*') {
            if (p == seg || p - seg > 64) {
                return NGX_DECLINED;
            }

            for (id = 0; id < p - seg; id++) {
                if (!ngx_http_elearn_token_char(seg[id])) {
                    return NGX_DECLINED;
                }
            }

            ctx->arg.data = seg;
            ctx->arg.len = p - seg;
            pattern++;

        } else if (*pattern == '#') {
            if (p == seg || p - seg > 18 || nids == NGX_HTTP_ELEARN_ID_MAX) {
                return NGX_DECLINED;
            }

            id = 0;

            for ( /* void */ ; seg < p; seg++) {
                if (*seg < '0' || *seg > '9') {
                    return NGX_DECLINED;
                }

                id = id * 10 + (*seg - '0');
            }

            if (id == 0) {
                return NGX_DECLINED;
            }

            ctx->ids[nids++] = id;
            pattern++;

        } else {
            while (seg < p && *pattern && *pattern != '/') {
                if (*seg++ != (u_char) *pattern++) {
                    return NGX_DECLINED;
                }
            }

            if (seg != p || (*pattern && *pattern != '/')) {
                return NGX_DECLINED;
            }
        }

        if (*pattern == '\0') {
            if (p != last) {
                return NGX_DECLINED;
            }

            ctx->nids = nids;
            return NGX_OK;
        }

        /* *pattern == '/' */

        if (p == last) {
            return NGX_DECLINED;
        }

        pattern++;
        p++;
    }
}


static u_char *
ngx_http_elearn_allow(ngx_http_request_t *r, ngx_uint_t methods)
{
    u_char  *allow, *p;

    allow = ngx_pnalloc(r->pool, sizeof("GET, HEAD, POST, PUT, PATCH, DELETE"));
    if (allow == NULL) {
        return NULL;
    }

    p = allow;

#define ngx_http_elearn_allow_add(m, s)                                       \
    if (methods & (m)) {                                                      \
        if (p != allow) {                                                     \
            *p++ = ',';                                                       \
            *p++ = ' ';                                                       \
        }                                                                     \
        p = ngx_cpymem(p, s, sizeof(s) - 1);                                  \
    }

    ngx_http_elearn_allow_add(NGX_HTTP_GET, "GET");
    ngx_http_elearn_allow_add(NGX_HTTP_HEAD, "HEAD");
    ngx_http_elearn_allow_add(NGX_HTTP_POST, "POST");
    ngx_http_elearn_allow_add(NGX_HTTP_PUT, "PUT");
    ngx_http_elearn_allow_add(NGX_HTTP_PATCH, "PATCH");
    ngx_http_elearn_allow_add(NGX_HTTP_DELETE, "DELETE");

#undef ngx_http_elearn_allow_add

    *p = '\0';

    return allow;
}


ngx_http_elearn_route_t *
ngx_http_elearn_route_find(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx,
    ngx_uint_t *allowed)
{
    u_char                   *p, *last;
    ngx_http_elearn_route_t  *route;

    static u_char  prefix[] = "/api/v1/";

    *allowed = 0;

    if (ctx->route) {
        return ctx->route;
    }

    p = r->uri.data;
    last = r->uri.data + r->uri.len;

    if (r->uri.len <= sizeof(prefix) - 1
        || ngx_strncmp(p, prefix, sizeof(prefix) - 1) != 0)
    {
        return NULL;
    }

    p += sizeof(prefix) - 1;

    /* a trailing slash names the same resource */
    if (last[-1] == '/' && last - 1 > p) {
        last--;
    }

    for (route = ngx_http_elearn_routes; route->pattern; route++) {
        if (ngx_http_elearn_route_match(route->pattern, p, last, ctx)
            != NGX_OK)
        {
            continue;
        }

        if (r->method & route->method) {
            ctx->endpoint = route->endpoint;
            ctx->route = route;
            return route;
        }

        *allowed |= route->method;
    }

    return NULL;
}


/*
 * The ownership check of OWNER_COURSE routes: one query for the course's
 * owner, then the route's handler runs as the content handler would have
 * (its return value finalizes the request, NGX_DONE included).
 */
static void
ngx_http_elearn_owner_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_ctx_t *ctx = data;

    int64_t                   owner;
    ngx_http_elearn_route_t  *route;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn api: course_owner failed: %s",
                      PQresultErrorMessage(res));
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_ERROR, "the database"));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                    "course %L does not exist",
                                    ctx->ids[0]));
        return;
    }

    owner = ngx_atoof((u_char *) PQgetvalue(res, 0, 0),
                      PQgetlength(res, 0, 0));

    if (owner != ctx->user->user_id
        && ctx->user->role != NGX_HTTP_ELEARN_ROLE_ADMIN)
    {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                    "only the course's instructor may do "
                                    "this"));
        return;
    }

    route = ctx->route;

    ngx_http_elearn_finalize(r, route->handler(r, ctx));
}


static ngx_int_t
ngx_http_elearn_owner_check(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t    rc;
    u_char      *p;
    const char  *values[1];
    u_char       id[NGX_INT64_LEN + 1];

    if (ctx->user == NULL) {
        /* the access phase lets no owner route through without a user */
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(id, "%L", ctx->ids[0]);
    *p = '\0';
    values[0] = (char *) id;

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_COURSE_OWNER, 1,
                                  values, ngx_http_elearn_owner_done, ctx);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_elearn_api_handler(ngx_http_request_t *r)
{
    u_char                   *allow;
    ngx_uint_t                methods;
    ngx_http_elearn_ctx_t    *ctx;
    ngx_http_elearn_route_t  *route;

    ctx = ngx_http_elearn_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    route = ngx_http_elearn_route_find(r, ctx, &methods);

    if (route && route->owner == NGX_HTTP_ELEARN_OWNER_COURSE) {
        return ngx_http_elearn_owner_check(r, ctx);
    }

    if (route) {
        return route->handler(r, ctx);
    }

    if (methods == 0) {
        return ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                       "no such resource");
    }

    allow = ngx_http_elearn_allow(r, methods);
    if (allow == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_elearn_problem_method(r, (char *) allow);
}


static ngx_int_t
ngx_http_elearn_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t              status;
    ngx_http_elearn_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);
    if (ctx == NULL || r != r->main) {
        return NGX_OK;
    }

    status = r->headers_out.status;

    if (r->connection->error && status == 0) {
        status = NGX_HTTP_CLIENT_CLOSED_REQUEST;
    }

    ngx_http_elearn_metrics_record(r, ctx->endpoint, status,
                                   ngx_current_msec - ctx->start);

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_endpoint_handler(ngx_http_request_t *r)
{
    ngx_http_elearn_ctx_t       *ctx;
    ngx_http_elearn_loc_conf_t  *elcf;

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    ctx = ngx_http_elearn_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    switch (elcf->serve) {

    case NGX_HTTP_ELEARN_LOC_HEALTHZ:
        ctx->endpoint = NGX_HTTP_ELEARN_EP_HEALTHZ;
        return ngx_http_elearn_healthz(r, ctx);

    case NGX_HTTP_ELEARN_LOC_READYZ:
        ctx->endpoint = NGX_HTTP_ELEARN_EP_READYZ;
        return ngx_http_elearn_readyz(r, ctx);

    case NGX_HTTP_ELEARN_LOC_METRICS:
        ctx->endpoint = NGX_HTTP_ELEARN_EP_METRICS;
        return ngx_http_elearn_metrics_handler(r);

    case NGX_HTTP_ELEARN_LOC_JSON_ECHO:
        ctx->endpoint = NGX_HTTP_ELEARN_EP_JSON_ECHO;
        return ngx_http_elearn_json_echo(r, ctx);

    case NGX_HTTP_ELEARN_LOC_WS_ECHO:
        ctx->endpoint = NGX_HTTP_ELEARN_EP_WS_ECHO;
        return ngx_http_elearn_ws_echo_handler(r);

    default:
        return ngx_http_elearn_api_handler(r);
    }
}


static char *
ngx_http_elearn_serve(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_elearn_loc_conf_t *elcf = conf;

    ngx_str_t                    *name;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_elearn_main_conf_t  *emcf;

    if (elcf->serve != NGX_HTTP_ELEARN_LOC_NONE) {
        return "is duplicate: a location serves one elearn endpoint";
    }

    name = &cmd->name;

    if (ngx_strcmp(name->data, "elearn_api") == 0) {
        elcf->serve = NGX_HTTP_ELEARN_LOC_API;
        emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_elearn_module);
        emcf->api_used = 1;

    } else if (ngx_strcmp(name->data, "elearn_healthz") == 0) {
        elcf->serve = NGX_HTTP_ELEARN_LOC_HEALTHZ;

    } else if (ngx_strcmp(name->data, "elearn_readyz") == 0) {
        elcf->serve = NGX_HTTP_ELEARN_LOC_READYZ;

    } else if (ngx_strcmp(name->data, "elearn_json_echo") == 0) {
        elcf->serve = NGX_HTTP_ELEARN_LOC_JSON_ECHO;

    } else {
        elcf->serve = NGX_HTTP_ELEARN_LOC_METRICS;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_elearn_endpoint_handler;

    return NGX_CONF_OK;
}


/*
 * "elearn_ws_echo on": the location answers WebSocket upgrades with the
 * echo server of ngx_http_elearn_ws.c; "off" leaves the location alone, so
 * that a template can switch it with a variable.
 */
static char *
ngx_http_elearn_ws_echo(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_elearn_loc_conf_t *elcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    value = cf->args->elts;

    if (ngx_strcasecmp(value[1].data, (u_char *) "off") == 0) {
        return NGX_CONF_OK;
    }

    if (ngx_strcasecmp(value[1].data, (u_char *) "on") != 0) {
        return "must be \"on\" or \"off\"";
    }

    if (elcf->serve != NGX_HTTP_ELEARN_LOC_NONE) {
        return "is duplicate: a location serves one elearn endpoint";
    }

    elcf->serve = NGX_HTTP_ELEARN_LOC_WS_ECHO;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_elearn_endpoint_handler;

    return NGX_CONF_OK;
}


/*
 * Like ngx_conf_check_num_bounds(), but the error names the directive:
 * nginx prefixes a returned string with the directive's name.
 */
static char *
ngx_http_elearn_check_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    ngx_int_t              *np = data;

    u_char  *msg, *last;

    if (*np >= bounds->low && *np <= bounds->high) {
        return NGX_CONF_OK;
    }

    msg = ngx_pnalloc(cf->pool, 64);
    if (msg == NULL) {
        return NGX_CONF_ERROR;
    }

    last = ngx_snprintf(msg, 63, "must be between %i and %i", bounds->low,
                        bounds->high);
    *last = '\0';

    return (char *) msg;
}


/*
 * ngx_conf_set_enum_slot(), with an error that names the directive and
 * the choices.
 */
static char *
ngx_http_elearn_set_alg(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_elearn_main_conf_t *emcf = conf;

    ngx_str_t        *value;
    ngx_conf_enum_t  *e;

    if (emcf->jwt_alg != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (e = ngx_http_elearn_jwt_algs; e->name.len; e++) {
        if (e->name.len == value[1].len
            && ngx_strncmp(e->name.data, value[1].data, value[1].len) == 0)
        {
            emcf->jwt_alg = e->value;
            return NGX_CONF_OK;
        }
    }

    return "must be HS256, RS256 or ES256";
}


/*
 * librdkafka would take a bad broker list and only complain in its log;
 * each entry must be host:port.
 */
static char *
ngx_http_elearn_kafka_brokers(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *brokers = data;

    u_char     *p, *last, *start, *colon;
    ngx_int_t   port;

    p = brokers->data;
    last = p + brokers->len;

    while (p < last) {
        start = p;
        colon = NULL;

        while (p < last && *p != ',') {
            if (*p == ':') {
                colon = p;
            }

            p++;
        }

        if (colon == NULL || colon == start) {
            return "needs host:port entries separated by commas";
        }

        port = ngx_atoi(colon + 1, p - colon - 1);
        if (port < 1 || port > 65535) {
            return "has an invalid port";
        }

        if (p < last) {
            p++;
        }
    }

    if (brokers->len == 0 || last[-1] == ',') {
        return "needs host:port entries separated by commas";
    }

    return NGX_CONF_OK;
}


/*
 * hiredis resolves host names with a blocking getaddrinfo(), so only IP
 * addresses and unix sockets are accepted.
 */
static char *
ngx_http_elearn_redis_addr(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *addr = data;

    u_char     *colon;
    ngx_int_t   port;
    ngx_str_t   host;
    u_char      buf[NGX_SOCKADDR_STRLEN];
    struct in6_addr  a6;

    if (addr->len > 5 && ngx_strncmp(addr->data, "unix:", 5) == 0) {
        return NGX_CONF_OK;
    }

    colon = ngx_strlchr(addr->data, addr->data + addr->len, ':');

    while (colon) {
        u_char  *next;

        next = ngx_strlchr(colon + 1, addr->data + addr->len, ':');
        if (next == NULL) {
            break;
        }

        colon = next;
    }

    if (colon == NULL) {
        return "needs \"ip:port\" or \"unix:/path\"";
    }

    port = ngx_atoi(colon + 1, addr->data + addr->len - colon - 1);
    if (port < 1 || port > 65535) {
        return "has an invalid port";
    }

    host.data = addr->data;
    host.len = colon - addr->data;

    if (host.len > 2 && host.data[0] == '[' && host.data[host.len - 1] == ']')
    {
        host.data++;
        host.len -= 2;
    }

    if (ngx_inet_addr(host.data, host.len) != INADDR_NONE) {
        return NGX_CONF_OK;
    }

    if (host.len < sizeof(buf)) {
        ngx_memcpy(buf, host.data, host.len);
        buf[host.len] = '\0';

        if (inet_pton(AF_INET6, (char *) buf, &a6) == 1) {
            return NGX_CONF_OK;
        }
    }

    return "needs an IP address, not a host name (hiredis would resolve it "
           "with a blocking call)";
}


/*
 * libpq parses the conninfo only when connecting; parse it here too so
 * that a typo fails "nginx -t" rather than every request.  The error text
 * is libpq's, which never echoes a password.
 */
static ngx_int_t
ngx_http_elearn_check_conninfo(ngx_conf_t *cf, ngx_str_t *conninfo)
{
    char             *err, *s;
    PQconninfoOption *opts;

    s = ngx_pnalloc(cf->pool, conninfo->len + 1);
    if (s == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_cpystrn((u_char *) s, conninfo->data, conninfo->len + 1);

    err = NULL;
    opts = PQconninfoParse(s, &err);

    if (opts == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"elearn_pg_conninfo\": %s",
                           err ? err : "out of memory");
        if (err) {
            PQfreemem(err);
        }

        return NGX_ERROR;
    }

    PQconninfoFree(opts);

    return NGX_OK;
}


static void *
ngx_http_elearn_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_elearn_main_conf_t));
    if (emcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     emcf->pg_conninfo = { 0, NULL };
     *     emcf->redis_addr = { 0, NULL };
     *     emcf->kafka_brokers = { 0, NULL };
     *     emcf->metrics_zone = NULL;
     */

    emcf->pg_pool_size = NGX_CONF_UNSET_UINT;
    emcf->pg_queue_size = NGX_CONF_UNSET_UINT;
    emcf->pg_connect_timeout = NGX_CONF_UNSET_MSEC;
    emcf->pg_query_timeout = NGX_CONF_UNSET_MSEC;
    emcf->pg_queue_timeout = NGX_CONF_UNSET_MSEC;
    emcf->pg_idle_timeout = NGX_CONF_UNSET_MSEC;
    emcf->pg_reconnect_max = NGX_CONF_UNSET_MSEC;
    emcf->pg_prepare = NGX_CONF_UNSET;
    emcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    emcf->redis_reconnect_max = NGX_CONF_UNSET_MSEC;
    emcf->kafka_queue_max = NGX_CONF_UNSET_UINT;
    emcf->kafka_flush_timeout = NGX_CONF_UNSET_MSEC;
    emcf->kafka_linger = NGX_CONF_UNSET_MSEC;
    emcf->kafka_durable_linger = NGX_CONF_UNSET_MSEC;
    emcf->course_cache_ttl = NGX_CONF_UNSET;
    emcf->search_cache_ttl = NGX_CONF_UNSET;
    emcf->search_local_cache = NGX_CONF_UNSET_UINT;
    emcf->cache_lock_timeout = NGX_CONF_UNSET_MSEC;
    emcf->cache_warm = NGX_CONF_UNSET_UINT;
    emcf->video_cache_ttl = NGX_CONF_UNSET;
    emcf->enroll_cache_ttl = NGX_CONF_UNSET;
    emcf->enroll_negative_ttl = NGX_CONF_UNSET;
    emcf->progress_ttl = NGX_CONF_UNSET;
    emcf->progress_slack = NGX_CONF_UNSET;
    emcf->progress_completion = NGX_CONF_UNSET_UINT;
    emcf->jwt_alg = NGX_CONF_UNSET_UINT;
    emcf->jwt_ttl = NGX_CONF_UNSET;
    emcf->jwt_leeway = NGX_CONF_UNSET;
    emcf->jwt_cache_size = NGX_CONF_UNSET_UINT;
    emcf->refresh_ttl = NGX_CONF_UNSET;
    emcf->session_max = NGX_CONF_UNSET_UINT;
    emcf->revocation_fail_open = NGX_CONF_UNSET;
    emcf->login_max_failures = NGX_CONF_UNSET_UINT;
    emcf->login_failure_window = NGX_CONF_UNSET;
    emcf->live_capacity = NGX_CONF_UNSET_UINT;
    emcf->live_capacity_max = NGX_CONF_UNSET_UINT;
    emcf->live_chat_max_size = NGX_CONF_UNSET_SIZE;
    emcf->live_chat_rate = NGX_CONF_UNSET_UINT;
    emcf->live_replay_max = NGX_CONF_UNSET_UINT;
    emcf->live_replay_ttl = NGX_CONF_UNSET_MSEC;
    emcf->live_lease = NGX_CONF_UNSET_MSEC;
    emcf->live_presence_interval = NGX_CONF_UNSET_MSEC;
    emcf->live_revocation_check = NGX_CONF_UNSET_MSEC;
    emcf->live_token_warning = NGX_CONF_UNSET_MSEC;

    return emcf;
}


static char *
ngx_http_elearn_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_elearn_main_conf_t *emcf = conf;

    ngx_conf_init_uint_value(emcf->pg_pool_size, 16);
    ngx_conf_init_uint_value(emcf->pg_queue_size, 1024);
    ngx_conf_init_msec_value(emcf->pg_connect_timeout, 5000);
    ngx_conf_init_msec_value(emcf->pg_query_timeout, 10000);
    ngx_conf_init_msec_value(emcf->pg_queue_timeout, 2000);
    ngx_conf_init_msec_value(emcf->pg_idle_timeout, 600000);
    ngx_conf_init_msec_value(emcf->pg_reconnect_max, 2000);
    ngx_conf_init_value(emcf->pg_prepare, 1);
    ngx_conf_init_msec_value(emcf->redis_timeout, 1000);
    ngx_conf_init_msec_value(emcf->redis_reconnect_max, 2000);
    ngx_conf_init_uint_value(emcf->kafka_queue_max, 100000);
    ngx_conf_init_msec_value(emcf->kafka_flush_timeout, 5000);
    ngx_conf_init_msec_value(emcf->kafka_linger, 20);
    ngx_conf_init_msec_value(emcf->kafka_durable_linger, 5);
    ngx_conf_init_value(emcf->course_cache_ttl, 3600);
    ngx_conf_init_value(emcf->search_cache_ttl, 600);
    ngx_conf_init_uint_value(emcf->search_local_cache,
                             NGX_HTTP_ELEARN_SEARCH_LOCAL_DEFAULT);
    ngx_conf_init_msec_value(emcf->cache_lock_timeout, 2000);
    ngx_conf_init_uint_value(emcf->cache_warm, 100);
    ngx_conf_init_uint_value(emcf->jwt_alg, NGX_HTTP_ELEARN_JWT_HS256);
    ngx_conf_init_value(emcf->jwt_ttl, 900);
    ngx_conf_init_value(emcf->jwt_leeway, 30);
    ngx_conf_init_uint_value(emcf->jwt_cache_size, 10000);
    ngx_conf_init_value(emcf->refresh_ttl, 7 * 86400);
    ngx_conf_init_uint_value(emcf->session_max, 5);
    ngx_conf_init_value(emcf->revocation_fail_open, 0);
    ngx_conf_init_uint_value(emcf->login_max_failures, 10);
    ngx_conf_init_value(emcf->login_failure_window, 900);

    if (emcf->jwt_issuer.len == 0) {
        ngx_str_set(&emcf->jwt_issuer, "elearn");
    }

    if (emcf->thread_pool_name.len == 0) {
        ngx_str_set(&emcf->thread_pool_name, "default");
    }

    if (emcf->jwt_ttl <= 0 || emcf->refresh_ttl <= emcf->jwt_ttl
        || emcf->login_failure_window <= 0 || emcf->jwt_leeway < 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_jwt_ttl\" must be positive and shorter "
                           "than \"elearn_refresh_ttl\"; "
                           "\"elearn_login_failure_window\" positive");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_elearn_auth_init_conf(cf, emcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_elearn_search_init_conf(cf, emcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_elearn_live_init_conf(cf, emcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_elearn_progress_init_conf(cf, emcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (emcf->pg_query_timeout == 0 || emcf->pg_connect_timeout == 0
        || emcf->redis_timeout == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_pg_query_timeout\", "
                           "\"elearn_pg_connect_timeout\" and "
                           "\"elearn_redis_timeout\" must not be zero");
        return NGX_CONF_ERROR;
    }

    if (emcf->pg_conninfo.len
        && ngx_http_elearn_check_conninfo(cf, &emcf->pg_conninfo) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (emcf->course_cache_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_course_cache_ttl\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (emcf->search_cache_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_search_cache_ttl\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (emcf->cache_lock_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_cache_lock_timeout\" must be "
                           "positive");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_elearn_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_elearn_loc_conf_t  *elcf;

    elcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_elearn_loc_conf_t));
    if (elcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     elcf->serve = NGX_HTTP_ELEARN_LOC_NONE;
     */

    elcf->body_max_size = NGX_CONF_UNSET_SIZE;
    elcf->retry_after = NGX_CONF_UNSET_UINT;
    elcf->ws_max_message = NGX_CONF_UNSET_SIZE;
    elcf->ws_max_queue = NGX_CONF_UNSET_SIZE;
    elcf->ws_ping_interval = NGX_CONF_UNSET_MSEC;
    elcf->ws_close_timeout = NGX_CONF_UNSET_MSEC;
    elcf->progress_ack = NGX_CONF_UNSET_UINT;
    elcf->progress_ack_timeout = NGX_CONF_UNSET_MSEC;
    elcf->progress_naive = NGX_CONF_UNSET;

    return elcf;
}


static char *
ngx_http_elearn_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_elearn_loc_conf_t *prev = parent;
    ngx_http_elearn_loc_conf_t *conf = child;

    ngx_http_elearn_main_conf_t  *emcf;

    ngx_conf_merge_size_value(conf->body_max_size, prev->body_max_size,
                              64 * 1024);
    ngx_conf_merge_uint_value(conf->retry_after, prev->retry_after, 2);
    ngx_conf_merge_uint_value(conf->progress_ack, prev->progress_ack,
                              NGX_HTTP_ELEARN_PROGRESS_ACK_QUEUED);
    ngx_conf_merge_msec_value(conf->progress_ack_timeout,
                              prev->progress_ack_timeout, 5000);
    ngx_conf_merge_value(conf->progress_naive, prev->progress_naive, 0);

    if (conf->progress_ack == NGX_HTTP_ELEARN_PROGRESS_ACK_DURABLE) {
        /* init_process then creates the durable reports' own producer */
        emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_elearn_module);
        emcf->progress_durable = 1;
    }

    if (conf->progress_ack_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_progress_ack_timeout\" must not be "
                           "zero");
        return NGX_CONF_ERROR;
    }

    if (conf->body_max_size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_body_max_size\" must not be zero");
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_size_value(conf->ws_max_message, prev->ws_max_message,
                              64 * 1024);
    ngx_conf_merge_size_value(conf->ws_max_queue, prev->ws_max_queue,
                              256 * 1024);
    ngx_conf_merge_msec_value(conf->ws_ping_interval, prev->ws_ping_interval,
                              30000);
    ngx_conf_merge_msec_value(conf->ws_close_timeout, prev->ws_close_timeout,
                              5000);

    if (conf->ws_max_message < 125 || conf->ws_max_message > 64 * 1024 * 1024)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_ws_max_message\" must be between 125 "
                           "and 64m");
        return NGX_CONF_ERROR;
    }

    if (conf->ws_max_queue < 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_ws_max_queue\" must be at least 1k");
        return NGX_CONF_ERROR;
    }

    if (conf->ws_ping_interval == 0 || conf->ws_close_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_ws_ping_interval\" and "
                           "\"elearn_ws_close_timeout\" must not be zero");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_elearn_preconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t            i;
    ngx_http_variable_t  *var, *v;
    ngx_http_variable_t  *vars[] = {
        ngx_http_elearn_auth_vars,
        ngx_http_elearn_live_vars
    };

    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        for (v = vars[i]; v->name.len; v++) {
            var = ngx_http_add_variable(cf, &v->name, v->flags);
            if (var == NULL) {
                return NGX_ERROR;
            }

            var->get_handler = v->get_handler;
            var->data = v->data;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt          *h;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_elearn_module);

    if (ngx_http_elearn_metrics_init_conf(cf, emcf) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_elearn_log_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_elearn_auth_access;

    if (emcf->api_used && emcf->jwt_key == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"elearn_api\" needs \"elearn_jwt_key_file\" or "
                      "\"elearn_jwt_public_key_file\"");
        return NGX_ERROR;
    }

    if (emcf->api_used && emcf->cursor_key.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"elearn_api\" needs \"elearn_cursor_key_file\"");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_init_process(ngx_cycle_t *cycle)
{
    ngx_http_elearn_main_conf_t  *emcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    emcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_elearn_module);
    if (emcf == NULL) {
        return NGX_OK;
    }

    if (emcf->pg_conninfo.len) {
        emcf->pg = ngx_http_elearn_pg_pool_create(cycle, emcf);
        if (emcf->pg == NULL) {
            return NGX_ERROR;
        }
    }

    if (emcf->redis_addr.len) {
        emcf->redis = ngx_http_elearn_redis_create(cycle, emcf);
        if (emcf->redis == NULL) {
            return NGX_ERROR;
        }
    }

    if (emcf->kafka_brokers.len) {
        emcf->kafka = ngx_http_elearn_kafka_create(cycle, emcf, 0);
        if (emcf->kafka == NULL) {
            return NGX_ERROR;
        }

        if (emcf->progress_durable) {
            emcf->kafka_durable = ngx_http_elearn_kafka_create(cycle, emcf,
                                                               1);
            if (emcf->kafka_durable == NULL) {
                return NGX_ERROR;
            }
        }
    }

    if (emcf->jwt_cache_size) {
        emcf->jwt_cache =
                    ngx_http_elearn_jwt_cache_create(emcf->jwt_cache_size);
        if (emcf->jwt_cache == NULL) {
            return NGX_ERROR;
        }
    }

    if (emcf->redis) {
        emcf->revocations = ngx_http_elearn_revocations_create(cycle, emcf);
        if (emcf->revocations == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_elearn_live_init_process(cycle, emcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (emcf->redis && emcf->pg && emcf->cache_warm && ngx_worker == 0) {
        ngx_http_elearn_course_warm(cycle, emcf);
    }

    return ngx_http_elearn_metrics_init_process(cycle);
}


static void
ngx_http_elearn_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_elearn_module);
    if (emcf == NULL) {
        return;
    }

    ngx_http_elearn_metrics_exit_process(cycle);
    ngx_http_elearn_live_exit_process(cycle);

    if (emcf->revocations) {
        ngx_http_elearn_revocations_destroy(emcf->revocations);
        emcf->revocations = NULL;
    }

    if (emcf->jwt_cache) {
        ngx_http_elearn_jwt_cache_destroy(emcf->jwt_cache);
        emcf->jwt_cache = NULL;
    }

    if (emcf->kafka_durable) {
        ngx_http_elearn_kafka_destroy(emcf->kafka_durable);
        emcf->kafka_durable = NULL;
    }

    if (emcf->kafka) {
        ngx_http_elearn_kafka_destroy(emcf->kafka);
        emcf->kafka = NULL;
    }

    if (emcf->redis) {
        ngx_http_elearn_redis_destroy(emcf->redis);
        emcf->redis = NULL;
    }

    if (emcf->pg) {
        ngx_http_elearn_pg_pool_destroy(emcf->pg);
        emcf->pg = NULL;
    }
}
