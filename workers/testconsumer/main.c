/*
 * elearn-testconsumer: a test daemon that exercises the workers' library
 * end to end.
 *
 * It consumes elearn.test (group elearn-testconsumer): each message is an
 * event envelope {"eventId", "type", "occurredAt", "schemaVersion", "data"},
 * stored in test_events with INSERT ... ON CONFLICT DO NOTHING inside a
 * transaction, so a redelivered event has no second effect.  The library
 * stores the offset after the COMMIT.  Poison rules drive the failure paths
 * in the integration tests:
 *   data.poison == "permanent"  -> FAIL (straight to elearn.test.dlq)
 *   data.poison == "transient"  -> RETRY every time (DLQ after 3 attempts)
 *   data.failTimes == k         -> RETRY for the first k attempts, then OK
 *   invalid JSON / no eventId   -> FAIL
 * With testconsumer.batch = true it also registers a batch handler that
 * inserts the whole batch in one statement.
 *
 * Being a test tool, it creates its table at startup.
 *
 * Usage: elearn-testconsumer [-c config/testconsumer.conf]
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "elearn_config.h"
#include "elearn_consumer.h"
#include "elearn_daemon.h"
#include "elearn_log.h"
#include "elearn_metrics.h"
#include "elearn_metrics_http.h"
#include "elearn_pg.h"
#include "elearn_signal.h"

#define TC_SQL_CREATE                                                          \
    "CREATE TABLE IF NOT EXISTS test_events ("                                 \
    " event_id uuid PRIMARY KEY,"                                              \
    " payload jsonb NOT NULL,"                                                 \
    " partition int NOT NULL,"                                                 \
    " \"offset\" bigint NOT NULL,"                                             \
    " inserted_at timestamptz NOT NULL DEFAULT now())"

#define TC_SQL_INSERT_ONE                                                      \
    "INSERT INTO test_events (event_id, payload, partition, \"offset\")"       \
    " VALUES ($1::uuid, $2::jsonb, $3::int, $4::bigint)"                       \
    " ON CONFLICT (event_id) DO NOTHING"

/* one statement for the batch: the rows travel as one JSON array */
#define TC_SQL_INSERT_MANY                                                     \
    "INSERT INTO test_events (event_id, payload, partition, \"offset\")"       \
    " SELECT (r->>'e')::uuid, r->'p', (r->>'pa')::int, (r->>'o')::bigint"      \
    " FROM jsonb_array_elements($1::jsonb) AS r"                               \
    " ON CONFLICT (event_id) DO NOTHING"

typedef struct {
    elearn_pg_t *pg;
    elearn_metrics_t *metrics;
} tc_ctx_t;

typedef struct {
    json_t *root;
    const char *event_id;
    const char *poison;
    long long fail_times;
} tc_event_t;

/*
 * Parses and checks an envelope.  Returns 0, or -1 with errstr set (a
 * permanent failure).  On 0 the caller json_decref()s ev->root.
 */
static int
tc_parse(
    const elearn_message_t *msg, tc_event_t *ev, char *errstr, size_t errlen)
{
    json_t *id, *data, *poison, *ft;
    json_error_t jerr;

    memset(ev, 0, sizeof(tc_event_t));

    if (msg->value == NULL || msg->value_len == 0) {
        snprintf(errstr, errlen, "empty message");
        return -1;
    }

    ev->root = json_loadb(msg->value, msg->value_len, 0, &jerr);
    if (ev->root == NULL) {
        snprintf(errstr, errlen, "invalid JSON at %d:%d: %s", jerr.line,
            jerr.column, jerr.text);
        return -1;
    }

    id = json_object_get(ev->root, "eventId");
    if (!json_is_string(id)) {
        snprintf(errstr, errlen, "envelope without a string eventId");
        goto failed;
    }
    ev->event_id = json_string_value(id);

    data = json_object_get(ev->root, "data");
    poison = json_object_get(data, "poison");
    if (json_is_string(poison)) {
        ev->poison = json_string_value(poison);
    }

    ft = json_object_get(data, "failTimes");
    if (json_is_integer(ft)) {
        ev->fail_times = json_integer_value(ft);
    }

    return 0;

failed:

    json_decref(ev->root);
    ev->root = NULL;
    return -1;
}

/*
 * Applies the poison rules.  Returns OK to go on, or the result to report.
 */
