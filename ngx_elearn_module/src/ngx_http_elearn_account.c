
/*
 * elearn account: the endpoints of contract section 2 (register, login,
 * refresh, logout, me, sessions, admin-created users).
 *
 * Each endpoint is a short chain of asynchronous steps (thread pool for
 * Argon2id, Redis for sessions and the login backoff, PostgreSQL for the
 * accounts); each step's callback either starts the next step or
 * finalizes the request, exactly once.  The access phase has already
 * checked the token and the role of every endpoint that is not public.
 *
 * It must never log a password, an access token or a refresh token, and
 * never let a client tell an unknown email from a wrong password: both
 * answer the same 401 after the same work (a dummy verification for an
 * unknown email).  Passwords stay in the parsed body only, which is wiped
 * when the request's pool goes.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_body.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_sql.h"
#include "ngx_http_elearn_password.h"
#include "ngx_http_elearn_session.h"
#include "ngx_http_elearn_auth.h"
#include "ngx_http_elearn_jwt.h"


#define NGX_HTTP_ELEARN_EMAIL_MAX       254     /* characters */
#define NGX_HTTP_ELEARN_NAME_MAX        100     /* characters */
#define NGX_HTTP_ELEARN_AGENT_MAX       256     /* bytes of User-Agent kept */
#define NGX_HTTP_ELEARN_ERRORS_MAX      4

/* the per-worker cache of GET /me: direct-mapped by user id */
#define NGX_HTTP_ELEARN_ME_SLOTS        4096
#define NGX_HTTP_ELEARN_ME_TTL          1800    /* seconds */


/* one request's state, from its parsed body to its answer */
typedef struct {
    json_t                      *body;          /* owns the strings below */
    ngx_str_t                    email;         /* as given, NUL-ended */
    ngx_str_t                    email_key;     /* lower-cased: backoff key */
    ngx_str_t                    password;
    ngx_str_t                    display_name;  /* NUL-ended */
    ngx_str_t                    role;          /* NUL-ended */
    ngx_str_t                    refresh_token;

    /* login: the account found, if any */
    ngx_uint_t                   known;
    int64_t                      user_id;
    ngx_str_t                    user_role;
    ngx_str_t                    user_name;
} ngx_http_elearn_account_t;


typedef struct {
    int64_t                      user_id;       /* 0: empty */
    time_t                       expires;
    u_char                      *data;          /* email, then name: escaped */
    size_t                       email_len;
    size_t                       name_len;
} ngx_http_elearn_me_slot_t;


/* per worker process: workers are forked, each has its own */
static ngx_http_elearn_me_slot_t  *ngx_http_elearn_me_cache;


static void ngx_http_elearn_account_cleanup(void *data);


/* --- shared steps --------------------------------------------------------- */


static void
ngx_http_elearn_account_wipe(json_t *body, const char *key)
{
    json_t  *v;

    v = json_object_get(body, key);

    if (json_is_string(v)) {
        /* jansson's own copy of the string: zero it before it is freed */
        ngx_explicit_memzero((void *) json_string_value(v),
                             json_string_length(v));
    }
}


static void
ngx_http_elearn_account_cleanup(void *data)
{
    ngx_http_elearn_account_t *acct = data;

    if (acct->body == NULL) {
        return;
    }

    ngx_http_elearn_account_wipe(acct->body, "password");
    ngx_http_elearn_account_wipe(acct->body, "refreshToken");

    json_decref(acct->body);
    acct->body = NULL;
}


/*
 * Takes over a parsed body: the request's state owns it from here on and
 * the pool's cleanup wipes and frees it on every path.  NULL (body freed)
 * only when memory runs out.
 */
static ngx_http_elearn_account_t *
ngx_http_elearn_account_start(ngx_http_request_t *r, json_t *body)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_elearn_ctx_t      *ctx;
    ngx_http_elearn_account_t  *acct;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);

    acct = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_account_t));
    if (acct == NULL) {
        goto failed;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    acct->body = body;
    cln->handler = ngx_http_elearn_account_cleanup;
    cln->data = acct;

    if (ctx) {
        ctx->data = acct;
    }

    /*
     * The body has been read, and the read handler blocks reading: watch
     * the connection instead, so that a client that goes away ends the
     * request (and the backends' pool cleanups cancel the pending step).
     */
    r->read_event_handler = ngx_http_test_reading;

    return acct;

failed:

    ngx_http_elearn_account_wipe(body, "password");
    ngx_http_elearn_account_wipe(body, "refreshToken");
    json_decref(body);

    return NULL;
}


