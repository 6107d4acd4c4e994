
/*
 * elearn jwt: signs and verifies access tokens (JWS compact form, HS256,
 * RS256 or ES256) with OpenSSL 3, and caches verified tokens.
 *
 * The key is loaded once: the PEM is parsed, and the contexts that sign
 * and verify (an HMAC context keyed with the secret, EVP_PKEY_CTX set up
 * for SHA-256 with PKCS#1 v1.5 or ECDSA) are made ready, so a call only
 * hashes and does the public-key operation.  Those contexts are mutable:
 * a key is used by one thread at a time (an nginx worker's main thread).
 *
 * Verification decodes into stack buffers and parses each JSON part once.
 * The algorithm is the key's and nothing else: the header's "alg" is
 * compared with it before any cryptography, so "none" and an HS256 token
 * MACed with an RSA or EC public key fail there.  The payload is parsed
 * only after its signature has been checked.
 *
 * What this file must never do: put token material (or the secret) in a
 * reason or error string, accept an algorithm named by the token, or
 * leave OpenSSL errors on the thread's queue, where nginx's TLS code
 * would later find them and misread a healthy connection.
 */


#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "ngx_http_elearn_jwt.h"


#define ELEARN_JWT_HS_MIN        32          /* bytes of secret */
#define ELEARN_JWT_HS_MAX        4096
#define ELEARN_JWT_RSA_MIN       2048        /* bits */
#define ELEARN_JWT_RSA_MAX       8192
#define ELEARN_JWT_SIG_MAX       (ELEARN_JWT_RSA_MAX / 8)
#define ELEARN_JWT_ES_SIG        64          /* r || s */
#define ELEARN_JWT_DER_MAX       72          /* DER ECDSA-Sig-Value, P-256 */
#define ELEARN_JWT_HDR_MAX       64

/* base64url without padding of n bytes */
#define elearn_jwt_b64_len(n)    (((n) * 4 + 2) / 3)


struct ngx_http_elearn_jwt_key_s {
    int                  alg;
    int                  can_sign;
    size_t               sig_len;            /* of a JWS signature */
    EVP_MAC_CTX         *mac;                /* HS256: keyed HMAC */
    EVP_PKEY            *pkey;               /* RS256, ES256 */
    EVP_PKEY_CTX        *verify;
    EVP_PKEY_CTX        *sign;               /* NULL: verify only */
    EVP_MD              *sha256;             /* fetched once */
    EVP_MD_CTX          *md;                 /* reused for each hash */
    const char          *alg_name;
    size_t               hdr_len;
    char                 hdr[ELEARN_JWT_HDR_MAX];  /* base64url header */
};


typedef struct {
    unsigned char                  digest[SHA256_DIGEST_LENGTH];
    uint64_t                       stamp;    /* 0: free */
    ngx_http_elearn_jwt_claims_t   claims;
} ngx_http_elearn_jwt_cache_entry_t;


#define ELEARN_JWT_CACHE_WAYS    4

struct ngx_http_elearn_jwt_cache_s {
    size_t                              nsets;
    uint64_t                            stamp;
    EVP_MD                             *sha256;
    EVP_MD_CTX                         *md;
    ngx_http_elearn_jwt_cache_entry_t  *entries;  /* nsets * WAYS */
};


static const char  b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0xff: not in the base64url alphabet ('=' and '+' '/' included) */
static const unsigned char  b64url_value[256] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff,   62, 0xff, 0xff,     /* '-' */
      52,   53,   54,   55,   56,   57,   58,   59,     /* '0'-'7' */
      60,   61, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,     /* '8' '9' */
    0xff,    0,    1,    2,    3,    4,    5,    6,     /* 'A'-'G' */
       7,    8,    9,   10,   11,   12,   13,   14,
      15,   16,   17,   18,   19,   20,   21,   22,
      23,   24,   25, 0xff, 0xff, 0xff, 0xff,   63,     /* '_' */
    0xff,   26,   27,   28,   29,   30,   31,   32,     /* 'a'-'g' */
      33,   34,   35,   36,   37,   38,   39,   40,
      41,   42,   43,   44,   45,   46,   47,   48,
      49,   50,   51, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
};


static size_t
elearn_jwt_b64_encode(char *dst, const unsigned char *src, size_t len)
{
    char    *p;
    size_t   i;

    p = dst;

    for (i = 0; i + 2 < len; i += 3) {
        *p++ = b64url_alphabet[src[i] >> 2];
        *p++ = b64url_alphabet[((src[i] & 0x03) << 4) | (src[i + 1] >> 4)];
        *p++ = b64url_alphabet[((src[i + 1] & 0x0f) << 2) | (src[i + 2] >> 6)];
        *p++ = b64url_alphabet[src[i + 2] & 0x3f];
    }

    if (len - i == 1) {
        *p++ = b64url_alphabet[src[i] >> 2];
        *p++ = b64url_alphabet[(src[i] & 0x03) << 4];

    } else if (len - i == 2) {
        *p++ = b64url_alphabet[src[i] >> 2];
        *p++ = b64url_alphabet[((src[i] & 0x03) << 4) | (src[i + 1] >> 4)];
        *p++ = b64url_alphabet[(src[i + 1] & 0x0f) << 2];
    }

    return p - dst;
}


