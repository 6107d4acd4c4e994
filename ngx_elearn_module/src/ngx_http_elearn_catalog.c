
/*
 * elearn catalog: course writes, POST /api/v1/courses and PATCH
 * /api/v1/courses/{courseId} (contract section 3).
 *
 * A write is one statement (sql/api-catalog.sql) that changes the row and
 * answers the course document, the same one GET /api/v1/courses/{id}
 * serves.  Then, before answering, the course's cached document is
 * dropped (DEL course:{id}, awaited) and the catalog version bumped (INCR
 * elearn:catalog:version, sent just before on the same connection), so
 * the very next read sees the change.  The row has been written by then:
 * a Redis failure only logs a warning and the write is still answered,
 * with staleness bounded by elearn_course_cache_ttl.
 *
 * Roles and ownership are checked by the router (the PATCH route is
 * OWNER_COURSE): nothing here may check them again.  Values reach
 * PostgreSQL only as bound parameters.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_body.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_sql.h"


#define NGX_HTTP_ELEARN_CATALOG_NFIELDS    7
#define NGX_HTTP_ELEARN_CATALOG_ERRORS     16

#define NGX_HTTP_ELEARN_CATALOG_KEY_LEN                                      \
    (sizeof("course:") - 1 + NGX_INT64_LEN)


typedef enum {
    NGX_HTTP_ELEARN_FIELD_TEXT = 0,     /* min..max characters */
    NGX_HTTP_ELEARN_FIELD_TITLE,        /* text, not blank */
    NGX_HTTP_ELEARN_FIELD_CATEGORY,     /* [a-z0-9-] */
    NGX_HTTP_ELEARN_FIELD_LEVEL,
    NGX_HTTP_ELEARN_FIELD_LANGUAGE,
    NGX_HTTP_ELEARN_FIELD_BOOL
} ngx_http_elearn_field_type_e;


typedef struct {
    const char                    *name;
    ngx_http_elearn_field_type_e   type;
    size_t                         min;
    size_t                         max;
    const char                    *message;  /* when out of bounds */
    const char                    *dflt;     /* POST: NULL is required */
} ngx_http_elearn_field_t;


/*
 * The course fields, in the order of the statements' parameters $2..$8.
 * The bounds are the contract's; the table's CHECKs are as wide or wider.
 */
static ngx_http_elearn_field_t  ngx_http_elearn_catalog_fields[] = {
    { "title", NGX_HTTP_ELEARN_FIELD_TITLE, 1, 200,
      "must be 1 to 200 characters, not all blank", NULL },
    { "summary", NGX_HTTP_ELEARN_FIELD_TEXT, 0, 500,
      "must be at most 500 characters", "" },
    { "description", NGX_HTTP_ELEARN_FIELD_TEXT, 0, 20000,
      "must be at most 20000 characters", "" },
    { "category", NGX_HTTP_ELEARN_FIELD_CATEGORY, 1, 64,
      "must be 1 to 64 characters of a-z, 0-9 and -", NULL },
    { "level", NGX_HTTP_ELEARN_FIELD_LEVEL, 0, 0,
      "must be beginner, intermediate or advanced", NULL },
    { "language", NGX_HTTP_ELEARN_FIELD_LANGUAGE, 2, 8,
      "must be a language tag of 2 to 8 characters such as en or pt-br",
      "en" },
    { "published", NGX_HTTP_ELEARN_FIELD_BOOL, 0, 0,
      "must be true or false", "false" }
};


/* one write, from its statement's answer to the client's */
typedef struct {
    u_char                         key[NGX_HTTP_ELEARN_CATALOG_KEY_LEN];
    size_t                         key_len;
    ngx_uint_t                     status;     /* 201 or 200 */
    u_char                        *doc;        /* the course document */
    u_char                         id[NGX_OFF_T_LEN + 1];
    size_t                         doc_len;
} ngx_http_elearn_catalog_t;


