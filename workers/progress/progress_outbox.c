/*
 * progress_outbox: publishes course.completed events from the
 * course_completions ledger (the outbox) to elearn.course-completions.
 *
 * A completion is recorded in the same transaction as the progress that
 * caused it (or by whoever calls elearn_record_course_completions()), with
 * published_at NULL.  This thread, with its own PostgreSQL connection and
 * idempotent producer, sweeps the unpublished rows at start, when notified
 * after a batch recorded completions, and every interval: it locks them
 * (FOR UPDATE SKIP LOCKED, so two daemons never publish the same row at
 * once), produces one event each, waits for the broker's acknowledgements
 * (bounded) and marks the acknowledged rows published in the same
 * transaction.  An event whose acknowledgement did not come stays
 * unpublished and goes out again at the next sweep with the same eventId
 * (derived from user and course) and the same bytes.
 *
 * The only duplicate left is a crash between the broker's acknowledgement
 * and the COMMIT of published_at: the same event (same eventId) again.
 *
 * Must never: mark a row published before the broker acknowledged it, or
 * wait without bound (shutdown waits for the last sweep).
 */

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "elearn_log.h"
#include "elearn_pg.h"
#include "elearn_signal.h"
#include "progress.h"

#define PR_OUTBOX_LIMIT 500

#define PR_SQL_UNPUBLISHED                                                     \
    "SELECT user_id, course_id, event_id,"                                     \
    " to_char(completed_at AT TIME ZONE 'UTC',"                                \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"                                    \
    " FROM course_completions WHERE published_at IS NULL"                      \
    " ORDER BY completed_at, user_id, course_id LIMIT 500"                     \
    " FOR UPDATE SKIP LOCKED"

#define PR_SQL_PUBLISHED                                                       \
    "UPDATE course_completions c SET published_at = now()"                     \
    " FROM unnest($1::bigint[], $2::bigint[]) AS p (user_id, course_id)"       \
    " WHERE c.user_id = p.user_id AND c.course_id = p.course_id"               \
    " AND c.published_at IS NULL"

struct pr_outbox_s {
    pr_outbox_conf_t conf;
    char *conninfo;
    char *topic;
    elearn_pg_t *pg;
    rd_kafka_t *rk;
    elearn_metrics_t *metrics;

    /* delivery reports of the current sweep; older ones are ignored */
    uint64_t round;
    unsigned char delivered[PR_OUTBOX_LIMIT];

    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int notified;
    int done;
};

static void
pr_outbox_count(pr_outbox_t *o, const char *result, double v)
{
    const char *values[2];

    values[0] = result;
    values[1] = NULL;
    elearn_metrics_add(
        o->metrics, "elearn_progress_completion_events_total", values, v);
}

static void
pr_outbox_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    uint64_t tag;
    pr_outbox_t *o;

    o = opaque;
    tag = (uint64_t) (uintptr_t) rkm->_private;

    /* tag = round * LIMIT + row: a report from an earlier sweep is stale */
    if (tag / PR_OUTBOX_LIMIT != o->round) {
        return;
    }

    if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        o->delivered[tag % PR_OUTBOX_LIMIT] = 1;
    } else {
        elearn_log(ELEARN_LOG_WARN, "outbox",
            "course.completed not delivered: %s", rd_kafka_err2str(rkm->err));
    }
}

static char *
pr_outbox_event(PGresult *res, int i)
{
    char *text;
    json_t *ev;
    long long user, course;

    user = atoll(PQgetvalue(res, i, 0));
    course = atoll(PQgetvalue(res, i, 1));

    ev = json_pack("{s:s, s:s, s:s, s:i, s:{s:I, s:I, s:s}}", "eventId",
        PQgetvalue(res, i, 2), "type", "course.completed", "occurredAt",
        PQgetvalue(res, i, 3), "schemaVersion", 1, "data", "userId",
        (json_int_t) user, "courseId", (json_int_t) course, "completedAt",
        PQgetvalue(res, i, 3));
    if (ev == NULL) {
        return NULL;
    }

    text = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ev);
    return text;
}

/*
 * One sweep: publishes up to PR_OUTBOX_LIMIT unpublished rows.  Returns the
 * number of rows found (so the caller sweeps again while it is the limit),
 * or -1 after a failure (logged; the rows stay unpublished).
 */
