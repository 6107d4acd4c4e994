/*
 * test_jwt: ngx_http_elearn_jwt.c as the module links it.  Keys are made
 * in-process into a temporary directory; tokens the module would never
 * sign (alg none, HS256 MACed with a public key, bad JSON) are built here
 * with OpenSSL's HMAC so that each check is reached on its own.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ngx_http_elearn_jwt.h"

#define ISS "https://elearn.test"
#define NOW ((time_t) 1700000000)
#define LEEWAY ((time_t) 30)
#define TOKEN_MAX (NGX_HTTP_ELEARN_JWT_MAX_LEN + 1)

static char dir[] = "/tmp/test_jwt.XXXXXX";
static char path_secret[64], path_short[64], path_secret32[64];
static char path_rsa[64], path_rsa_pub[64], path_rsa1024[64];
static char path_ec[64], path_ec_pub[64], path_ec384[64], path_ec2_pub[64];
static unsigned char secret[48];

static ngx_http_elearn_jwt_key_t *hs, *rs, *rs_pub, *es, *es_pub;

static void
write_file(const char *path, const void *data, size_t len)
{
    FILE *f;

    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void
write_pem(const char *path, EVP_PKEY *pkey, int private)
{
    BIO *bio;

    bio = BIO_new_file(path, "w");
    assert_non_null(bio);
    if (private) {
        assert_int_equal(
            PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
    } else {
        assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
    }
    BIO_free(bio);
}

static void
make_key(const char *priv, const char *pub, const char *type, int bits,
    const char *curve)
{
    EVP_PKEY *pkey;

    if (curve != NULL) {
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, type, curve);
    } else {
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, type, (size_t) bits);
    }
    assert_non_null(pkey);
    if (priv != NULL) {
        write_pem(priv, pkey, 1);
    }
    if (pub != NULL) {
        write_pem(pub, pkey, 0);
    }
    EVP_PKEY_free(pkey);
}

static ngx_http_elearn_jwt_key_t *
load(int alg, const char *path, const char *pub)
{
    ngx_http_elearn_jwt_key_t *key;
    char err[256];

    err[0] = '\0';
    key = ngx_http_elearn_jwt_key_load(alg, path, pub, err, sizeof(err));
    if (key == NULL) {
        fail_msg("key_load: %s", err);
    }
    return key;
}

static int
group_setup(void **state)
{
    unsigned char short_secret[31];

    (void) state;
    assert_non_null(mkdtemp(dir));
    snprintf(path_secret, sizeof(path_secret), "%s/hs.key", dir);
    snprintf(path_short, sizeof(path_short), "%s/short.key", dir);
    snprintf(path_secret32, sizeof(path_secret32), "%s/hs32.key", dir);
    snprintf(path_rsa, sizeof(path_rsa), "%s/rsa.pem", dir);
    snprintf(path_rsa_pub, sizeof(path_rsa_pub), "%s/rsa.pub", dir);
    snprintf(path_rsa1024, sizeof(path_rsa1024), "%s/rsa1024.pem", dir);
    snprintf(path_ec, sizeof(path_ec), "%s/ec.pem", dir);
    snprintf(path_ec_pub, sizeof(path_ec_pub), "%s/ec.pub", dir);
    snprintf(path_ec384, sizeof(path_ec384), "%s/ec384.pem", dir);
    snprintf(path_ec2_pub, sizeof(path_ec2_pub), "%s/ec2.pub", dir);

    assert_int_equal(RAND_bytes(secret, sizeof(secret)), 1);
    assert_int_equal(RAND_bytes(short_secret, sizeof(short_secret)), 1);
    write_file(path_secret, secret, sizeof(secret));
    write_file(path_short, short_secret, sizeof(short_secret));
    write_file(path_secret32, secret, 32);

    make_key(path_rsa, path_rsa_pub, "RSA", 2048, NULL);
    make_key(path_rsa1024, NULL, "RSA", 1024, NULL);
    make_key(path_ec, path_ec_pub, "EC", 0, "P-256");
    make_key(path_ec384, NULL, "EC", 0, "P-384");
    make_key(NULL, path_ec2_pub, "EC", 0, "P-256");

    hs = load(NGX_HTTP_ELEARN_JWT_HS256, path_secret, NULL);
    rs = load(NGX_HTTP_ELEARN_JWT_RS256, path_rsa, NULL);
    rs_pub = load(NGX_HTTP_ELEARN_JWT_RS256, NULL, path_rsa_pub);
    es = load(NGX_HTTP_ELEARN_JWT_ES256, path_ec, path_ec_pub);
    es_pub = load(NGX_HTTP_ELEARN_JWT_ES256, NULL, path_ec_pub);
    return 0;
}

static int
group_teardown(void **state)
{
    char cmd[128];

    (void) state;
    ngx_http_elearn_jwt_key_free(hs);
    ngx_http_elearn_jwt_key_free(rs);
    ngx_http_elearn_jwt_key_free(rs_pub);
    ngx_http_elearn_jwt_key_free(es);
    ngx_http_elearn_jwt_key_free(es_pub);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* --- helpers ------------------------------------------------------------ */

