/*
 * elearn-outbox: publishes the transactional outbox to Kafka.
 *
 * Statements that change state and must announce it (enroll, unenroll)
 * insert their event into event_outbox in the same transaction
 * (sql/migrations/0011_event_outbox.sql).  This daemon reads the table in
 * outbox_id order, a batch at a time, produces each row to its topic with
 * its key through an idempotent producer (acks=all), waits for the
 * delivery reports and deletes exactly the rows the broker acknowledged.
 * So an event is published at least once and in commit order per key; a
 * crash between the acknowledgement and the DELETE publishes a row again,
 * which consumers absorb by eventId.  A broker outage only delays events:
 * rows stay until they are acknowledged.
 *
 * It sleeps on LISTEN elearn_outbox (a trigger NOTIFYs at every commit
 * that inserted rows) and also polls every outbox.poll.  One relay runs at
 * a time: a session advisory lock keeps a second one waiting (a standby),
 * because two relays would interleave a key's events.
 *
 * SIGTERM: the batch in hand is finished (delivered rows deleted), then it
 * exits 0.
 *
 * Usage: elearn-outbox [-c config/outbox.conf]
 */

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "elearn_config.h"
#include "elearn_daemon.h"
#include "elearn_log.h"
#include "elearn_metrics.h"
#include "elearn_metrics_http.h"
#include "elearn_pg.h"
#include "elearn_signal.h"

/* pg_advisory_lock key of the one active relay: 'e','o','b','x' */
#define OB_LOCK_KEY "1701798520"

#define OB_SQL_BATCH                                                           \
    "SELECT outbox_id, topic, key, payload FROM event_outbox"                  \
    " ORDER BY outbox_id LIMIT $1::int"

#define OB_SQL_DELETE                                                          \
    "DELETE FROM event_outbox WHERE outbox_id = ANY($1::bigint[])"

#define OB_SQL_BACKLOG                                                         \
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)),"   \
    " 0) FROM event_outbox"

typedef struct {
    elearn_pg_t *pg;
    rd_kafka_t *rk;
    elearn_metrics_t *metrics;
    long long batch;
    long long poll_ms;
    long long delivery_ms;
    int locked;     /* holds the advisory lock on this connection */
    int *delivered; /* per row of the batch: 1 acked, -1 failed */
} ob_ctx_t;

static void
ob_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    int *slot = m->_private;

    (void) rk;
    (void) opaque;

    *slot = (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) ? 1 : -1;

    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        elearn_log(ELEARN_LOG_WARN, "kafka", "delivery to %s failed: %s",
            rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
    }
}

static void
ob_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void) rk;
    (void) opaque;

    elearn_log(ELEARN_LOG_WARN, "kafka", "%s: %s",
        rd_kafka_err2name((rd_kafka_resp_err_t) err), reason);
}

/* librdkafka's own log lines, as JSON lines like everything else */
static void
ob_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void) rk;

    elearn_log(level <= 3 ? ELEARN_LOG_ERROR
            : level == 4  ? ELEARN_LOG_WARN
            : level <= 6  ? ELEARN_LOG_INFO
                          : ELEARN_LOG_DEBUG,
        "rdkafka", "%s: %s", fac, buf);
}

static rd_kafka_t *
ob_producer(const char *brokers, const char *client_id, long long timeout_ms,
    char *errstr, size_t errlen)
{
    size_t i;
    rd_kafka_t *rk;
    rd_kafka_conf_t *kc;
    char timeout[32], err[512];
    const char *kv[][2] = {
        {"bootstrap.servers", brokers},
        {"client.id", client_id},
        /* acks=all, no duplicates or reordering from producer retries */
        {"enable.idempotence", "true"},
        {"message.timeout.ms", timeout},
        {"linger.ms", "5"},
    };

    snprintf(timeout, sizeof(timeout), "%lld", timeout_ms);

    kc = rd_kafka_conf_new();

    for (i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        if (rd_kafka_conf_set(kc, kv[i][0], kv[i][1], err, sizeof(err))
            != RD_KAFKA_CONF_OK)
        {
            snprintf(errstr, errlen, "kafka: %s: %s", kv[i][0], err);
            rd_kafka_conf_destroy(kc);
            return NULL;
        }
    }

    rd_kafka_conf_set_dr_msg_cb(kc, ob_dr_cb);
    rd_kafka_conf_set_error_cb(kc, ob_error_cb);
    rd_kafka_conf_set_log_cb(kc, ob_log_cb);

    rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (rk == NULL) {
        snprintf(errstr, errlen, "kafka: %s", err);
        rd_kafka_conf_destroy(kc);
        return NULL;
    }

    return rk;
}

