
/*
 * elearn jwt: signs and verifies the access tokens (RFC 7519, JWS compact
 * form) with OpenSSL, and keeps a bounded cache of verified tokens.
 *
 * Plain C over OpenSSL and jansson, with no nginx types, so that the unit
 * tests link it as it is.  Not libjwt: Debian's libjwt 1.10 picks the
 * verifier from the token's own header (the HS256-with-the-public-key
 * hole) and parses the PEM key on every call, 8-20 times slower than
 * OpenSSL's own verify for ES256/RS256.
 *
 * The algorithm is pinned by configuration: a token whose header names
 * any other "alg" (none included) is refused before any cryptography.
 */


#ifndef _NGX_HTTP_ELEARN_JWT_H_INCLUDED_
#define _NGX_HTTP_ELEARN_JWT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>


#define NGX_HTTP_ELEARN_JWT_HS256      1
#define NGX_HTTP_ELEARN_JWT_RS256      2
#define NGX_HTTP_ELEARN_JWT_ES256      3

#define NGX_HTTP_ELEARN_JWT_MAX_LEN    8192     /* longer tokens: refused */
#define NGX_HTTP_ELEARN_JWT_ID_LEN     40       /* sid, jti buffers */
#define NGX_HTTP_ELEARN_JWT_ROLE_LEN   16


typedef struct ngx_http_elearn_jwt_key_s    ngx_http_elearn_jwt_key_t;
typedef struct ngx_http_elearn_jwt_cache_s  ngx_http_elearn_jwt_cache_t;


typedef struct {
    int64_t   sub;                                   /* user id */
    char      role[NGX_HTTP_ELEARN_JWT_ROLE_LEN];
    char      sid[NGX_HTTP_ELEARN_JWT_ID_LEN];       /* login session */
    char      jti[NGX_HTTP_ELEARN_JWT_ID_LEN];
    int64_t   iat;
    int64_t   exp;
    int64_t   nbf;                                   /* 0: absent */
} ngx_http_elearn_jwt_claims_t;


/*
 * Loads the key for alg.  HS256: path is a secret file of at least 32
 * bytes.  RS256 (RSA >= 2048 bits) and ES256 (P-256): path is a PEM
 * private key, which signs and verifies; or, with path NULL, public_path
 * is a PEM public key and the key only verifies.  Returns NULL and writes
 * a reason into err on failure.
 *
 * An HS256 secret is the file's bytes as they are (a trailing newline is
 * part of it).  The key keeps reusable OpenSSL contexts: sign and verify
 * with it from one thread at a time (a worker's event loop, not nginx's
 * thread pool).  The same holds for a cache.
 */
ngx_http_elearn_jwt_key_t *ngx_http_elearn_jwt_key_load(int alg,
    const char *path, const char *public_path, char *err, size_t errlen);

void ngx_http_elearn_jwt_key_free(ngx_http_elearn_jwt_key_t *key);

/* Whether the key can sign (an HS secret, or a private key). */
int ngx_http_elearn_jwt_key_can_sign(ngx_http_elearn_jwt_key_t *key);

/*
 * Signs claims with iss into out (NUL-terminated).  Returns the token's
 * length, or -1 if out is too small or signing fails.
 */
ssize_t ngx_http_elearn_jwt_sign(ngx_http_elearn_jwt_key_t *key,
    const char *iss, const ngx_http_elearn_jwt_claims_t *claims, char *out,
    size_t outlen);

/*
 * Verifies token (len bytes, not NUL-terminated) at time now, allowing
 * leeway seconds of clock skew on exp and nbf.  Checks, in order: length,
 * three base64url parts, header JSON with "alg" equal to the key's (and
 * "typ" JWT if present), signature, claims JSON: "iss" equal to iss,
 * "exp" present and not past, "nbf" not in the future, "sub" (a positive
 * integer, or a string of one), "jti" and "sid" present, "role" present.
 * Returns 0 and fills claims, or -1 with *reason set to a static string
 * naming what failed (never token material).
 */
int ngx_http_elearn_jwt_verify(ngx_http_elearn_jwt_key_t *key,
    const char *iss, time_t now, time_t leeway, const unsigned char *token,
    size_t len, ngx_http_elearn_jwt_claims_t *claims, const char **reason);

/*
 * A bounded cache of verified tokens (for RS256/ES256, where verification
 * costs more than a whole request): keyed by the SHA-256 of the token,
 * entries expire with the token.  nentries 0 disables it.
 */
ngx_http_elearn_jwt_cache_t *ngx_http_elearn_jwt_cache_create(size_t nentries);

void ngx_http_elearn_jwt_cache_destroy(ngx_http_elearn_jwt_cache_t *cache);

/* Returns 1 and fills claims when token is cached and unexpired at now. */
int ngx_http_elearn_jwt_cache_get(ngx_http_elearn_jwt_cache_t *cache,
    const unsigned char *token, size_t len, time_t now,
    ngx_http_elearn_jwt_claims_t *claims);

void ngx_http_elearn_jwt_cache_put(ngx_http_elearn_jwt_cache_t *cache,
    const unsigned char *token, size_t len,
    const ngx_http_elearn_jwt_claims_t *claims);


#endif /* _NGX_HTTP_ELEARN_JWT_H_INCLUDED_ */