static size_t
b64url(char *dst, const unsigned char *src, size_t len)
{
    size_t i, n;

    n = EVP_EncodeBlock((unsigned char *) dst, src, (int) len);
    while (n > 0 && dst[n - 1] == '=') {
        n--;
    }
    for (i = 0; i < n; i++) {
        if (dst[i] == '+') {
            dst[i] = '-';
        } else if (dst[i] == '/') {
            dst[i] = '_';
        }
    }
    dst[n] = '\0';
    return n;
}

/* hdr.payload (already encoded) MACed with key into out */
static void
mac_raw(char *out, const void *key, size_t keylen, const char *hdr_b64,
    const char *payload_b64)
{
    unsigned char mac[32];
    unsigned int maclen;
    size_t n;

    n = (size_t) sprintf(out, "%s.%s", hdr_b64, payload_b64);
    assert_non_null(HMAC(EVP_sha256(), key, (int) keylen, (unsigned char *) out,
        n, mac, &maclen));
    out[n++] = '.';
    b64url(out + n, mac, maclen);
}

static void
mac_token(char *out, const void *key, size_t keylen, const char *hdr,
    const char *payload)
{
    static char h[TOKEN_MAX * 2], p[TOKEN_MAX * 2];

    b64url(h, (const unsigned char *) hdr, strlen(hdr));
    b64url(p, (const unsigned char *) payload, strlen(payload));
    mac_raw(out, key, keylen, h, p);
}

/* an HS256 token with our secret and this payload */
static void
hs_token(char *out, const char *payload)
{
    mac_token(out, secret, sizeof(secret),
        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload);
}

static void
claims_init(ngx_http_elearn_jwt_claims_t *c)
{
    memset(c, 0, sizeof(*c));
    c->sub = 42;
    strcpy(c->role, "student");
    strcpy(c->sid, "sid-0123456789abcdef");
    strcpy(c->jti, "jti_ABCDEF.~-");
    c->iat = NOW;
    c->exp = NOW + 900;
}

static size_t
sign(ngx_http_elearn_jwt_key_t *key, const char *iss,
    const ngx_http_elearn_jwt_claims_t *c, char *out)
{
    ssize_t n;

    n = ngx_http_elearn_jwt_sign(key, iss, c, out, TOKEN_MAX);
    assert_true(n > 0);
    assert_int_equal((size_t) n, strlen(out));
    return (size_t) n;
}

static int
verify_at(ngx_http_elearn_jwt_key_t *key, const char *token, time_t now,
    ngx_http_elearn_jwt_claims_t *c, const char **reason)
{
    *reason = NULL;
    return ngx_http_elearn_jwt_verify(key, ISS, now, LEEWAY,
        (const unsigned char *) token, strlen(token), c, reason);
}

static void
assert_refused(
    ngx_http_elearn_jwt_key_t *key, const char *token, const char *why)
{
    ngx_http_elearn_jwt_claims_t c;
    const char *reason;

    assert_int_equal(verify_at(key, token, NOW, &c, &reason), -1);
    assert_non_null(reason);
    assert_string_equal(reason, why);
}

static void
assert_accepted(ngx_http_elearn_jwt_key_t *key, const char *token)
{
    ngx_http_elearn_jwt_claims_t c;
    const char *reason;

    if (verify_at(key, token, NOW, &c, &reason) != 0) {
        fail_msg("refused: %s", reason);
    }
}

static void
assert_claims_equal(const ngx_http_elearn_jwt_claims_t *a,
    const ngx_http_elearn_jwt_claims_t *b)
{
    assert_int_equal(a->sub, b->sub);
    assert_string_equal(a->role, b->role);
    assert_string_equal(a->sid, b->sid);
    assert_string_equal(a->jti, b->jti);
    assert_int_equal(a->iat, b->iat);
    assert_int_equal(a->exp, b->exp);
    assert_int_equal(a->nbf, b->nbf);
}

static char *
read_all(const char *path, size_t *len)
{
    FILE *f;
    char *buf;

    buf = malloc(16384);
    assert_non_null(buf);
    f = fopen(path, "rb");
    assert_non_null(f);
    *len = fread(buf, 1, 16384, f);
    fclose(f);
    return buf;
}

#define PAYLOAD_OK                                                             \
    "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","                \
    "\"sid\":\"s1\",\"jti\":\"j1\",\"iat\":1700000000,\"exp\":1700000900}"

/* PAYLOAD_OK, encoded to a length that is not a multiple of 4 */
static void
unaligned_payload(char *p)
{
    char json[512];

    snprintf(json, sizeof(json), "%s ", PAYLOAD_OK);
    if (strlen(json) % 3 == 0) {
        strcat(json, " ");
    }
    b64url(p, (const unsigned char *) json, strlen(json));
    assert_int_not_equal(strlen(p) % 4, 0);
}

/* --- round trips -------------------------------------------------------- */