/* characters (UTF-8 code points) of a string jansson has checked */
static size_t
ngx_http_elearn_catalog_chars(const u_char *p, size_t len)
{
    size_t         n;
    const u_char  *last;

    n = 0;

    for (last = p + len; p < last; p++) {
        if ((*p & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


/* the table's CHECK: ^[a-z]{2,3}(-[a-z0-9]{2,8})?$, at most 8 in all */
static ngx_int_t
ngx_http_elearn_catalog_language(const u_char *p, size_t len)
{
    size_t  i, n;

    if (len < 2 || len > 8) {
        return NGX_DECLINED;
    }

    for (i = 0; i < len && p[i] >= 'a' && p[i] <= 'z'; i++) {
        /* void */
    }

    if (i < 2 || i > 3) {
        return NGX_DECLINED;
    }

    if (i == len) {
        return NGX_OK;
    }

    if (p[i++] != '-') {
        return NGX_DECLINED;
    }

    for (n = 0; i < len; i++, n++) {
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9'))) {
            return NGX_DECLINED;
        }
    }

    return n >= 2 ? NGX_OK : NGX_DECLINED;
}


/* NULL when v is a valid value of field f, else what is wrong */
static const char *
ngx_http_elearn_catalog_check(ngx_http_elearn_field_t *f, json_t *v,
    const char **value)
{
    size_t         len, n;
    const u_char  *p, *last;

    if (f->type == NGX_HTTP_ELEARN_FIELD_BOOL) {
        if (!json_is_boolean(v)) {
            return "must be true or false";
        }

        *value = json_is_true(v) ? "true" : "false";
        return NULL;
    }

    if (!json_is_string(v)) {
        return "must be a string";
    }

    p = (const u_char *) json_string_value(v);
    len = json_string_length(v);
    last = p + len;

    /* strings with NUL are refused by the parser: p is NUL-ended */
    *value = (const char *) p;

    switch (f->type) {

    case NGX_HTTP_ELEARN_FIELD_LEVEL:
        if ((len == 8 && ngx_strncmp(p, "beginner", 8) == 0)
            || (len == 12 && ngx_strncmp(p, "intermediate", 12) == 0)
            || (len == 8 && ngx_strncmp(p, "advanced", 8) == 0))
        {
            return NULL;
        }

        return f->message;

    case NGX_HTTP_ELEARN_FIELD_LANGUAGE:
        if (ngx_http_elearn_catalog_language(p, len) != NGX_OK) {
            return f->message;
        }

        return NULL;

    case NGX_HTTP_ELEARN_FIELD_CATEGORY:
        for ( /* void */ ; p < last; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
                  || *p == '-'))
            {
                return f->message;
            }
        }

        break;

    case NGX_HTTP_ELEARN_FIELD_TITLE:
        for ( /* void */ ; p < last; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
                break;
            }
        }

        if (p == last) {
            return f->message;
        }

        break;

    default:
        break;
    }

    n = ngx_http_elearn_catalog_chars((const u_char *) *value, len);

    if (n < f->min || n > f->max) {
        return f->message;
    }

    return NULL;
}


/*
 * Validates a POST (create) or PATCH body into values[0..6] ($2..$8: a
 * default or NULL for a field left out).  Returns the number of field
 * errors written to errors (NGX_HTTP_ELEARN_CATALOG_ERRORS at most).
 */