/*
 * Sends doc (consumed) as the JSON answer.  secret: the text holds tokens
 * and is wiped before it is freed.
 */
static ngx_int_t
ngx_http_elearn_account_send(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc, ngx_uint_t secret)
{
    char       *text;
    size_t      len;
    ngx_int_t   rc;

    if (doc == NULL) {
        return ngx_http_elearn_problem(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal",
                                       "the answer could not be built");
    }

    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    if (text == NULL) {
        return ngx_http_elearn_problem(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal",
                                       "the answer could not be built");
    }

    len = ngx_strlen(text);

    rc = ngx_http_elearn_send_json(r, status, text, len);

    if (secret) {
        ngx_explicit_memzero(text, len);
    }

    free(text);

    return rc;
}


static ngx_int_t
ngx_http_elearn_account_no_content(ngx_http_request_t *r)
{
    return ngx_http_elearn_send_json(r, NGX_HTTP_NO_CONTENT, "", 0);
}


static void
ngx_http_elearn_account_fail(ngx_http_request_t *r, ngx_int_t rc,
    const char *dependency)
{
    ngx_http_elearn_finalize(r,
        ngx_http_elearn_problem_backend(r, rc, dependency));
}


static ngx_int_t
ngx_http_elearn_account_db_error(ngx_http_request_t *r, PGresult *res,
    const char *statement)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "elearn account: %s failed: %s", statement,
                  PQresultErrorMessage(res));

    return ngx_http_elearn_problem_backend(r, NGX_ERROR, "the database");
}


/* a copy of a result's value in r->pool, NUL-ended */
static ngx_int_t
ngx_http_elearn_account_value(ngx_http_request_t *r, PGresult *res, int col,
    ngx_str_t *s)
{
    s->len = PQgetlength(res, 0, col);
    s->data = ngx_pnalloc(r->pool, s->len + 1);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->data, PQgetvalue(res, 0, col), s->len);
    s->data[s->len] = '\0';

    return NGX_OK;
}


/* a signed 64-bit integer column */
static int64_t
ngx_http_elearn_account_int(PGresult *res, int col)
{
    off_t  n;

    n = ngx_atoof((u_char *) PQgetvalue(res, 0, col), PQgetlength(res, 0, col));

    return n == NGX_ERROR ? 0 : (int64_t) n;
}


static ngx_int_t
ngx_http_elearn_account_can_sign(ngx_http_request_t *r)
{
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->jwt_key == NULL
        || !ngx_http_elearn_jwt_key_can_sign(emcf->jwt_key))
    {
        /* refresh would rotate the token and then fail to answer one */
        return ngx_http_elearn_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "dependency-unavailable",
                                       "this node holds no signing key");
    }

    return NGX_OK;
}


/* --- validation ----------------------------------------------------------- */


