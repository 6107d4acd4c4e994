
/*
 * elearn body: reads and parses JSON request bodies.
 *
 * The location's elearn_body_max_size is checked against Content-Length
 * before anything is read and against the bytes actually read for chunked
 * bodies.  The example configuration sets client_body_buffer_size to at
 * least that limit, so bodies stay in memory and are parsed without disk
 * reads.  A well-formed JSON object is all an endpoint ever sees.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_body.h"


typedef struct {
    ngx_http_elearn_body_handler_pt  handler;
} ngx_http_elearn_body_t;


static ngx_int_t
ngx_http_elearn_is_json(ngx_http_request_t *r)
{
    u_char     *p, *last;
    ngx_str_t   type;

    static u_char  json[] = "application/json";

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    type = r->headers_in.content_type->value;
    p = type.data;
    last = p + type.len;

    if (type.len < sizeof(json) - 1
        || ngx_strncasecmp(p, json, sizeof(json) - 1) != 0)
    {
        return 0;
    }

    p += sizeof(json) - 1;

    /* only parameters may follow: "application/json; charset=utf-8" */
    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    return p == last || *p == ';';
}


static void
ngx_http_elearn_body_read(ngx_http_request_t *r)
{
    off_t                        len;
    u_char                      *data, *p;
    json_t                      *root;
    ssize_t                      n;
    ngx_buf_t                   *b;
    ngx_chain_t                 *cl;
    json_error_t                 err;
    ngx_http_elearn_ctx_t       *ctx;
    ngx_http_elearn_body_t      *body;
    ngx_http_elearn_loc_conf_t  *elcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);
    body = ctx->data;
    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    len = 0;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            len += ngx_buf_size(cl->buf);
        }
    }

    if (len > (off_t) elcf->body_max_size) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "body-too-large",
                                    "the body is larger than %uz bytes",
                                    elcf->body_max_size));
        return;
    }

    if (len == 0) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST, "malformed-json",
                                    "the request needs a JSON body"));
        return;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        data = cl->buf->pos;

    } else {
        data = ngx_pnalloc(r->pool, len);
        if (data == NULL) {
            ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        p = data;

        for ( /* void */ ; cl; cl = cl->next) {
            b = cl->buf;

            if (b->in_file) {
                /* only when client_body_buffer_size < elearn_body_max_size */
                n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                                  b->file_pos);
                if (n != b->file_last - b->file_pos) {
                    ngx_http_elearn_finalize(r,
                                             NGX_HTTP_INTERNAL_SERVER_ERROR);
                    return;
                }

                p += n;
                continue;
            }

            /* an empty buffer may have no memory at all (pos NULL) */
            if (b->last != b->pos) {
                p = ngx_cpymem(p, b->pos, b->last - b->pos);
            }
        }
    }

    root = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &err);

    if (root == NULL) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST, "malformed-json",
                                    "invalid JSON at line %d, column %d "
                                    "(byte %d): %s",
                                    err.line, err.column, err.position,
                                    err.text));
        return;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST, "malformed-json",
                                    "the body must be a JSON object"));
        return;
    }

    body->handler(r, root);
}


ngx_int_t
ngx_http_elearn_read_json(ngx_http_request_t *r,
    ngx_http_elearn_body_handler_pt handler)
{
    ngx_int_t                    rc;
    ngx_http_elearn_ctx_t       *ctx;
    ngx_http_elearn_body_t      *body;
    ngx_http_elearn_loc_conf_t  *elcf;

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    if (!ngx_http_elearn_is_json(r)) {
        return ngx_http_elearn_problem(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                       "unsupported-media-type",
                                       "the body must be application/json");
    }

    if (r->headers_in.content_length_n > (off_t) elcf->body_max_size) {
        return ngx_http_elearn_problem(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "body-too-large",
                                       "the body is larger than %uz bytes",
                                       elcf->body_max_size);
    }

    ctx = ngx_http_elearn_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body = ngx_palloc(r->pool, sizeof(ngx_http_elearn_body_t));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body->handler = handler;
    ctx->data = body;

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_elearn_body_read);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_elearn_json_echo_body(ngx_http_request_t *r, json_t *body)
{
    char       *json;
    size_t      len;
    ngx_int_t   rc;

    json = json_dumps(body, JSON_COMPACT|JSON_SORT_KEYS);
    json_decref(body);

    if (json == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    len = ngx_strlen(json);
    rc = ngx_http_elearn_send_json(r, NGX_HTTP_OK, json, len);
    free(json);

    ngx_http_elearn_finalize(r, rc);
}


/*
 * A diagnostic endpoint: parses a POSTed JSON body under the location's
 * limits and answers it back, keys sorted.  The tests check body handling
 * through it; operators can check a proxy chain's body limits with it.
 */
ngx_int_t
ngx_http_elearn_json_echo(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    if (!(r->method & NGX_HTTP_POST)) {
        return ngx_http_elearn_problem_method(r, "POST");
    }

    return ngx_http_elearn_read_json(r, ngx_http_elearn_json_echo_body);
}