/*
 * Strict base64url (RFC 7515 section 2): no padding, nothing outside the
 * alphabet, and the unused low bits of the last character zero, so each
 * byte string has exactly one encoding.  dst holds len * 3 / 4 bytes.
 */

static ssize_t
elearn_jwt_b64_decode(unsigned char *dst, const unsigned char *src,
    size_t len)
{
    size_t          i, n;
    unsigned char  *p, a, b, c, d;

    if (len % 4 == 1) {
        return -1;
    }

    p = dst;
    n = len - len % 4;

    for (i = 0; i < n; i += 4) {
        a = b64url_value[src[i]];
        b = b64url_value[src[i + 1]];
        c = b64url_value[src[i + 2]];
        d = b64url_value[src[i + 3]];

        if ((a | b | c | d) & 0x80) {
            return -1;
        }

        *p++ = (unsigned char) (a << 2 | b >> 4);
        *p++ = (unsigned char) (b << 4 | c >> 2);
        *p++ = (unsigned char) (c << 6 | d);
    }

    switch (len - n) {

    case 2:
        a = b64url_value[src[i]];
        b = b64url_value[src[i + 1]];

        if (((a | b) & 0x80) || (b & 0x0f)) {
            return -1;
        }

        *p++ = (unsigned char) (a << 2 | b >> 4);
        break;

    case 3:
        a = b64url_value[src[i]];
        b = b64url_value[src[i + 1]];
        c = b64url_value[src[i + 2]];

        if (((a | b | c) & 0x80) || (c & 0x03)) {
            return -1;
        }

        *p++ = (unsigned char) (a << 2 | b >> 4);
        *p++ = (unsigned char) (b << 4 | c >> 2);
        break;
    }

    return p - dst;
}


/*
 * SHA-256 with a context and a digest fetched in advance: OpenSSL 3's
 * one-shot SHA256() fetches the algorithm and allocates a context on every
 * call, which costs more than hashing a token.
 */

static int
elearn_jwt_sha256(EVP_MD_CTX *ctx, EVP_MD *md, const unsigned char *data,
    size_t len, unsigned char *digest)
{
    if (EVP_DigestInit_ex(ctx, md, NULL) != 1
        || EVP_DigestUpdate(ctx, data, len) != 1
        || EVP_DigestFinal_ex(ctx, digest, NULL) != 1)
    {
        ERR_clear_error();
        return -1;
    }

    return 0;
}


static int
elearn_jwt_sha256_init(EVP_MD **md, EVP_MD_CTX **ctx)
{
    *md = EVP_MD_fetch(NULL, "SHA256", NULL);
    *ctx = EVP_MD_CTX_new();

    return (*md != NULL && *ctx != NULL) ? 0 : -1;
}


static void
elearn_jwt_err(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long  e;
    char           ossl[160];

    e = ERR_peek_last_error();

    if (e != 0) {
        ERR_error_string_n(e, ossl, sizeof(ossl));
        snprintf(err, errlen, "%s \"%s\" (%s)", what, path, ossl);

    } else {
        snprintf(err, errlen, "%s \"%s\"", what, path);
    }

    ERR_clear_error();
}


/* an encrypted PEM key fails instead of prompting on the terminal */

static int
elearn_jwt_no_password(char *buf, int size, int rwflag, void *u)
{
    (void) buf;
    (void) size;
    (void) rwflag;
    (void) u;

    return -1;
}