static void
roundtrip(ngx_http_elearn_jwt_key_t *key, const char *alg)
{
    ngx_http_elearn_jwt_claims_t in, out;
    const char *reason;
    char token[TOKEN_MAX], json[64], expect[128];
    size_t i;

    for (i = 0; i < 20; i++) {
        claims_init(&in);
        in.sub = 1000 + (int64_t) i;
        in.nbf = (i % 2) ? NOW - 5 : 0;
        sign(key, ISS, &in, token);
        memset(&out, 0xa5, sizeof(out));
        if (verify_at(key, token, NOW, &out, &reason) != 0) {
            fail_msg("%s round trip %zu: %s", alg, i, reason);
        }
        assert_claims_equal(&in, &out);
    }

    /* the header is exactly {"alg":alg,"typ":"JWT"} */
    snprintf(json, sizeof(json), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    b64url(expect, (unsigned char *) json, strlen(json));
    assert_memory_equal(token, expect, strlen(expect));
    assert_int_equal(token[strlen(expect)], '.');
}

static void
test_roundtrip_hs256(void **state)
{
    (void) state;
    roundtrip(hs, "HS256");
}

static void
test_roundtrip_rs256(void **state)
{
    ngx_http_elearn_jwt_claims_t in;
    char token[TOKEN_MAX];

    (void) state;
    roundtrip(rs, "RS256");

    /* the verify-only key checks what the private key signed */
    claims_init(&in);
    sign(rs, ISS, &in, token);
    assert_accepted(rs_pub, token);
}

static void
test_roundtrip_es256(void **state)
{
    ngx_http_elearn_jwt_claims_t in;
    char token[TOKEN_MAX];
    size_t n;

    (void) state;

    /* 20 signatures: r and s with and without their top bit set */
    roundtrip(es, "ES256");

    claims_init(&in);
    n = sign(es, ISS, &in, token);
    assert_accepted(es_pub, token);

    /* JWS ES256 signatures are raw r||s: 64 bytes, 86 characters */
    assert_int_equal(n - (size_t) (strrchr(token, '.') - token) - 1, 86);
}

static void
test_payload_format(void **state)
{
    ngx_http_elearn_jwt_claims_t in;
    char token[TOKEN_MAX], json[1024];
    unsigned char raw[1024];
    char *dot1, *dot2;
    int n;

    (void) state;
    claims_init(&in);
    sign(hs, "iss \"quoted\"\n", &in, token);

    dot1 = strchr(token, '.');
    dot2 = strchr(dot1 + 1, '.');
    *dot2 = '\0';
    /* EVP_DecodeBlock wants standard base64 with padding */
    snprintf(json, sizeof(json), "%s", dot1 + 1);
    for (n = 0; json[n]; n++) {
        json[n] = json[n] == '-' ? '+' : json[n] == '_' ? '/' : json[n];
    }
    while (n % 4) {
        json[n++] = '=';
    }
    json[n] = '\0';
    n = EVP_DecodeBlock(raw, (unsigned char *) json, n);
    assert_true(n > 0);
    raw[n] = '\0';
    assert_non_null(strstr((char *) raw, "\"sub\":\"42\""));
    assert_non_null(
        strstr((char *) raw, "\"iss\":\"iss \\\"quoted\\\"\\u000a\""));
    assert_null(strstr((char *) raw, "nbf"));
}

static void
test_sub_forms(void **state)
{
    static const char *bad[] = {"\"042\"", "0", "-1", "\"0\"", "\"-1\"",
        "\"abc\"", "\"12a\"", "\"\"", "\"9223372036854775808\"", "1.5", "true",
        "null", "\" 42\""};
    ngx_http_elearn_jwt_claims_t c;
    const char *reason;
    char token[TOKEN_MAX], payload[512];
    size_t i;

    (void) state;

    /* a JSON integer is accepted as well as a string */
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":9007199254740993,"
        "\"role\":\"admin\",\"sid\":\"s\",\"jti\":\"j\","
        "\"exp\":1700000900}");
    assert_int_equal(verify_at(hs, token, NOW, &c, &reason), 0);
    assert_int_equal(c.sub, 9007199254740993LL);
    assert_int_equal(c.iat, 0);
    assert_int_equal(c.nbf, 0);

    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"9223372036854775807\","
        "\"role\":\"admin\",\"sid\":\"s\",\"jti\":\"j\","
        "\"exp\":1700000900}");
    assert_int_equal(verify_at(hs, token, NOW, &c, &reason), 0);
    assert_int_equal(c.sub, INT64_MAX);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(payload, sizeof(payload),
            "{\"iss\":\"" ISS "\",\"sub\":%s,\"role\":\"admin\","
            "\"sid\":\"s\",\"jti\":\"j\",\"exp\":1700000900}",
            bad[i]);
        hs_token(token, payload);
        assert_refused(hs, token, "missing or bad sub");
    }
}

/* --- the algorithm is the key's ----------------------------------------- */

static void
test_alg_none(void **state)
{
    char h[128], p[1024], token[TOKEN_MAX];

    (void) state;
    b64url(h, (const unsigned char *) "{\"alg\":\"none\",\"typ\":\"JWT\"}", 26);
    b64url(p, (const unsigned char *) PAYLOAD_OK, strlen(PAYLOAD_OK));
    snprintf(token, sizeof(token), "%s.%s.", h, p);
    assert_refused(hs, token, "alg not allowed");
    assert_refused(rs, token, "alg not allowed");
    assert_refused(es, token, "alg not allowed");

    /* with a signature too, and with no alg at all */
    mac_token(token, secret, sizeof(secret), "{\"alg\":\"none\"}", PAYLOAD_OK);
    assert_refused(hs, token, "alg not allowed");
    mac_token(token, secret, sizeof(secret), "{\"typ\":\"JWT\"}", PAYLOAD_OK);
    assert_refused(hs, token, "alg not allowed");
    mac_token(token, secret, sizeof(secret), "{\"alg\":\"hs256\"}", PAYLOAD_OK);
    assert_refused(hs, token, "alg not allowed");
}