static elearn_consumer_result_t
tc_poison(const tc_event_t *ev, int attempt, char *errstr, size_t errlen)
{
    if (ev->poison != NULL && strcmp(ev->poison, "permanent") == 0) {
        snprintf(errstr, errlen, "poison: permanent");
        return ELEARN_CONSUMER_FAIL;
    }

    if (ev->poison != NULL && strcmp(ev->poison, "transient") == 0) {
        snprintf(errstr, errlen, "poison: transient (attempt %d)", attempt);
        return ELEARN_CONSUMER_RETRY;
    }

    if (attempt <= ev->fail_times) {
        snprintf(errstr, errlen, "failTimes: attempt %d of %lld fails", attempt,
            ev->fail_times);
        return ELEARN_CONSUMER_RETRY;
    }

    return ELEARN_CONSUMER_OK;
}

/* Runs sql with params in a transaction; maps failures to RETRY/FAIL. */
static elearn_consumer_result_t
tc_write(tc_ctx_t *tc, const char *sql, int nparams, const char *const *params,
    char *errstr, size_t errlen)
{
    PGresult *res;
    long long rows;

    /* a database outage waits here instead of filling the DLQ */
    if (elearn_pg_connect(tc->pg, -1, errstr, errlen) != 0) {
        return ELEARN_CONSUMER_STOP;
    }

    if (elearn_pg_begin(tc->pg, errstr, errlen) != 0) {
        goto failed;
    }

    res = elearn_pg_exec(tc->pg, sql, nparams, params, errstr, errlen);
    if (res == NULL) {
        goto failed;
    }
    rows = atoll(PQcmdTuples(res));
    PQclear(res);

    if (elearn_pg_commit(tc->pg, errstr, errlen) != 0) {
        goto failed;
    }

    elearn_metrics_add(tc->metrics, "elearn_testconsumer_rows_inserted_total",
        NULL, (double) rows);
    return ELEARN_CONSUMER_OK;

failed:

    elearn_pg_rollback(tc->pg);
    return elearn_pg_last_transient(tc->pg) ? ELEARN_CONSUMER_RETRY
                                            : ELEARN_CONSUMER_FAIL;
}

static elearn_consumer_result_t
tc_handle(void *ctx, const elearn_message_t *msg, char *errstr, size_t errlen)
{
    char *payload;
    tc_ctx_t *tc;
    tc_event_t ev;
    const char *params[4];
    char part[16], off[32];
    elearn_consumer_result_t r;

    tc = ctx;

    if (tc_parse(msg, &ev, errstr, errlen) != 0) {
        return ELEARN_CONSUMER_FAIL;
    }

    r = tc_poison(&ev, msg->attempt, errstr, errlen);
    if (r != ELEARN_CONSUMER_OK) {
        json_decref(ev.root);
        return r;
    }

    payload = json_dumps(ev.root, JSON_COMPACT);
    if (payload == NULL) {
        json_decref(ev.root);
        snprintf(errstr, errlen, "out of memory");
        return ELEARN_CONSUMER_RETRY;
    }

    snprintf(part, sizeof(part), "%d", (int) msg->partition);
    snprintf(off, sizeof(off), "%lld", (long long) msg->offset);
    params[0] = ev.event_id;
    params[1] = payload;
    params[2] = part;
    params[3] = off;

    r = tc_write(tc, TC_SQL_INSERT_ONE, 4, params, errstr, errlen);

    free(payload);
    json_decref(ev.root);
    return r;
}

static elearn_consumer_result_t
tc_handle_batch(void *ctx, const elearn_message_t *msgs, size_t n, char *errstr,
    size_t errlen)
{
    size_t i;
    char *rows_text;
    json_t *rows, *row;
    tc_ctx_t *tc;
    tc_event_t ev;
    const char *params[1];

    tc = ctx;
    rows = json_array();
    if (rows == NULL) {
        snprintf(errstr, errlen, "out of memory");
        return ELEARN_CONSUMER_RETRY;
    }

    for (i = 0; i < n; i++) {
        if (tc_parse(&msgs[i], &ev, errstr, errlen) != 0) {
            json_decref(rows);
            return ELEARN_CONSUMER_FAIL;
        }

        /* poison of any kind: let the per-message path sort it out */
        if (tc_poison(&ev, 1, errstr, errlen) != ELEARN_CONSUMER_OK) {
            json_decref(ev.root);
            json_decref(rows);
            return ELEARN_CONSUMER_FAIL;
        }

        row = json_pack("{s:s, s:O, s:i, s:I}", "e", ev.event_id, "p", ev.root,
            "pa", (int) msgs[i].partition, "o", (json_int_t) msgs[i].offset);
        json_decref(ev.root);

        if (row == NULL || json_array_append_new(rows, row) != 0) {
            json_decref(rows);
            snprintf(errstr, errlen, "out of memory");
            return ELEARN_CONSUMER_RETRY;
        }
    }

    rows_text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    if (rows_text == NULL) {
        snprintf(errstr, errlen, "out of memory");
        return ELEARN_CONSUMER_RETRY;
    }

    params[0] = rows_text;
    {
        elearn_consumer_result_t r;

        r = tc_write(tc, TC_SQL_INSERT_MANY, 1, params, errstr, errlen);
        free(rows_text);
        return r;
    }
}

