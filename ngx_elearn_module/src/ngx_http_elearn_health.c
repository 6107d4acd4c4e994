
/*
 * elearn health: /healthz (the worker serves) and /readyz (its
 * dependencies answer).
 *
 * /readyz runs "SELECT 1" through the PostgreSQL pool and PING on the
 * Redis command connection at the same time, reads the Kafka producer's
 * last broker state, and answers when all are in or when
 * NGX_HTTP_ELEARN_READYZ_DEADLINE passes, naming each failed check.  It
 * never opens connections of its own, so it reports what requests would
 * meet.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_kafka.h"


#define NGX_HTTP_ELEARN_READYZ_DEADLINE  2000


enum {
    NGX_HTTP_ELEARN_CHECK_PG = 0,
    NGX_HTTP_ELEARN_CHECK_REDIS,
    NGX_HTTP_ELEARN_CHECK_KAFKA,
    NGX_HTTP_ELEARN_CHECK_N
};


typedef struct {
    ngx_http_request_t  *request;
    ngx_event_t          deadline;
    ngx_uint_t           pending;
    const char          *state[NGX_HTTP_ELEARN_CHECK_N];
    unsigned             waiting:1;
    unsigned             done:1;
} ngx_http_elearn_readyz_t;


static const char  *ngx_http_elearn_check_names[] = {
    "postgres", "redis", "kafka"
};


static ngx_int_t
ngx_http_elearn_readyz_send(ngx_http_elearn_readyz_t *rz)
{
    u_char      *p;
    ngx_uint_t   i, ok;
    u_char       buf[256];

    rz->done = 1;

    if (rz->deadline.timer_set) {
        ngx_del_timer(&rz->deadline);
    }

    ok = 1;

    for (i = 0; i < NGX_HTTP_ELEARN_CHECK_N; i++) {
        if (rz->state[i] == NULL) {
            rz->state[i] = "timeout";
        }

        if (ngx_strcmp(rz->state[i], "ok") != 0) {
            ok = 0;
        }
    }

    p = ngx_sprintf(buf, "{\"status\":\"%s\",\"checks\":{",
                    ok ? "ok" : "unavailable");

    for (i = 0; i < NGX_HTTP_ELEARN_CHECK_N; i++) {
        p = ngx_sprintf(p, "%s\"%s\":\"%s\"", i ? "," : "",
                        ngx_http_elearn_check_names[i], rz->state[i]);
    }

    p = ngx_sprintf(p, "}}");

    return ngx_http_elearn_send_json(rz->request,
                                     ok ? NGX_HTTP_OK
                                        : NGX_HTTP_SERVICE_UNAVAILABLE,
                                     (char *) buf, p - buf);
}


static void
ngx_http_elearn_readyz_done(ngx_http_elearn_readyz_t *rz)
{
    if (rz->done || rz->pending) {
        return;
    }

    if (rz->waiting) {
        ngx_http_elearn_finalize(rz->request,
                                 ngx_http_elearn_readyz_send(rz));
    }
}


static const char *
ngx_http_elearn_readyz_state(ngx_int_t rc)
{
    switch (rc) {
    case NGX_OK:
        return "ok";
    case NGX_HTTP_GATEWAY_TIME_OUT:
        return "timeout";
    default:
        return "unavailable";
    }
}


static void
ngx_http_elearn_readyz_pg(ngx_http_request_t *r, PGresult *res, ngx_int_t rc,
    void *data)
{
    ngx_http_elearn_readyz_t *rz = data;

    if (rz->done) {
        return;
    }

    if (rc == NGX_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = NGX_ERROR;
    }

    rz->state[NGX_HTTP_ELEARN_CHECK_PG] = ngx_http_elearn_readyz_state(rc);
    rz->pending--;

    ngx_http_elearn_readyz_done(rz);
}


static void
ngx_http_elearn_readyz_redis(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_readyz_t *rz = data;

    if (rz->done) {
        return;
    }

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ERROR) {
        rc = NGX_ERROR;
    }

    rz->state[NGX_HTTP_ELEARN_CHECK_REDIS] = ngx_http_elearn_readyz_state(rc);
    rz->pending--;

    ngx_http_elearn_readyz_done(rz);
}


static void
ngx_http_elearn_readyz_deadline(ngx_event_t *ev)
{
    ngx_http_elearn_readyz_t *rz = ev->data;

    if (rz->done) {
        return;
    }

    rz->pending = 0;
    ngx_http_elearn_readyz_done(rz);
}


static void
ngx_http_elearn_readyz_cleanup(void *data)
{
    ngx_http_elearn_readyz_t *rz = data;

    rz->done = 1;

    if (rz->deadline.timer_set) {
        ngx_del_timer(&rz->deadline);
    }
}


ngx_int_t
ngx_http_elearn_healthz(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    static const char  ok[] = "{\"status\":\"ok\"}";

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_elearn_problem_method(r, "GET, HEAD");
    }

    return ngx_http_elearn_send_json(r, NGX_HTTP_OK, ok, sizeof(ok) - 1);
}


ngx_int_t
ngx_http_elearn_readyz(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_pool_cleanup_t           *cln;
    ngx_http_elearn_readyz_t     *rz;
    ngx_http_elearn_main_conf_t  *emcf;

    static const char  *ping[] = { "PING" };
    static size_t       ping_len[] = { 4 };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_elearn_problem_method(r, "GET, HEAD");
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    rz = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_readyz_t));
    if (rz == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_elearn_readyz_cleanup;
    cln->data = rz;

    rz->request = r;
    ctx->data = rz;

    if (emcf->pg == NULL) {
        rz->state[NGX_HTTP_ELEARN_CHECK_PG] = "not configured";

    } else {
        rc = ngx_http_elearn_pg_query(r, "SELECT 1", 0, NULL,
                                      ngx_http_elearn_readyz_pg, rz);
        if (rc == NGX_AGAIN) {
            rz->pending++;

        } else {
            rz->state[NGX_HTTP_ELEARN_CHECK_PG] =
                                            ngx_http_elearn_readyz_state(rc);
        }
    }

    if (emcf->redis == NULL) {
        rz->state[NGX_HTTP_ELEARN_CHECK_REDIS] = "not configured";

    } else {
        rc = ngx_http_elearn_redis_command(r, ngx_http_elearn_readyz_redis,
                                           rz, 1, ping, ping_len);
        if (rc == NGX_AGAIN) {
            rz->pending++;

        } else {
            rz->state[NGX_HTTP_ELEARN_CHECK_REDIS] =
                                            ngx_http_elearn_readyz_state(rc);
        }
    }

    if (emcf->kafka == NULL) {
        rz->state[NGX_HTTP_ELEARN_CHECK_KAFKA] = "not configured";

    } else {
        rz->state[NGX_HTTP_ELEARN_CHECK_KAFKA] =
            ngx_http_elearn_kafka_ready(emcf->kafka) == NGX_OK
            ? "ok" : "unavailable";
    }

    if (rz->pending == 0) {
        return ngx_http_elearn_readyz_send(rz);
    }

    rz->deadline.handler = ngx_http_elearn_readyz_deadline;
    rz->deadline.data = rz;
    rz->deadline.log = r->connection->log;
    ngx_add_timer(&rz->deadline, NGX_HTTP_ELEARN_READYZ_DEADLINE);

    rz->waiting = 1;
    ngx_http_elearn_wait(r);

    return NGX_DONE;
}
