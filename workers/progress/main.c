/*
 * elearn-progress: write-behind of video progress (issue 5).
 *
 * Consumes elearn.progress (group elearn-progress), where the module puts
 * each POST /videos/{id}/progress as a progress.reported event keyed by
 * user.  The consumer library hands over batches of up to consumer.batch.size
 * reports or consumer.batch.timeout after the first; each batch is merged
 * per (user, video) in memory and written as ONE upsert statement
 * (INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE) that keeps the
 * newest position (by reportedAtMs: a late or replayed report never moves a
 * newer row backwards), the union of the watched intervals, and sets
 * completed_at once when the union covers progress.completion.ratio of the
 * video.  Videos completed by the batch are checked for course completion
 * in the same transaction (elearn_record_course_completions(): ledger row,
 * enrollment, analytics count and the course.completed event in
 * event_outbox, which elearn-outbox relays; each exactly once).  Offsets
 * are stored only
 * after the COMMIT: at-least-once delivery, and a replayed batch changes
 * nothing (the upsert's WHERE skips rows it would not change).
 *
 * Failures: a transient database failure (connection lost, server down) is
 * retried with capped exponential backoff for as long as it lasts, never
 * dead-lettered; a poison report (bad JSON, wrong types, unknown video or
 * user) is taken out of its batch (elearn_message_reject) and goes through
 * the per-message handler, which fails it consumer.retry.attempts times
 * before the library dead-letters it to elearn.progress.dlq.
 *
 * Usage: elearn-progress [-c config/progress.conf]
 *
 * Must never: store an offset before the COMMIT, send a poison report to
 * the DLQ because of a database outage, or write a row from a report it
 * could not fully check.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "elearn_config.h"
#include "elearn_consumer.h"
#include "elearn_daemon.h"
#include "elearn_log.h"
#include "elearn_metrics.h"
#include "elearn_metrics_http.h"
#include "elearn_pg.h"
#include "elearn_signal.h"
#include "progress.h"

/*
 * The batch upsert.  $1 users, $2 videos, $3 positions, $4 watched
 * (int4multirange literals), $5 report times (ms), $6 completion ratio.
 * Rows whose video or user does not exist are left out and returned as
 * kind 'm' (the caller rejects their reports); videos this statement
 * completed come back as kind 'c' with their course; kind 'w' counts the
 * rows written.  A row is rewritten only when the report is newer, adds
 * watched time or completes the video: a replay writes nothing.
 * Rows are inserted in key order, so concurrent batches lock in one order.
 */