static int
elearn_jwt_load_secret(ngx_http_elearn_jwt_key_t *key, const char *path,
    char *err, size_t errlen)
{
    int            fd, rc;
    size_t         len;
    ssize_t        n;
    EVP_MAC       *mac;
    OSSL_PARAM     params[2];
    struct stat    st;
    unsigned char  secret[ELEARN_JWT_HS_MAX + 1];

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "cannot open \"%s\": %s", path,
                 strerror(errno));
        return -1;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "\"%s\" is not a regular file", path);
        close(fd);
        return -1;
    }

    len = 0;

    for ( ;; ) {
        n = read(fd, secret + len, sizeof(secret) - len);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            break;
        }

        len += n;

        if (len == sizeof(secret)) {
            break;
        }
    }

    rc = (n == -1) ? errno : 0;
    close(fd);

    if (rc != 0) {
        snprintf(err, errlen, "cannot read \"%s\": %s", path, strerror(rc));
        goto failed;
    }

    /* the secret is the file's bytes as they are, a newline included */

    if (len < ELEARN_JWT_HS_MIN) {
        snprintf(err, errlen, "HS256 secret \"%s\" is shorter than %d bytes",
                 path, ELEARN_JWT_HS_MIN);
        goto failed;
    }

    if (len > ELEARN_JWT_HS_MAX) {
        snprintf(err, errlen, "HS256 secret \"%s\" is longer than %d bytes",
                 path, ELEARN_JWT_HS_MAX);
        goto failed;
    }

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) {
        elearn_jwt_err(err, errlen, "HMAC unavailable for", path);
        goto failed;
    }

    key->mac = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);

    if (key->mac == NULL) {
        elearn_jwt_err(err, errlen, "HMAC context failed for", path);
        goto failed;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(key->mac, secret, len, params) != 1) {
        elearn_jwt_err(err, errlen, "HMAC init failed for", path);
        goto failed;
    }

    OPENSSL_cleanse(secret, sizeof(secret));
    key->can_sign = 1;
    key->sig_len = SHA256_DIGEST_LENGTH;

    return 0;

failed:

    OPENSSL_cleanse(secret, sizeof(secret));
    return -1;
}


static EVP_PKEY *
elearn_jwt_read_pem(const char *path, int private, char *err, size_t errlen)
{
    BIO       *bio;
    EVP_PKEY  *pkey;

    bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        elearn_jwt_err(err, errlen, "cannot open", path);
        return NULL;
    }

    if (private) {
        pkey = PEM_read_bio_PrivateKey(bio, NULL, elearn_jwt_no_password,
                                       NULL);
    } else {
        pkey = PEM_read_bio_PUBKEY(bio, NULL, elearn_jwt_no_password, NULL);
    }

    BIO_free(bio);

    if (pkey == NULL) {
        elearn_jwt_err(err, errlen,
                       private ? "no PEM private key (unencrypted) in"
                               : "no PEM public key in", path);
        return NULL;
    }

    return pkey;
}


static int
elearn_jwt_check_pkey(int alg, EVP_PKEY *pkey, const char *path, char *err,
    size_t errlen)
{
    int   bits;
    char  group[64];

    bits = EVP_PKEY_get_bits(pkey);

    if (alg == NGX_HTTP_ELEARN_JWT_RS256) {
        if (!EVP_PKEY_is_a(pkey, "RSA")) {
            snprintf(err, errlen, "\"%s\" is not an RSA key", path);
            return -1;
        }

        if (bits < ELEARN_JWT_RSA_MIN || bits > ELEARN_JWT_RSA_MAX) {
            snprintf(err, errlen, "RSA key \"%s\" has %d bits, not %d-%d",
                     path, bits, ELEARN_JWT_RSA_MIN, ELEARN_JWT_RSA_MAX);
            return -1;
        }

        return 0;
    }

    if (!EVP_PKEY_is_a(pkey, "EC")
        || EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) != 1
        || OBJ_sn2nid(group) != NID_X9_62_prime256v1)
    {
        ERR_clear_error();
        snprintf(err, errlen, "\"%s\" is not a P-256 EC key", path);
        return -1;
    }

    return 0;
}


static EVP_PKEY_CTX *
elearn_jwt_pkey_ctx(ngx_http_elearn_jwt_key_t *key, int sign)
{
    int            rc;
    EVP_PKEY_CTX  *ctx;

    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (ctx == NULL) {
        return NULL;
    }

    rc = sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx);

    if (rc == 1 && key->alg == NGX_HTTP_ELEARN_JWT_RS256) {
        rc = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING);
    }

    if (rc == 1) {
        rc = EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256());
    }

    if (rc != 1) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }

    return ctx;
}