/* the classic: HS256 MACed with the verifier's public key as the secret */
static void
hs256_with_public_key(ngx_http_elearn_jwt_key_t *key, const char *pub_path)
{
    char token[TOKEN_MAX], *pem;
    size_t len;

    pem = read_all(pub_path, &len);
    mac_token(
        token, pem, len, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", PAYLOAD_OK);
    assert_refused(key, token, "alg not allowed");
    free(pem);
}

static void
test_hs256_with_rsa_public_key(void **state)
{
    (void) state;
    hs256_with_public_key(rs, path_rsa_pub);
    hs256_with_public_key(rs_pub, path_rsa_pub);
}

static void
test_hs256_with_ec_public_key(void **state)
{
    (void) state;
    hs256_with_public_key(es, path_ec_pub);
    hs256_with_public_key(es_pub, path_ec_pub);
}

static void
test_rs256_against_hs_key(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX];

    (void) state;
    claims_init(&c);
    sign(rs, ISS, &c, token);
    assert_refused(hs, token, "alg not allowed");
    assert_refused(es, token, "alg not allowed");
    sign(es, ISS, &c, token);
    assert_refused(rs, token, "alg not allowed");
}

/* --- signatures ---------------------------------------------------------- */

static void
flip(char *token, size_t at)
{
    token[at] = token[at] == 'A' ? 'B' : 'A';
}

static void
bad_signature(ngx_http_elearn_jwt_key_t *key)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX], copy[TOKEN_MAX];
    size_t n, sig;

    claims_init(&c);
    n = sign(key, ISS, &c, token);
    sig = (size_t) (strrchr(token, '.') - token) + 1;

    /* a byte of the signature, of the payload, of the header */
    memcpy(copy, token, n + 1);
    flip(copy, sig + (n - sig) / 2);
    assert_refused(key, copy, "bad signature");

    memcpy(copy, token, n + 1);
    flip(copy, sig - 10);
    assert_refused(key, copy, "bad signature");

    /* signature shortened or lengthened */
    memcpy(copy, token, n + 1);
    copy[n - 2] = '\0';
    assert_refused(key, copy, "bad signature");
    memcpy(copy, token, n + 1);
    strcpy(copy + n, "AAAA");
    assert_refused(key, copy, "bad signature");

    /* no signature */
    memcpy(copy, token, n + 1);
    copy[sig] = '\0';
    assert_refused(key, copy, "bad signature");
}

static void
test_bad_signature(void **state)
{
    ngx_http_elearn_jwt_key_t *other;
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX];

    (void) state;
    bad_signature(hs);
    bad_signature(rs);
    bad_signature(es);

    /* right form, wrong key */
    other = load(NGX_HTTP_ELEARN_JWT_ES256, NULL, path_ec2_pub);
    claims_init(&c);
    sign(es, ISS, &c, token);
    assert_refused(other, token, "bad signature");
    ngx_http_elearn_jwt_key_free(other);

    mac_token(token, "another secret of at least 32 bytes....", 39,
        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", PAYLOAD_OK);
    assert_refused(hs, token, "bad signature");
}

static void
test_es256_der_signature_refused(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX], der[160];
    unsigned char sig[72];
    size_t n;
    char *dot;

    (void) state;

    /* a DER ECDSA-Sig-Value where JWS wants r||s: not ours */
    claims_init(&c);
    sign(es, ISS, &c, token);
    dot = strrchr(token, '.');
    memset(sig, 0, sizeof(sig));
    sig[0] = 0x30;
    sig[1] = 68;
    sig[2] = 0x02;
    sig[3] = 32;
    sig[36] = 0x02;
    sig[37] = 32;
    n = b64url(der, sig, 70);
    memcpy(dot + 1, der, n + 1);
    assert_refused(es, token, "bad signature");
}

/* --- claims -------------------------------------------------------------- */

static void
test_wrong_issuer(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX];

    (void) state;
    claims_init(&c);
    sign(hs, "https://evil.test", &c, token);
    assert_refused(hs, token, "wrong issuer");
    sign(es, ISS "/", &c, token);
    assert_refused(es, token, "wrong issuer");

    hs_token(token,
        "{\"sub\":\"42\",\"role\":\"student\",\"sid\":\"s1\","
        "\"jti\":\"j1\",\"exp\":1700000900}");
    assert_refused(hs, token, "wrong issuer");
}

static void
test_expired(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX];

    (void) state;
    claims_init(&c);
    c.exp = NOW - LEEWAY - 1;
    sign(hs, ISS, &c, token);
    assert_refused(hs, token, "expired");

    /* exactly at exp + leeway it has expired */
    c.exp = NOW - LEEWAY;
    sign(rs, ISS, &c, token);
    assert_refused(rs, token, "expired");
}