#define PR_SQL_UPSERT                                                          \
    "WITH input AS ("                                                          \
    " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::integer[],"         \
    " $4::int4multirange[], $5::bigint[])"                                     \
    " AS i (user_id, video_id, position_seconds, watched, reported_at_ms)"     \
    "), known AS ("                                                            \
    " SELECT i.user_id, i.video_id, i.position_seconds, i.reported_at_ms,"     \
    " v.course_id, v.duration_seconds,"                                        \
    " i.watched * int4multirange(int4range(0, v.duration_seconds))"            \
    " AS watched"                                                              \
    " FROM input i JOIN videos v ON v.video_id = i.video_id"                   \
    " WHERE EXISTS (SELECT 1 FROM users u WHERE u.user_id = i.user_id)"        \
    "), old AS ("                                                              \
    " SELECT p.user_id, p.video_id, p.completed_at"                            \
    " FROM video_progress p"                                                   \
    " JOIN known k ON k.user_id = p.user_id AND k.video_id = p.video_id"       \
    "), up AS ("                                                               \
    " INSERT INTO video_progress AS p (user_id, video_id, position_seconds,"   \
    " watched, reported_at_ms, completed_at, updated_at)"                      \
    " SELECT k.user_id, k.video_id, k.position_seconds, k.watched,"            \
    " k.reported_at_ms,"                                                       \
    " CASE WHEN k.duration_seconds > 0"                                        \
    " AND elearn_int4multirange_length(k.watched)"                             \
    " >= ceil($6::numeric * k.duration_seconds) THEN now() END,"               \
    " now()"                                                                   \
    " FROM known k ORDER BY k.user_id, k.video_id"                             \
    " ON CONFLICT (user_id, video_id) DO UPDATE SET"                           \
    " position_seconds = CASE"                                                 \
    " WHEN EXCLUDED.reported_at_ms > p.reported_at_ms"                         \
    " THEN EXCLUDED.position_seconds ELSE p.position_seconds END,"             \
    " reported_at_ms = greatest(p.reported_at_ms, EXCLUDED.reported_at_ms),"   \
    " watched = p.watched + EXCLUDED.watched,"                                 \
    " completed_at = coalesce(p.completed_at,"                                 \
    " (SELECT now() FROM videos v WHERE v.video_id = p.video_id"               \
    " AND v.duration_seconds > 0"                                              \
    " AND elearn_int4multirange_length(p.watched + EXCLUDED.watched)"          \
    " >= ceil($6::numeric * v.duration_seconds))),"                            \
    " updated_at = now()"                                                      \
    " WHERE EXCLUDED.reported_at_ms > p.reported_at_ms"                        \
    " OR NOT p.watched @> EXCLUDED.watched"                                    \
    " OR (p.completed_at IS NULL AND EXCLUDED.completed_at IS NOT NULL)"       \
    " RETURNING p.user_id, p.video_id, p.completed_at"                         \
    ")"                                                                        \
    " SELECT 'm', i.user_id, i.video_id, NULL::bigint FROM input i"            \
    " WHERE NOT EXISTS (SELECT 1 FROM known k"                                 \
    " WHERE k.user_id = i.user_id AND k.video_id = i.video_id)"                \
    " UNION ALL"                                                               \
    " SELECT 'c', u.user_id, u.video_id, k.course_id FROM up u"                \
    " JOIN known k ON k.user_id = u.user_id AND k.video_id = u.video_id"       \
    " LEFT JOIN old o ON o.user_id = u.user_id AND o.video_id = u.video_id"    \
    " WHERE u.completed_at IS NOT NULL AND o.completed_at IS NULL"             \
    " UNION ALL"                                                               \
    " SELECT 'w', count(*), NULL, NULL FROM up"

#define PR_SQL_COURSES                                                         \
    "SELECT user_id, course_id"                                                \
    " FROM elearn_record_course_completions($1::bigint[], $2::bigint[])"

typedef struct {
    elearn_pg_t *pg;
    elearn_metrics_t *metrics;
    char ratio[32];
    long long backoff_ms;
    long long backoff_max_ms;

    /* reused between batches */
    pr_buf_t params[5];

    /* rows/s over windows of at least 5 s */
    long long window_start_ms;
    double window_rows;
} pr_ctx_t;

/* what one transaction did */
typedef struct {
    long long written;
    long long videos_completed;
    long long courses_completed;
    unsigned char *missing; /* per row: video or user unknown */
} pr_outcome_t;