/* characters (UTF-8 code points) of a string jansson has checked */
static size_t
ngx_http_elearn_account_chars(ngx_str_t *s)
{
    size_t   n;
    u_char  *p, *last;

    n = 0;
    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if ((*p & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


/*
 * Takes a string field: NGX_OK, or NGX_DECLINED with a field error added
 * when it is missing or not a string.
 */
static ngx_int_t
ngx_http_elearn_account_field(json_t *body, const char *key, ngx_str_t *s,
    ngx_http_elearn_field_error_t *errors, ngx_uint_t *nerrors)
{
    json_t  *v;

    v = json_object_get(body, key);

    if (json_is_string(v)) {
        s->data = (u_char *) json_string_value(v);
        s->len = json_string_length(v);
        return NGX_OK;
    }

    errors[*nerrors].field = key;
    errors[*nerrors].message = (v == NULL) ? "is required"
                                           : "must be a string";
    (*nerrors)++;

    return NGX_DECLINED;
}


/* something@something.tld: NULL when it is one, else what is wrong */
static const char *
ngx_http_elearn_account_email_check(ngx_str_t *email)
{
    u_char  *p, *last, *at, *domain;

    if (ngx_http_elearn_account_chars(email) > NGX_HTTP_ELEARN_EMAIL_MAX) {
        return "must be at most 254 characters";
    }

    at = NULL;
    last = email->data + email->len;

    for (p = email->data; p < last; p++) {
        if (*p <= 0x20 || *p == 0x7f) {
            return "must be an email address without spaces";
        }

        if (*p == '@') {
            if (at) {
                return "must be an email address";
            }

            at = p;
        }
    }

    if (at == NULL || at == email->data) {
        return "must be an email address";
    }

    /* labels of the domain: at least two, none empty */

    domain = at + 1;

    if (domain == last || *domain == '.' || last[-1] == '.'
        || ngx_strlchr(domain, last, '.') == NULL)
    {
        return "must be an email address";
    }

    for (p = domain; p + 1 < last; p++) {
        if (p[0] == '.' && p[1] == '.') {
            return "must be an email address";
        }
    }

    return NULL;
}


static const char *
ngx_http_elearn_account_name_check(ngx_str_t *name)
{
    size_t   n;
    u_char  *p, *last;

    n = ngx_http_elearn_account_chars(name);

    if (n < 1 || n > NGX_HTTP_ELEARN_NAME_MAX) {
        return "must be 1 to 100 characters";
    }

    last = name->data + name->len;

    for (p = name->data; p < last; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            return NULL;
        }
    }

    return "must not be blank";
}


/*
 * Register and admin create: email, password, displayName and (with_role)
 * role.  NGX_OK, or the 422 answered (returned for finalizing).
 */
static ngx_int_t
ngx_http_elearn_account_validate(ngx_http_request_t *r,
    ngx_http_elearn_account_t *acct, ngx_uint_t with_role,
    ngx_int_t *answered)
{
    const char                     *msg;
    ngx_uint_t                      n;
    ngx_http_elearn_field_error_t   errors[NGX_HTTP_ELEARN_ERRORS_MAX];

    n = 0;

    if (ngx_http_elearn_account_field(acct->body, "email", &acct->email,
                                      errors, &n)
        == NGX_OK)
    {
        msg = ngx_http_elearn_account_email_check(&acct->email);
        if (msg) {
            errors[n].field = "email";
            errors[n++].message = msg;
        }
    }

    if (ngx_http_elearn_account_field(acct->body, "password",
                                      &acct->password, errors, &n)
        == NGX_OK
        && ngx_http_elearn_password_check(acct->password.data,
                                          acct->password.len)
           != NGX_OK)
    {
        errors[n].field = "password";
        errors[n++].message = "must be 8 to 1024 characters";
    }

    if (ngx_http_elearn_account_field(acct->body, "displayName",
                                      &acct->display_name, errors, &n)
        == NGX_OK)
    {
        msg = ngx_http_elearn_account_name_check(&acct->display_name);
        if (msg) {
            errors[n].field = "displayName";
            errors[n++].message = msg;
        }
    }

    if (with_role) {
        if (ngx_http_elearn_account_field(acct->body, "role", &acct->role,
                                          errors, &n)
            == NGX_OK
            && ngx_http_elearn_role_parse(acct->role.data, acct->role.len)
               == 0)
        {
            errors[n].field = "role";
            errors[n++].message = "must be student, instructor or admin";
        }

    } else {
        ngx_str_set(&acct->role, "student");
    }

    if (n == 0) {
        return NGX_OK;
    }

    /* answered: what the 422 returned is for the caller to finalize with */
    *answered = ngx_http_elearn_problem_fields(r,
                                               "the request has invalid "
                                               "fields", errors, n);
    return NGX_DECLINED;
}


/* --- register, admin create ----------------------------------------------- */


static void
ngx_http_elearn_account_inserted(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    json_t  *doc;

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the database");
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_account_db_error(r, res, "user_insert"));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_CONFLICT, "email-exists",
                                    "an account with this email "
                                    "already exists"));
        return;
    }

    doc = json_pack("{s:I,s:s%,s:s%,s:s%}",
                    "userId",
                    (json_int_t) ngx_http_elearn_account_int(res, 0),
                    "email", PQgetvalue(res, 0, 1),
                    (size_t) PQgetlength(res, 0, 1),
                    "displayName", PQgetvalue(res, 0, 2),
                    (size_t) PQgetlength(res, 0, 2),
                    "role", PQgetvalue(res, 0, 3),
                    (size_t) PQgetlength(res, 0, 3));

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_account_send(r, NGX_HTTP_CREATED, doc, 0));
}