static void
test_expired_within_leeway(void **state)
{
    ngx_http_elearn_jwt_claims_t c, out;
    const char *reason;
    char token[TOKEN_MAX];

    (void) state;
    claims_init(&c);
    c.exp = NOW - LEEWAY + 1;
    sign(es, ISS, &c, token);
    assert_accepted(es, token);

    /* no leeway: refused */
    assert_int_equal(ngx_http_elearn_jwt_verify(es, ISS, NOW, 0,
                         (unsigned char *) token, strlen(token), &out, &reason),
        -1);
    assert_string_equal(reason, "expired");
}

static void
test_future_nbf(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX];

    (void) state;
    claims_init(&c);
    c.nbf = NOW + LEEWAY + 1;
    sign(hs, ISS, &c, token);
    assert_refused(hs, token, "not yet valid");
}

static void
test_nbf_within_leeway(void **state)
{
    ngx_http_elearn_jwt_claims_t c, out;
    const char *reason;
    char token[TOKEN_MAX];

    (void) state;
    claims_init(&c);
    c.nbf = NOW + LEEWAY;
    sign(hs, ISS, &c, token);
    assert_int_equal(verify_at(hs, token, NOW, &out, &reason), 0);
    assert_int_equal(out.nbf, NOW + LEEWAY);
}

static void
test_missing_exp(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"s1\",\"jti\":\"j1\"}");
    assert_refused(hs, token, "missing exp");
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"s1\",\"jti\":\"j1\",\"exp\":\"1700000900\"}");
    assert_refused(hs, token, "missing exp");
}

static void
test_missing_sub(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"role\":\"student\","
        "\"sid\":\"s1\",\"jti\":\"j1\",\"exp\":1700000900}");
    assert_refused(hs, token, "missing or bad sub");
}

static void
test_missing_jti(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"s1\",\"exp\":1700000900}");
    assert_refused(hs, token, "missing or bad jti");
}

static void
test_missing_sid(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"jti\":\"j1\",\"exp\":1700000900}");
    assert_refused(hs, token, "missing or bad sid");
}

static void
test_missing_role(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"sid\":\"s1\","
        "\"jti\":\"j1\",\"exp\":1700000900}");
    assert_refused(hs, token, "missing or bad role");
}

static void
test_ids_too_long(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX], payload[512], id[64];

    (void) state;

    /* 39 characters fit the 40-byte buffers, 40 do not */
    memset(id, 'x', 40);
    id[39] = '\0';
    snprintf(payload, sizeof(payload),
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"%s\",\"jti\":\"%s\",\"exp\":1700000900}",
        id, id);
    hs_token(token, payload);
    assert_accepted(hs, token);

    id[39] = 'x';
    id[40] = '\0';
    snprintf(payload, sizeof(payload),
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"%s\",\"jti\":\"j1\",\"exp\":1700000900}",
        id);
    hs_token(token, payload);
    assert_refused(hs, token, "missing or bad sid");

    snprintf(payload, sizeof(payload),
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"s1\",\"jti\":\"%s\",\"exp\":1700000900}",
        id);
    hs_token(token, payload);
    assert_refused(hs, token, "missing or bad jti");

    /* characters that have no place in a Redis key or a log line */
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"a b\",\"jti\":\"j1\",\"exp\":1700000900}");
    assert_refused(hs, token, "missing or bad sid");
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"stu\\n\","
        "\"sid\":\"s1\",\"jti\":\"j1\",\"exp\":1700000900}");
    assert_refused(hs, token, "missing or bad role");

    /* and sign refuses them too */
    claims_init(&c);
    strcpy(c.sid, "a:b");
    assert_int_equal(
        ngx_http_elearn_jwt_sign(hs, ISS, &c, token, TOKEN_MAX), -1);
    claims_init(&c);
    c.sub = 0;
    assert_int_equal(
        ngx_http_elearn_jwt_sign(hs, ISS, &c, token, TOKEN_MAX), -1);
}

/* --- form ---------------------------------------------------------------- */

static void
test_malformed_base64_char(void **state)
{
    char token[TOKEN_MAX], p[1024];

    (void) state;
    hs_token(token, PAYLOAD_OK);
    token[3] = '*';
    assert_refused(hs, token, "malformed header");

    hs_token(token, PAYLOAD_OK);
    token[3] = '+';
    assert_refused(hs, token, "malformed header");

    /* a correctly MACed payload that is not base64url */
    b64url(p, (const unsigned char *) PAYLOAD_OK, strlen(PAYLOAD_OK));
    p[5] = '/';
    mac_raw(token, secret, sizeof(secret), "eyJhbGciOiJIUzI1NiJ9", p);
    assert_refused(hs, token, "malformed payload");

    /* nonzero unused bits in the last character: not canonical */
    unaligned_payload(p);
    p[strlen(p) - 1] = 'h';
    mac_raw(token, secret, sizeof(secret), "eyJhbGciOiJIUzI1NiJ9", p);
    assert_refused(hs, token, "malformed payload");

    /* a base64 length that cannot be */
    b64url(p, (const unsigned char *) PAYLOAD_OK, strlen(PAYLOAD_OK));
    while (strlen(p) % 4 != 1) {
        strcat(p, "A");
    }
    mac_raw(token, secret, sizeof(secret), "eyJhbGciOiJIUzI1NiJ9", p);
    assert_refused(hs, token, "malformed payload");
}

