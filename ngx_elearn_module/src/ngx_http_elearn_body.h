
/*
 * elearn body: reads a JSON request body with the location's size limit
 * and parses it with jansson.  413 past the limit (from Content-Length
 * before reading, or while reading a chunked body), 415 for a content type
 * other than application/json, 400 naming the line, column and byte
 * position of a syntax error.
 */


#ifndef _NGX_HTTP_ELEARN_BODY_H_INCLUDED_
#define _NGX_HTTP_ELEARN_BODY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_elearn_module.h"


/*
 * Called with the parsed body (an object, owned by the caller: it must
 * json_decref it).  The handler finalizes the request.
 */
typedef void (*ngx_http_elearn_body_handler_pt)(ngx_http_request_t *r,
    json_t *body);

/*
 * Starts reading r's body; returns what a content handler returns
 * (NGX_DONE while reading, or a finalized error).  Errors are answered
 * here as problems, so the handler sees only a well-formed JSON object.
 */
ngx_int_t ngx_http_elearn_read_json(ngx_http_request_t *r,
    ngx_http_elearn_body_handler_pt handler);


#endif /* _NGX_HTTP_ELEARN_BODY_H_INCLUDED_ */