static void
ngx_http_elearn_account_hashed(ngx_http_request_t *r, ngx_int_t rc,
    const char *phc, ngx_uint_t match, void *data)
{
    ngx_http_elearn_account_t *acct = data;

    const char  *values[4];

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the password hasher");
        return;
    }

    values[0] = (char *) acct->email.data;
    values[1] = phc;
    values[2] = (char *) acct->display_name.data;
    values[3] = (char *) acct->role.data;

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_USER_INSERT, 4,
                                  values, ngx_http_elearn_account_inserted,
                                  acct);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the database");
    }
}


static void
ngx_http_elearn_account_create(ngx_http_request_t *r, json_t *body,
    ngx_uint_t with_role)
{
    ngx_int_t                     rc;
    ngx_http_elearn_account_t    *acct;
    ngx_http_elearn_main_conf_t  *emcf;

    acct = ngx_http_elearn_account_start(r, body);
    if (acct == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_http_elearn_account_validate(r, acct, with_role, &rc)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r, rc);
        return;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->pg == NULL) {
        ngx_http_elearn_account_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "the database");
        return;
    }

    /*
     * Hashed before the insert finds a taken email: a 409 costs a hash,
     * and the unique index, not a prior look-up, decides the race.
     */
    rc = ngx_http_elearn_password_hash(r, acct->password.data,
                                       acct->password.len,
                                       ngx_http_elearn_account_hashed, acct);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the password hasher");
    }
}


static void
ngx_http_elearn_account_register_body(ngx_http_request_t *r, json_t *body)
{
    ngx_http_elearn_account_create(r, body, 0);
}


static void
ngx_http_elearn_account_admin_body(ngx_http_request_t *r, json_t *body)
{
    ngx_http_elearn_account_create(r, body, 1);
}


ngx_int_t
ngx_http_elearn_account_register(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_read_json(r,
                                     ngx_http_elearn_account_register_body);
}


ngx_int_t
ngx_http_elearn_account_admin_create(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    return ngx_http_elearn_read_json(r, ngx_http_elearn_account_admin_body);
}


/* --- login, refresh ------------------------------------------------------- */


/* 200 {accessToken, tokenType, expiresIn, refreshToken, ...} */
static ngx_int_t
ngx_http_elearn_account_tokens(ngx_http_request_t *r, int64_t user_id,
    ngx_str_t *role, ngx_str_t *display_name, ngx_str_t *sid,
    ngx_str_t *refresh_token)
{
    json_t                       *doc;
    ngx_table_elt_t              *h;
    ngx_http_elearn_access_t      access;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_elearn_auth_issue(r, user_id, role, sid, &access)
        != NGX_OK)
    {
        return ngx_http_elearn_problem(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal",
                                       "the access token could not be "
                                       "issued");
    }

    doc = json_pack("{s:s%,s:s,s:I,s:s%,s:I,s:{s:I,s:s%,s:s%}}",
                    "accessToken", (char *) access.token.data,
                    access.token.len,
                    "tokenType", "Bearer",
                    "expiresIn", (json_int_t) access.expires_in,
                    "refreshToken", (char *) refresh_token->data,
                    refresh_token->len,
                    "refreshExpiresIn", (json_int_t) emcf->refresh_ttl,
                    "user",
                      "userId", (json_int_t) user_id,
                      "role", (char *) role->data, role->len,
                      "displayName", (char *) display_name->data,
                      display_name->len);

    /* RFC 6749 5.1: an answer holding tokens is never stored */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        json_decref(doc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    return ngx_http_elearn_account_send(r, NGX_HTTP_OK, doc, 1);
}


static ngx_int_t
ngx_http_elearn_account_bad_credentials(ngx_http_request_t *r)
{
    /* one answer for an unknown email and a wrong password */
    return ngx_http_elearn_problem(r, NGX_HTTP_UNAUTHORIZED,
                                   "invalid-credentials",
                                   "the email or password is wrong");
}


static void
ngx_http_elearn_account_login_session(ngx_http_request_t *r, ngx_int_t rc,
    ngx_http_elearn_session_result_t *res, void *data)
{
    ngx_http_elearn_account_t *acct = data;

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
        return;
    }

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_account_tokens(r, acct->user_id, &acct->user_role,
                                       &acct->user_name, &res->sid,
                                       &res->refresh_token));
}