static void
test_malformed_base64_padding(void **state)
{
    char token[TOKEN_MAX], h[128], p[1024];

    (void) state;

    /* {"alg":"HS256"} is 15 bytes: 20 characters, "=" makes 4n */
    b64url(h, (const unsigned char *) "{\"alg\":\"HS256\"}", 15);
    assert_int_equal(strlen(h), 20);
    strcat(h, "==");
    b64url(p, (const unsigned char *) PAYLOAD_OK, strlen(PAYLOAD_OK));
    mac_raw(token, secret, sizeof(secret), h, p);
    assert_refused(hs, token, "malformed header");

    b64url(h, (const unsigned char *) "{\"alg\":\"HS256\"}", 15);
    unaligned_payload(p);
    strcat(p, strlen(p) % 4 == 2 ? "==" : "=");
    mac_raw(token, secret, sizeof(secret), h, p);
    assert_refused(hs, token, "malformed payload");

    /* padding on the signature */
    hs_token(token, PAYLOAD_OK);
    strcat(token, "=");
    assert_refused(hs, token, "bad signature");
}

static void
test_malformed_json_header(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    mac_token(token, secret, sizeof(secret), "{\"alg\":\"HS256\"", PAYLOAD_OK);
    assert_refused(hs, token, "malformed header");
    mac_token(token, secret, sizeof(secret), "[\"HS256\"]", PAYLOAD_OK);
    assert_refused(hs, token, "malformed header");
    mac_token(token, secret, sizeof(secret), "\"HS256\"", PAYLOAD_OK);
    assert_refused(hs, token, "malformed header");

    /* two algs: which one a parser believes must not matter */
    mac_token(token, secret, sizeof(secret),
        "{\"alg\":\"HS256\",\"alg\":\"none\"}", PAYLOAD_OK);
    assert_refused(hs, token, "malformed header");

    mac_token(token, secret, sizeof(secret),
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", PAYLOAD_OK);
    assert_refused(hs, token, "bad typ");
    mac_token(token, secret, sizeof(secret),
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", PAYLOAD_OK);
    assert_refused(hs, token, "unsupported crit");

    /* a header other than ours but acceptable */
    mac_token(token, secret, sizeof(secret),
        "{\"typ\":\"jwt\",\"kid\":\"k1\",\"alg\":\"HS256\"}", PAYLOAD_OK);
    assert_accepted(hs, token);
}

static void
test_malformed_json_payload(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token, "{\"iss\":\"" ISS "\",");
    assert_refused(hs, token, "malformed payload");
    hs_token(token, PAYLOAD_OK " x");
    assert_refused(hs, token, "malformed payload");
    hs_token(token,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"sub\":\"1\","
        "\"role\":\"student\",\"sid\":\"s1\",\"jti\":\"j1\","
        "\"exp\":1700000900}");
    assert_refused(hs, token, "malformed payload");
}

static void
test_payload_not_object(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token, "[" PAYLOAD_OK "]");
    assert_refused(hs, token, "malformed payload");
    hs_token(token, "\"" ISS "\"");
    assert_refused(hs, token, "malformed payload");
    hs_token(token, "42");
    assert_refused(hs, token, "malformed payload");
}

static void
test_token_too_long(void **state)
{
    char *payload, *token;
    size_t n;

    (void) state;
    payload = malloc(8192);
    token = malloc(16384);
    assert_non_null(payload);
    assert_non_null(token);

    /* a padded payload: just over 8 KiB, then just under */
    n = (size_t) sprintf(payload,
        "{\"iss\":\"" ISS "\",\"sub\":\"42\",\"role\":\"student\","
        "\"sid\":\"s1\",\"jti\":\"j1\",\"exp\":1700000900,\"pad\":\"");
    memset(payload + n, 'x', 6000);
    strcpy(payload + n + 6000, "\"}");
    hs_token(token, payload);
    assert_true(strlen(token) > NGX_HTTP_ELEARN_JWT_MAX_LEN);
    assert_refused(hs, token, "token too long");

    strcpy(payload + n + 6000 - 200, "\"}");
    hs_token(token, payload);
    assert_true(strlen(token) <= NGX_HTTP_ELEARN_JWT_MAX_LEN);
    assert_accepted(hs, token);

    memset(token, 'A', 8193);
    token[8193] = '\0';
    assert_refused(hs, token, "token too long");

    free(payload);
    free(token);
}

static void
test_two_parts(void **state)
{
    char token[TOKEN_MAX];

    (void) state;
    hs_token(token, PAYLOAD_OK);
    *strrchr(token, '.') = '\0';
    assert_refused(hs, token, "malformed token");
    assert_refused(hs, "abc", "malformed token");
    assert_refused(hs, "..", "malformed token");
    assert_refused(hs, ".e30.", "malformed token");

    /* four parts (JWE has five) */
    hs_token(token, PAYLOAD_OK);
    strcat(token, ".AAAA");
    assert_refused(hs, token, "malformed token");
}