static int
pr_outbox_sweep(pr_outbox_t *o)
{
    int i, n, ok;
    char *text;
    PGresult *res;
    pr_buf_t users, courses;
    const char *params[2];
    rd_kafka_resp_err_t err;
    char err_text[512];

    res = NULL;
    memset(&users, 0, sizeof(users));
    memset(&courses, 0, sizeof(courses));

    if (elearn_pg_connect(o->pg, 0, err_text, sizeof(err_text)) != 0) {
        return -1;
    }

    if (elearn_pg_begin(o->pg, err_text, sizeof(err_text)) != 0) {
        goto failed;
    }

    res = elearn_pg_exec(
        o->pg, PR_SQL_UNPUBLISHED, 0, NULL, err_text, sizeof(err_text));
    if (res == NULL) {
        goto failed;
    }

    n = PQntuples(res);
    elearn_metrics_set(
        o->metrics, "elearn_progress_outbox_unpublished", NULL, (double) n);

    if (n == 0) {
        PQclear(res);
        elearn_pg_commit(o->pg, err_text, sizeof(err_text));
        return 0;
    }

    o->round++;
    memset(o->delivered, 0, sizeof(o->delivered));

    for (i = 0; i < n; i++) {
        text = pr_outbox_event(res, i);
        if (text == NULL) {
            snprintf(err_text, sizeof(err_text), "out of memory");
            goto failed;
        }

        err = rd_kafka_producev(o->rk, RD_KAFKA_V_TOPIC(o->topic),
            RD_KAFKA_V_KEY(
                PQgetvalue(res, i, 0), (size_t) PQgetlength(res, i, 0)),
            RD_KAFKA_V_VALUE(text, strlen(text)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE(
                (void *) (uintptr_t) (o->round * PR_OUTBOX_LIMIT + i)),
            RD_KAFKA_V_END);
        free(text);

        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            elearn_log(ELEARN_LOG_WARN, "outbox", "produce to %s: %s", o->topic,
                rd_kafka_err2str(err));
        }
    }

    /*
     * message.timeout.ms is timeout_ms, so librdkafka has failed what it
     * could not deliver by then; the extra second lets those reports in.
     */
    rd_kafka_flush(o->rk, (int) (o->conf.timeout_ms + 1000));

    /* reports after this belong to a finished sweep */
    ok = 0;
    for (i = 0; i < n; i++) {
        if (!o->delivered[i]) {
            continue;
        }

        if (pr_buf_printf(
                &users, "%s%s", ok > 0 ? "," : "{", PQgetvalue(res, i, 0))
                != 0
            || pr_buf_printf(
                   &courses, "%s%s", ok > 0 ? "," : "{", PQgetvalue(res, i, 1))
                != 0)
        {
            snprintf(err_text, sizeof(err_text), "out of memory");
            goto failed;
        }
        ok++;
    }
    o->round++;

    if (ok > 0) {
        if (pr_buf_printf(&users, "}") != 0
            || pr_buf_printf(&courses, "}") != 0) {
            snprintf(err_text, sizeof(err_text), "out of memory");
            goto failed;
        }

        params[0] = users.data;
        params[1] = courses.data;
        if (elearn_pg_command(
                o->pg, PR_SQL_PUBLISHED, 2, params, err_text, sizeof(err_text))
            != 0)
        {
            goto failed;
        }
    }

    if (elearn_pg_commit(o->pg, err_text, sizeof(err_text)) != 0) {
        goto failed;
    }

    pr_outbox_count(o, "published", ok);
    pr_outbox_count(o, "failed", n - ok);
    if (ok < n) {
        elearn_log(ELEARN_LOG_WARN, "outbox",
            "%d of %d course.completed events not acknowledged; they go out "
            "again at the next sweep",
            n - ok, n);
    } else {
        elearn_log(ELEARN_LOG_INFO, "outbox",
            "published %d course.completed event(s)", ok);
    }

    PQclear(res);
    pr_buf_free(&users);
    pr_buf_free(&courses);
    return ok < n ? -1 : n;

failed:

    elearn_pg_rollback(o->pg);
    elearn_log(ELEARN_LOG_WARN, "outbox", "sweep failed: %s", err_text);
    if (res != NULL) {
        PQclear(res);
    }
    pr_buf_free(&users);
    pr_buf_free(&courses);
    return -1;
}

static void *
pr_outbox_run(void *arg)
{
    int n, done;
    struct timespec ts;
    pr_outbox_t *o;

    o = arg;
    elearn_signal_block_in_thread();

    for (;;) {
        do {
            n = pr_outbox_sweep(o);
            rd_kafka_poll(o->rk, 0);
        } while (n == PR_OUTBOX_LIMIT);

        pthread_mutex_lock(&o->lock);

        if (!o->notified && !o->done) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += o->conf.interval_ms / 1000;
            ts.tv_nsec += (o->conf.interval_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&o->cond, &o->lock, &ts);
        }

        o->notified = 0;
        done = o->done;
        pthread_mutex_unlock(&o->lock);

        if (done) {
            /* the last batch's completions: one more sweep, then stop */
            pr_outbox_sweep(o);
            break;
        }
    }

    return NULL;
}

