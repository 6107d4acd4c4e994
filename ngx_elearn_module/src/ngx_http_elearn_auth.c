
/*
 * elearn auth: the access phase of /api/v1, the tokens it trusts and the
 * variables $elearn_user_id and $elearn_role.
 *
 * A token is verified at most once per request, when something first
 * asks for the user: the access phase, or a variable evaluated earlier
 * (limit_req keyed by $elearn_user_id runs in the preaccess phase).  The
 * outcome stays in the request's context.  Role checks come from the
 * route table, here, once: endpoints never repeat them.
 *
 * Never logs a token: failures log the reason only, at info level.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/rand.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_jwt.h"
#include "ngx_http_elearn_auth.h"
#include "ngx_http_elearn_session.h"


#define NGX_HTTP_ELEARN_ISS_MAX  256


static ngx_int_t ngx_http_elearn_user_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_elearn_role_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


ngx_http_variable_t  ngx_http_elearn_auth_vars[] = {

    { ngx_string("elearn_user_id"), NULL, ngx_http_elearn_user_id_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("elearn_role"), NULL, ngx_http_elearn_role_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_elearn_www_authenticate =
    ngx_string("Bearer error=\"invalid_token\"");


ngx_uint_t
ngx_http_elearn_role_parse(u_char *name, size_t len)
{
    if (len == 7 && ngx_strncmp(name, "student", 7) == 0) {
        return NGX_HTTP_ELEARN_ROLE_STUDENT;
    }

    if (len == 10 && ngx_strncmp(name, "instructor", 10) == 0) {
        return NGX_HTTP_ELEARN_ROLE_INSTRUCTOR;
    }

    if (len == 5 && ngx_strncmp(name, "admin", 5) == 0) {
        return NGX_HTTP_ELEARN_ROLE_ADMIN;
    }

    return 0;
}


const char *
ngx_http_elearn_role_name(ngx_uint_t role)
{
    switch (role) {
    case NGX_HTTP_ELEARN_ROLE_STUDENT:
        return "student";
    case NGX_HTTP_ELEARN_ROLE_INSTRUCTOR:
        return "instructor";
    case NGX_HTTP_ELEARN_ROLE_ADMIN:
        return "admin";
    default:
        return "";
    }
}


/*
 * Finds and verifies the Bearer token once per request; the outcome
 * (user or reason) stays in ctx.
 */
static ngx_http_elearn_user_t *
ngx_http_elearn_auth_user(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    u_char                  *token;
    size_t                   len;
    ngx_table_elt_t         *h;
    ngx_http_elearn_user_t  *user;

    if (ctx->auth_done) {
        return ctx->user;
    }

    ctx->auth_done = 1;

    h = r->headers_in.authorization;

    if (h == NULL) {
        ctx->auth_error = "no bearer token";
        return NULL;
    }

    token = h->value.data;
    len = h->value.len;

    if (len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(token, (u_char *) "Bearer ", 7) != 0)
    {
        ctx->auth_error = "not a bearer token";
        return NULL;
    }

    token += 7;
    len -= 7;

    while (len && *token == ' ') {
        token++;
        len--;
    }

    user = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_user_t));
    if (user == NULL) {
        ctx->auth_error = "out of memory";
        return NULL;
    }

    if (ngx_http_elearn_auth_token(r, token, len, user, &ctx->auth_error)
        != NGX_OK)
    {
        return NULL;
    }

    ctx->user = user;

    return user;
}


