
/*
 * elearn enrollment: enroll, unenroll, my enrollments and a course's
 * enrollments (contract section 3), with the contract's two pagination
 * styles; cursors are the search's signed cursors (scope 'm' or 'c' plus
 * the list's owner id, so a cursor of one list never opens another).
 *
 * Enrolling is idempotent (one statement: insert or find).  A new
 * enrollment and a real unenrollment put an event for elearn.enrollments
 * (keyed by the course id) into the outbox table in the same statement,
 * so the change and its event commit together; elearn-outbox publishes
 * it (workers/outbox).  Nothing here talks to Kafka: a broker outage
 * delays the events, it never loses them nor fails an enrollment.
 *
 * Unenrolling answers 204 whether or not the user was enrolled, as the
 * contract writes it: a retried DELETE must not turn into an error.
 *
 * This file must never build SQL from request text.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_search.h"
#include "ngx_http_elearn_sql.h"


#define NGX_HTTP_ELEARN_ENROLL_PAGE_SIZE   20
#define NGX_HTTP_ELEARN_ENROLL_PAGE_MAX    100
#define NGX_HTTP_ELEARN_ENROLL_OFFSET_MAX  10000    /* contract 1 */


enum {
    NGX_HTTP_ELEARN_EARG_PAGE = 0,
    NGX_HTTP_ELEARN_EARG_PAGE_SIZE,
    NGX_HTTP_ELEARN_EARG_CURSOR,
    NGX_HTTP_ELEARN_EARG_N
};


/* enroll and unenroll */
typedef struct {
    int64_t                        user_id;
    int64_t                        course_id;
    u_char                         user[NGX_INT64_LEN + 1];
    u_char                         course[NGX_INT64_LEN + 1];
    const char                    *values[2];
    ngx_uint_t                     retried;

    /* the answer, sent once enroll:{user}:{course} is dropped */
    ngx_uint_t                     status;
    u_char                        *body;
    size_t                         body_len;
} ngx_http_elearn_enroll_t;


/* the two lists */
typedef struct {
    ngx_http_elearn_search_arg_t   args[NGX_HTTP_ELEARN_EARG_N];
    ngx_uint_t                     page;
    ngx_uint_t                     page_size;
    ngx_str_t                      scope;     /* of its cursors */
    u_char                        *key;       /* cursor's enrolled_at */
    u_char                        *id;        /* cursor's course/user id */

    ngx_uint_t                     nrows;
    ngx_str_t                     *docs;
    ngx_str_t                      last_key;  /* of row page_size */
    ngx_str_t                      last_id;
    ngx_uint_t                     total;

    ngx_uint_t                     pending;
    unsigned                       failed:1;
} ngx_http_elearn_enroll_list_t;


/* --- the enrollment cache ------------------------------------------------ */

static void
ngx_http_elearn_enrollment_uncached(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_elearn_enroll_t *e = data;

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_send_json(r, e->status, (char *) e->body,
                                  e->body_len));
}


/*
 * Drops enroll:{user}:{course} (the progress endpoints' enrollment cache)
 * and then answers e's status and body: the student's very next request
 * sees the change, whichever worker serves it.  With Redis down it
 * answers at once (the key then lives at most elearn_enrollment_cache_ttl).
 */
static void
ngx_http_elearn_enrollment_uncache(ngx_http_request_t *r,
    ngx_http_elearn_enroll_t *e)
{
    u_char                       *p;
    const char                   *argv[2];
    size_t                        argvlen[2];
    ngx_http_elearn_main_conf_t  *emcf;
    u_char                        key[sizeof("enroll::")
                                      + 2 * NGX_INT64_LEN];

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->redis != NULL) {
        p = ngx_sprintf(key, "enroll:%L:%L", e->user_id, e->course_id);

        argv[0] = "DEL";
        argvlen[0] = 3;
        argv[1] = (char *) key;
        argvlen[1] = p - key;

        if (ngx_http_elearn_redis_command(r,
                                          ngx_http_elearn_enrollment_uncached,
                                          e, 2, argv, argvlen)
            == NGX_AGAIN)
        {
            return;
        }
    }

    ngx_http_elearn_enrollment_uncached(r, NULL, NGX_OK, e);
}


