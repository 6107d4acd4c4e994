
/*
 * elearn course: GET /api/v1/courses/{courseId}, cache-aside in Redis.
 *
 * The course document is built by PostgreSQL as one JSON text (course,
 * instructor, videos, quizzes) and kept verbatim in Redis under
 * "course:{id}" for elearn_course_cache_ttl, so a cache hit is one GET
 * and a copy.  Redis is only a cache: when it is down or slow the request
 * goes to PostgreSQL.  Unpublished courses are not visible here (owners
 * will see them once authentication exists).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_sql.h"


#define NGX_HTTP_ELEARN_COURSE_KEY_LEN  (sizeof("course:") - 1 + NGX_INT64_LEN)


typedef struct {
    u_char   key[NGX_HTTP_ELEARN_COURSE_KEY_LEN];
    size_t   key_len;
    u_char   id[NGX_INT64_LEN];
    size_t   id_len;
} ngx_http_elearn_course_t;


static ngx_int_t ngx_http_elearn_course_fetch(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course);


static void
ngx_http_elearn_course_cache_fill(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course, char *json, size_t len)
{
    u_char                       ttl[NGX_TIME_T_LEN];
    const char                  *argv[5];
    size_t                       argvlen[5];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->redis == NULL) {
        return;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (char *) course->key;
    argvlen[1] = course->key_len;
    argv[2] = json;
    argvlen[2] = len;
    argv[3] = "EX";
    argvlen[3] = 2;
    argv[4] = (char *) ttl;
    argvlen[4] = ngx_sprintf(ttl, "%T", emcf->course_cache_ttl) - ttl;

    /* fire and forget: a failed fill only costs the next reader a query */
    (void) ngx_http_elearn_redis_command(NULL, NULL, NULL, 5, argv, argvlen);
}


static void
ngx_http_elearn_course_pg_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_t *course = data;

    char  *json;
    int    len;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn course: course_get failed: %s",
                      PQresultErrorMessage(res));
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_ERROR, "the database"));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                    "course %s does not exist",
                                    course->id));
        return;
    }

    json = PQgetvalue(res, 0, 0);
    len = PQgetlength(res, 0, 0);

    ngx_http_elearn_course_cache_fill(r, course, json, len);

    ngx_http_elearn_finalize(r,
                             ngx_http_elearn_send_json(r, NGX_HTTP_OK, json,
                                                       len));
}


static void
ngx_http_elearn_course_cache_done(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_course_t *course = data;

    ngx_int_t  out;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_STRING) {
        ngx_http_elearn_finalize(r,
                                 ngx_http_elearn_send_json(r, NGX_HTTP_OK,
                                                           reply->str,
                                                           reply->len));
        return;
    }

    /* a miss, or Redis is down or slow: ask the database */

    out = ngx_http_elearn_course_fetch(r, course);

    if (out != NGX_AGAIN) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, out, "the database"));
    }
}


static ngx_int_t
ngx_http_elearn_course_fetch(ngx_http_request_t *r,
    ngx_http_elearn_course_t *course)
{
    const char                   *values[1];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->pg == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    values[0] = (char *) course->id;

    return ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_COURSE_GET_JSON, 1,
                                    values, ngx_http_elearn_course_pg_done,
                                    course);
}


ngx_int_t
ngx_http_elearn_course_get(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t                     rc;
    const char                   *argv[2];
    size_t                        argvlen[2];
    ngx_http_elearn_course_t     *course;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    course = ngx_palloc(r->pool, sizeof(ngx_http_elearn_course_t));
    if (course == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    course->id_len = ngx_sprintf(course->id, "%L", ctx->ids[0]) - course->id;
    course->id[course->id_len] = '\0';
    course->key_len = ngx_sprintf(course->key, "course:%L", ctx->ids[0])
                      - course->key;

    ctx->data = course;

    rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    if (emcf->redis) {
        argv[0] = "GET";
        argvlen[0] = 3;
        argv[1] = (char *) course->key;
        argvlen[1] = course->key_len;

        rc = ngx_http_elearn_redis_command(r,
                                           ngx_http_elearn_course_cache_done,
                                           course, 2, argv, argvlen);
    }

    if (rc != NGX_AGAIN) {
        rc = ngx_http_elearn_course_fetch(r, course);
    }

    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}