static void
ngx_http_elearn_account_login_verified(ngx_http_request_t *r, ngx_int_t rc,
    const char *phc, ngx_uint_t match, void *data)
{
    ngx_http_elearn_account_t *acct = data;

    ngx_str_t  ua;

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the password hasher");
        return;
    }

    if (!match || !acct->known) {
        /* login_allowed has counted the attempt already */
        ngx_http_elearn_finalize(r,
                                 ngx_http_elearn_account_bad_credentials(r));
        return;
    }

    ngx_http_elearn_session_login_succeeded(&acct->email_key);

    ngx_str_null(&ua);

    if (r->headers_in.user_agent) {
        ua = r->headers_in.user_agent->value;

        if (ua.len > NGX_HTTP_ELEARN_AGENT_MAX) {
            ua.len = NGX_HTTP_ELEARN_AGENT_MAX;

            /* cut before a character, never inside one */
            while (ua.len && (ua.data[ua.len] & 0xc0) == 0x80) {
                ua.len--;
            }
        }
    }

    rc = ngx_http_elearn_session_create(r, acct->user_id, &acct->user_role,
                                        &acct->user_name, &ua,
                                        ngx_http_elearn_account_login_session,
                                        acct);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
    }
}


static void
ngx_http_elearn_account_login_user(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_account_t *acct = data;

    ngx_str_t  phc;

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the database");
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_account_db_error(r, res, "user_login"));
        return;
    }

    ngx_str_null(&phc);

    if (PQntuples(res) == 1) {
        if (ngx_http_elearn_account_value(r, res, 1, &phc) != NGX_OK
            || ngx_http_elearn_account_value(r, res, 2, &acct->user_role)
               != NGX_OK
            || ngx_http_elearn_account_value(r, res, 3, &acct->user_name)
               != NGX_OK)
        {
            ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        acct->user_id = ngx_http_elearn_account_int(res, 0);
        acct->known = 1;
    }

    /* an unknown email verifies against the dummy hash: the same work */
    rc = ngx_http_elearn_password_verify(r, (char *) phc.data,
                                         acct->password.data,
                                         acct->password.len,
                                         ngx_http_elearn_account_login_verified,
                                         acct);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the password hasher");
    }
}


static void
ngx_http_elearn_account_login_allowed(ngx_http_request_t *r, ngx_int_t rc,
    ngx_http_elearn_session_result_t *res, void *data)
{
    ngx_http_elearn_account_t *acct = data;

    time_t                        wait;
    const char                   *values[1];
    ngx_http_elearn_main_conf_t  *emcf;

    if (rc == NGX_HTTP_TOO_MANY_REQUESTS) {
        /* ngx_max() does not parenthesize its arguments */
        wait = (res != NULL && res->retry_after > 1) ? res->retry_after : 1;

        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_retry(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                          "too-many-attempts", wait,
                                          "too many failed logins for this "
                                          "account: retry in %T seconds",
                                          wait));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
        return;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->pg == NULL) {
        ngx_http_elearn_account_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "the database");
        return;
    }

    values[0] = (char *) acct->email.data;

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_USER_LOGIN, 1,
                                  values, ngx_http_elearn_account_login_user,
                                  acct);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the database");
    }
}


static void
ngx_http_elearn_account_login_body(ngx_http_request_t *r, json_t *body)
{
    ngx_int_t                       rc;
    ngx_uint_t                      n;
    ngx_http_elearn_account_t      *acct;
    ngx_http_elearn_field_error_t   errors[2];

    acct = ngx_http_elearn_account_start(r, body);
    if (acct == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    n = 0;

    (void) ngx_http_elearn_account_field(body, "email", &acct->email,
                                         errors, &n);
    (void) ngx_http_elearn_account_field(body, "password", &acct->password,
                                         errors, &n);

    if (n) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_fields(r, "the request has invalid "
                                           "fields", errors, n));
        return;
    }

    /*
     * Credentials no account can have are refused without work; that
     * tells nothing about which accounts exist.
     */
    if (acct->email.len == 0
        || ngx_http_elearn_account_chars(&acct->email)
           > NGX_HTTP_ELEARN_EMAIL_MAX
        || acct->password.len == 0
        || ngx_http_elearn_account_chars(&acct->password)
           > NGX_HTTP_ELEARN_PASSWORD_MAX)
    {
        ngx_http_elearn_finalize(r,
                                 ngx_http_elearn_account_bad_credentials(r));
        return;
    }

    /* the backoff counts failures per account, whatever the letter case */
    acct->email_key.len = acct->email.len;
    acct->email_key.data = ngx_pnalloc(r->pool, acct->email.len);
    if (acct->email_key.data == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_strlow(acct->email_key.data, acct->email.data, acct->email.len);

    rc = ngx_http_elearn_session_login_allowed(r, &acct->email_key,
                                         ngx_http_elearn_account_login_allowed,
                                         acct);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
    }
}