static ngx_http_elearn_enroll_t *
ngx_http_elearn_enrollment_init(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_http_elearn_enroll_t  *e;

    e = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_enroll_t));
    if (e == NULL) {
        return NULL;
    }

    e->user_id = ctx->user->user_id;
    e->course_id = ctx->ids[0];
    *ngx_sprintf(e->user, "%L", e->user_id) = '\0';
    *ngx_sprintf(e->course, "%L", e->course_id) = '\0';
    e->values[0] = (char *) e->user;
    e->values[1] = (char *) e->course;
    ctx->data = e;

    return e;
}


/* --- POST /api/v1/courses/{id}/enrollments ------------------------------ */

static void
ngx_http_elearn_enrollment_create_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_enroll_t *e = data;

    u_char      *buf, *p, *at;
    size_t       at_len;
    ngx_uint_t   created;

    if (rc == NGX_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn enrollment: enroll failed: %s",
                      PQresultErrorMessage(res));
        rc = NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (PQntuples(res) != 1) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                    "no published course %L",
                                    e->course_id));
        return;
    }

    if (PQgetisnull(res, 0, 1)) {
        /* the same user enrolled concurrently, after our snapshot */
        if (!e->retried) {
            e->retried = 1;
            rc = ngx_http_elearn_pg_query(r,
                     NGX_HTTP_ELEARN_SQL_ENROLLMENT_CREATE, 2, e->values,
                     ngx_http_elearn_enrollment_create_done, e);
            if (rc == NGX_AGAIN) {
                return;
            }

        } else {
            rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    created = (PQgetvalue(res, 0, 0)[0] == 't');
    at = (u_char *) PQgetvalue(res, 0, 1);
    at_len = PQgetlength(res, 0, 1);

    buf = ngx_pnalloc(r->pool, sizeof("{\"courseId\":,\"enrolledAt\":\"\","
                                      "\"status\":\"\"}")
                               + NGX_INT64_LEN + at_len
                               + PQgetlength(res, 0, 2));
    if (buf == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ngx_sprintf(buf, "{\"courseId\":%L,\"enrolledAt\":\"", e->course_id);
    p = ngx_cpymem(p, at, at_len);
    p = ngx_sprintf(p, "\",\"status\":\"%s\"}", PQgetvalue(res, 0, 2));

    e->status = created ? NGX_HTTP_CREATED : NGX_HTTP_OK;
    e->body = buf;
    e->body_len = p - buf;

    if (created) {
        ngx_http_elearn_enrollment_uncache(r, e);
        return;
    }

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_send_json(r, e->status, (char *) buf, p - buf));
}


ngx_int_t
ngx_http_elearn_enrollment_create(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_http_elearn_enroll_t     *e;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (emcf->pg == NULL) {
        return ngx_http_elearn_problem_backend(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the database");
    }

    e = ngx_http_elearn_enrollment_init(r, ctx);
    if (e == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_ENROLLMENT_CREATE, 2,
                                  e->values,
                                  ngx_http_elearn_enrollment_create_done, e);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/* --- DELETE /api/v1/courses/{id}/enrollments/me ------------------------- */

static void
ngx_http_elearn_enrollment_delete_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_enroll_t *e = data;

    if (rc == NGX_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn enrollment: unenroll failed: %s",
                      PQresultErrorMessage(res));
        rc = NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    e->status = NGX_HTTP_NO_CONTENT;
    e->body = (u_char *) "";
    e->body_len = 0;

    ngx_http_elearn_enrollment_uncache(r, e);
}


ngx_int_t
ngx_http_elearn_enrollment_delete(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_http_elearn_enroll_t     *e;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (emcf->pg == NULL) {
        return ngx_http_elearn_problem_backend(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the database");
    }

    e = ngx_http_elearn_enrollment_init(r, ctx);
    if (e == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_ENROLLMENT_DELETE, 2,
                                  e->values,
                                  ngx_http_elearn_enrollment_delete_done, e);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/* --- the lists ---------------------------------------------------------- */

/* "<uri?pageSize=N&page=K>; rel=..., " or with "&cursor=C" */
static u_char *
ngx_http_elearn_enrollment_link(ngx_http_request_t *r,
    ngx_http_elearn_enroll_list_t *l, u_char *p, ngx_uint_t page,
    ngx_str_t *cursor, const char *rel)
{
    *p++ = '<';
    p = ngx_cpymem(p, r->uri.data, r->uri.len);
    p = ngx_sprintf(p, "?pageSize=%ui", l->page_size);

    if (cursor) {
        p = ngx_sprintf(p, "&cursor=%V", cursor);
    } else {
        p = ngx_sprintf(p, "&page=%ui", page);
    }

    return ngx_sprintf(p, ">; rel=\"%s\", ", rel);
}


static ngx_int_t
ngx_http_elearn_enrollment_links(ngx_http_request_t *r,
    ngx_http_elearn_enroll_list_t *l, ngx_str_t *next, ngx_uint_t last_page)
{
    u_char     *buf, *p;
    size_t      one;
    ngx_str_t   link;

    one = r->uri.len + sizeof("<?pageSize=&cursor=>; rel=\"first\", ")
          + 2 * NGX_INT_T_LEN + (next ? next->len : 0);

    buf = ngx_pnalloc(r->pool, 4 * one);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

    if (l->args[NGX_HTTP_ELEARN_EARG_CURSOR].present) {
        if (next) {
            p = ngx_http_elearn_enrollment_link(r, l, p, 0, next, "next");
        }

    } else {
        p = ngx_http_elearn_enrollment_link(r, l, p, 1, NULL, "first");

        if (l->page > 1) {
            p = ngx_http_elearn_enrollment_link(r, l, p,
                                                ngx_min(l->page - 1,
                                                        ngx_max(last_page,
                                                                1)),
                                                NULL, "prev");
        }

        if (next) {
            /* past result 10,000 the next page is only a cursor away */
            if ((l->page + 1) * l->page_size
                <= NGX_HTTP_ELEARN_ENROLL_OFFSET_MAX)
            {
                p = ngx_http_elearn_enrollment_link(r, l, p, l->page + 1,
                                                    NULL, "next");
            } else {
                p = ngx_http_elearn_enrollment_link(r, l, p, 0, next,
                                                    "next");
            }
        }

        p = ngx_http_elearn_enrollment_link(r, l, p, ngx_max(last_page, 1),
                                            NULL, "last");
    }

    if (p == buf) {
        return NGX_OK;
    }

    link.data = buf;
    link.len = p - buf - 2;               /* the last ", " */

    return ngx_http_elearn_set_link(r, &link);
}


static ngx_int_t
ngx_http_elearn_enrollment_respond(ngx_http_request_t *r,
    ngx_http_elearn_enroll_list_t *l)
{
    u_char      *buf, *p;
    size_t       len;
    ngx_str_t    payload, *next;
    ngx_uint_t   i, last_page;

    next = NULL;

    if (l->nrows > l->page_size) {
        payload.len = l->last_key.len + 1 + l->last_id.len;
        payload.data = ngx_pnalloc(r->pool, payload.len);
        if (payload.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(payload.data, "%V:%V", &l->last_key, &l->last_id);

        next = ngx_http_elearn_cursor_encode(r, &l->scope, &payload);
        if (next == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        l->nrows = l->page_size;
    }

    last_page = (ngx_min(l->total, NGX_HTTP_ELEARN_ENROLL_OFFSET_MAX)
                 + l->page_size - 1) / l->page_size;

    len = sizeof("{\"enrollments\":[],\"pagination\":{\"currentPage\":,"
                 "\"pageSize\":,\"totalResults\":,\"totalPages\":,"
                 "\"nextCursor\":null}}")
          + 4 * NGX_INT_T_LEN + (next ? next->len + 2 : 0);

    for (i = 0; i < l->nrows; i++) {
        len += l->docs[i].len + 1;
    }

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(buf, "{\"enrollments\":[",
                   sizeof("{\"enrollments\":[") - 1);

    for (i = 0; i < l->nrows; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, l->docs[i].data, l->docs[i].len);
    }

    p = ngx_cpymem(p, "],\"pagination\":{", sizeof("],\"pagination\":{") - 1);

    if (!l->args[NGX_HTTP_ELEARN_EARG_CURSOR].present) {
        p = ngx_sprintf(p, "\"currentPage\":%ui,\"pageSize\":%ui,"
                        "\"totalResults\":%ui,\"totalPages\":%ui,",
                        l->page, l->page_size, l->total, last_page);
    } else {
        p = ngx_sprintf(p, "\"pageSize\":%ui,", l->page_size);
    }

    if (next) {
        p = ngx_sprintf(p, "\"nextCursor\":\"%V\"}}", next);
    } else {
        p = ngx_cpymem(p, "\"nextCursor\":null}}",
                       sizeof("\"nextCursor\":null}}") - 1);
    }

    if (ngx_http_elearn_enrollment_links(r, l, next, last_page) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_elearn_send_json(r, NGX_HTTP_OK, (char *) buf, p - buf);
}


static ngx_int_t
ngx_http_elearn_enrollment_copy(ngx_http_request_t *r, ngx_str_t *dst,
    PGresult *res, int row, int col)
{
    dst->len = PQgetlength(res, row, col);
    dst->data = ngx_pnalloc(r->pool, dst->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(dst->data, PQgetvalue(res, row, col), dst->len) = '\0';

    return NGX_OK;
}


/* the page or the total is back; the last of the two answers */
static void
ngx_http_elearn_enrollment_list_done(ngx_http_request_t *r,
    ngx_http_elearn_enroll_list_t *l, PGresult *res, ngx_int_t rc,
    ngx_uint_t is_page)
{
    int        i, n;
    ngx_int_t  total;

    if (l->failed) {
        return;
    }

    if (rc == NGX_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn enrollment: %s failed: %s",
                      is_page ? "page" : "count", PQresultErrorMessage(res));
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        n = PQntuples(res);

        if (is_page) {
            l->nrows = n;
            l->docs = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_str_t));
            if (l->docs == NULL) {
                rc = NGX_ERROR;
            }

            for (i = 0; rc == NGX_OK && i < n; i++) {
                if (ngx_http_elearn_enrollment_copy(r, &l->docs[i], res, i, 0)
                    != NGX_OK)
                {
                    rc = NGX_ERROR;
                }
            }

            if (rc == NGX_OK && (ngx_uint_t) n > l->page_size
                && (ngx_http_elearn_enrollment_copy(r, &l->last_key, res,
                                                    l->page_size - 1, 1)
                    != NGX_OK
                    || ngx_http_elearn_enrollment_copy(r, &l->last_id, res,
                                                       l->page_size - 1, 2)
                       != NGX_OK))
            {
                rc = NGX_ERROR;
            }

        } else if (n == 1) {
            total = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                             PQgetlength(res, 0, 0));
            l->total = (total == NGX_ERROR) ? 0 : total;
        }
    }

    if (rc != NGX_OK) {
        l->failed = 1;
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (--l->pending) {
        return;
    }

    ngx_http_elearn_finalize(r, ngx_http_elearn_enrollment_respond(r, l));
}


static void
ngx_http_elearn_enrollment_page_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_enrollment_list_done(r, data, res, rc, 1);
}


static void
ngx_http_elearn_enrollment_count_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_enrollment_list_done(r, data, res, rc, 0);
}


/*
 * Parses and checks page, pageSize and cursor.  NGX_OK; else NGX_DECLINED
 * with the problem sent and *answer holding what sending it returned, or
 * NGX_ERROR.
 */
static ngx_int_t
ngx_http_elearn_enrollment_args(ngx_http_request_t *r,
    ngx_http_elearn_enroll_list_t *l, ngx_int_t *answer)
{
    u_char                         *p, *colon;
    ngx_int_t                       rc;
    ngx_str_t                       payload;
    ngx_uint_t                      n;
    const char                     *bad;
    ngx_http_elearn_field_error_t   errors[2];

    ngx_str_set(&l->args[NGX_HTTP_ELEARN_EARG_PAGE].name, "page");
    ngx_str_set(&l->args[NGX_HTTP_ELEARN_EARG_PAGE_SIZE].name, "pageSize");
    ngx_str_set(&l->args[NGX_HTTP_ELEARN_EARG_CURSOR].name, "cursor");

    bad = NULL;
    rc = ngx_http_elearn_search_parse_args(r, l->args, NGX_HTTP_ELEARN_EARG_N,
                                           &bad);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                          "bad-query", "query parameter "
                                          "\"%s\" is repeated or not UTF-8 "
                                          "text", bad);
        return NGX_DECLINED;
    }

    n = 0;

    if (l->args[NGX_HTTP_ELEARN_EARG_PAGE].present) {
        rc = ngx_http_elearn_search_number(
                 &l->args[NGX_HTTP_ELEARN_EARG_PAGE].value, &l->page);
        if (rc == NGX_DECLINED) {
            *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                              "bad-query",
                                              "query parameter \"page\" must "
                                              "be a positive integer");
            return NGX_DECLINED;
        }

        if (rc == NGX_ABORT) {
            errors[n].field = "page";
            errors[n++].message = "must be at least 1";
        }
    }

    if (l->args[NGX_HTTP_ELEARN_EARG_PAGE_SIZE].present) {
        rc = ngx_http_elearn_search_number(
                 &l->args[NGX_HTTP_ELEARN_EARG_PAGE_SIZE].value,
                 &l->page_size);
        if (rc == NGX_DECLINED) {
            *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                              "bad-query",
                                              "query parameter \"pageSize\" "
                                              "must be a positive integer");
            return NGX_DECLINED;
        }

        if (rc == NGX_ABORT
            || l->page_size > NGX_HTTP_ELEARN_ENROLL_PAGE_MAX)
        {
            errors[n].field = "pageSize";
            errors[n++].message = "must be between 1 and 100";
        }
    }

    if (l->args[NGX_HTTP_ELEARN_EARG_CURSOR].present
        && l->args[NGX_HTTP_ELEARN_EARG_PAGE].present)
    {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                          "bad-query",
                                          "query parameters \"page\" and "
                                          "\"cursor\" exclude each other");
        return NGX_DECLINED;
    }

    if (n == 0 && !l->args[NGX_HTTP_ELEARN_EARG_CURSOR].present
        && l->page * l->page_size > NGX_HTTP_ELEARN_ENROLL_OFFSET_MAX)
    {
        errors[n].field = "page";
        errors[n++].message = "offset paging stops at result 10000: "
                              "continue with the cursor style "
                              "(cursor=nextCursor)";
    }

    if (n) {
        *answer = ngx_http_elearn_problem_fields(r, "invalid pagination "
                                                 "parameters", errors, n);
        return NGX_DECLINED;
    }

    if (!l->args[NGX_HTTP_ELEARN_EARG_CURSOR].present) {
        return NGX_OK;
    }

    rc = ngx_http_elearn_cursor_decode(r, &l->scope,
                                    &l->args[NGX_HTTP_ELEARN_EARG_CURSOR].value,
                                    &payload);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* ours when signed; still checked, it becomes two bigint parameters */

    colon = NULL;

    for (p = payload.data; rc == NGX_OK && p < payload.data + payload.len;
         p++)
    {
        if (*p == ':' && colon == NULL) {
            colon = p;

        } else if (!((*p >= '0' && *p <= '9')
                     || (*p == '-'
                         && (p == payload.data || (colon && p == colon + 1)))))
        {
            rc = NGX_DECLINED;
        }
    }

    if (rc != NGX_OK || colon == NULL || colon == payload.data
        || colon == payload.data + payload.len - 1)
    {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                          "bad-cursor",
                                          "query parameter \"cursor\" is "
                                          "not a cursor of this list");
        return NGX_DECLINED;
    }

    l->key = ngx_pnalloc(r->pool, payload.len + 1);
    if (l->key == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(l->key, payload.data, payload.len);
    l->key[payload.len] = '\0';
    l->key[colon - payload.data] = '\0';
    l->id = l->key + (colon - payload.data) + 1;

    return NGX_OK;
}