/*
 * (Re)connects, LISTENs and takes the relay lock.  Returns 1 when this
 * process is the active relay, 0 when another one holds the lock, -1 on a
 * failure (already logged) or a stop.
 */
static int
ob_attach(ob_ctx_t *ob)
{
    PGresult *res;
    char err[1024];

    if (!elearn_pg_connected(ob->pg)) {
        ob->locked = 0;
    }

    if (elearn_pg_connect(ob->pg, -1, err, sizeof(err)) != 0) {
        return -1;
    }

    if (ob->locked) {
        return 1;
    }

    if (elearn_pg_command(
            ob->pg, "LISTEN elearn_outbox", 0, NULL, err, sizeof(err))
        != 0)
    {
        elearn_log(ELEARN_LOG_WARN, "pg", "%s", err);
        return -1;
    }

    res = elearn_pg_exec(ob->pg, "SELECT pg_try_advisory_lock(" OB_LOCK_KEY ")",
        0, NULL, err, sizeof(err));
    if (res == NULL) {
        elearn_log(ELEARN_LOG_WARN, "pg", "%s", err);
        return -1;
    }

    ob->locked = (strcmp(PQgetvalue(res, 0, 0), "t") == 0);
    PQclear(res);

    if (ob->locked) {
        elearn_log(ELEARN_LOG_INFO, "main", "active relay");
    }

    return ob->locked;
}

/*
 * Waits up to ms for a NOTIFY, a stop or the socket going bad.  Drains
 * every notification that arrived.
 */
static void
ob_wait(ob_ctx_t *ob, long long ms)
{
    int n;
    PGconn *conn;
    PGnotify *note;
    struct pollfd pfd;
    struct timespec start, now;

    conn = elearn_pg_conn(ob->pg);
    clock_gettime(CLOCK_MONOTONIC, &start);

    for (;;) {
        if (elearn_signal_stop_requested() || conn == NULL
            || PQstatus(conn) != CONNECTION_OK)
        {
            return;
        }

        clock_gettime(CLOCK_MONOTONIC, &now);
        n = (int) (ms
            - ((now.tv_sec - start.tv_sec) * 1000
                + (now.tv_nsec - start.tv_nsec) / 1000000));
        if (n <= 0) {
            return;
        }

        /* short slices: a stop must not wait for a quiet database */
        pfd.fd = PQsocket(conn);
        pfd.events = POLLIN;
        n = poll(&pfd, 1, n < 200 ? n : 200);

        if (n < 0 && errno != EINTR) {
            return;
        }

        if (n > 0) {
            if (PQconsumeInput(conn) == 0) {
                return;
            }

            n = 0;
            while ((note = PQnotifies(conn)) != NULL) {
                PQfreemem(note);
                n++;
            }

            if (n) {
                return;
            }
        }

        rd_kafka_poll(ob->rk, 0);
    }
}

static void
ob_backlog(ob_ctx_t *ob)
{
    PGresult *res;
    char err[1024];

    res = elearn_pg_exec(ob->pg, OB_SQL_BACKLOG, 0, NULL, err, sizeof(err));
    if (res == NULL) {
        return;
    }

    elearn_metrics_set(ob->metrics, "elearn_outbox_backlog", NULL,
        atof(PQgetvalue(res, 0, 0)));
    elearn_metrics_set(ob->metrics, "elearn_outbox_oldest_seconds", NULL,
        atof(PQgetvalue(res, 0, 1)));
    PQclear(res);
}

/*
 * One batch: read, produce, wait for every report, delete what was
 * acknowledged.  Returns the number of rows read (0: the table is empty),
 * or -1 when something failed (logged; the caller backs off).
 */
