
/*
 * elearn problem: RFC 9457 problem+json responses, the one way every part
 * of the module reports an error to a client.
 */


#ifndef _NGX_HTTP_ELEARN_PROBLEM_H_INCLUDED_
#define _NGX_HTTP_ELEARN_PROBLEM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


typedef struct {
    const char  *field;
    const char  *message;
} ngx_http_elearn_field_error_t;


/*
 * Sends a problem response: type "/problems/<slug>", the standard title of
 * the status, and detail (printf-style, may be NULL).  429 and 503 carry
 * Retry-After (the location's elearn_retry_after).  Returns the output
 * filter's result, for ngx_http_finalize_request().  Never fails to
 * answer: if building the body fails it falls back to the bare status.
 */
ngx_int_t ngx_http_elearn_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *slug, const char *fmt, ...);

/*
 * The same with Retry-After: retry_after seconds (at least 1) instead of
 * the location's elearn_retry_after, whatever the status: for a wait the
 * caller knows, such as the login backoff's 429.
 */
ngx_int_t ngx_http_elearn_problem_retry(ngx_http_request_t *r,
    ngx_uint_t status, const char *slug, time_t retry_after,
    const char *fmt, ...);

/* The same, for 422 with an "errors" array of nerrors field errors. */
ngx_int_t ngx_http_elearn_problem_fields(ngx_http_request_t *r,
    const char *detail, ngx_http_elearn_field_error_t *errors,
    ngx_uint_t nerrors);

/*
 * Answers a backend's failure rc (NGX_HTTP_SERVICE_UNAVAILABLE,
 * NGX_HTTP_GATEWAY_TIME_OUT, NGX_ERROR...) naming the dependency; returns
 * like ngx_http_elearn_problem().
 */
ngx_int_t ngx_http_elearn_problem_backend(ngx_http_request_t *r, ngx_int_t rc,
    const char *dependency);

/* The 405 answer, with its Allow header. */
ngx_int_t ngx_http_elearn_problem_method(ngx_http_request_t *r,
    const char *allow);

/*
 * Writes one JSON-escaped string (without quotes) into buf; returns the
 * end.  buf must hold 6 * len bytes.
 */
u_char *ngx_http_elearn_json_escape(u_char *buf, const u_char *s, size_t len);


#endif /* _NGX_HTTP_ELEARN_PROBLEM_H_INCLUDED_ */