/*
 * Both lists: scope is 'm' (a user's enrollments) or 'c' (a course's),
 * owner the user or course id; page_sql and count_sql take the owner
 * first.
 */
static ngx_int_t
ngx_http_elearn_enrollment_list(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx, u_char scope, int64_t owner,
    const char *page_sql, const char *count_sql)
{
    u_char                         *p;
    ngx_int_t                       rc, answer;
    const char                     *values[5];
    ngx_http_elearn_main_conf_t    *emcf;
    ngx_http_elearn_enroll_list_t  *l;
    u_char                          id[NGX_INT64_LEN + 1];
    u_char                          limit[NGX_INT_T_LEN + 1];
    u_char                          offset[NGX_INT_T_LEN + 1];

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    l = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_enroll_list_t));
    if (l == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->data = l;
    l->page = 1;
    l->page_size = NGX_HTTP_ELEARN_ENROLL_PAGE_SIZE;

    l->scope.data = ngx_pnalloc(r->pool, 2 + NGX_INT64_LEN);
    if (l->scope.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    l->scope.len = ngx_sprintf(l->scope.data, "%c:%L", scope, owner)
                   - l->scope.data;

    answer = NGX_HTTP_INTERNAL_SERVER_ERROR;

    rc = ngx_http_elearn_enrollment_args(r, l, &answer);
    if (rc != NGX_OK) {
        return answer;
    }

    if (emcf->pg == NULL) {
        return ngx_http_elearn_problem_backend(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the database");
    }

    /* one row more than the page tells whether a next page exists */

    *ngx_sprintf(id, "%L", owner) = '\0';
    p = ngx_sprintf(limit, "%ui", l->page_size + 1);
    *p = '\0';
    p = ngx_sprintf(offset, "%ui", (l->page - 1) * l->page_size);
    *p = '\0';

    values[0] = (char *) id;
    values[1] = (char *) l->key;
    values[2] = (char *) l->id;
    values[3] = (char *) limit;
    values[4] = (char *) offset;

    rc = ngx_http_elearn_pg_query(r, page_sql, 5, values,
                                  ngx_http_elearn_enrollment_page_done, l);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    l->pending = 1;

    if (!l->args[NGX_HTTP_ELEARN_EARG_CURSOR].present) {
        /* the total only for offset paging */
        rc = ngx_http_elearn_pg_query(r, count_sql, 1, values,
                                      ngx_http_elearn_enrollment_count_done,
                                      l);
        if (rc != NGX_AGAIN) {
            /* the page query is cancelled with the request */
            l->failed = 1;
            return ngx_http_elearn_problem_backend(r, rc, "the database");
        }

        l->pending = 2;
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/* GET /api/v1/me/enrollments */
ngx_int_t
ngx_http_elearn_enrollment_mine(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_enrollment_list(r, ctx, 'm', ctx->user->user_id,
                                    NGX_HTTP_ELEARN_SQL_ENROLLMENT_MINE,
                                    NGX_HTTP_ELEARN_SQL_ENROLLMENT_MINE_COUNT);
}


/* GET /api/v1/courses/{id}/enrollments: the router checked ownership */
ngx_int_t
ngx_http_elearn_enrollment_of_course(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_enrollment_list(r, ctx, 'c', ctx->ids[0],
                                NGX_HTTP_ELEARN_SQL_ENROLLMENT_OF_COURSE,
                                NGX_HTTP_ELEARN_SQL_ENROLLMENT_OF_COURSE_COUNT);
}