static int
ob_batch(ob_ctx_t *ob)
{
    int i, n, ok, failed;
    char *ids, *p, limit[32], err[1024];
    size_t len;
    PGresult *res;
    const char *values[1];
    rd_kafka_resp_err_t rc;

    snprintf(limit, sizeof(limit), "%lld", ob->batch);
    values[0] = limit;

    res = elearn_pg_exec(ob->pg, OB_SQL_BATCH, 1, values, err, sizeof(err));
    if (res == NULL) {
        elearn_log(ELEARN_LOG_WARN, "pg", "%s", err);
        return -1;
    }

    n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        return 0;
    }

    len = 3;
    for (i = 0; i < n; i++) {
        ob->delivered[i] = 0;
        len += PQgetlength(res, i, 0) + 1;
    }

    failed = 0;

    for (i = 0; i < n; i++) {
        for (;;) {
            rc = rd_kafka_producev(ob->rk,
                RD_KAFKA_V_TOPIC(PQgetvalue(res, i, 1)),
                RD_KAFKA_V_KEY(PQgetvalue(res, i, 2), PQgetlength(res, i, 2)),
                RD_KAFKA_V_VALUE(PQgetvalue(res, i, 3), PQgetlength(res, i, 3)),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_OPAQUE(&ob->delivered[i]), RD_KAFKA_V_END);

            if (rc != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                break;
            }

            rd_kafka_poll(ob->rk, 100);
        }

        if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
            elearn_log(ELEARN_LOG_WARN, "kafka", "produce to %s: %s",
                PQgetvalue(res, i, 1), rd_kafka_err2str(rc));
            ob->delivered[i] = -1;
        }
    }

    /* every report (or message.timeout.ms) before anything is deleted */
    rd_kafka_flush(ob->rk, (int) ob->delivery_ms + 1000);

    ids = malloc(len);
    if (ids == NULL) {
        PQclear(res);
        return -1;
    }

    p = ids;
    *p++ = '{';
    ok = 0;

    for (i = 0; i < n; i++) {
        if (ob->delivered[i] != 1) {
            failed++;
            continue;
        }

        if (ok++) {
            *p++ = ',';
        }

        memcpy(p, PQgetvalue(res, i, 0), PQgetlength(res, i, 0));
        p += PQgetlength(res, i, 0);
    }

    *p++ = '}';
    *p = '\0';
    PQclear(res);

    if (ok) {
        values[0] = ids;

        if (elearn_pg_command(
                ob->pg, OB_SQL_DELETE, 1, values, err, sizeof(err))
            != 0) {
            /* published, not deleted: they go out again (at least once) */
            elearn_log(ELEARN_LOG_WARN, "pg", "%s", err);
            free(ids);
            return -1;
        }

        elearn_metrics_add(
            ob->metrics, "elearn_outbox_published_total", NULL, ok);
    }

    free(ids);

    if (failed) {
        elearn_metrics_add(
            ob->metrics, "elearn_outbox_failures_total", NULL, failed);
        return -1;
    }

    return n;
}

static int
ob_health(void *ctx, char *buf, size_t len)
{
    ob_ctx_t *ob = ctx;

    /* the flag is read without the lock: a stale answer is harmless */
    snprintf(buf, len, "%s", ob->locked ? "active" : "standby");
    return 1;
}

static int
ob_run(ob_ctx_t *ob)
{
    int n;
    long long backoff;

    backoff = 100;

    while (!elearn_signal_stop_requested()) {
        n = ob_attach(ob);

        if (n < 0) {
            if (elearn_signal_stop_requested()) {
                break;
            }

            elearn_signal_sleep_ms(backoff);
            backoff = backoff * 2 < 5000 ? backoff * 2 : 5000;
            continue;
        }

        if (n == 0) {
            /* a standby: try the lock again now and then */
            elearn_signal_sleep_ms(ob->poll_ms);
            continue;
        }

        n = ob_batch(ob);

        if (n < 0) {
            elearn_signal_sleep_ms(backoff);
            backoff = backoff * 2 < 5000 ? backoff * 2 : 5000;
            continue;
        }

        backoff = 100;

        if (n < ob->batch) {
            ob_backlog(ob);
            ob_wait(ob, ob->poll_ms);
        }
    }

    return 0;
}