static int
elearn_jwt_load_pkey(ngx_http_elearn_jwt_key_t *key, const char *path,
    const char *public_path, char *err, size_t errlen)
{
    int        rc;
    EVP_PKEY  *pub;

    if (path != NULL) {
        key->pkey = elearn_jwt_read_pem(path, 1, err, errlen);
        if (key->pkey == NULL) {
            return -1;
        }

        if (elearn_jwt_check_pkey(key->alg, key->pkey, path, err, errlen)
            != 0)
        {
            return -1;
        }

        /* both given: the public key must be the private key's own */

        if (public_path != NULL) {
            pub = elearn_jwt_read_pem(public_path, 0, err, errlen);
            if (pub == NULL) {
                return -1;
            }

            rc = EVP_PKEY_eq(key->pkey, pub);
            EVP_PKEY_free(pub);
            ERR_clear_error();

            if (rc != 1) {
                snprintf(err, errlen, "public key \"%s\" does not match "
                         "private key \"%s\"", public_path, path);
                return -1;
            }
        }

        key->sign = elearn_jwt_pkey_ctx(key, 1);
        if (key->sign == NULL) {
            elearn_jwt_err(err, errlen, "cannot sign with", path);
            return -1;
        }

        key->can_sign = 1;

    } else {
        key->pkey = elearn_jwt_read_pem(public_path, 0, err, errlen);
        if (key->pkey == NULL) {
            return -1;
        }

        if (elearn_jwt_check_pkey(key->alg, key->pkey, public_path, err,
                                  errlen)
            != 0)
        {
            return -1;
        }
    }

    key->verify = elearn_jwt_pkey_ctx(key, 0);
    if (key->verify == NULL) {
        elearn_jwt_err(err, errlen, "cannot verify with",
                       path ? path : public_path);
        return -1;
    }

    key->sig_len = (key->alg == NGX_HTTP_ELEARN_JWT_ES256)
                   ? ELEARN_JWT_ES_SIG : (size_t) EVP_PKEY_get_size(key->pkey);

    return 0;
}


ngx_http_elearn_jwt_key_t *
ngx_http_elearn_jwt_key_load(int alg, const char *path,
    const char *public_path, char *err, size_t errlen)
{
    int                         rc;
    char                        hdr[ELEARN_JWT_HDR_MAX];
    ngx_http_elearn_jwt_key_t  *key;

    key = calloc(1, sizeof(ngx_http_elearn_jwt_key_t));
    if (key == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    key->alg = alg;

    switch (alg) {

    case NGX_HTTP_ELEARN_JWT_HS256:
        key->alg_name = "HS256";

        if (path == NULL) {
            snprintf(err, errlen, "HS256 needs a secret file");
            goto failed;
        }

        rc = elearn_jwt_load_secret(key, path, err, errlen);
        break;

    case NGX_HTTP_ELEARN_JWT_RS256:
    case NGX_HTTP_ELEARN_JWT_ES256:
        key->alg_name = (alg == NGX_HTTP_ELEARN_JWT_RS256) ? "RS256"
                                                           : "ES256";

        if (path == NULL && public_path == NULL) {
            snprintf(err, errlen, "%s needs a private or a public key",
                     key->alg_name);
            goto failed;
        }

        if (elearn_jwt_sha256_init(&key->sha256, &key->md) != 0) {
            snprintf(err, errlen, "SHA-256 unavailable");
            goto failed;
        }

        rc = elearn_jwt_load_pkey(key, path, public_path, err, errlen);
        break;

    default:
        snprintf(err, errlen, "unknown algorithm %d", alg);
        goto failed;
    }

    if (rc != 0) {
        goto failed;
    }

    /* the header every token we sign carries, and verify's fast path */

    rc = snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"}",
                  key->alg_name);

    key->hdr_len = elearn_jwt_b64_encode(key->hdr, (unsigned char *) hdr,
                                         rc);

    return key;

failed:

    ngx_http_elearn_jwt_key_free(key);
    ERR_clear_error();

    return NULL;
}


void
ngx_http_elearn_jwt_key_free(ngx_http_elearn_jwt_key_t *key)
{
    if (key == NULL) {
        return;
    }

    EVP_MAC_CTX_free(key->mac);
    EVP_PKEY_CTX_free(key->sign);
    EVP_PKEY_CTX_free(key->verify);
    EVP_PKEY_free(key->pkey);
    EVP_MD_CTX_free(key->md);
    EVP_MD_free(key->sha256);
    free(key);
}


int
ngx_http_elearn_jwt_key_can_sign(ngx_http_elearn_jwt_key_t *key)
{
    return key->can_sign;
}


/*
 * sid, jti and role go into Redis keys, logs and headers: they must be
 * 1 to max - 1 characters of RFC 3986's unreserved set.
 */

static int
elearn_jwt_id_valid(const char *s, size_t len, size_t max)
{
    size_t         i;
    unsigned char  c;

    if (len == 0 || len >= max) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if (b64url_value[c] == 0xff && c != '.' && c != '~') {
            return 0;
        }
    }

    return 1;
}


static int
elearn_jwt_hs256(ngx_http_elearn_jwt_key_t *key, const unsigned char *data,
    size_t len, unsigned char *mac)
{
    size_t  n;

    /* a NULL key re-initializes the context with the loaded secret */

    if (EVP_MAC_init(key->mac, NULL, 0, NULL) != 1
        || EVP_MAC_update(key->mac, data, len) != 1
        || EVP_MAC_final(key->mac, mac, &n, SHA256_DIGEST_LENGTH) != 1
        || n != SHA256_DIGEST_LENGTH)
    {
        ERR_clear_error();
        return -1;
    }

    return 0;
}


/* a DER INTEGER of a 32-byte unsigned big-endian value */

