
/*
 * elearn search: the catalog's full-text search and title typeahead
 * (GET /api/v1/courses/search and /suggest), with offset and signed
 * keyset-cursor pagination.  See ngx_http_elearn_search.c.
 */


#ifndef _NGX_HTTP_ELEARN_SEARCH_H_INCLUDED_
#define _NGX_HTTP_ELEARN_SEARCH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


/*
 * elearn_search_local_cache: how many first pages and suggestions each
 * worker keeps in its own memory (docs/caching.md), and the largest
 * answer it keeps; a worker holds at most entries x LOCAL_MAX bytes.
 */
#define NGX_HTTP_ELEARN_SEARCH_LOCAL_DEFAULT  128
#define NGX_HTTP_ELEARN_SEARCH_LOCAL_LIMIT    65536    /* entries */
#define NGX_HTTP_ELEARN_SEARCH_LOCAL_MAX      65536    /* bytes */

/* the shortest cursor signing key elearn_cursor_key_file accepts */
#define NGX_HTTP_ELEARN_CURSOR_KEY_MIN  32


/* a query parameter, as ngx_http_elearn_search_parse_args() finds it */
typedef struct {
    ngx_str_t                      name;
    ngx_str_t                      value;     /* decoded */
    unsigned                       present:1;
} ngx_http_elearn_search_arg_t;


/*
 * Splits r->args into the nargs parameters named in args[].name (args
 * otherwise zeroed by the caller), decoded ('+' is a space).  Unknown
 * ones are ignored.
 * NGX_OK; NGX_DECLINED with *bad naming the parameter that is malformed
 * (repeated, or not UTF-8 once decoded): a 400; NGX_ERROR (no
 * memory).
 */
ngx_int_t ngx_http_elearn_search_parse_args(ngx_http_request_t *r,
    ngx_http_elearn_search_arg_t *args, ngx_uint_t nargs, const char **bad);

/*
 * A positive integer parameter.  NGX_OK with *n; NGX_DECLINED when it is
 * not a number at all (400); NGX_ABORT when it is a number below 1 or
 * absurdly large (422).
 */
ngx_int_t ngx_http_elearn_search_number(ngx_str_t *s, ngx_uint_t *n);

/*
 * Signed cursors, shared by every list with keyset pagination.  A cursor
 * is base64url(payload || HMAC-SHA256/128) under elearn_cursor_key_file,
 * the MAC covering scope and payload.  scope is what the list depends on
 * (query, filters, whose list it is): a cursor only opens under the scope
 * it was made with, so each list must start its scope with a byte no
 * other list uses (search: 'r', 'n', 'p'; enrollments: 'm', 'c').  The
 * payload is opaque here; its reader still validates it.
 *
 * encode returns the cursor (pool memory) or NULL (no memory).  decode
 * returns NGX_OK with *payload (pool memory), NGX_DECLINED for any
 * malformed, tampered or foreign cursor (a 400), NGX_ERROR.
 */
ngx_str_t *ngx_http_elearn_cursor_encode(ngx_http_request_t *r,
    ngx_str_t *scope, ngx_str_t *payload);
ngx_int_t ngx_http_elearn_cursor_decode(ngx_http_request_t *r,
    ngx_str_t *scope, ngx_str_t *cursor, ngx_str_t *payload);


/*
 * Reads elearn_cursor_key_file (at configuration time, as root) into
 * emcf->cursor_key.  NGX_CONF_OK when the directive is absent (the
 * postconfiguration check refuses elearn_api without a key).
 */
char *ngx_http_elearn_search_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf);

/* elearn_search_local_cache entries | off */
char *ngx_http_elearn_search_set_local_cache(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

/* GET /api/v1/courses/search: contract section 3. */
ngx_int_t ngx_http_elearn_search(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* GET /api/v1/courses/suggest: up to 8 {courseId, title}. */
ngx_int_t ngx_http_elearn_suggest(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);


#endif /* _NGX_HTTP_ELEARN_SEARCH_H_INCLUDED_ */