ngx_int_t
ngx_http_elearn_account_login(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_elearn_account_can_sign(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_elearn_read_json(r, ngx_http_elearn_account_login_body);
}


static void
ngx_http_elearn_account_refreshed(ngx_http_request_t *r, ngx_int_t rc,
    ngx_http_elearn_session_result_t *res, void *data)
{
    if (rc == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_UNAUTHORIZED,
                                    "invalid-refresh-token",
                                    "the refresh token is invalid, expired "
                                    "or already used"));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
        return;
    }

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_account_tokens(r, res->user_id, &res->role,
                                       &res->display_name, &res->sid,
                                       &res->refresh_token));
}


static void
ngx_http_elearn_account_refresh_body(ngx_http_request_t *r, json_t *body)
{
    ngx_int_t                       rc;
    ngx_uint_t                      n;
    ngx_http_elearn_account_t      *acct;
    ngx_http_elearn_field_error_t   errors[1];

    acct = ngx_http_elearn_account_start(r, body);
    if (acct == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    n = 0;

    if (ngx_http_elearn_account_field(body, "refreshToken",
                                      &acct->refresh_token, errors, &n)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_fields(r, "the request has invalid "
                                           "fields", errors, n));
        return;
    }

    if (acct->refresh_token.len != NGX_HTTP_ELEARN_REFRESH_TOKEN_LEN) {
        ngx_http_elearn_account_refreshed(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                          acct);
        return;
    }

    rc = ngx_http_elearn_session_refresh(r, &acct->refresh_token,
                                         ngx_http_elearn_account_refreshed,
                                         acct);

    if (rc == NGX_HTTP_UNAUTHORIZED) {
        /* not even the shape of a refresh token */
        ngx_http_elearn_account_refreshed(r, rc, NULL, acct);
        return;
    }

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
    }
}


ngx_int_t
ngx_http_elearn_account_refresh(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_elearn_account_can_sign(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_elearn_read_json(r, ngx_http_elearn_account_refresh_body);
}


/* --- logout, sessions ----------------------------------------------------- */


/* the latest moment an access token of a session being revoked can pass */
static time_t
ngx_http_elearn_account_access_exp(ngx_http_request_t *r)
{
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    return ngx_time() + emcf->jwt_ttl + emcf->jwt_leeway;
}


static void
ngx_http_elearn_account_logout_done(ngx_http_request_t *r, ngx_int_t rc,
    ngx_http_elearn_session_result_t *res, void *data)
{
    /* a session already gone is logged out all the same */
    if (rc != NGX_OK && rc != NGX_HTTP_NOT_FOUND) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
        return;
    }

    ngx_http_elearn_finalize(r, ngx_http_elearn_account_no_content(r));
}


/*
 * Revokes the caller's own session and token: NGX_AGAIN, or
 * NGX_HTTP_NOT_FOUND (nothing to revoke), or an error rc.
 */
static ngx_int_t
ngx_http_elearn_account_logout_start(ngx_http_request_t *r)
{
    ngx_str_t               sid, jti;
    ngx_http_elearn_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);

    if (ctx == NULL || ctx->user == NULL) {
        return NGX_ERROR;
    }

    sid.data = ctx->user->sid;
    sid.len = ngx_strlen(ctx->user->sid);
    jti.data = ctx->user->jti;
    jti.len = ngx_strlen(ctx->user->jti);

    return ngx_http_elearn_session_revoke(r, ctx->user->user_id, &sid, &jti,
                                         ngx_http_elearn_account_access_exp(r),
                                         ngx_http_elearn_account_logout_done,
                                         NULL);
}


static void
ngx_http_elearn_account_logout_body(ngx_http_request_t *r, json_t *body)
{
    json_t                         *v;
    ngx_int_t                       rc;
    ngx_http_elearn_account_t      *acct;
    ngx_http_elearn_field_error_t   error;

    acct = ngx_http_elearn_account_start(r, body);
    if (acct == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /*
     * The refresh token, if sent, belongs to the session being revoked:
     * revoking the session deletes its refresh tokens, so it is only
     * checked for its type.
     */
    v = json_object_get(body, "refreshToken");

    if (v != NULL && !json_is_string(v)) {
        error.field = "refreshToken";
        error.message = "must be a string";

        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_fields(r, "the request has invalid "
                                           "fields", &error, 1));
        return;
    }

    rc = ngx_http_elearn_account_logout_start(r);

    if (rc == NGX_HTTP_NOT_FOUND) {
        ngx_http_elearn_finalize(r, ngx_http_elearn_account_no_content(r));
        return;
    }

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
    }
}