static size_t
elearn_jwt_der_int(unsigned char *p, const unsigned char *v)
{
    size_t  n, pad;

    n = 32;

    while (n > 1 && *v == 0) {
        v++;
        n--;
    }

    pad = (*v & 0x80) ? 1 : 0;

    p[0] = 0x02;
    p[1] = (unsigned char) (n + pad);
    p[2] = 0;
    memcpy(p + 2 + pad, v, n);

    return 2 + pad + n;
}


static int
elearn_jwt_check_sig(ngx_http_elearn_jwt_key_t *key,
    const unsigned char *data, size_t len, const unsigned char *sig)
{
    int            rc;
    size_t         n;
    unsigned char  dgst[SHA256_DIGEST_LENGTH];
    unsigned char  der[ELEARN_JWT_DER_MAX];

    switch (key->alg) {

    case NGX_HTTP_ELEARN_JWT_HS256:
        if (elearn_jwt_hs256(key, data, len, dgst) != 0) {
            return -1;
        }

        return CRYPTO_memcmp(dgst, sig, SHA256_DIGEST_LENGTH) == 0 ? 0 : -1;

    case NGX_HTTP_ELEARN_JWT_RS256:
        if (elearn_jwt_sha256(key->md, key->sha256, data, len, dgst) != 0) {
            return -1;
        }

        rc = EVP_PKEY_verify(key->verify, sig, key->sig_len, dgst,
                             sizeof(dgst));
        break;

    default: /* NGX_HTTP_ELEARN_JWT_ES256 */

        /* JWS carries r || s; OpenSSL wants an ECDSA-Sig-Value in DER */

        n = elearn_jwt_der_int(der + 2, sig);
        n += elearn_jwt_der_int(der + 2 + n, sig + 32);
        der[0] = 0x30;
        der[1] = (unsigned char) n;

        if (elearn_jwt_sha256(key->md, key->sha256, data, len, dgst) != 0) {
            return -1;
        }

        rc = EVP_PKEY_verify(key->verify, der, n + 2, dgst, sizeof(dgst));
        break;
    }

    if (rc != 1) {
        ERR_clear_error();
        return -1;
    }

    return 0;
}


static int
elearn_jwt_sign_data(ngx_http_elearn_jwt_key_t *key,
    const unsigned char *data, size_t len, unsigned char *sig)
{
    int                   rc;
    size_t                n;
    ECDSA_SIG            *es;
    const BIGNUM         *r, *s;
    const unsigned char  *p;
    unsigned char         dgst[SHA256_DIGEST_LENGTH];
    unsigned char         der[ELEARN_JWT_DER_MAX];

    if (key->alg == NGX_HTTP_ELEARN_JWT_HS256) {
        return elearn_jwt_hs256(key, data, len, sig);
    }

    if (elearn_jwt_sha256(key->md, key->sha256, data, len, dgst) != 0) {
        return -1;
    }

    if (key->alg == NGX_HTTP_ELEARN_JWT_RS256) {
        n = key->sig_len;
        rc = EVP_PKEY_sign(key->sign, sig, &n, dgst, sizeof(dgst));

        if (rc != 1 || n != key->sig_len) {
            ERR_clear_error();
            return -1;
        }

        return 0;
    }

    n = sizeof(der);

    if (EVP_PKEY_sign(key->sign, der, &n, dgst, sizeof(dgst)) != 1) {
        ERR_clear_error();
        return -1;
    }

    p = der;
    es = d2i_ECDSA_SIG(NULL, &p, n);
    if (es == NULL) {
        ERR_clear_error();
        return -1;
    }

    ECDSA_SIG_get0(es, &r, &s);

    rc = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;

    ECDSA_SIG_free(es);

    if (!rc) {
        ERR_clear_error();
        return -1;
    }

    return 0;
}


/* a JSON string's contents, escaped; NULL if it does not fit */

static char *
elearn_jwt_json_escape(char *p, char *end, const char *s)
{
    unsigned char  c;

    for ( /* void */ ; *s; s++) {
        c = (unsigned char) *s;

        if (c == '"' || c == '\\') {
            if (end - p < 2) {
                return NULL;
            }

            *p++ = '\\';
            *p++ = c;

        } else if (c < 0x20) {
            if (end - p < 7) {
                return NULL;
            }

            p += snprintf(p, 7, "\\u%04x", c);

        } else {
            if (p == end) {
                return NULL;
            }

            *p++ = c;
        }
    }

    return p;
}