int
main(int argc, char **argv)
{
    int rc, use_batch;
    long long port;
    const char *conninfo, *addr;
    tc_ctx_t tc;
    elearn_config_t *cfg;
    elearn_consumer_t *consumer;
    elearn_metrics_http_t *http;
    elearn_consumer_conf_t conf;
    char err[1024];

    consumer = NULL;
    http = NULL;
    memset(&tc, 0, sizeof(tc));

    cfg = elearn_daemon_init(
        argc, argv, "elearn-testconsumer", "config/testconsumer.conf", &rc);
    if (cfg == NULL) {
        return rc;
    }

    rc = 1;

    if (elearn_consumer_conf_load(&conf, cfg, err, sizeof(err)) != 0
        || elearn_config_get_str(
               cfg, "pg.conninfo", NULL, &conninfo, err, sizeof(err))
            != 0
        || elearn_config_get_str(
               cfg, "metrics.address", "127.0.0.1", &addr, err, sizeof(err))
            != 0
        || elearn_config_get_int(
               cfg, "metrics.port", 9481, 0, 65535, &port, err, sizeof(err))
            != 0
        || elearn_config_get_bool(
               cfg, "testconsumer.batch", 0, &use_batch, err, sizeof(err))
            != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    elearn_daemon_warn_unused(cfg);

    tc.pg = elearn_pg_create(conninfo, "elearn-testconsumer", err, sizeof(err));
    if (tc.pg == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    if (elearn_pg_connect(tc.pg, -1, err, sizeof(err)) != 0) {
        /* only a stop request ends an unbounded connect */
        rc = elearn_signal_stop_requested() ? 0 : 1;
        goto failed;
    }

    if (elearn_pg_command(tc.pg, TC_SQL_CREATE, 0, NULL, err, sizeof(err)) != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    tc.metrics = elearn_metrics_create(err, sizeof(err));
    if (tc.metrics == NULL
        || elearn_metrics_define(tc.metrics,
               "elearn_testconsumer_rows_inserted_total", ELEARN_METRIC_COUNTER,
               "Rows inserted into test_events (duplicates excluded).", NULL,
               NULL, 0, err, sizeof(err))
            != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }
    elearn_metrics_add(
        tc.metrics, "elearn_testconsumer_rows_inserted_total", NULL, 0);

    consumer = elearn_consumer_create(&conf, tc.metrics, tc_handle,
        use_batch ? tc_handle_batch : NULL, &tc, err, sizeof(err));
    if (consumer == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    if (elearn_consumer_set_reload(consumer, elearn_config_path(cfg), NULL)
        != 0) {
        elearn_log(ELEARN_LOG_ERROR, "main", "out of memory");
        goto failed;
    }

    http = elearn_metrics_http_create(addr, (int) port, tc.metrics,
        elearn_consumer_health, consumer, err, sizeof(err));
    if (http == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    elearn_log_fields(ELEARN_LOG_INFO, "main",
        json_pack("{s:s, s:i, s:s, s:b}", "metricsAddress", addr, "metricsPort",
            elearn_metrics_http_port(http), "pg",
            elearn_pg_masked_conninfo(tc.pg), "batch", use_batch),
        "elearn-testconsumer started");

    if (elearn_consumer_run(consumer, err, sizeof(err)) != 0) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    rc = 0;

failed:

    elearn_metrics_http_destroy(http);
    elearn_consumer_destroy(consumer);
    elearn_metrics_destroy(tc.metrics);
    elearn_pg_destroy(tc.pg);
    elearn_config_destroy(cfg);

    elearn_log(rc == 0 ? ELEARN_LOG_INFO : ELEARN_LOG_ERROR, "main",
        "exiting with status %d", rc);
    return rc;
}