ngx_int_t
ngx_http_elearn_account_logout(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        return ngx_http_elearn_read_json(r,
                                         ngx_http_elearn_account_logout_body);
    }

    /* no body: no JSON needed */

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_elearn_account_logout_start(r);

    if (rc == NGX_HTTP_NOT_FOUND) {
        return ngx_http_elearn_account_no_content(r);
    }

    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the session store");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


static void
ngx_http_elearn_account_sessions_done(ngx_http_request_t *r, ngx_int_t rc,
    ngx_http_elearn_session_result_t *res, void *data)
{
    u_char  *buf, *p;
    size_t   len;

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
        return;
    }

    /* the list is JSON already, "current" flagged: only wrapped here */

    len = sizeof("{\"sessions\":}") - 1 + res->sessions_json.len;

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ngx_cpymem(buf, "{\"sessions\":", sizeof("{\"sessions\":") - 1);
    p = ngx_cpymem(p, res->sessions_json.data, res->sessions_json.len);
    *p++ = '}';

    ngx_http_elearn_finalize(r,
        ngx_http_elearn_send_json(r, NGX_HTTP_OK, (char *) buf, p - buf));
}


ngx_int_t
ngx_http_elearn_account_sessions(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  sid;

    if (ctx->user == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sid.data = ctx->user->sid;
    sid.len = ngx_strlen(ctx->user->sid);

    rc = ngx_http_elearn_session_list(r, ctx->user->user_id, &sid,
                                      ngx_http_elearn_account_sessions_done,
                                      NULL);

    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the session store");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_elearn_account_no_session(ngx_http_request_t *r)
{
    return ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                   "no such session");
}


static void
ngx_http_elearn_account_session_deleted(ngx_http_request_t *r, ngx_int_t rc,
    ngx_http_elearn_session_result_t *res, void *data)
{
    if (rc == NGX_HTTP_NOT_FOUND) {
        ngx_http_elearn_finalize(r, ngx_http_elearn_account_no_session(r));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the session store");
        return;
    }

    ngx_http_elearn_finalize(r, ngx_http_elearn_account_no_content(r));
}


ngx_int_t
ngx_http_elearn_account_session_delete(ngx_http_request_t *r,
    ngx_http_elearn_ctx_t *ctx)
{
    u_char     *p, *last;
    ngx_int_t   rc;

    if (ctx->user == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* what no session id can be is not worth a round trip */

    if (ctx->arg.len == 0 || ctx->arg.len >= NGX_HTTP_ELEARN_JWT_ID_LEN) {
        return ngx_http_elearn_account_no_session(r);
    }

    last = ctx->arg.data + ctx->arg.len;

    for (p = ctx->arg.data; p < last; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            return ngx_http_elearn_account_no_session(r);
        }
    }

    rc = ngx_http_elearn_session_revoke(r, ctx->user->user_id, &ctx->arg,
                                     NULL,
                                     ngx_http_elearn_account_access_exp(r),
                                     ngx_http_elearn_account_session_deleted,
                                     NULL);

    if (rc == NGX_HTTP_NOT_FOUND) {
        return ngx_http_elearn_account_no_session(r);
    }

    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the session store");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/* --- me ------------------------------------------------------------------- */


/*
 * GET /me answers from the token's claims and a per-worker cache of the
 * two fields the token does not carry (email, display name), so that a
 * hit costs no backend.  The role is the token's.  An entry lives
 * NGX_HTTP_ELEARN_ME_TTL seconds: no endpoint changes an email or a name
 * yet; the one that does must drop the entry, or accept that delay.
 */
static ngx_int_t
ngx_http_elearn_account_me_send(ngx_http_request_t *r,
    ngx_http_elearn_user_t *user, ngx_http_elearn_me_slot_t *slot)
{
    size_t       len;
    u_char      *buf, *p;
    const char  *role;

    role = ngx_http_elearn_role_name(user->role);
    if (role == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = sizeof("{\"userId\":,\"email\":\"\",\"displayName\":\"\","
                 "\"role\":\"\"}") - 1
          + NGX_INT64_LEN + slot->email_len + slot->name_len
          + ngx_strlen(role);

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(buf, "{\"userId\":%L,\"email\":\"", user->user_id);
    p = ngx_cpymem(p, slot->data, slot->email_len);
    p = ngx_cpymem(p, "\",\"displayName\":\"",
                   sizeof("\",\"displayName\":\"") - 1);
    p = ngx_cpymem(p, slot->data + slot->email_len, slot->name_len);
    p = ngx_sprintf(p, "\",\"role\":\"%s\"}", role);

    return ngx_http_elearn_send_json(r, NGX_HTTP_OK, (char *) buf, p - buf);
}


/* stores the user's escaped email and name in its slot */
static ngx_int_t
ngx_http_elearn_account_me_fill(ngx_http_request_t *r,
    ngx_http_elearn_me_slot_t *slot, int64_t user_id, PGresult *res)
{
    u_char  *tmp, *p, *data;
    size_t   email_len, name_len;

    email_len = PQgetlength(res, 0, 0);
    name_len = PQgetlength(res, 0, 1);

    tmp = ngx_pnalloc(r->pool, 6 * (email_len + name_len));
    if (tmp == NULL) {
        return NGX_ERROR;
    }

    p = ngx_http_elearn_json_escape(tmp, (u_char *) PQgetvalue(res, 0, 0),
                                    email_len);
    email_len = p - tmp;
    p = ngx_http_elearn_json_escape(p, (u_char *) PQgetvalue(res, 0, 1),
                                    name_len);
    name_len = p - tmp - email_len;

    data = ngx_alloc(email_len + name_len, ngx_cycle->log);
    if (data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(data, tmp, email_len + name_len);

    if (slot->data) {
        ngx_free(slot->data);
    }

    slot->user_id = user_id;
    slot->expires = ngx_time() + NGX_HTTP_ELEARN_ME_TTL;
    slot->data = data;
    slot->email_len = email_len;
    slot->name_len = name_len;

    return NGX_OK;
}


static void
ngx_http_elearn_account_me_user(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_ctx_t      *ctx;
    ngx_http_elearn_me_slot_t  *slot, tmp;

    if (rc != NGX_OK) {
        ngx_http_elearn_account_fail(r, rc, "the database");
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_account_db_error(r, res, "user_get"));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem(r, NGX_HTTP_NOT_FOUND, "not-found",
                                    "the account no longer exists"));
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_elearn_module);

    if (ngx_http_elearn_me_cache) {
        slot = &ngx_http_elearn_me_cache[ctx->user->user_id
                                         % NGX_HTTP_ELEARN_ME_SLOTS];

    } else {
        /* no cache (memory ran out): an entry of this request only */
        ngx_memzero(&tmp, sizeof(ngx_http_elearn_me_slot_t));
        slot = &tmp;
    }

    if (ngx_http_elearn_account_me_fill(r, slot, ctx->user->user_id, res)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_elearn_account_me_send(r, ctx->user, slot);

    if (slot == &tmp) {
        ngx_free(tmp.data);
    }

    ngx_http_elearn_finalize(r, rc);
}


ngx_int_t
ngx_http_elearn_account_me(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    u_char                       *id;
    ngx_int_t                     rc;
    const char                   *values[1];
    ngx_http_elearn_me_slot_t    *slot;
    ngx_http_elearn_main_conf_t  *emcf;

    if (ctx->user == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_elearn_me_cache == NULL) {
        ngx_http_elearn_me_cache = ngx_calloc(NGX_HTTP_ELEARN_ME_SLOTS
                                          * sizeof(ngx_http_elearn_me_slot_t),
                                          ngx_cycle->log);
    }

    if (ngx_http_elearn_me_cache) {
        slot = &ngx_http_elearn_me_cache[ctx->user->user_id
                                         % NGX_HTTP_ELEARN_ME_SLOTS];

        if (slot->user_id == ctx->user->user_id
            && slot->expires > ngx_time())
        {
            return ngx_http_elearn_account_me_send(r, ctx->user, slot);
        }
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->pg == NULL) {
        return ngx_http_elearn_problem_backend(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the database");
    }

    id = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(id, "%L", ctx->user->user_id) = '\0';
    values[0] = (char *) id;

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_USER_GET, 1, values,
                                  ngx_http_elearn_account_me_user, NULL);

    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}
