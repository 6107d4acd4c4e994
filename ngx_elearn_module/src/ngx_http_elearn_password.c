
/*
 * elearn password: Argon2id hashing and verification on nginx's thread
 * pool (elearn_thread_pool), and the password length rule.
 *
 * A task is ngx_calloc()ed, never taken from r->pool: the thread may
 * still be hashing when the request goes away.  A pool cleanup on r->pool
 * detaches the request; the completion (on the event loop) then only
 * frees the task.  The thread wipes its copy of the password as soon as
 * libargon2 returns.
 *
 * What this file must never do: hash on the event loop, call a handler
 * from inside ngx_http_elearn_password_hash() or _verify(), touch a
 * request whose pool is gone, or log a password or a stored hash.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <sys/random.h>
#include <argon2.h>

#include "ngx_http_elearn_password.h"


/* OWASP's Argon2id setting: 19 MiB, 2 passes, 1 lane */
#define NGX_HTTP_ELEARN_PASSWORD_M_COST     19456
#define NGX_HTTP_ELEARN_PASSWORD_T_COST     2
#define NGX_HTTP_ELEARN_PASSWORD_LANES      1
#define NGX_HTTP_ELEARN_PASSWORD_SALT_LEN   16
#define NGX_HTTP_ELEARN_PASSWORD_HASH_LEN   32

/* our PHC strings are 97 bytes; anything longer than this is malformed */
#define NGX_HTTP_ELEARN_PASSWORD_PHC_MAX    256

/*
 * A password the module copies for the thread: 1024 characters are at
 * most 4096 bytes of UTF-8; the callers' body limits keep it far lower.
 * Keeps the size_t to uint32_t conversion for libargon2 exact.
 */
#define NGX_HTTP_ELEARN_PASSWORD_BYTES_MAX  65536


/*
 * The hash of a random string nobody knows, with our parameters: an
 * unknown account (phc == NULL) or a malformed stored hash is verified
 * against it, so the answer takes as long as for a real account.
 */
static const char  ngx_http_elearn_password_dummy[] =
    "$argon2id$v=19$m=19456,t=2,p=1$Qlg4c084TjFMUlBFUmNhK2NQQ1VPQQ"
    "$NHWl9d0Yq+iXZrkATXAI/y2v8qfaMAXKuvXPWZMqGbs";


typedef struct {
    ngx_thread_task_t                     task;     /* first: one block */
    ngx_http_request_t                   *request;  /* NULL: gone */
    ngx_pool_cleanup_t                   *cln;
    ngx_http_elearn_password_handler_pt   handler;
    void                                 *data;

    u_char                               *pw;       /* wiped by the thread */
    size_t                                len;
    const char                           *phc;      /* verify: stored */

    int                                   result;   /* ARGON2_* */
    ngx_err_t                             err;      /* of getrandom() */
    unsigned                              verify:1;
    unsigned                              dummy:1;  /* never matches */
    unsigned                              malformed:1;
    unsigned                              random_failed:1;

    char                                  out[NGX_HTTP_ELEARN_PASSWORD_PHC_MAX];
} ngx_http_elearn_password_task_t;


static ngx_int_t ngx_http_elearn_password_post(ngx_http_request_t *r,
    const char *phc, const u_char *pw, size_t len, ngx_uint_t verify,
    ngx_http_elearn_password_handler_pt handler, void *data);
static void ngx_http_elearn_password_thread(void *data, ngx_log_t *log);
static void ngx_http_elearn_password_done(ngx_event_t *ev);
static void ngx_http_elearn_password_cleanup(void *data);
static void ngx_http_elearn_password_free(
    ngx_http_elearn_password_task_t *t);