static int
pr_outbox_set(rd_kafka_conf_t *kc, const char *name, const char *value,
    char *errstr, size_t errlen)
{
    char err[256];

    if (rd_kafka_conf_set(kc, name, value, err, sizeof(err))
        != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errlen, "outbox: %s: %s", name, err);
        return -1;
    }

    return 0;
}

static rd_kafka_t *
pr_outbox_producer(pr_outbox_t *o, char *errstr, size_t errlen)
{
    rd_kafka_t *rk;
    rd_kafka_conf_t *kc;
    char num[32], id[160], err[512];

    kc = rd_kafka_conf_new();
    snprintf(num, sizeof(num), "%lld", o->conf.timeout_ms);
    snprintf(id, sizeof(id), "%s-outbox", o->conf.client_id);

    if (pr_outbox_set(kc, "bootstrap.servers", o->conf.brokers, errstr, errlen)
            != 0
        || pr_outbox_set(kc, "client.id", id, errstr, errlen) != 0
        || pr_outbox_set(kc, "enable.idempotence", "true", errstr, errlen) != 0
        || pr_outbox_set(kc, "message.timeout.ms", num, errstr, errlen) != 0
        || pr_outbox_set(kc, "linger.ms", "5", errstr, errlen) != 0)
    {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }

    rd_kafka_conf_set_opaque(kc, o);
    rd_kafka_conf_set_dr_msg_cb(kc, pr_outbox_dr_cb);

    rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (rk == NULL) {
        snprintf(errstr, errlen, "outbox: producer: %s", err);
        rd_kafka_conf_destroy(kc);
        return NULL;
    }

    return rk;
}

pr_outbox_t *
pr_outbox_create(const pr_outbox_conf_t *conf, elearn_metrics_t *metrics,
    char *errstr, size_t errlen)
{
    pr_outbox_t *o;
    pthread_condattr_t attr;
    static const char *result_label[] = {"result", NULL};

    o = calloc(1, sizeof(pr_outbox_t));
    if (o == NULL) {
        snprintf(errstr, errlen, "outbox: out of memory");
        return NULL;
    }

    o->conf = *conf;
    o->metrics = metrics;
    o->topic = strdup(conf->topic);
    pthread_mutex_init(&o->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&o->cond, &attr);
    pthread_condattr_destroy(&attr);

    if (o->topic == NULL) {
        snprintf(errstr, errlen, "outbox: out of memory");
        goto failed;
    }

    if (elearn_metrics_define(metrics,
            "elearn_progress_completion_events_total", ELEARN_METRIC_COUNTER,
            "course.completed events produced (published: acknowledged and "
            "marked; failed: not acknowledged, retried at the next sweep).",
            result_label, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(metrics, "elearn_progress_outbox_unpublished",
               ELEARN_METRIC_GAUGE,
               "Unpublished course completions found by the last outbox sweep "
               "(at most 500).",
               NULL, NULL, 0, errstr, errlen)
            != 0)
    {
        goto failed;
    }
    pr_outbox_count(o, "published", 0);
    pr_outbox_count(o, "failed", 0);
    elearn_metrics_set(metrics, "elearn_progress_outbox_unpublished", NULL, 0);

    o->pg = elearn_pg_create(
        conf->conninfo, "elearn-progress-outbox", errstr, errlen);
    if (o->pg == NULL) {
        goto failed;
    }

    o->rk = pr_outbox_producer(o, errstr, errlen);
    if (o->rk == NULL) {
        goto failed;
    }

    if (pthread_create(&o->thread, NULL, pr_outbox_run, o) != 0) {
        snprintf(errstr, errlen, "outbox: cannot start the thread");
        goto failed;
    }

    return o;

failed:

    if (o->rk != NULL) {
        rd_kafka_destroy(o->rk);
    }
    elearn_pg_destroy(o->pg);
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->lock);
    free(o->topic);
    free(o);
    return NULL;
}

void
pr_outbox_notify(pr_outbox_t *o)
{
    pthread_mutex_lock(&o->lock);
    o->notified = 1;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
}

void
pr_outbox_destroy(pr_outbox_t *o)
{
    if (o == NULL) {
        return;
    }

    pthread_mutex_lock(&o->lock);
    o->done = 1;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
    pthread_join(o->thread, NULL);

    rd_kafka_flush(o->rk, 1000);
    rd_kafka_destroy(o->rk);
    elearn_pg_destroy(o->pg);
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->lock);
    free(o->topic);
    free(o);
}