static const char *pr_result_label[] = {"result", NULL};
static const double pr_rows_buckets[] = {
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
static const double pr_seconds_buckets[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
static const double pr_delay_buckets[] = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800};

static long long
pr_now_ms(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
pr_count(pr_ctx_t *pc, const char *name, const char *result, double v)
{
    const char *values[2];

    values[0] = result;
    values[1] = NULL;
    elearn_metrics_add(pc->metrics, name, result != NULL ? values : NULL, v);
}

static int
pr_define_metrics(elearn_metrics_t *m, char *errstr, size_t errlen)
{
    if (elearn_metrics_define(m, "elearn_progress_reports_total",
            ELEARN_METRIC_COUNTER,
            "Progress reports by outcome (merged into a batch, invalid, "
            "unknown video or user).",
            pr_result_label, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_statements_total",
               ELEARN_METRIC_COUNTER, "Batch upsert statements committed.",
               NULL, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_rows_total",
               ELEARN_METRIC_COUNTER,
               "(user, video) rows sent in committed upserts.", NULL, NULL, 0,
               errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_rows_written_total",
               ELEARN_METRIC_COUNTER,
               "Rows the upserts inserted or changed (a replay changes none).",
               NULL, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_rows_per_second",
               ELEARN_METRIC_GAUGE,
               "Rows upserted per second over the last window of >= 5 s.", NULL,
               NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_batch_rows",
               ELEARN_METRIC_HISTOGRAM, "Rows per upsert statement.", NULL,
               pr_rows_buckets, sizeof(pr_rows_buckets) / sizeof(double),
               errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_flush_seconds",
               ELEARN_METRIC_HISTOGRAM,
               "Time of one batch transaction, BEGIN to COMMIT.", NULL,
               pr_seconds_buckets, sizeof(pr_seconds_buckets) / sizeof(double),
               errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_delay_seconds",
               ELEARN_METRIC_HISTOGRAM,
               "Seconds from the oldest report of a batch (its reportedAtMs, "
               "the module's clock) to the batch's COMMIT: how far the "
               "database is behind the API.",
               NULL, pr_delay_buckets,
               sizeof(pr_delay_buckets) / sizeof(double), errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_pg_retries_total",
               ELEARN_METRIC_COUNTER,
               "Batch transactions repeated after a transient database "
               "failure.",
               NULL, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_videos_completed_total",
               ELEARN_METRIC_COUNTER, "Videos that reached completion.", NULL,
               NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_progress_course_completions_total",
               ELEARN_METRIC_COUNTER,
               "Course completions recorded in the ledger.", NULL, NULL, 0,
               errstr, errlen)
            != 0)
    {
        return -1;
    }

    elearn_metrics_add(m, "elearn_progress_reports_total",
        (const char *[]){"merged", NULL}, 0);
    elearn_metrics_add(m, "elearn_progress_reports_total",
        (const char *[]){"invalid", NULL}, 0);
    elearn_metrics_add(m, "elearn_progress_reports_total",
        (const char *[]){"unknown", NULL}, 0);
    elearn_metrics_add(m, "elearn_progress_statements_total", NULL, 0);
    elearn_metrics_add(m, "elearn_progress_rows_total", NULL, 0);
    elearn_metrics_add(m, "elearn_progress_rows_written_total", NULL, 0);
    elearn_metrics_set(m, "elearn_progress_rows_per_second", NULL, 0);
    elearn_metrics_add(m, "elearn_progress_pg_retries_total", NULL, 0);
    elearn_metrics_add(m, "elearn_progress_videos_completed_total", NULL, 0);
    elearn_metrics_add(m, "elearn_progress_course_completions_total", NULL, 0);
    return 0;
}

/*
 * The course completion check for the (user, course) pairs of the videos
 * this transaction completed.  Returns the number of courses newly
 * completed, or -1 with errstr set.
 */
static long long
pr_courses(pr_ctx_t *pc, PGresult *up, char *errstr, size_t errlen)
{
    int i, k;
    long long n;
    pr_buf_t users, courses;
    PGresult *res;
    const char *params[2];

    memset(&users, 0, sizeof(users));
    memset(&courses, 0, sizeof(courses));
    n = -1;

    k = 0;
    for (i = 0; i < PQntuples(up); i++) {
        if (strcmp(PQgetvalue(up, i, 0), "c") != 0) {
            continue;
        }

        if (pr_buf_printf(
                &users, "%s%s", k > 0 ? "," : "{", PQgetvalue(up, i, 1))
                != 0
            || pr_buf_printf(
                   &courses, "%s%s", k > 0 ? "," : "{", PQgetvalue(up, i, 3))
                != 0)
        {
            snprintf(errstr, errlen, "out of memory");
            goto done;
        }
        k++;
    }

    if (k == 0) {
        n = 0;
        goto done;
    }

    if (pr_buf_printf(&users, "}") != 0 || pr_buf_printf(&courses, "}") != 0) {
        snprintf(errstr, errlen, "out of memory");
        goto done;
    }

    params[0] = users.data;
    params[1] = courses.data;
    res = elearn_pg_exec(pc->pg, PR_SQL_COURSES, 2, params, errstr, errlen);
    if (res == NULL) {
        goto done;
    }

    n = PQntuples(res);
    for (i = 0; i < PQntuples(res); i++) {
        elearn_log_fields(ELEARN_LOG_INFO, "progress",
            json_pack("{s:I, s:I}", "userId",
                (json_int_t) atoll(PQgetvalue(res, i, 0)), "courseId",
                (json_int_t) atoll(PQgetvalue(res, i, 1))),
            "course completed");
    }
    PQclear(res);

done:

    pr_buf_free(&users);
    pr_buf_free(&courses);
    return n;
}

/* Finds the row of (user, video) among the sorted rows, or -1. */
static long
pr_find_row(const pr_row_t *rows, size_t nrows, long long user, long long video)
{
    size_t lo, hi, mid;

    lo = 0;
    hi = nrows;
    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (rows[mid].user_id < user
            || (rows[mid].user_id == user && rows[mid].video_id < video))
        {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    if (lo < nrows && rows[lo].user_id == user && rows[lo].video_id == video) {
        return (long) lo;
    }

    return -1;
}

/*
 * One transaction: the upsert, the course check, COMMIT.  Returns 0, or -1
 * with errstr set and the failure classified by elearn_pg_last_transient().
 */
static int
pr_transaction(pr_ctx_t *pc, const pr_row_t *rows, size_t nrows,
    pr_outcome_t *out, char *errstr, size_t errlen)
{
    int i;
    long r;
    long long courses;
    PGresult *res;
    const char *params[6];
    const char *kind;

    if (elearn_pg_connect(pc->pg, 0, errstr, errlen) != 0) {
        return -1;
    }

    if (elearn_pg_begin(pc->pg, errstr, errlen) != 0) {
        goto failed;
    }

    for (i = 0; i < 5; i++) {
        params[i] = pc->params[i].data;
    }
    params[5] = pc->ratio;

    res = elearn_pg_exec(pc->pg, PR_SQL_UPSERT, 6, params, errstr, errlen);
    if (res == NULL) {
        goto failed;
    }

    memset(out->missing, 0, nrows);
    out->written = 0;
    out->videos_completed = 0;
    out->courses_completed = 0;

    for (i = 0; i < PQntuples(res); i++) {
        kind = PQgetvalue(res, i, 0);
        if (kind[0] == 'w') {
            out->written = atoll(PQgetvalue(res, i, 1));
        } else if (kind[0] == 'c') {
            out->videos_completed++;
        } else {
            r = pr_find_row(rows, nrows, atoll(PQgetvalue(res, i, 1)),
                atoll(PQgetvalue(res, i, 2)));
            if (r >= 0) {
                out->missing[r] = 1;
            }
        }
    }

    courses =
        out->videos_completed > 0 ? pr_courses(pc, res, errstr, errlen) : 0;
    PQclear(res);
    if (courses < 0) {
        goto failed;
    }
    out->courses_completed = courses;

    if (elearn_pg_commit(pc->pg, errstr, errlen) != 0) {
        goto failed;
    }

    return 0;

failed:

    elearn_pg_rollback(pc->pg);
    return -1;
}

static void
pr_account(pr_ctx_t *pc, size_t nrows, const pr_outcome_t *out, double secs,
    long long oldest_ms)
{
    long long now;

    now = pr_now_ms(CLOCK_REALTIME);
    if (now >= oldest_ms) {
        elearn_metrics_observe(pc->metrics, "elearn_progress_delay_seconds",
            NULL, (double) (now - oldest_ms) / 1000.0);
    }

    pr_count(pc, "elearn_progress_statements_total", NULL, 1);
    pr_count(pc, "elearn_progress_rows_total", NULL, (double) nrows);
    pr_count(
        pc, "elearn_progress_rows_written_total", NULL, (double) out->written);
    pr_count(pc, "elearn_progress_videos_completed_total", NULL,
        (double) out->videos_completed);
    pr_count(pc, "elearn_progress_course_completions_total", NULL,
        (double) out->courses_completed);
    elearn_metrics_observe(
        pc->metrics, "elearn_progress_batch_rows", NULL, (double) nrows);
    elearn_metrics_observe(
        pc->metrics, "elearn_progress_flush_seconds", NULL, secs);

    now = pr_now_ms(CLOCK_MONOTONIC);
    pc->window_rows += (double) nrows;
    if (pc->window_start_ms == 0) {
        pc->window_start_ms = now;
    } else if (now - pc->window_start_ms >= 5000) {
        elearn_metrics_set(pc->metrics, "elearn_progress_rows_per_second", NULL,
            pc->window_rows * 1000.0 / (double) (now - pc->window_start_ms));
        pc->window_start_ms = now;
        pc->window_rows = 0;
    }
}

/*
 * Writes the parsed reports (n of them, msgs[reports[i].msg] their
 * messages): merge, then the transaction, retried with capped backoff while
 * the database fails transiently.  In a batch (single == 0) the reports of
 * unknown videos or users are rejected back to the library; for a single
 * message they make it fail.
 */
static elearn_consumer_result_t
pr_write(pr_ctx_t *pc, const elearn_message_t *msgs, pr_report_t *reports,
    size_t n, int single, char *errstr, size_t errlen)
{
    int attempt;
    size_t i, k, nrows;
    long long t0, backoff, oldest_ms;
    pr_row_t *rows;
    pr_outcome_t out;
    elearn_consumer_result_t result;

    rows = NULL;
    memset(&out, 0, sizeof(out));

    oldest_ms = INT64_MAX;
    for (i = 0; i < n; i++) {
        if (reports[i].reported_at_ms < oldest_ms) {
            oldest_ms = reports[i].reported_at_ms;
        }
    }

    if (pr_merge(reports, n, &rows, &nrows, pc->params) != 0) {
        snprintf(errstr, errlen, "out of memory");
        return ELEARN_CONSUMER_RETRY;
    }

    out.missing = calloc(nrows > 0 ? nrows : 1, 1);
    if (out.missing == NULL) {
        free(rows);
        snprintf(errstr, errlen, "out of memory");
        return ELEARN_CONSUMER_RETRY;
    }

    for (attempt = 1;; attempt++) {
        t0 = pr_now_ms(CLOCK_MONOTONIC);
        if (pr_transaction(pc, rows, nrows, &out, errstr, errlen) == 0) {
            break;
        }

        if (!elearn_pg_last_transient(pc->pg)) {
            /* a batch: the library replays it message by message */
            result = single ? ELEARN_CONSUMER_RETRY : ELEARN_CONSUMER_FAIL;
            goto done;
        }

        if (elearn_signal_stop_requested()) {
            /* unstored: it comes back after the restart */
            result = ELEARN_CONSUMER_STOP;
            goto done;
        }

        backoff = elearn_consumer_backoff_ms(
            pc->backoff_ms, pc->backoff_max_ms, attempt);
        elearn_log_fields(ELEARN_LOG_WARN, "progress",
            json_pack("{s:i, s:i, s:s}", "rows", (int) nrows, "attempt",
                attempt, "error", errstr),
            "database unavailable, retrying the batch in %lld ms", backoff);
        pr_count(pc, "elearn_progress_pg_retries_total", NULL, 1);

        if (elearn_signal_sleep_ms(backoff) != 0) {
            result = ELEARN_CONSUMER_STOP;
            goto done;
        }
    }

    pr_account(pc, nrows, &out,
        (double) (pr_now_ms(CLOCK_MONOTONIC) - t0) / 1000.0, oldest_ms);

    result = ELEARN_CONSUMER_OK;

    for (k = 0; k < nrows; k++) {
        if (!out.missing[k]) {
            continue;
        }

        if (single) {
            snprintf(errstr, errlen, "unknown video %lld or user %lld",
                (long long) rows[k].video_id, (long long) rows[k].user_id);
            result = ELEARN_CONSUMER_RETRY;
            continue;
        }

        for (i = rows[k].first; i < rows[k].last; i++) {
            elearn_message_reject(&msgs[reports[i].msg]);
        }
    }

done:

    free(out.missing);
    free(rows);
    return result;
}

static elearn_consumer_result_t
pr_handle_batch(void *ctx, const elearn_message_t *msgs, size_t n, char *errstr,
    size_t errlen)
{
    size_t i, k;
    pr_ctx_t *pc;
    pr_report_t *reports;
    elearn_consumer_result_t r;
    char why[256];

    pc = ctx;
    reports = calloc(n, sizeof(pr_report_t));
    if (reports == NULL) {
        snprintf(errstr, errlen, "out of memory");
        return ELEARN_CONSUMER_RETRY;
    }

    k = 0;
    for (i = 0; i < n; i++) {
        if (pr_report_parse(
                msgs[i].value, msgs[i].value_len, &reports[k], why, sizeof(why))
            != 0)
        {
            /* the per-message handler fails it again and dead-letters it */
            elearn_message_reject(&msgs[i]);
            continue;
        }
        reports[k++].msg = i;
    }

    r = ELEARN_CONSUMER_OK;
    if (k > 0) {
        r = pr_write(pc, msgs, reports, k, 0, errstr, errlen);
    }

    if (r == ELEARN_CONSUMER_OK) {
        pr_count(pc, "elearn_progress_reports_total", "merged", (double) k);
    }

    for (i = 0; i < k; i++) {
        pr_report_free(&reports[i]);
    }
    free(reports);
    return r;
}

static elearn_consumer_result_t
pr_handle(void *ctx, const elearn_message_t *msg, char *errstr, size_t errlen)
{
    pr_ctx_t *pc;
    pr_report_t report;
    elearn_consumer_result_t r;

    pc = ctx;

    /*
     * A bad report is retried like any failure (consumer.retry.attempts in
     * all) before the DLQ: cheap, and the same path as an unknown video,
     * which may only be not yet visible.
     */
    if (pr_report_parse(msg->value, msg->value_len, &report, errstr, errlen)
        != 0) {
        if (msg->attempt == 1) {
            pr_count(pc, "elearn_progress_reports_total", "invalid", 1);
        }
        return ELEARN_CONSUMER_RETRY;
    }
    report.msg = 0;

    r = pr_write(pc, msg, &report, 1, 1, errstr, errlen);
    pr_report_free(&report);

    if (r == ELEARN_CONSUMER_OK) {
        pr_count(pc, "elearn_progress_reports_total", "merged", 1);
    } else if (r == ELEARN_CONSUMER_RETRY && msg->attempt == 1
        && strncmp(errstr, "unknown video", 13) == 0)
    {
        pr_count(pc, "elearn_progress_reports_total", "unknown", 1);
    }

    return r;
}

/* progress.completion.ratio: a decimal in (0, 1], as text for the SQL */
static int
pr_load_ratio(
    elearn_config_t *cfg, char *buf, size_t len, char *errstr, size_t errlen)
{
    char *end;
    double r;
    const char *v;

    if (elearn_config_get_str(
            cfg, "progress.completion.ratio", "0.9", &v, errstr, errlen)
        != 0)
    {
        return -1;
    }

    r = strtod(v, &end);
    if (end == v || *end != '\0' || !(r > 0.0 && r <= 1.0)) {
        snprintf(errstr, errlen,
            "config: \"progress.completion.ratio\" must be a number in "
            "(0, 1]");
        return -1;
    }

    snprintf(buf, len, "%.4f", r);
    return 0;
}

int
main(int argc, char **argv)
{
    int i, rc;
    long long port;
    const char *conninfo, *addr;
    pr_ctx_t pc;
    elearn_config_t *cfg;
    elearn_consumer_t *consumer;
    elearn_metrics_http_t *http;
    elearn_consumer_conf_t conf;
    char err[1024];

    consumer = NULL;
    http = NULL;
    memset(&pc, 0, sizeof(pc));

    cfg = elearn_daemon_init(
        argc, argv, "elearn-progress", "config/progress.conf", &rc);
    if (cfg == NULL) {
        return rc;
    }
    rc = 1;

    if (elearn_consumer_conf_load(&conf, cfg, err, sizeof(err)) != 0
        || elearn_config_get_str(
               cfg, "pg.conninfo", NULL, &conninfo, err, sizeof(err))
            != 0
        || elearn_config_get_ms(cfg, "pg.retry.backoff", 100, 1, 60000,
               &pc.backoff_ms, err, sizeof(err))
            != 0
        || elearn_config_get_ms(cfg, "pg.retry.backoff.max", 5000, 1, 300000,
               &pc.backoff_max_ms, err, sizeof(err))
            != 0
        || elearn_config_get_str(
               cfg, "metrics.address", "127.0.0.1", &addr, err, sizeof(err))
            != 0
        || elearn_config_get_int(
               cfg, "metrics.port", 9482, 0, 65535, &port, err, sizeof(err))
            != 0
        || pr_load_ratio(cfg, pc.ratio, sizeof(pc.ratio), err, sizeof(err))
            != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    elearn_daemon_warn_unused(cfg);

    pc.pg = elearn_pg_create(conninfo, "elearn-progress", err, sizeof(err));
    if (pc.pg == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    pc.metrics = elearn_metrics_create(err, sizeof(err));
    if (pc.metrics == NULL
        || pr_define_metrics(pc.metrics, err, sizeof(err)) != 0) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    consumer = elearn_consumer_create(
        &conf, pc.metrics, pr_handle, pr_handle_batch, &pc, err, sizeof(err));
    if (consumer == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    if (elearn_consumer_set_reload(consumer, elearn_config_path(cfg), NULL)
        != 0) {
        elearn_log(ELEARN_LOG_ERROR, "main", "out of memory");
        goto failed;
    }

    http = elearn_metrics_http_create(addr, (int) port, pc.metrics,
        elearn_consumer_health, consumer, err, sizeof(err));
    if (http == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    elearn_log_fields(ELEARN_LOG_INFO, "main",
        json_pack("{s:s, s:i, s:s, s:i, s:I, s:s}", "metricsAddress", addr,
            "metricsPort", elearn_metrics_http_port(http), "pg",
            elearn_pg_masked_conninfo(pc.pg), "batchSize", conf.batch_size,
            "batchTimeoutMs", (json_int_t) conf.batch_timeout_ms,
            "completionRatio", pc.ratio),
        "elearn-progress started");

    if (elearn_consumer_run(consumer, err, sizeof(err)) != 0) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        goto failed;
    }

    rc = 0;

failed:

    elearn_metrics_http_destroy(http);
    elearn_consumer_destroy(consumer);
    elearn_metrics_destroy(pc.metrics);
    elearn_pg_destroy(pc.pg);
    for (i = 0; i < 5; i++) {
        pr_buf_free(&pc.params[i]);
    }
    elearn_config_destroy(cfg);

    elearn_log(rc == 0 ? ELEARN_LOG_INFO : ELEARN_LOG_ERROR, "main",
        "exiting with status %d", rc);
    return rc;
}
