
/*
 * elearn auth: the access phase of /api/v1 and the tokens it trusts.
 *
 * For every route that is not public the access phase takes the Bearer
 * token, verifies it (ngx_http_elearn_jwt.c, behind the worker's cache of
 * verified tokens), checks the worker's revoked set, and puts the user in the
 * request's context, where the endpoints and the variables
 * $elearn_user_id and $elearn_role find it.  Roles are checked here, once,
 * from the route table: an endpoint never repeats the check.  Any failure
 * is 401 with WWW-Authenticate: Bearer error="invalid_token".
 */


#ifndef _NGX_HTTP_ELEARN_AUTH_H_INCLUDED_
#define _NGX_HTTP_ELEARN_AUTH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


/* an access token and what it says, as login and refresh hand it out */
typedef struct {
    ngx_str_t    token;
    time_t       expires_in;      /* seconds */
    time_t       exp;             /* absolute */
} ngx_http_elearn_access_t;


/* The access phase handler (registered in postconfiguration). */
ngx_int_t ngx_http_elearn_auth_access(ngx_http_request_t *r);

/*
 * Verifies an access token (the verified-token cache first) and fills
 * user from its claims.  NGX_OK, or NGX_DECLINED with *reason (for the
 * log, never the token).  Revocation is the caller's to check.
 */
ngx_int_t ngx_http_elearn_auth_token(ngx_http_request_t *r, u_char *token,
    size_t len, ngx_http_elearn_user_t *user, const char **reason);

/*
 * Mints an access token for a login session: claims iss, sub, role, sid,
 * a fresh random jti, iat, exp (now + elearn_jwt_ttl).  The token lives
 * in r->pool.  NGX_OK or NGX_ERROR (no signing key: a verify-only node).
 */
ngx_int_t ngx_http_elearn_auth_issue(ngx_http_request_t *r, int64_t user_id,
    ngx_str_t *role, ngx_str_t *sid, ngx_http_elearn_access_t *access);

/* role name to NGX_HTTP_ELEARN_ROLE_* (0 if unknown) and back */
ngx_uint_t ngx_http_elearn_role_parse(u_char *name, size_t len);
const char *ngx_http_elearn_role_name(ngx_uint_t role);

/* $elearn_user_id and $elearn_role: the module's preconfiguration adds them */
extern ngx_http_variable_t  ngx_http_elearn_auth_vars[];

/* Loads the configured key (init_main_conf): NGX_CONF_OK or an error. */
char *ngx_http_elearn_auth_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf);


#endif /* _NGX_HTTP_ELEARN_AUTH_H_INCLUDED_ */