ngx_int_t
ngx_http_elearn_auth_token(ngx_http_request_t *r, u_char *token, size_t len,
    ngx_http_elearn_user_t *user, const char **reason)
{
    ngx_uint_t                     role, cached;
    ngx_http_elearn_jwt_claims_t   claims;
    ngx_http_elearn_main_conf_t   *emcf;
    char                           iss[NGX_HTTP_ELEARN_ISS_MAX];

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (len == 0 || len > NGX_HTTP_ELEARN_JWT_MAX_LEN) {
        *reason = len ? "token too long" : "empty token";
        return NGX_DECLINED;
    }

    cached = 0;

    if (emcf->jwt_cache
        && ngx_http_elearn_jwt_cache_get(emcf->jwt_cache, token, len,
                                         ngx_time(), &claims))
    {
        cached = 1;

    } else {
        /* the issuer as a C string for the verifier; checked in length */
        ngx_memcpy(iss, emcf->jwt_issuer.data, emcf->jwt_issuer.len);
        iss[emcf->jwt_issuer.len] = '\0';

        if (ngx_http_elearn_jwt_verify(emcf->jwt_key, iss, ngx_time(),
                                       emcf->jwt_leeway, token, len, &claims,
                                       reason)
            != 0)
        {
            return NGX_DECLINED;
        }
    }

    role = ngx_http_elearn_role_parse((u_char *) claims.role,
                                      ngx_strlen(claims.role));
    if (role == 0) {
        *reason = "unknown role";
        return NGX_DECLINED;
    }

    user->user_id = claims.sub;
    user->role = role;
    user->exp = claims.exp;
    (void) ngx_cpystrn(user->sid, (u_char *) claims.sid, sizeof(user->sid));
    (void) ngx_cpystrn(user->jti, (u_char *) claims.jti, sizeof(user->jti));

    if (emcf->jwt_cache && !cached) {
        ngx_http_elearn_jwt_cache_put(emcf->jwt_cache, token, len, &claims);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_auth_reject(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    ngx_table_elt_t  *h;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "elearn auth: rejected: %s", ctx->auth_error);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");
    h->value = ngx_http_elearn_www_authenticate;

    r->headers_out.www_authenticate = h;

    return ngx_http_elearn_problem(r, NGX_HTTP_UNAUTHORIZED, "invalid-token",
                                   "%s", ctx->auth_error);
}


/*
 * An access handler that has answered must stop the phases: a plain
 * NGX_OK would let them go on to the content handler.
 */
static ngx_int_t
ngx_http_elearn_auth_answered(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}


ngx_int_t
ngx_http_elearn_auth_access(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_str_t                     sid, jti;
    ngx_uint_t                    allowed;
    ngx_http_elearn_ctx_t        *ctx;
    ngx_http_elearn_user_t       *user;
    ngx_http_elearn_route_t      *route;
    ngx_http_elearn_loc_conf_t   *elcf;
    ngx_http_elearn_main_conf_t  *emcf;

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_elearn_module);

    if (elcf->serve != NGX_HTTP_ELEARN_LOC_API || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_elearn_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    route = ngx_http_elearn_route_find(r, ctx, &allowed);

    /* unknown paths and methods are the content handler's 404 and 405 */
    if (route == NULL || route->roles == 0) {
        return NGX_DECLINED;
    }

    user = ngx_http_elearn_auth_user(r, ctx);
    if (user == NULL) {
        return ngx_http_elearn_auth_answered(r,
                                         ngx_http_elearn_auth_reject(r, ctx));
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->revocations) {
        sid.data = user->sid;
        sid.len = ngx_strlen(user->sid);
        jti.data = user->jti;
        jti.len = ngx_strlen(user->jti);

        rc = ngx_http_elearn_revocations_check(emcf->revocations, &sid,
                                               &jti);

        if (rc == NGX_DECLINED) {
            ctx->user = NULL;
            ctx->auth_error = "token revoked";
            return ngx_http_elearn_auth_answered(r,
                                         ngx_http_elearn_auth_reject(r, ctx));
        }

        if (rc != NGX_OK) {
            return ngx_http_elearn_auth_answered(r,
                       ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "dependency-unavailable",
                                               "revocations cannot be "
                                               "checked"));
        }
    }

    if (!(route->roles & user->role)) {
        return ngx_http_elearn_auth_answered(r,
                   ngx_http_elearn_problem(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                           "this needs another role"));
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_elearn_auth_issue(ngx_http_request_t *r, int64_t user_id,
    ngx_str_t *role, ngx_str_t *sid, ngx_http_elearn_access_t *access)
{
    u_char                        *p;
    ssize_t                        n;
    ngx_uint_t                     i;
    ngx_http_elearn_jwt_claims_t   claims;
    ngx_http_elearn_main_conf_t   *emcf;
    u_char                         rnd[16];
    char                           iss[NGX_HTTP_ELEARN_ISS_MAX];

    static u_char  hex[] = "0123456789abcdef";

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (!ngx_http_elearn_jwt_key_can_sign(emcf->jwt_key)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn auth: this node has no signing key");
        return NGX_ERROR;
    }

    if (role->len >= sizeof(claims.role) || sid->len >= sizeof(claims.sid))
    {
        return NGX_ERROR;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    ngx_memzero(&claims, sizeof(claims));

    claims.sub = user_id;
    ngx_memcpy(claims.role, role->data, role->len);
    ngx_memcpy(claims.sid, sid->data, sid->len);

    for (i = 0, p = (u_char *) claims.jti; i < sizeof(rnd); i++) {
        *p++ = hex[rnd[i] >> 4];
        *p++ = hex[rnd[i] & 0xf];
    }

    claims.iat = ngx_time();
    claims.exp = claims.iat + emcf->jwt_ttl;

    ngx_memcpy(iss, emcf->jwt_issuer.data, emcf->jwt_issuer.len);
    iss[emcf->jwt_issuer.len] = '\0';

    access->token.data = ngx_pnalloc(r->pool, NGX_HTTP_ELEARN_JWT_MAX_LEN);
    if (access->token.data == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_elearn_jwt_sign(emcf->jwt_key, iss, &claims,
                                 (char *) access->token.data,
                                 NGX_HTTP_ELEARN_JWT_MAX_LEN);
    if (n < 0) {
        return NGX_ERROR;
    }

    access->token.len = n;
    access->expires_in = emcf->jwt_ttl;
    access->exp = claims.exp;

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_user_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                  *p;
    ngx_http_elearn_ctx_t   *ctx;
    ngx_http_elearn_user_t  *user;

    ctx = ngx_http_elearn_get_ctx(r);
    user = ctx ? ngx_http_elearn_auth_user(r, ctx) : NULL;

    if (user == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%L", user->user_id) - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_role_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    const char              *name;
    ngx_http_elearn_ctx_t   *ctx;
    ngx_http_elearn_user_t  *user;

    ctx = ngx_http_elearn_get_ctx(r);
    user = ctx ? ngx_http_elearn_auth_user(r, ctx) : NULL;

    if (user == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    name = ngx_http_elearn_role_name(user->role);

    v->len = ngx_strlen(name);
    v->data = (u_char *) name;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static void
ngx_http_elearn_auth_key_cleanup(void *data)
{
    ngx_http_elearn_jwt_key_free(data);
}


static char *
ngx_http_elearn_auth_path(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_str_t  path;

    if (name->len == 0) {
        return NULL;
    }

    path = *name;

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NULL;
    }

    /* ngx_conf_full_name() leaves path NUL-terminated */
    return (char *) path.data;
}


char *
ngx_http_elearn_auth_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf)
{
    char                *key, *pub;
    ngx_pool_cleanup_t  *cln;
    char                 err[256];

    if (emcf->jwt_issuer.len >= NGX_HTTP_ELEARN_ISS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_jwt_issuer\" is too long");
        return NGX_CONF_ERROR;
    }

    emcf->thread_pool = ngx_thread_pool_add(cf, &emcf->thread_pool_name);
    if (emcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    if (emcf->jwt_key_file.len == 0 && emcf->jwt_public_key_file.len == 0) {
        return NGX_CONF_OK;
    }

    if (emcf->jwt_alg == NGX_HTTP_ELEARN_JWT_HS256
        && emcf->jwt_public_key_file.len)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_jwt_public_key_file\" needs "
                           "\"elearn_jwt_alg\" RS256 or ES256");
        return NGX_CONF_ERROR;
    }

    key = ngx_http_elearn_auth_path(cf, &emcf->jwt_key_file);
    pub = ngx_http_elearn_auth_path(cf, &emcf->jwt_public_key_file);

    if ((emcf->jwt_key_file.len && key == NULL)
        || (emcf->jwt_public_key_file.len && pub == NULL))
    {
        return NGX_CONF_ERROR;
    }

    err[0] = '\0';

    emcf->jwt_key = ngx_http_elearn_jwt_key_load(emcf->jwt_alg, key,
                                                 key ? NULL : pub, err,
                                                 sizeof(err));
    if (emcf->jwt_key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\": %s",
                           key ? "elearn_jwt_key_file"
                               : "elearn_jwt_public_key_file", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_http_elearn_jwt_key_free(emcf->jwt_key);
        emcf->jwt_key = NULL;
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_elearn_auth_key_cleanup;
    cln->data = emcf->jwt_key;

    return NGX_CONF_OK;
}