ngx_int_t
ngx_http_elearn_password_check(const u_char *pw, size_t len)
{
    u_char      c;
    size_t      i, k, n, chars;
    uint32_t    cp, min;

    if (pw == NULL) {
        return NGX_DECLINED;
    }

    chars = 0;

    for (i = 0; i < len; i += n + 1) {

        if (++chars > NGX_HTTP_ELEARN_PASSWORD_MAX) {
            return NGX_DECLINED;
        }

        c = pw[i];

        if (c < 0x80) {
            if (c == '\0') {
                return NGX_DECLINED;
            }

            n = 0;
            continue;
        }

        /* RFC 3629: no overlong forms, no surrogates, nothing > U+10FFFF */

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;

        } else {
            return NGX_DECLINED;
        }

        if (len - i - 1 < n) {
            return NGX_DECLINED;
        }

        for (k = 1; k <= n; k++) {
            c = pw[i + k];

            if ((c & 0xc0) != 0x80) {
                return NGX_DECLINED;
            }

            cp = (cp << 6) | (c & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return NGX_DECLINED;
        }
    }

    if (chars < NGX_HTTP_ELEARN_PASSWORD_MIN) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_elearn_password_hash(ngx_http_request_t *r, const u_char *pw,
    size_t len, ngx_http_elearn_password_handler_pt handler, void *data)
{
    if (len > NGX_HTTP_ELEARN_PASSWORD_BYTES_MAX) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn password: %uz bytes to hash, over the limit",
                      len);
        return NGX_ERROR;
    }

    return ngx_http_elearn_password_post(r, NULL, pw, len, 0, handler, data);
}


ngx_int_t
ngx_http_elearn_password_verify(ngx_http_request_t *r, const char *phc,
    const u_char *pw, size_t len,
    ngx_http_elearn_password_handler_pt handler, void *data)
{
    if (len > NGX_HTTP_ELEARN_PASSWORD_BYTES_MAX) {
        /* no stored hash was made from it: cost the usual, never match */
        phc = NULL;
        len = NGX_HTTP_ELEARN_PASSWORD_BYTES_MAX;
    }

    return ngx_http_elearn_password_post(r, phc, pw, len, 1, handler, data);
}


static ngx_int_t
ngx_http_elearn_password_post(ngx_http_request_t *r, const char *phc,
    const u_char *pw, size_t len, ngx_uint_t verify,
    ngx_http_elearn_password_handler_pt handler, void *data)
{
    char                             *p;
    size_t                            phc_len;
    ngx_pool_cleanup_t               *cln;
    ngx_http_elearn_main_conf_t      *emcf;
    ngx_http_elearn_password_task_t  *t;

    if (r == NULL || handler == NULL || (pw == NULL && len != 0)) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn password: invalid arguments");
        return NGX_ERROR;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf == NULL || emcf->thread_pool == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn password: no thread pool configured");
        return NGX_ERROR;
    }

    phc_len = (phc != NULL) ? ngx_strlen(phc) : 0;

    /* the stored hash is copied: the caller's buffer may not outlive us */

    t = ngx_calloc(sizeof(ngx_http_elearn_password_task_t) + len + 1
                   + phc_len + 1, ngx_cycle->log);
    if (t == NULL) {
        return NGX_ERROR;
    }

    t->handler = handler;
    t->data = data;
    t->verify = verify;

    t->pw = (u_char *) (t + 1);
    t->len = len;

    if (len) {
        ngx_memcpy(t->pw, pw, len);
    }

    if (verify) {
        if (phc == NULL) {
            t->dummy = 1;
            t->phc = ngx_http_elearn_password_dummy;

        } else if (phc_len >= NGX_HTTP_ELEARN_PASSWORD_PHC_MAX) {
            t->dummy = 1;
            t->malformed = 1;

        } else {
            p = (char *) t->pw + len + 1;
            ngx_memcpy(p, phc, phc_len + 1);
            t->phc = p;
        }
    }

    t->task.ctx = t;
    t->task.handler = ngx_http_elearn_password_thread;
    t->task.event.handler = ngx_http_elearn_password_done;
    t->task.event.data = t;
    t->task.event.log = ngx_cycle->log;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_elearn_password_free(t);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_elearn_password_cleanup;
    cln->data = t;

    t->request = r;
    t->cln = cln;

    /* NGX_ERROR is nearly always a full queue (nginx has logged it) */

    if (ngx_thread_task_post(emcf->thread_pool, &t->task) != NGX_OK) {
        cln->handler = NULL;
        ngx_http_elearn_password_free(t);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    return NGX_AGAIN;
}