ssize_t
ngx_http_elearn_jwt_sign(ngx_http_elearn_jwt_key_t *key, const char *iss,
    const ngx_http_elearn_jwt_claims_t *claims, char *out, size_t outlen)
{
    int            n;
    char          *p, *end;
    size_t         plen, total;
    unsigned char  sig[ELEARN_JWT_SIG_MAX];
    char           payload[NGX_HTTP_ELEARN_JWT_MAX_LEN];

    if (!key->can_sign || iss == NULL || claims->sub <= 0
        || !elearn_jwt_id_valid(claims->role, strlen(claims->role),
                                NGX_HTTP_ELEARN_JWT_ROLE_LEN)
        || !elearn_jwt_id_valid(claims->sid, strlen(claims->sid),
                                NGX_HTTP_ELEARN_JWT_ID_LEN)
        || !elearn_jwt_id_valid(claims->jti, strlen(claims->jti),
                                NGX_HTTP_ELEARN_JWT_ID_LEN))
    {
        return -1;
    }

    memcpy(payload, "{\"iss\":\"", 8);
    end = payload + sizeof(payload);

    p = elearn_jwt_json_escape(payload + 8, end, iss);
    if (p == NULL) {
        return -1;
    }

    /* sub is a StringOrURI (RFC 7519 4.1.2): the id in decimal */

    n = snprintf(p, end - p,
                 "\",\"sub\":\"%lld\",\"role\":\"%s\",\"sid\":\"%s\","
                 "\"jti\":\"%s\",\"iat\":%lld,\"exp\":%lld",
                 (long long) claims->sub, claims->role, claims->sid,
                 claims->jti, (long long) claims->iat,
                 (long long) claims->exp);

    if (n < 0 || n >= end - p) {
        return -1;
    }

    p += n;

    if (claims->nbf != 0) {
        n = snprintf(p, end - p, ",\"nbf\":%lld", (long long) claims->nbf);

        if (n < 0 || n >= end - p) {
            return -1;
        }

        p += n;
    }

    if (p == end) {
        return -1;
    }

    *p++ = '}';
    plen = p - payload;

    total = key->hdr_len + 1 + elearn_jwt_b64_len(plen) + 1
            + elearn_jwt_b64_len(key->sig_len);

    if (total + 1 > outlen || total > NGX_HTTP_ELEARN_JWT_MAX_LEN) {
        return -1;
    }

    p = out;
    memcpy(p, key->hdr, key->hdr_len);
    p += key->hdr_len;
    *p++ = '.';
    p += elearn_jwt_b64_encode(p, (unsigned char *) payload, plen);

    if (elearn_jwt_sign_data(key, (unsigned char *) out, p - out, sig) != 0) {
        return -1;
    }

    *p++ = '.';
    p += elearn_jwt_b64_encode(p, sig, key->sig_len);
    *p = '\0';

    return p - out;
}


