
/*
 * elearn problem: RFC 9457 problem+json responses.
 *
 * Every error the module answers goes through here, so the body, the
 * content type and the Retry-After of 429/503 are the same everywhere.
 * It must never fail to answer: when memory runs out it falls back to the
 * bare status code.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"


#define NGX_HTTP_ELEARN_DETAIL_MAX  512


typedef struct {
    ngx_uint_t   status;
    const char  *title;
} ngx_http_elearn_status_title_t;


static ngx_http_elearn_status_title_t  ngx_http_elearn_titles[] = {
    { 400, "Bad Request" },
    { 401, "Unauthorized" },
    { 403, "Forbidden" },
    { 404, "Not Found" },
    { 405, "Method Not Allowed" },
    { 408, "Request Timeout" },
    { 409, "Conflict" },
    { 410, "Gone" },
    { 413, "Content Too Large" },
    { 415, "Unsupported Media Type" },
    { 422, "Unprocessable Content" },
    { 426, "Upgrade Required" },
    { 429, "Too Many Requests" },
    { 500, "Internal Server Error" },
    { 502, "Bad Gateway" },
    { 503, "Service Unavailable" },
    { 504, "Gateway Timeout" },
    { 0, NULL }
};


static ngx_str_t  ngx_http_elearn_problem_type =
    ngx_string("application/problem+json");


static const char *
ngx_http_elearn_title(ngx_uint_t status)
{
    ngx_http_elearn_status_title_t  *t;

    for (t = ngx_http_elearn_titles; t->title; t++) {
        if (t->status == status) {
            return t->title;
        }
    }

    return "Error";
}


u_char *
ngx_http_elearn_json_escape(u_char *buf, const u_char *s, size_t len)
{
    u_char         c;
    static u_char  hex[] = "0123456789abcdef";

    while (len--) {
        c = *s++;

        switch (c) {
        case '"':
        case '\\':
            *buf++ = '\\';
            *buf++ = c;
            break;
        case '\n':
            *buf++ = '\\';
            *buf++ = 'n';
            break;
        case '\r':
            *buf++ = '\\';
            *buf++ = 'r';
            break;
        case '\t':
            *buf++ = '\\';
            *buf++ = 't';
            break;
        default:
            if (c < 0x20) {
                *buf++ = '\\';
                *buf++ = 'u';
                *buf++ = '0';
                *buf++ = '0';
                *buf++ = hex[c >> 4];
                *buf++ = hex[c & 0xf];

            } else {
                *buf++ = c;
            }
        }
    }

    return buf;
}


static ngx_int_t
ngx_http_elearn_problem_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *slug, u_char *detail, size_t detail_len,
    ngx_http_elearn_field_error_t *errors, ngx_uint_t nerrors,
    time_t retry_after)
{
    size_t                       len;
    u_char                      *p;
    ngx_buf_t                   *b;
    ngx_uint_t                   i;
    ngx_chain_t                  out;
    ngx_table_elt_t             *h;
    const char                  *title;
    ngx_http_elearn_loc_conf_t  *elcf;

    title = ngx_http_elearn_title(status);

    len = sizeof("{\"type\":\"/problems/\",\"title\":\"\",\"status\":,"
                 "\"detail\":\"\"}") - 1
          + ngx_strlen(slug) + ngx_strlen(title) + NGX_INT_T_LEN
          + 6 * detail_len;

    if (nerrors) {
        len += sizeof(",\"errors\":[]") - 1;

        for (i = 0; i < nerrors; i++) {
            len += sizeof("{\"field\":\"\",\"message\":\"\"},") - 1
                   + 6 * ngx_strlen(errors[i].field)
                   + 6 * ngx_strlen(errors[i].message);
        }
    }

    /* a problem is answered even when the request body was not read */
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return status;
    }

    p = ngx_sprintf(b->last, "{\"type\":\"/problems/%s\",\"title\":\"%s\","
                    "\"status\":%ui", slug, title, status);

    if (detail_len) {
        p = ngx_cpymem(p, ",\"detail\":\"", sizeof(",\"detail\":\"") - 1);
        p = ngx_http_elearn_json_escape(p, detail, detail_len);
        *p++ = '"';
    }

    if (nerrors) {
        p = ngx_cpymem(p, ",\"errors\":[", sizeof(",\"errors\":[") - 1);

        for (i = 0; i < nerrors; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_cpymem(p, "{\"field\":\"", sizeof("{\"field\":\"") - 1);
            p = ngx_http_elearn_json_escape(p, (u_char *) errors[i].field,
                                            ngx_strlen(errors[i].field));
            p = ngx_cpymem(p, "\",\"message\":\"",
                           sizeof("\",\"message\":\"") - 1);
            p = ngx_http_elearn_json_escape(p, (u_char *) errors[i].message,
                                            ngx_strlen(errors[i].message));
            *p++ = '"';
            *p++ = '}';
        }

        *p++ = ']';
    }

    *p++ = '}';
    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    if (retry_after < 0
        && (status == NGX_HTTP_TOO_MANY_REQUESTS
            || status == NGX_HTTP_SERVICE_UNAVAILABLE))
    {
        elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);
        retry_after = elcf->retry_after;
    }

    if (retry_after >= 0) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return status;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (h->value.data == NULL) {
            return status;
        }

        h->value.len = ngx_sprintf(h->value.data, "%T", retry_after)
                       - h->value.data;
    }

    r->headers_out.status = status;
    r->headers_out.content_type = ngx_http_elearn_problem_type;
    r->headers_out.content_type_len = ngx_http_elearn_problem_type.len;
    r->headers_out.content_length_n = b->last - b->pos;

    ngx_http_clear_etag(r);
    ngx_http_clear_last_modified(r);

    if (ngx_http_send_header(r) == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (r->header_only) {
        return NGX_OK;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_elearn_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *slug, const char *fmt, ...)
{
    u_char   *last;
    va_list   args;
    u_char    detail[NGX_HTTP_ELEARN_DETAIL_MAX];

    last = detail;

    if (fmt) {
        va_start(args, fmt);
        last = ngx_vslprintf(detail, detail + sizeof(detail), fmt, args);
        va_end(args);
    }

    return ngx_http_elearn_problem_send(r, status, slug, detail,
                                        last - detail, NULL, 0, -1);
}


ngx_int_t
ngx_http_elearn_problem_retry(ngx_http_request_t *r, ngx_uint_t status,
    const char *slug, time_t retry_after, const char *fmt, ...)
{
    u_char   *last;
    va_list   args;
    u_char    detail[NGX_HTTP_ELEARN_DETAIL_MAX];

    last = detail;

    if (fmt) {
        va_start(args, fmt);
        last = ngx_vslprintf(detail, detail + sizeof(detail), fmt, args);
        va_end(args);
    }

    return ngx_http_elearn_problem_send(r, status, slug, detail,
                                        last - detail, NULL, 0,
                                        ngx_max(retry_after, 1));
}


ngx_int_t
ngx_http_elearn_problem_fields(ngx_http_request_t *r, const char *detail,
    ngx_http_elearn_field_error_t *errors, ngx_uint_t nerrors)
{
    return ngx_http_elearn_problem_send(r, NGX_HTTP_ELEARN_UNPROCESSABLE,
                                        "validation", (u_char *) detail,
                                        ngx_strlen(detail), errors, nerrors,
                                        -1);
}


ngx_int_t
ngx_http_elearn_problem_backend(ngx_http_request_t *r, ngx_int_t rc,
    const char *dependency)
{
    switch (rc) {

    case NGX_HTTP_GATEWAY_TIME_OUT:
        return ngx_http_elearn_problem(r, NGX_HTTP_GATEWAY_TIME_OUT,
                                      "dependency-timeout",
                                      "%s did not answer in time",
                                      dependency);

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "dependency-unavailable",
                                      "%s is unavailable or at capacity",
                                      dependency);

    default:
        return ngx_http_elearn_problem(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal", "%s failed", dependency);
    }
}


ngx_int_t
ngx_http_elearn_problem_method(ngx_http_request_t *r, const char *allow)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_http_elearn_problem(r, NGX_HTTP_NOT_ALLOWED,
                                   "method-not-allowed",
                                   "this resource allows %s", allow);
}