static ngx_uint_t
ngx_http_elearn_catalog_validate(json_t *body, ngx_uint_t create,
    const char **values, ngx_http_elearn_field_error_t *errors)
{
    json_t                   *v;
    ngx_uint_t                i, j, n, given;
    const char               *key, *msg;
    ngx_http_elearn_field_t  *f;

    n = 0;
    given = 0;

    json_object_foreach(body, key, v) {
        for (j = 0; j < NGX_HTTP_ELEARN_CATALOG_NFIELDS; j++) {
            if (ngx_strcmp(key, ngx_http_elearn_catalog_fields[j].name) == 0)
            {
                break;
            }
        }

        if (j == NGX_HTTP_ELEARN_CATALOG_NFIELDS
            && n < NGX_HTTP_ELEARN_CATALOG_ERRORS)
        {
            errors[n].field = key;
            errors[n++].message = "is not a course field";
        }
    }

    for (i = 0; i < NGX_HTTP_ELEARN_CATALOG_NFIELDS; i++) {
        f = &ngx_http_elearn_catalog_fields[i];
        v = json_object_get(body, f->name);

        if (v == NULL) {
            values[i] = create ? f->dflt : NULL;

            if (create && f->dflt == NULL
                && n < NGX_HTTP_ELEARN_CATALOG_ERRORS)
            {
                errors[n].field = f->name;
                errors[n++].message = "is required";
            }

            continue;
        }

        given++;

        msg = ngx_http_elearn_catalog_check(f, v, &values[i]);

        if (msg && n < NGX_HTTP_ELEARN_CATALOG_ERRORS) {
            errors[n].field = f->name;
            errors[n++].message = msg;
        }
    }

    if (n == 0 && !create && given == 0) {
        errors[n].field = "body";
        errors[n++].message = "must change at least one course field";
    }

    return n;
}


/* --- after the write: the cache ------------------------------------------ */


static ngx_int_t
ngx_http_elearn_catalog_answer(ngx_http_request_t *r,
    ngx_http_elearn_catalog_t *cat)
{
    return ngx_http_elearn_send_json(r, cat->status, (char *) cat->doc,
                                     cat->doc_len);
}


static void
ngx_http_elearn_catalog_dropped(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_catalog_t *cat = data;

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "elearn catalog: \"%*s\" not dropped from the cache "
                      "(%s), readers may see the old course until it "
                      "expires", cat->key_len, cat->key,
                      rc != NGX_OK ? "redis unavailable" : reply->str);
    }

    ngx_http_elearn_finalize(r, ngx_http_elearn_catalog_answer(r, cat));
}


/*
 * Bumps the catalog version (fire and forget) and drops the course's
 * cached document, answering once Redis has done both: they go in order
 * on one connection, so the DEL's reply follows the INCR's.
 */
static ngx_int_t
ngx_http_elearn_catalog_invalidate(ngx_http_request_t *r,
    ngx_http_elearn_catalog_t *cat)
{
    ngx_int_t                     rc;
    const char                   *argv[2];
    size_t                        argvlen[2];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    if (emcf->redis) {
        argv[0] = "INCR";
        argvlen[0] = sizeof("INCR") - 1;
        argv[1] = "elearn:catalog:version";
        argvlen[1] = sizeof("elearn:catalog:version") - 1;

        (void) ngx_http_elearn_redis_command(NULL, NULL, NULL, 2, argv,
                                             argvlen);

        argv[0] = "DEL";
        argvlen[0] = sizeof("DEL") - 1;
        argv[1] = (char *) cat->key;
        argvlen[1] = cat->key_len;

        rc = ngx_http_elearn_redis_command(r, ngx_http_elearn_catalog_dropped,
                                           cat, 2, argv, argvlen);
    }

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "elearn catalog: redis unavailable, \"%*s\" not dropped "
                  "from the cache, readers may see the old course until it "
                  "expires", cat->key_len, cat->key);

    return ngx_http_elearn_catalog_answer(r, cat);
}


/* --- the write ------------------------------------------------------------ */


/* the written course's document: keep it, drop the cache, then answer */

static void
ngx_http_elearn_catalog_fetched(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_catalog_t *cat = data;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn catalog: course_get_json after a write "
                      "failed: %s", PQresultErrorMessage(res));
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_ERROR, "the database"));
        return;
    }

    /* the pool clears res when this returns: keep the document */

    cat->doc_len = PQgetlength(res, 0, 0);
    cat->doc = ngx_pnalloc(r->pool, cat->doc_len);
    if (cat->doc == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(cat->doc, PQgetvalue(res, 0, 0), cat->doc_len);

    rc = ngx_http_elearn_catalog_invalidate(r, cat);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r, rc);
    }
}