static void
test_empty_string(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    const char *reason = NULL;

    (void) state;
    assert_int_equal(ngx_http_elearn_jwt_verify(hs, ISS, NOW, LEEWAY,
                         (const unsigned char *) "", 0, &c, &reason),
        -1);
    assert_string_equal(reason, "empty token");
}

/* --- keys ---------------------------------------------------------------- */

static void
assert_load_fails(int alg, const char *path, const char *pub)
{
    ngx_http_elearn_jwt_key_t *key;
    char err[256];

    err[0] = '\0';
    key = ngx_http_elearn_jwt_key_load(alg, path, pub, err, sizeof(err));
    assert_null(key);
    assert_true(err[0] != '\0');
}

static void
test_short_secret_refused(void **state)
{
    (void) state;
    assert_load_fails(NGX_HTTP_ELEARN_JWT_HS256, path_short, NULL);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_HS256, NULL, NULL);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_HS256, "/nonexistent/secret", NULL);
    ngx_http_elearn_jwt_key_free(
        load(NGX_HTTP_ELEARN_JWT_HS256, path_secret32, NULL));
}

static void
test_rsa_1024_refused(void **state)
{
    (void) state;
    assert_load_fails(NGX_HTTP_ELEARN_JWT_RS256, path_rsa1024, NULL);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_RS256, path_ec, NULL);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_RS256, NULL, path_ec_pub);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_RS256, path_secret, NULL);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_RS256, NULL, NULL);
}

static void
test_ec_not_p256_refused(void **state)
{
    (void) state;
    assert_load_fails(NGX_HTTP_ELEARN_JWT_ES256, path_ec384, NULL);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_ES256, path_rsa, NULL);
    assert_load_fails(NGX_HTTP_ELEARN_JWT_ES256, NULL, path_rsa_pub);

    /* a private key with some other key's public half */
    assert_load_fails(NGX_HTTP_ELEARN_JWT_ES256, path_ec, path_ec2_pub);
    assert_load_fails(0, path_secret, NULL);
}

static void
test_verify_only_key(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX];

    (void) state;
    assert_int_equal(ngx_http_elearn_jwt_key_can_sign(hs), 1);
    assert_int_equal(ngx_http_elearn_jwt_key_can_sign(rs), 1);
    assert_int_equal(ngx_http_elearn_jwt_key_can_sign(es), 1);
    assert_int_equal(ngx_http_elearn_jwt_key_can_sign(rs_pub), 0);
    assert_int_equal(ngx_http_elearn_jwt_key_can_sign(es_pub), 0);

    claims_init(&c);
    assert_int_equal(
        ngx_http_elearn_jwt_sign(rs_pub, ISS, &c, token, TOKEN_MAX), -1);
    assert_int_equal(
        ngx_http_elearn_jwt_sign(es_pub, ISS, &c, token, TOKEN_MAX), -1);

    sign(es, ISS, &c, token);
    assert_accepted(es_pub, token);
    sign(rs, ISS, &c, token);
    assert_accepted(rs_pub, token);
}

static void
test_sign_buffer_too_small(void **state)
{
    ngx_http_elearn_jwt_claims_t c;
    char token[TOKEN_MAX];
    ssize_t n;

    (void) state;
    claims_init(&c);
    n = sign(rs, ISS, &c, token);
    assert_int_equal(
        ngx_http_elearn_jwt_sign(rs, ISS, &c, token, (size_t) n), -1);
    assert_int_equal(
        ngx_http_elearn_jwt_sign(rs, ISS, &c, token, (size_t) n + 1), n);
}

/* --- cache --------------------------------------------------------------- */

static void
test_cache_hit(void **state)
{
    ngx_http_elearn_jwt_cache_t *cache;
    ngx_http_elearn_jwt_claims_t in, out;
    char token[TOKEN_MAX];
    size_t n;

    (void) state;
    cache = ngx_http_elearn_jwt_cache_create(64);
    assert_non_null(cache);
    claims_init(&in);
    n = sign(es, ISS, &in, token);

    assert_int_equal(ngx_http_elearn_jwt_cache_get(
                         cache, (unsigned char *) token, n, NOW, &out),
        0);
    ngx_http_elearn_jwt_cache_put(cache, (unsigned char *) token, n, &in);
    memset(&out, 0, sizeof(out));
    assert_int_equal(ngx_http_elearn_jwt_cache_get(
                         cache, (unsigned char *) token, n, NOW, &out),
        1);
    assert_claims_equal(&in, &out);

    /* a prefix of the token is another token */
    assert_int_equal(ngx_http_elearn_jwt_cache_get(
                         cache, (unsigned char *) token, n - 1, NOW, &out),
        0);
    ngx_http_elearn_jwt_cache_destroy(cache);

    /* size 0: disabled */
    cache = ngx_http_elearn_jwt_cache_create(0);
    ngx_http_elearn_jwt_cache_put(cache, (unsigned char *) token, n, &in);
    assert_int_equal(ngx_http_elearn_jwt_cache_get(
                         cache, (unsigned char *) token, n, NOW, &out),
        0);
    ngx_http_elearn_jwt_cache_destroy(cache);
}