/* runs in a pool thread: touches nothing but the task */

static void
ngx_http_elearn_password_thread(void *data, ngx_log_t *log)
{
    int                               rc;
    size_t                            got;
    u_char                            salt[NGX_HTTP_ELEARN_PASSWORD_SALT_LEN];
    ssize_t                           n;
    ngx_http_elearn_password_task_t  *t;

    t = data;

    if (t->verify) {
        rc = t->malformed ? ARGON2_DECODING_FAIL
                          : argon2id_verify(t->phc, t->pw, t->len);

        if (rc != ARGON2_OK
            && rc != ARGON2_VERIFY_MISMATCH
            && rc != ARGON2_MEMORY_ALLOCATION_ERROR
            && rc != ARGON2_THREAD_FAIL)
        {
            /* a stored hash libargon2 cannot read: cost the usual anyway */

            t->malformed = 1;
            (void) argon2id_verify(ngx_http_elearn_password_dummy,
                                   t->pw, t->len);
        }

        goto done;
    }

    /* getrandom() blocks only before the kernel's pool is first seeded */

    for (got = 0; got < sizeof(salt); /* void */) {
        n = getrandom(salt + got, sizeof(salt) - got, 0);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            t->random_failed = 1;
            t->err = ngx_errno;
            rc = ARGON2_MISSING_ARGS;
            goto done;
        }

        got += n;
    }

    rc = argon2id_hash_encoded(NGX_HTTP_ELEARN_PASSWORD_T_COST,
                               NGX_HTTP_ELEARN_PASSWORD_M_COST,
                               NGX_HTTP_ELEARN_PASSWORD_LANES,
                               t->pw, t->len, salt, sizeof(salt),
                               NGX_HTTP_ELEARN_PASSWORD_HASH_LEN,
                               t->out, sizeof(t->out));

    ngx_explicit_memzero(salt, sizeof(salt));

done:

    ngx_explicit_memzero(t->pw, t->len);

    t->result = rc;
}


/* the event loop, after the thread is done */

static void
ngx_http_elearn_password_done(ngx_event_t *ev)
{
    ngx_int_t                         rc;
    ngx_uint_t                        match;
    const char                       *phc;
    ngx_http_request_t               *r;
    ngx_http_elearn_password_task_t  *t;

    t = ev->data;
    r = t->request;

    rc = NGX_OK;
    phc = NULL;
    match = 0;

    if (t->verify) {
        if (t->malformed) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "elearn password: stored hash is malformed (%s), "
                          "treated as no match",
                          argon2_error_message(t->result));

        } else if (t->result == ARGON2_OK) {
            match = t->dummy ? 0 : 1;

        } else if (t->result != ARGON2_VERIFY_MISMATCH) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "elearn password: verify failed: %s",
                          argon2_error_message(t->result));
            rc = NGX_ERROR;
        }

    } else if (t->random_failed) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, t->err,
                      "elearn password: getrandom() failed");
        rc = NGX_ERROR;

    } else if (t->result != ARGON2_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn password: hash failed: %s",
                      argon2_error_message(t->result));
        rc = NGX_ERROR;

    } else {
        phc = t->out;
    }

    if (r != NULL) {
        /* the handler may finalize r: its pool must not call us back */

        t->cln->handler = NULL;
        t->request = NULL;

        t->handler(r, rc, phc, match, t->data);
    }

    ngx_http_elearn_password_free(t);
}


static void
ngx_http_elearn_password_cleanup(void *data)
{
    ngx_http_elearn_password_task_t  *t = data;

    /* the thread may still own the task: the completion frees it */

    t->request = NULL;
    t->cln = NULL;
}


static void
ngx_http_elearn_password_free(ngx_http_elearn_password_task_t *t)
{
    ngx_explicit_memzero(t->pw, t->len);
    ngx_explicit_memzero(t->out, sizeof(t->out));
    ngx_free(t);
}