static void
ngx_http_elearn_catalog_written(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_catalog_t *cat = data;

    off_t                   id;
    char                   *state;
    u_char                 *p;
    const char             *values[2];
    ngx_http_elearn_ctx_t  *ctx;

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        if (state && ngx_strcmp(state, "23514") == 0) {
            /* a CHECK the validation above should have caught */
            ngx_http_elearn_finalize(r,
                ngx_http_elearn_problem(r, NGX_HTTP_ELEARN_UNPROCESSABLE,
                                        "validation",
                                        "the course has an invalid field"));
            return;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn catalog: %s failed: %s",
                      cat->status == NGX_HTTP_CREATED ? "course_insert"
                                                      : "course_update",
                      PQresultErrorMessage(res));
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_ERROR, "the database"));
        return;
    }

    if (PQntuples(res) == 0 || ctx == NULL) {
        /* the course went between the router's owner check and now */
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                    "course %L does not exist",
                                    ctx ? ctx->ids[0] : 0));
        return;
    }

    id = ngx_atoof((u_char *) PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0));
    cat->key_len = ngx_sprintf(cat->key, "course:%O", id) - cat->key;

    /* the answer is the document as GET builds it, read after the commit */

    p = ngx_sprintf(cat->id, "%O", id);
    *p = '\0';
    values[0] = (char *) cat->id;
    values[1] = "t";            /* unpublished too: the owner wrote it */

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_COURSE_GET_JSON, 2,
                                  values, ngx_http_elearn_catalog_fetched,
                                  cat);
    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
    }
}


/*
 * Validates the body and runs the write; always finalizes (the body is
 * the caller's to free).
 */
static void
ngx_http_elearn_catalog_write(ngx_http_request_t *r, json_t *body,
    ngx_uint_t create)
{
    u_char                         *p;
    ngx_int_t                       rc;
    ngx_uint_t                      n;
    const char                     *values[1 + NGX_HTTP_ELEARN_CATALOG_NFIELDS];
    ngx_http_elearn_ctx_t          *ctx;
    ngx_http_elearn_catalog_t      *cat;
    ngx_http_elearn_main_conf_t    *emcf;
    u_char                          id[NGX_INT64_LEN + 1];
    ngx_http_elearn_field_error_t   errors[NGX_HTTP_ELEARN_CATALOG_ERRORS];

    /* the body has been read: a client that goes away ends the request */
    r->read_event_handler = ngx_http_test_reading;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);

    if (ctx == NULL || ctx->user == NULL) {
        /* the router lets no course write through without a user */
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* the field names of errors point into body: answer before it goes */
    n = ngx_http_elearn_catalog_validate(body, create, &values[1], errors);
    if (n) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_fields(r, "the request has invalid fields",
                                           errors, n));
        return;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->pg == NULL) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                            "the database"));
        return;
    }

    cat = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_catalog_t));
    if (cat == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->data = cat;

    /* an admin who creates a course becomes its instructor */
    p = ngx_sprintf(id, "%L", create ? ctx->user->user_id : ctx->ids[0]);
    *p = '\0';
    values[0] = (char *) id;

    cat->status = create ? NGX_HTTP_CREATED : NGX_HTTP_OK;

    /* the values are copied: the body may go when this returns */
    rc = ngx_http_elearn_pg_query(r,
                                  create ? NGX_HTTP_ELEARN_SQL_COURSE_INSERT
                                         : NGX_HTTP_ELEARN_SQL_COURSE_UPDATE,
                                  1 + NGX_HTTP_ELEARN_CATALOG_NFIELDS, values,
                                  ngx_http_elearn_catalog_written, cat);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
    }
}


static void
ngx_http_elearn_catalog_create_body(ngx_http_request_t *r, json_t *body)
{
    ngx_http_elearn_catalog_write(r, body, 1);
    json_decref(body);
}


static void
ngx_http_elearn_catalog_update_body(ngx_http_request_t *r, json_t *body)
{
    ngx_http_elearn_catalog_write(r, body, 0);
    json_decref(body);
}


ngx_int_t
ngx_http_elearn_catalog_create(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_read_json(r, ngx_http_elearn_catalog_create_body);
}


ngx_int_t
ngx_http_elearn_catalog_update(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_read_json(r, ngx_http_elearn_catalog_update_body);
}