static void
test_cache_expires(void **state)
{
    ngx_http_elearn_jwt_cache_t *cache;
    ngx_http_elearn_jwt_claims_t in, out;
    char token[TOKEN_MAX];
    size_t n;

    (void) state;
    cache = ngx_http_elearn_jwt_cache_create(16);
    assert_non_null(cache);
    claims_init(&in);
    n = sign(es, ISS, &in, token);
    ngx_http_elearn_jwt_cache_put(cache, (unsigned char *) token, n, &in);

    assert_int_equal(ngx_http_elearn_jwt_cache_get(cache,
                         (unsigned char *) token, n, (time_t) in.exp - 1, &out),
        1);
    assert_int_equal(ngx_http_elearn_jwt_cache_get(cache,
                         (unsigned char *) token, n, (time_t) in.exp, &out),
        0);

    /* and stays gone */
    assert_int_equal(ngx_http_elearn_jwt_cache_get(
                         cache, (unsigned char *) token, n, NOW, &out),
        0);
    ngx_http_elearn_jwt_cache_destroy(cache);
}

static void
test_cache_no_alias(void **state)
{
    ngx_http_elearn_jwt_cache_t *cache;
    ngx_http_elearn_jwt_claims_t in, out;
    char tokens[200][128];
    size_t i, hits;

    (void) state;

    /* far more tokens than entries: evictions, never a wrong answer */
    cache = ngx_http_elearn_jwt_cache_create(32);
    assert_non_null(cache);
    claims_init(&in);
    for (i = 0; i < 200; i++) {
        snprintf(tokens[i], sizeof(tokens[i]), "token-%zu", i);
        in.sub = (int64_t) i + 1;
        ngx_http_elearn_jwt_cache_put(
            cache, (unsigned char *) tokens[i], strlen(tokens[i]), &in);
    }
    hits = 0;
    for (i = 0; i < 200; i++) {
        if (ngx_http_elearn_jwt_cache_get(cache, (unsigned char *) tokens[i],
                strlen(tokens[i]), NOW, &out))
        {
            assert_int_equal(out.sub, (int64_t) i + 1);
            hits++;
        }
    }
    assert_true(hits > 0 && hits <= 32);

    /* the most recent token is always there */
    assert_int_equal(
        ngx_http_elearn_jwt_cache_get(cache, (unsigned char *) tokens[199],
            strlen(tokens[199]), NOW, &out),
        1);
    ngx_http_elearn_jwt_cache_destroy(cache);

    /* one set of 4: the fifth put evicts the oldest */
    cache = ngx_http_elearn_jwt_cache_create(4);
    for (i = 0; i < 5; i++) {
        in.sub = (int64_t) i + 1;
        ngx_http_elearn_jwt_cache_put(
            cache, (unsigned char *) tokens[i], strlen(tokens[i]), &in);
    }
    assert_int_equal(
        ngx_http_elearn_jwt_cache_get(
            cache, (unsigned char *) tokens[0], strlen(tokens[0]), NOW, &out),
        0);
    for (i = 1; i < 5; i++) {
        assert_int_equal(
            ngx_http_elearn_jwt_cache_get(cache, (unsigned char *) tokens[i],
                strlen(tokens[i]), NOW, &out),
            1);
        assert_int_equal(out.sub, (int64_t) i + 1);
    }
    ngx_http_elearn_jwt_cache_destroy(cache);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_hs256),
        cmocka_unit_test(test_roundtrip_rs256),
        cmocka_unit_test(test_roundtrip_es256),
        cmocka_unit_test(test_payload_format),
        cmocka_unit_test(test_sub_forms),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_hs256_with_rsa_public_key),
        cmocka_unit_test(test_hs256_with_ec_public_key),
        cmocka_unit_test(test_rs256_against_hs_key),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_es256_der_signature_refused),
        cmocka_unit_test(test_wrong_issuer),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_expired_within_leeway),
        cmocka_unit_test(test_future_nbf),
        cmocka_unit_test(test_nbf_within_leeway),
        cmocka_unit_test(test_missing_exp),
        cmocka_unit_test(test_missing_sub),
        cmocka_unit_test(test_missing_jti),
        cmocka_unit_test(test_missing_sid),
        cmocka_unit_test(test_missing_role),
        cmocka_unit_test(test_ids_too_long),
        cmocka_unit_test(test_malformed_base64_char),
        cmocka_unit_test(test_malformed_base64_padding),
        cmocka_unit_test(test_malformed_json_header),
        cmocka_unit_test(test_malformed_json_payload),
        cmocka_unit_test(test_payload_not_object),
        cmocka_unit_test(test_token_too_long),
        cmocka_unit_test(test_two_parts),
        cmocka_unit_test(test_empty_string),
        cmocka_unit_test(test_short_secret_refused),
        cmocka_unit_test(test_rsa_1024_refused),
        cmocka_unit_test(test_ec_not_p256_refused),
        cmocka_unit_test(test_verify_only_key),
        cmocka_unit_test(test_sign_buffer_too_small),
        cmocka_unit_test(test_cache_hit),
        cmocka_unit_test(test_cache_expires),
        cmocka_unit_test(test_cache_no_alias),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
