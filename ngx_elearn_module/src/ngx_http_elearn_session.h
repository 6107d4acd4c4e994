
/*
 * elearn session: login sessions, rotating refresh tokens, revocation and
 * the per-account login backoff, all in Redis, each change one atomic Lua
 * script (EVALSHA, loaded on first use and after NOSCRIPT).
 *
 * Keys (prefix "elearn:"):
 *   sess:{sid}      hash  uid, role, name, created, used, ua, rt (hash of
 *                         the current refresh token); expires with the
 *                         refresh token
 *   usess:{uid}     zset  the user's live sids by creation time
 *   rt:{sha256}     hash  sid, state "current" or "rotated"; a rotated one
 *                         is kept until it would have expired, so a replay
 *                         is recognised (RFC 9700 4.14.2) and revokes sid
 *   revoked         zset  "s:{sid}" and "j:{jti}", scored by the time the
 *                         last access token they can match expires
 *   loginfail:{email-hash}  counter with the failure window as its TTL
 * Channel "elearn:revoked" carries each new revocation to every worker of
 * every node.
 *
 * Refresh tokens are 256 random bits (base64url); only their SHA-256 is
 * stored.  A refresh token is never logged.
 *
 * The access phase checks revocation without a Redis round trip: each
 * worker holds the revoked set in memory (ngx_http_elearn_revocations_t),
 * loaded with ZRANGEBYSCORE when its pub/sub connection (re)subscribes
 * and kept current by the channel; entries leave when their score
 * passes.  While the pub/sub connection is down the set may be stale and
 * elearn_revocation_fail_open decides.
 */


#ifndef _NGX_HTTP_ELEARN_SESSION_H_INCLUDED_
#define _NGX_HTTP_ELEARN_SESSION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


#define NGX_HTTP_ELEARN_REFRESH_TOKEN_LEN  43      /* base64url of 32 bytes */


/* what a session operation hands back */
typedef struct {
    int64_t      user_id;
    ngx_str_t    role;            /* "student", "instructor", "admin" */
    ngx_str_t    display_name;
    ngx_str_t    sid;
    ngx_str_t    refresh_token;   /* the new one: create and refresh */
    ngx_str_t    sessions_json;   /* list: [{sessionId, createdAt, ...}] */
    time_t       retry_after;     /* login_allowed: seconds to wait */
} ngx_http_elearn_session_result_t;


/*
 * Called once per operation while r lives, never from inside the call
 * that started it.  rc: NGX_OK; NGX_HTTP_UNAUTHORIZED (refresh: unknown,
 * expired or reused token; the reuse has already revoked its session);
 * NGX_HTTP_NOT_FOUND (revoke: no such session of this user);
 * NGX_HTTP_TOO_MANY_REQUESTS (login_allowed: res->retry_after set);
 * NGX_HTTP_SERVICE_UNAVAILABLE / NGX_HTTP_GATEWAY_TIME_OUT (Redis).
 * res and its strings live in r->pool.
 *
 * Each operation returns NGX_AGAIN when under way (the handler will be
 * called), or a final rc without calling the handler:
 * NGX_HTTP_UNAUTHORIZED (refresh: not the shape of a refresh token),
 * NGX_HTTP_NOT_FOUND (revoke: not the shape of a sid),
 * NGX_HTTP_SERVICE_UNAVAILABLE (Redis not connected) or NGX_ERROR.
 */
typedef void (*ngx_http_elearn_session_handler_pt)(ngx_http_request_t *r,
    ngx_int_t rc, ngx_http_elearn_session_result_t *res, void *data);


/*
 * Starts a login session for the user: a new sid, a refresh token, the
 * session recorded; if the user then has more than elearn_session_max
 * live sessions, the oldest are revoked (and published) in the same
 * script.  user_agent may be empty.
 */
ngx_int_t ngx_http_elearn_session_create(ngx_http_request_t *r,
    int64_t user_id, ngx_str_t *role, ngx_str_t *display_name,
    ngx_str_t *user_agent, ngx_http_elearn_session_handler_pt handler,
    void *data);

/*
 * Rotates refresh_token: answers the session's user, role, name, sid and
 * a new refresh token, and marks the old one rotated.  A token already
 * rotated revokes its whole session and answers NGX_HTTP_UNAUTHORIZED.
 */
ngx_int_t ngx_http_elearn_session_refresh(ngx_http_request_t *r,
    ngx_str_t *refresh_token, ngx_http_elearn_session_handler_pt handler,
    void *data);

/*
 * Revokes session sid of user_id (logout, DELETE me/sessions/{sid}):
 * deletes it and its refresh tokens, adds "s:{sid}" to the revoked set
 * until access_exp (the latest expiry of an access token it issued) and
 * publishes it; the worker's own set is updated at once.  The sid stays
 * revoked at least until now + elearn_jwt_ttl, as the session may have
 * issued a token after the caller's.  jti, if not NULL, is revoked too
 * (until access_exp), even when the answer is NGX_HTTP_NOT_FOUND: it is
 * the caller's own token.
 */
ngx_int_t ngx_http_elearn_session_revoke(ngx_http_request_t *r,
    int64_t user_id, ngx_str_t *sid, ngx_str_t *jti, time_t access_exp,
    ngx_http_elearn_session_handler_pt handler, void *data);

/*
 * Lists the user's live sessions, oldest first, as a JSON array in
 * res->sessions_json; "current" is true for current_sid (the caller's
 * access token's sid; may be NULL).
 */
ngx_int_t ngx_http_elearn_session_list(ngx_http_request_t *r,
    int64_t user_id, ngx_str_t *current_sid,
    ngx_http_elearn_session_handler_pt handler, void *data);

/*
 * The per-account backoff: login_allowed counts the attempt and answers
 * NGX_OK, or NGX_HTTP_TOO_MANY_REQUESTS once more than
 * elearn_login_max_failures attempts were counted within
 * elearn_login_failure_window (res->retry_after: the window's rest).
 * Counting before the password check keeps parallel guesses from all
 * passing; login_succeeded clears the count (fire and forget), so what
 * the window counts is failures.  email is lower-cased by the caller and
 * stored hashed.
 */
ngx_int_t ngx_http_elearn_session_login_allowed(ngx_http_request_t *r,
    ngx_str_t *email, ngx_http_elearn_session_handler_pt handler,
    void *data);
void ngx_http_elearn_session_login_succeeded(ngx_str_t *email);


/* The worker's revoked set: created in init_process. */
ngx_http_elearn_revocations_t *ngx_http_elearn_revocations_create(
    ngx_cycle_t *cycle, ngx_http_elearn_main_conf_t *emcf);
void ngx_http_elearn_revocations_destroy(ngx_http_elearn_revocations_t *rv);

/*
 * The access phase's check, in memory: NGX_OK (not revoked), NGX_DECLINED
 * (revoked), or NGX_HTTP_SERVICE_UNAVAILABLE when the set cannot be
 * trusted (pub/sub down) and elearn_revocation_fail_open is off.
 */
ngx_int_t ngx_http_elearn_revocations_check(ngx_http_elearn_revocations_t *rv,
    ngx_str_t *sid, ngx_str_t *jti);

/*
 * Grows by one with every name added to the set (a change of the set that
 * can revoke a token): an unchanged revision revokes nothing new.
 */
ngx_uint_t ngx_http_elearn_revocations_revision(
    ngx_http_elearn_revocations_t *rv);


#endif /* _NGX_HTTP_ELEARN_SESSION_H_INCLUDED_ */