static int
ob_metrics(elearn_metrics_t *m, char *err, size_t errlen)
{
    if (elearn_metrics_define(m, "elearn_outbox_published_total",
            ELEARN_METRIC_COUNTER,
            "Outbox rows published (acknowledged by the broker) and deleted.",
            NULL, NULL, 0, err, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_outbox_failures_total",
               ELEARN_METRIC_COUNTER,
               "Outbox rows whose produce or delivery failed (retried).", NULL,
               NULL, 0, err, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_outbox_backlog",
               ELEARN_METRIC_GAUGE, "Rows waiting in the outbox.", NULL, NULL,
               0, err, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_outbox_oldest_seconds",
               ELEARN_METRIC_GAUGE,
               "Age of the oldest row waiting in the outbox.", NULL, NULL, 0,
               err, errlen)
            != 0)
    {
        return -1;
    }

    elearn_metrics_add(m, "elearn_outbox_published_total", NULL, 0);
    elearn_metrics_add(m, "elearn_outbox_failures_total", NULL, 0);
    elearn_metrics_set(m, "elearn_outbox_backlog", NULL, 0);
    elearn_metrics_set(m, "elearn_outbox_oldest_seconds", NULL, 0);

    return 0;
}

int
main(int argc, char **argv)
{
    int rc;
    long long port;
    const char *conninfo, *brokers, *client_id, *addr;
    ob_ctx_t ob;
    elearn_config_t *cfg;
    elearn_metrics_http_t *http;
    char err[1024];

    http = NULL;
    memset(&ob, 0, sizeof(ob));

    cfg = elearn_daemon_init(
        argc, argv, "elearn-outbox", "config/outbox.conf", &rc);
    if (cfg == NULL) {
        return rc;
    }

    rc = 1;

    if (elearn_config_get_str(
            cfg, "pg.conninfo", NULL, &conninfo, err, sizeof(err))
            != 0
        || elearn_config_get_str(
               cfg, "kafka.brokers", NULL, &brokers, err, sizeof(err))
            != 0
        || elearn_config_get_str(cfg, "kafka.client.id", "elearn-outbox",
               &client_id, err, sizeof(err))
            != 0
        || elearn_config_get_int(
               cfg, "outbox.batch", 500, 1, 10000, &ob.batch, err, sizeof(err))
            != 0
        || elearn_config_get_ms(cfg, "outbox.poll", 1000, 10, 60000,
               &ob.poll_ms, err, sizeof(err))
            != 0
        || elearn_config_get_ms(cfg, "outbox.delivery.timeout", 30000, 1000,
               600000, &ob.delivery_ms, err, sizeof(err))
            != 0
        || elearn_config_get_str(
               cfg, "metrics.address", "127.0.0.1", &addr, err, sizeof(err))
            != 0
        || elearn_config_get_int(
               cfg, "metrics.port", 9483, 0, 65535, &port, err, sizeof(err))
            != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    elearn_daemon_warn_unused(cfg);

    ob.delivered = calloc((size_t) ob.batch, sizeof(int));
    ob.metrics = elearn_metrics_create(err, sizeof(err));
    if (ob.delivered == NULL || ob.metrics == NULL
        || ob_metrics(ob.metrics, err, sizeof(err)) != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s",
            ob.delivered ? err : "out of memory");
        goto failed;
    }

    ob.pg = elearn_pg_create(conninfo, "elearn-outbox", err, sizeof(err));
    ob.rk = ob.pg
        ? ob_producer(brokers, client_id, ob.delivery_ms, err, sizeof(err))
        : NULL;
    if (ob.rk == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    http = elearn_metrics_http_create(
        addr, (int) port, ob.metrics, ob_health, &ob, err, sizeof(err));
    if (http == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    elearn_log_fields(ELEARN_LOG_INFO, "main",
        json_pack("{s:s, s:i, s:s, s:I}", "metricsAddress", addr, "metricsPort",
            elearn_metrics_http_port(http), "pg",
            elearn_pg_masked_conninfo(ob.pg), "batch", ob.batch),
        "elearn-outbox started");

    rc = ob_run(&ob);

failed:

    if (ob.rk) {
        rd_kafka_flush(ob.rk, 5000);
        rd_kafka_destroy(ob.rk);
    }

    elearn_metrics_http_destroy(http);
    elearn_pg_destroy(ob.pg);
    elearn_metrics_destroy(ob.metrics);
    free(ob.delivered);
    elearn_config_destroy(cfg);

    elearn_log(rc == 0 ? ELEARN_LOG_INFO : ELEARN_LOG_ERROR, "main",
        "exiting with status %d", rc);
    return rc;
}