static int
elearn_jwt_check_header(ngx_http_elearn_jwt_key_t *key,
    const unsigned char *b64, size_t len, unsigned char *buf,
    const char **reason)
{
    int          rc;
    json_t      *hdr, *v;
    ssize_t      n;
    const char  *s;

    /* the header we sign ourselves: nothing to parse */

    if (len == key->hdr_len && memcmp(b64, key->hdr, len) == 0) {
        return 0;
    }

    n = elearn_jwt_b64_decode(buf, b64, len);
    if (n <= 0) {
        *reason = "malformed header";
        return -1;
    }

    hdr = json_loadb((char *) buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (hdr == NULL || !json_is_object(hdr)) {
        json_decref(hdr);
        *reason = "malformed header";
        return -1;
    }

    rc = -1;

    v = json_object_get(hdr, "alg");
    s = json_string_value(v);

    if (s == NULL || strcmp(s, key->alg_name) != 0) {
        *reason = "alg not allowed";
        goto done;
    }

    v = json_object_get(hdr, "typ");

    if (v != NULL
        && (!json_is_string(v) || strcasecmp(json_string_value(v), "JWT")))
    {
        *reason = "bad typ";
        goto done;
    }

    /* RFC 7515 4.1.11: extensions we do not understand must fail */

    if (json_object_get(hdr, "crit") != NULL) {
        *reason = "unsupported crit";
        goto done;
    }

    rc = 0;

done:

    json_decref(hdr);
    return rc;
}


/* a NumericDate; fractions are cut off */

static int
elearn_jwt_date(json_t *v, int64_t *date)
{
    double  d;

    if (json_is_integer(v)) {
        *date = json_integer_value(v);
        return 0;
    }

    if (json_is_real(v)) {
        d = json_real_value(v);

        if (d > -9.2e18 && d < 9.2e18) {
            *date = (int64_t) d;
            return 0;
        }
    }

    return -1;
}


/* a positive integer, or a string of one in canonical decimal */

static int
elearn_jwt_sub(json_t *v, int64_t *sub)
{
    size_t       i, len;
    int64_t      n;
    const char  *s;

    if (json_is_integer(v)) {
        n = json_integer_value(v);

        if (n <= 0) {
            return -1;
        }

        *sub = n;
        return 0;
    }

    s = json_string_value(v);
    if (s == NULL) {
        return -1;
    }

    len = json_string_length(v);

    if (len == 0 || len > 19 || s[0] == '0') {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        if (n > (INT64_MAX - (s[i] - '0')) / 10) {
            return -1;
        }

        n = n * 10 + (s[i] - '0');
    }

    *sub = n;
    return 0;
}


static int
elearn_jwt_copy_id(json_t *obj, const char *name, char *dst, size_t size)
{
    json_t      *v;
    size_t       len;
    const char  *s;

    v = json_object_get(obj, name);
    s = json_string_value(v);

    if (s == NULL) {
        return -1;
    }

    len = json_string_length(v);

    if (!elearn_jwt_id_valid(s, len, size)) {
        return -1;
    }

    memcpy(dst, s, len + 1);
    return 0;
}


static int
elearn_jwt_check_claims(json_t *p, const char *iss, time_t now,
    time_t leeway, ngx_http_elearn_jwt_claims_t *claims, const char **reason)
{
    json_t      *v;
    int64_t      date;
    const char  *s;

    s = json_string_value(json_object_get(p, "iss"));

    if (s == NULL || iss == NULL || strcmp(s, iss) != 0) {
        *reason = "wrong issuer";
        return -1;
    }

    v = json_object_get(p, "exp");

    if (v == NULL || elearn_jwt_date(v, &claims->exp) != 0) {
        *reason = "missing exp";
        return -1;
    }

    /* valid while now < exp + leeway; written so that it cannot overflow */

    if (claims->exp <= (int64_t) now - leeway) {
        *reason = "expired";
        return -1;
    }

    v = json_object_get(p, "nbf");
    claims->nbf = 0;

    if (v != NULL) {
        if (elearn_jwt_date(v, &date) != 0) {
            *reason = "bad nbf";
            return -1;
        }

        if (date > (int64_t) now + leeway) {
            *reason = "not yet valid";
            return -1;
        }

        claims->nbf = date;
    }

    v = json_object_get(p, "iat");
    claims->iat = 0;

    if (v != NULL && elearn_jwt_date(v, &claims->iat) != 0) {
        *reason = "bad iat";
        return -1;
    }

    v = json_object_get(p, "sub");

    if (v == NULL || elearn_jwt_sub(v, &claims->sub) != 0) {
        *reason = "missing or bad sub";
        return -1;
    }

    if (elearn_jwt_copy_id(p, "jti", claims->jti, sizeof(claims->jti))
        != 0)
    {
        *reason = "missing or bad jti";
        return -1;
    }

    if (elearn_jwt_copy_id(p, "sid", claims->sid, sizeof(claims->sid))
        != 0)
    {
        *reason = "missing or bad sid";
        return -1;
    }

    if (elearn_jwt_copy_id(p, "role", claims->role, sizeof(claims->role))
        != 0)
    {
        *reason = "missing or bad role";
        return -1;
    }

    return 0;
}


int
ngx_http_elearn_jwt_verify(ngx_http_elearn_jwt_key_t *key, const char *iss,
    time_t now, time_t leeway, const unsigned char *token, size_t len,
    ngx_http_elearn_jwt_claims_t *claims, const char **reason)
{
    int                   rc;
    json_t               *payload;
    size_t                hlen, plen, slen;
    ssize_t               n;
    const unsigned char  *dot1, *dot2;
    unsigned char         sig[ELEARN_JWT_SIG_MAX];
    unsigned char         buf[NGX_HTTP_ELEARN_JWT_MAX_LEN / 4 * 3];

    if (len == 0) {
        *reason = "empty token";
        return -1;
    }

    if (len > NGX_HTTP_ELEARN_JWT_MAX_LEN) {
        *reason = "token too long";
        return -1;
    }

    dot1 = memchr(token, '.', len);
    if (dot1 == NULL) {
        *reason = "malformed token";
        return -1;
    }

    hlen = dot1 - token;

    dot2 = memchr(dot1 + 1, '.', len - hlen - 1);
    if (dot2 == NULL) {
        *reason = "malformed token";
        return -1;
    }

    plen = dot2 - dot1 - 1;
    slen = len - hlen - plen - 2;

    if (hlen == 0 || plen == 0
        || memchr(dot2 + 1, '.', slen) != NULL)
    {
        *reason = "malformed token";
        return -1;
    }

    if (leeway < 0) {
        leeway = 0;
    }

    if (elearn_jwt_check_header(key, token, hlen, buf, reason) != 0) {
        return -1;
    }

    /* a signature of any other length is not ours: no need to decode it */

    if (slen != elearn_jwt_b64_len(key->sig_len)
        || elearn_jwt_b64_decode(sig, dot2 + 1, slen) != (ssize_t) key->sig_len
        || elearn_jwt_check_sig(key, token, dot2 - token, sig) != 0)
    {
        *reason = "bad signature";
        return -1;
    }

    n = elearn_jwt_b64_decode(buf, dot1 + 1, plen);
    if (n <= 0) {
        *reason = "malformed payload";
        return -1;
    }

    payload = json_loadb((char *) buf, n, JSON_REJECT_DUPLICATES, NULL);

    if (payload == NULL || !json_is_object(payload)) {
        json_decref(payload);
        *reason = "malformed payload";
        return -1;
    }

    rc = elearn_jwt_check_claims(payload, iss, now, leeway, claims, reason);

    json_decref(payload);

    return rc;
}


ngx_http_elearn_jwt_cache_t *
ngx_http_elearn_jwt_cache_create(size_t nentries)
{
    ngx_http_elearn_jwt_cache_t  *cache;

    cache = calloc(1, sizeof(ngx_http_elearn_jwt_cache_t));
    if (cache == NULL) {
        return NULL;
    }

    cache->nsets = (nentries + ELEARN_JWT_CACHE_WAYS - 1)
                   / ELEARN_JWT_CACHE_WAYS;

    if (cache->nsets == 0) {
        return cache;
    }

    cache->entries = calloc(cache->nsets * ELEARN_JWT_CACHE_WAYS,
                            sizeof(ngx_http_elearn_jwt_cache_entry_t));
    if (cache->entries == NULL) {
        goto failed;
    }

    if (elearn_jwt_sha256_init(&cache->sha256, &cache->md) != 0) {
        goto failed;
    }

    return cache;

failed:

    ngx_http_elearn_jwt_cache_destroy(cache);
    ERR_clear_error();

    return NULL;
}


void
ngx_http_elearn_jwt_cache_destroy(ngx_http_elearn_jwt_cache_t *cache)
{
    if (cache == NULL) {
        return;
    }

    EVP_MD_CTX_free(cache->md);
    EVP_MD_free(cache->sha256);
    free(cache->entries);
    free(cache);
}


static ngx_http_elearn_jwt_cache_entry_t *
elearn_jwt_cache_set(ngx_http_elearn_jwt_cache_t *cache,
    const unsigned char *token, size_t len, unsigned char *digest)
{
    uint64_t  h;

    if (elearn_jwt_sha256(cache->md, cache->sha256, token, len, digest)
        != 0)
    {
        return NULL;
    }

    memcpy(&h, digest, sizeof(h));

    return &cache->entries[(h % cache->nsets) * ELEARN_JWT_CACHE_WAYS];
}


int
ngx_http_elearn_jwt_cache_get(ngx_http_elearn_jwt_cache_t *cache,
    const unsigned char *token, size_t len, time_t now,
    ngx_http_elearn_jwt_claims_t *claims)
{
    size_t                              i;
    unsigned char                       digest[SHA256_DIGEST_LENGTH];
    ngx_http_elearn_jwt_cache_entry_t  *e;

    if (cache == NULL || cache->nsets == 0) {
        return 0;
    }

    e = elearn_jwt_cache_set(cache, token, len, digest);
    if (e == NULL) {
        return 0;
    }

    for (i = 0; i < ELEARN_JWT_CACHE_WAYS; i++, e++) {

        /* the whole digest: two tokens never share an entry */

        if (e->stamp == 0 || memcmp(e->digest, digest, sizeof(digest)) != 0) {
            continue;
        }

        if (e->claims.exp <= (int64_t) now) {
            e->stamp = 0;
            return 0;
        }

        *claims = e->claims;
        return 1;
    }

    return 0;
}


void
ngx_http_elearn_jwt_cache_put(ngx_http_elearn_jwt_cache_t *cache,
    const unsigned char *token, size_t len,
    const ngx_http_elearn_jwt_claims_t *claims)
{
    size_t                              i;
    unsigned char                       digest[SHA256_DIGEST_LENGTH];
    ngx_http_elearn_jwt_cache_entry_t  *e, *victim;

    if (cache == NULL || cache->nsets == 0) {
        return;
    }

    e = elearn_jwt_cache_set(cache, token, len, digest);
    if (e == NULL) {
        return;
    }

    /* the same token again, else a free entry, else the oldest */

    victim = e;

    for (i = 0; i < ELEARN_JWT_CACHE_WAYS; i++, e++) {

        if (e->stamp != 0 && memcmp(e->digest, digest, sizeof(digest)) == 0) {
            victim = e;
            break;
        }

        if (victim->stamp != 0 && e->stamp < victim->stamp) {
            victim = e;
        }
    }

    memcpy(victim->digest, digest, sizeof(digest));
    victim->claims = *claims;
    victim->stamp = ++cache->stamp;
}
