
/*
 * elearn password: Argon2id (libargon2) at OWASP's setting, m=19 MiB,
 * t=2, p=1, with a 16-byte random salt, in the standard PHC string form.
 *
 * Hashing costs ~25 ms of CPU and 19 MiB, so it runs on nginx's thread
 * pool (elearn_thread_pool), never on the event loop.  A task's memory is
 * its own (not the request's pool), so a request that goes away while
 * its password is hashed leaves nothing dangling: the completion finds
 * the request gone, wipes the password and frees the task.
 */


#ifndef _NGX_HTTP_ELEARN_PASSWORD_H_INCLUDED_
#define _NGX_HTTP_ELEARN_PASSWORD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


#define NGX_HTTP_ELEARN_PASSWORD_MIN   8
#define NGX_HTTP_ELEARN_PASSWORD_MAX   1024        /* characters */


/*
 * Called on the event loop when the task is done, only while r is alive.
 * rc is NGX_OK, NGX_HTTP_SERVICE_UNAVAILABLE (the pool's queue is full) or
 * NGX_ERROR.  For a hash, phc is the PHC string (valid during the call);
 * for a verification, match is 1 when the password matches.
 */
typedef void (*ngx_http_elearn_password_handler_pt)(ngx_http_request_t *r,
    ngx_int_t rc, const char *phc, ngx_uint_t match, void *data);


/*
 * Checks the length rule in characters (UTF-8 code points) without
 * hashing: NGX_OK or NGX_DECLINED.
 */
ngx_int_t ngx_http_elearn_password_check(const u_char *pw, size_t len);

/*
 * Hashes pw (copied, wiped after use) on the thread pool.  Returns
 * NGX_AGAIN when posted (handler will be called),
 * NGX_HTTP_SERVICE_UNAVAILABLE when the pool's queue is full, or
 * NGX_ERROR; the handler is never called from inside this function.
 */
ngx_int_t ngx_http_elearn_password_hash(ngx_http_request_t *r,
    const u_char *pw, size_t len, ngx_http_elearn_password_handler_pt handler,
    void *data);

/*
 * Verifies pw against phc on the thread pool.  phc NULL (an unknown
 * account) verifies against a fixed dummy hash of the same parameters, so
 * it costs the same time and never matches.  Returns as above.
 */
ngx_int_t ngx_http_elearn_password_verify(ngx_http_request_t *r,
    const char *phc, const u_char *pw, size_t len,
    ngx_http_elearn_password_handler_pt handler, void *data);


#endif /* _NGX_HTTP_ELEARN_PASSWORD_H_INCLUDED_ */
