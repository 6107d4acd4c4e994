
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


/* the shortest cursor signing key elearn_cursor_key_file accepts */
#define NGX_HTTP_ELEARN_CURSOR_KEY_MIN  32


/*
 * Reads elearn_cursor_key_file (at configuration time, as root) into
 * emcf->cursor_key.  NGX_CONF_OK when the directive is absent (the
 * postconfiguration check refuses elearn_api without a key).
 */
char *ngx_http_elearn_search_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf);

/* GET /api/v1/courses/search: contract section 3. */
ngx_int_t ngx_http_elearn_search(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);

/* GET /api/v1/courses/suggest: up to 8 {courseId, title}. */
ngx_int_t ngx_http_elearn_suggest(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx);


#endif /* _NGX_HTTP_ELEARN_SEARCH_H_INCLUDED_ */
