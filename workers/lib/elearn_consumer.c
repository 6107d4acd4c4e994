/*
 * elearn_consumer: the Kafka consumer-group loop every worker daemon runs.
 *
 * Everything that touches the consumer handle happens on the thread that
 * calls elearn_consumer_run(): handlers, offset stores, the rebalance and
 * statistics callbacks (librdkafka serves them from rd_kafka_consumer_poll()
 * because the main queue is forwarded to the consumer queue).  The only
 * other threads are librdkafka's own (they call the log callback) and the
 * shutdown watchdog, which only reads atomics.
 *
 * The DLQ producer's delivery reports carry a sequence number, not a
 * pointer: a report that arrives after we gave up waiting must not write
 * into a stack frame that is gone.
 *
 * Must never: store an offset before success, or hold a message past the
 * revocation of its partition.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "elearn_consumer.h"
#include "elearn_log.h"
#include "elearn_signal.h"

#define ELEARN_CONSUMER_POLL_MS 100
#define ELEARN_CONSUMER_BATCH_MAX 10000
#define ELEARN_CONSUMER_STALL_MS 30000

struct elearn_consumer_s {
    elearn_consumer_conf_t conf;
    rd_kafka_t *rk;
    rd_kafka_t *dlq;
    elearn_metrics_t *metrics;

    elearn_consumer_handler_fn handler;
    elearn_consumer_batch_fn batch;
    void *ctx;

    char *config_path;
    elearn_consumer_reload_fn reload;

    rd_kafka_message_t **pending;
    unsigned char *rejected; /* per pending message: elearn_message_reject */
    size_t npending;
    long long batch_started_ms;

    /* DLQ delivery: the sequence we wait for and its outcome */
    uint64_t dlq_seq;
    uint64_t dlq_done_seq;
    rd_kafka_resp_err_t dlq_err;

    int fatal;
    int closed;
    char fatal_err[1024];

    atomic_llong last_poll_ms;
    atomic_int assigned;
    atomic_int failed;

    /* the shutdown watchdog */
    pthread_t watchdog;
    int watchdog_started;
    pthread_mutex_t wd_lock;
    pthread_cond_t wd_cond;
    int wd_done;
};

static const char *elearn_consumer_topic_label[] = {"topic", NULL};
static const char *elearn_consumer_lag_labels[] = {"topic", "partition", NULL};
static const double elearn_consumer_buckets[] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

static int elearn_consumer_flush_batch(elearn_consumer_t *c);

static long long
elearn_now_ms(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
elearn_consumer_count(
    elearn_consumer_t *c, const char *name, const char *topic, double v)
{
    const char *values[2];

    if (c->metrics == NULL) {
        return;
    }

    values[0] = topic;
    values[1] = NULL;
    elearn_metrics_add(c->metrics, name, topic != NULL ? values : NULL, v);
}

/* --- configuration ------------------------------------------------------- */

static int
elearn_consumer_copy(elearn_config_t *cfg, const char *key, const char *def,
    char *dst, size_t dstlen, char *errstr, size_t errlen)
{
    const char *v;

    if (elearn_config_get_str(cfg, key, def, &v, errstr, errlen) != 0) {
        return -1;
    }

    if (*v == '\0') {
        snprintf(errstr, errlen, "config: \"%s\" must not be empty", key);
        return -1;
    }

    if (strlen(v) >= dstlen) {
        snprintf(errstr, errlen, "config: \"%s\" is longer than %zu bytes", key,
            dstlen - 1);
        return -1;
    }

    strcpy(dst, v);
    return 0;
}

int
elearn_consumer_conf_load(elearn_consumer_conf_t *conf, elearn_config_t *cfg,
    char *errstr, size_t errlen)
{
    long long v;
    const long long day = 24LL * 3600 * 1000;

    memset(conf, 0, sizeof(elearn_consumer_conf_t));

    if (elearn_consumer_copy(cfg, "kafka.brokers", NULL, conf->brokers,
            sizeof(conf->brokers), errstr, errlen)
            != 0
        || elearn_consumer_copy(cfg, "kafka.group.id", NULL, conf->group_id,
               sizeof(conf->group_id), errstr, errlen)
            != 0
        || elearn_consumer_copy(cfg, "kafka.topics", NULL, conf->topics,
               sizeof(conf->topics), errstr, errlen)
            != 0
        || elearn_consumer_copy(cfg, "kafka.client.id", "elearn-worker",
               conf->client_id, sizeof(conf->client_id), errstr, errlen)
            != 0
        || elearn_consumer_copy(cfg, "kafka.auto.offset.reset", "earliest",
               conf->offset_reset, sizeof(conf->offset_reset), errstr, errlen)
            != 0)
    {
        return -1;
    }

    if (strcmp(conf->offset_reset, "earliest") != 0
        && strcmp(conf->offset_reset, "latest") != 0)
    {
        snprintf(errstr, errlen,
            "config: \"kafka.auto.offset.reset\" must be earliest or latest");
        return -1;
    }

    if (elearn_config_get_ms(cfg, "kafka.session.timeout", 10000, 1000, 300000,
            &conf->session_timeout_ms, errstr, errlen)
            != 0
        || elearn_config_get_ms(cfg, "kafka.statistics.interval", 1000, 0, day,
               &conf->stats_interval_ms, errstr, errlen)
            != 0
        || elearn_config_get_ms(cfg, "kafka.commit.interval", 1000, 100, 60000,
               &conf->commit_interval_ms, errstr, errlen)
            != 0
        || elearn_config_get_ms(cfg, "kafka.fetch.wait", 500, 0, 60000,
               &conf->fetch_wait_ms, errstr, errlen)
            != 0
        || elearn_config_get_int(cfg, "kafka.fetch.min.bytes", 1, 1, 100000000,
               &conf->fetch_min_bytes, errstr, errlen)
            != 0
        || elearn_config_get_int(
               cfg, "consumer.retry.attempts", 3, 1, 100, &v, errstr, errlen)
            != 0)
    {
        return -1;
    }
    conf->retry_attempts = (int) v;

    if (elearn_config_get_ms(cfg, "consumer.retry.backoff", 200, 0, 60000,
            &conf->retry_backoff_ms, errstr, errlen)
            != 0
        || elearn_config_get_ms(cfg, "consumer.retry.backoff.max", 5000, 0,
               300000, &conf->retry_backoff_max_ms, errstr, errlen)
            != 0
        || elearn_config_get_int(cfg, "consumer.batch.size", 100, 1,
               ELEARN_CONSUMER_BATCH_MAX, &v, errstr, errlen)
            != 0)
    {
        return -1;
    }
    conf->batch_size = (int) v;

    if (elearn_config_get_ms(cfg, "consumer.batch.timeout", 500, 1, 60000,
            &conf->batch_timeout_ms, errstr, errlen)
            != 0
        || elearn_config_get_ms(cfg, "consumer.dlq.timeout", 10000, 1000,
               300000, &conf->dlq_timeout_ms, errstr, errlen)
            != 0
        || elearn_config_get_ms(cfg, "consumer.shutdown.timeout", 8000, 1000,
               600000, &conf->shutdown_timeout_ms, errstr, errlen)
            != 0)
    {
        return -1;
    }

    return 0;
}

long long
elearn_consumer_backoff_ms(long long base_ms, long long max_ms, int attempt)
{
    long long b;

    b = base_ms;
    while (attempt > 1 && b < max_ms) {
        b *= 2;
        attempt--;
    }

    return b < max_ms ? b : max_ms;
}

/* --- librdkafka callbacks ------------------------------------------------ */

static void
elearn_consumer_log_cb(
    const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    elearn_log_level_t l;

    if (level <= 3) {
        l = ELEARN_LOG_ERROR;
    } else if (level == 4) {
        l = ELEARN_LOG_WARN;
    } else if (level <= 6) {
        l = ELEARN_LOG_INFO;
    } else {
        l = ELEARN_LOG_DEBUG;
    }

    elearn_log_fields(l, "rdkafka",
        json_pack("{s:s, s:s}", "facility", fac, "client", rd_kafka_name(rk)),
        "%s", buf);
}

static void
elearn_consumer_error_cb(
    rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    char buf[256];
    elearn_consumer_t *c;
    rd_kafka_resp_err_t ferr;

    c = opaque;

    if (err != RD_KAFKA_RESP_ERR__FATAL) {
        /* transport errors and the like: librdkafka recovers by itself */
        elearn_log(ELEARN_LOG_WARN, "consumer", "%s: %s: %s", rd_kafka_name(rk),
            rd_kafka_err2name(err), reason);
        return;
    }

    ferr = rd_kafka_fatal_error(rk, buf, sizeof(buf));
    snprintf(c->fatal_err, sizeof(c->fatal_err), "fatal error in %s: %s: %s",
        rd_kafka_name(rk), rd_kafka_err2name(ferr), buf);
    c->fatal = 1;
    atomic_store(&c->failed, 1);
    elearn_log(ELEARN_LOG_ERROR, "consumer", "%s", c->fatal_err);
}

static void
elearn_consumer_dr_cb(
    rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    uint64_t seq;
    elearn_consumer_t *c;

    c = opaque;
    seq = (uint64_t) (uintptr_t) rkm->_private;

    if (seq != c->dlq_seq) {
        elearn_log(ELEARN_LOG_WARN, "consumer",
            "late DLQ delivery report for %s [%" PRId32 "]: %s",
            rd_kafka_topic_name(rkm->rkt), rkm->partition,
            rd_kafka_err2str(rkm->err));
        return;
    }

    c->dlq_done_seq = seq;
    c->dlq_err = rkm->err;
}

static int
elearn_consumer_stats_cb(
    rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    char part[16];
    json_t *root, *topics, *topic, *parts, *p, *lag, *desired;
    const char *tname, *pname;
    const char *values[3];
    json_error_t jerr;
    elearn_consumer_t *c;

    c = opaque;
    if (c->metrics == NULL) {
        return 0;
    }

    root = json_loadb(json, json_len, 0, &jerr);
    if (root == NULL) {
        elearn_log(
            ELEARN_LOG_WARN, "consumer", "bad statistics JSON: %s", jerr.text);
        return 0;
    }

    /* rebuild the lag series so revoked partitions disappear */
    elearn_metrics_clear(c->metrics, "elearn_consumer_lag");

    topics = json_object_get(root, "topics");
    json_object_foreach(topics, tname, topic)
    {
        parts = json_object_get(topic, "partitions");
        json_object_foreach(parts, pname, p)
        {
            desired = json_object_get(p, "desired");
            lag = json_object_get(p, "consumer_lag");

            /* -1 is librdkafka's internal unassigned partition */
            if (strcmp(pname, "-1") == 0 || !json_is_true(desired)
                || !json_is_integer(lag) || json_integer_value(lag) < 0)
            {
                continue;
            }

            snprintf(part, sizeof(part), "%s", pname);
            values[0] = tname;
            values[1] = part;
            values[2] = NULL;
            elearn_metrics_set(c->metrics, "elearn_consumer_lag", values,
                (double) json_integer_value(lag));
        }
    }

    json_decref(root);
    return 0;
}

static void
elearn_consumer_log_partitions(
    const char *what, const rd_kafka_topic_partition_list_t *parts)
{
    int i;
    char buf[64];
    json_t *arr;

    arr = json_array();

    for (i = 0; i < parts->cnt; i++) {
        snprintf(buf, sizeof(buf), "%s[%" PRId32 "]", parts->elems[i].topic,
            parts->elems[i].partition);
        json_array_append_new(arr, json_string(buf));
    }

    elearn_log_fields(ELEARN_LOG_INFO, "consumer",
        json_pack("{s:o}", "partitions", arr), "%s %d partition(s)", what,
        parts->cnt);
}

static void
elearn_consumer_commit_sync(elearn_consumer_t *c, const char *why)
{
    rd_kafka_resp_err_t err;

    err = rd_kafka_commit(c->rk, NULL, 0);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        elearn_log(ELEARN_LOG_DEBUG, "consumer", "committed offsets (%s)", why);
    } else if (err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        elearn_log(ELEARN_LOG_WARN, "consumer", "commit (%s) failed: %s", why,
            rd_kafka_err2str(err));
    }
}

static void
elearn_consumer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    int cooperative, n;
    rd_kafka_error_t *error;
    elearn_consumer_t *c;
    rd_kafka_resp_err_t aerr;
    rd_kafka_topic_partition_list_t *now;

    c = opaque;
    error = NULL;
    aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;

    elearn_consumer_count(c, "elearn_consumer_rebalances_total", NULL, 1);

    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        elearn_consumer_log_partitions("assigned", parts);
        if (cooperative) {
            error = rd_kafka_incremental_assign(rk, parts);
        } else {
            aerr = rd_kafka_assign(rk, parts);
        }
        break;

    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        elearn_consumer_log_partitions("revoked", parts);

        /* messages we hold must be handled while we still own them */
        if (c->npending > 0 && elearn_consumer_flush_batch(c) != 0) {
            elearn_log(ELEARN_LOG_WARN, "consumer",
                "pending batch not handled before revoke; it will be "
                "redelivered");
        }

        if (rd_kafka_assignment_lost(rk)) {
            elearn_log(ELEARN_LOG_WARN, "consumer",
                "assignment lost: not committing, messages since the last "
                "commit will be redelivered");
        } else {
            elearn_consumer_commit_sync(c, "revoke");
        }

        if (cooperative) {
            error = rd_kafka_incremental_unassign(rk, parts);
        } else {
            aerr = rd_kafka_assign(rk, NULL);
        }

        if (c->metrics != NULL) {
            elearn_metrics_clear(c->metrics, "elearn_consumer_lag");
        }
        break;

    default:
        elearn_log(ELEARN_LOG_ERROR, "consumer", "rebalance failed: %s",
            rd_kafka_err2str(err));
        aerr = rd_kafka_assign(rk, NULL);
        break;
    }

    if (error != NULL) {
        elearn_log(ELEARN_LOG_ERROR, "consumer", "assignment failed: %s",
            rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        elearn_log(ELEARN_LOG_ERROR, "consumer", "assignment failed: %s",
            rd_kafka_err2str(aerr));
    }

    n = 0;
    if (rd_kafka_assignment(rk, &now) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        n = now->cnt;
        rd_kafka_topic_partition_list_destroy(now);
    }

    atomic_store(&c->assigned, n);
    if (c->metrics != NULL) {
        elearn_metrics_set(
            c->metrics, "elearn_consumer_assigned_partitions", NULL, n);
    }
}

/* --- create / destroy ---------------------------------------------------- */

static int
elearn_consumer_set(rd_kafka_conf_t *kc, const char *name, const char *value,
    char *errstr, size_t errlen)
{
    char err[256];

    if (rd_kafka_conf_set(kc, name, value, err, sizeof(err))
        != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errlen, "consumer: %s: %s", name, err);
        return -1;
    }

    return 0;
}

static int
elearn_consumer_define_metrics(
    elearn_consumer_t *c, char *errstr, size_t errlen)
{
    char *topics, *t, *save;
    elearn_metrics_t *m;

    m = c->metrics;

    if (elearn_metrics_define(m, "elearn_consumer_messages_total",
            ELEARN_METRIC_COUNTER, "Messages received from Kafka.",
            elearn_consumer_topic_label, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_failures_total",
               ELEARN_METRIC_COUNTER,
               "Handler calls that failed (RETRY or FAIL).",
               elearn_consumer_topic_label, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_retries_total",
               ELEARN_METRIC_COUNTER,
               "Handler calls repeated after a transient failure.", NULL, NULL,
               0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_dlq_total",
               ELEARN_METRIC_COUNTER,
               "Messages sent to the dead-letter topic <topic>.dlq.",
               elearn_consumer_topic_label, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_dlq_errors_total",
               ELEARN_METRIC_COUNTER,
               "Dead-letter produces that failed (the consumer stops).", NULL,
               NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_rebalances_total",
               ELEARN_METRIC_COUNTER, "Consumer group rebalance callbacks.",
               NULL, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_assigned_partitions",
               ELEARN_METRIC_GAUGE, "Partitions currently assigned.", NULL,
               NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_lag", ELEARN_METRIC_GAUGE,
               "Messages between the committed offset and the end of the "
               "partition.",
               elearn_consumer_lag_labels, NULL, 0, errstr, errlen)
            != 0
        || elearn_metrics_define(m, "elearn_consumer_batch_seconds",
               ELEARN_METRIC_HISTOGRAM,
               "Time spent in one handler call (a message or a batch).", NULL,
               elearn_consumer_buckets,
               sizeof(elearn_consumer_buckets) / sizeof(double), errstr, errlen)
            != 0)
    {
        return -1;
    }

    /* every series starts at 0, so rate() works from the first scrape */
    elearn_metrics_add(m, "elearn_consumer_retries_total", NULL, 0);
    elearn_metrics_add(m, "elearn_consumer_dlq_errors_total", NULL, 0);
    elearn_metrics_add(m, "elearn_consumer_rebalances_total", NULL, 0);
    elearn_metrics_set(m, "elearn_consumer_assigned_partitions", NULL, 0);

    topics = strdup(c->conf.topics);
    if (topics == NULL) {
        snprintf(errstr, errlen, "consumer: out of memory");
        return -1;
    }

    for (t = strtok_r(topics, ", ", &save); t != NULL;
         t = strtok_r(NULL, ", ", &save))
    {
        elearn_consumer_count(c, "elearn_consumer_messages_total", t, 0);
        elearn_consumer_count(c, "elearn_consumer_failures_total", t, 0);
        elearn_consumer_count(c, "elearn_consumer_dlq_total", t, 0);
    }

    free(topics);
    return 0;
}

static rd_kafka_t *
elearn_consumer_new_producer(elearn_consumer_t *c, char *errstr, size_t errlen)
{
    rd_kafka_t *rk;
    rd_kafka_conf_t *kc;
    char num[32], id[160], err[512];

    kc = rd_kafka_conf_new();

    snprintf(num, sizeof(num), "%lld", c->conf.dlq_timeout_ms);
    snprintf(id, sizeof(id), "%s-dlq", c->conf.client_id);

    /* idempotence: producer retries never duplicate or reorder DLQ entries */
    if (elearn_consumer_set(
            kc, "bootstrap.servers", c->conf.brokers, errstr, errlen)
            != 0
        || elearn_consumer_set(kc, "client.id", id, errstr, errlen) != 0
        || elearn_consumer_set(kc, "enable.idempotence", "true", errstr, errlen)
            != 0
        || elearn_consumer_set(kc, "message.timeout.ms", num, errstr, errlen)
            != 0
        || elearn_consumer_set(kc, "linger.ms", "0", errstr, errlen) != 0)
    {
        goto failed;
    }

    rd_kafka_conf_set_opaque(kc, c);
    rd_kafka_conf_set_dr_msg_cb(kc, elearn_consumer_dr_cb);
    rd_kafka_conf_set_error_cb(kc, elearn_consumer_error_cb);
    rd_kafka_conf_set_log_cb(kc, elearn_consumer_log_cb);

    rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (rk == NULL) {
        snprintf(errstr, errlen, "consumer: DLQ producer: %s", err);
        goto failed;
    }

    return rk;

failed:

    rd_kafka_conf_destroy(kc);
    return NULL;
}

static rd_kafka_t *
elearn_consumer_new_consumer(elearn_consumer_t *c, char *errstr, size_t errlen)
{
    rd_kafka_t *rk;
    rd_kafka_conf_t *kc;
    char session[32], stats[32], commit[32], fwait[32], fmin[32], err[512];

    kc = rd_kafka_conf_new();

    snprintf(session, sizeof(session), "%lld", c->conf.session_timeout_ms);
    snprintf(stats, sizeof(stats), "%lld", c->conf.stats_interval_ms);
    snprintf(commit, sizeof(commit), "%lld", c->conf.commit_interval_ms);
    snprintf(fwait, sizeof(fwait), "%lld", c->conf.fetch_wait_ms);
    snprintf(fmin, sizeof(fmin), "%lld", c->conf.fetch_min_bytes);

    if (elearn_consumer_set(
            kc, "bootstrap.servers", c->conf.brokers, errstr, errlen)
            != 0
        || elearn_consumer_set(kc, "group.id", c->conf.group_id, errstr, errlen)
            != 0
        || elearn_consumer_set(
               kc, "client.id", c->conf.client_id, errstr, errlen)
            != 0
        || elearn_consumer_set(kc, "enable.auto.commit", "true", errstr, errlen)
            != 0
        || elearn_consumer_set(
               kc, "enable.auto.offset.store", "false", errstr, errlen)
            != 0
        || elearn_consumer_set(
               kc, "auto.commit.interval.ms", commit, errstr, errlen)
            != 0
        || elearn_consumer_set(
               kc, "auto.offset.reset", c->conf.offset_reset, errstr, errlen)
            != 0
        || elearn_consumer_set(
               kc, "session.timeout.ms", session, errstr, errlen)
            != 0
        || elearn_consumer_set(
               kc, "statistics.interval.ms", stats, errstr, errlen)
            != 0
        || elearn_consumer_set(
               kc, "enable.partition.eof", "false", errstr, errlen)
            != 0
        /*
         * how long the broker may hold a fetch for fetch.min.bytes: a
         * fetch answered per produced batch costs the broker (and this
         * process's fetch thread) about as much as the batch itself
         */
        || elearn_consumer_set(kc, "fetch.wait.max.ms", fwait, errstr, errlen)
            != 0
        || elearn_consumer_set(kc, "fetch.min.bytes", fmin, errstr, errlen)
            != 0)
    {
        goto failed;
    }

    rd_kafka_conf_set_opaque(kc, c);
    rd_kafka_conf_set_rebalance_cb(kc, elearn_consumer_rebalance_cb);
    rd_kafka_conf_set_error_cb(kc, elearn_consumer_error_cb);
    rd_kafka_conf_set_log_cb(kc, elearn_consumer_log_cb);
    rd_kafka_conf_set_stats_cb(kc, elearn_consumer_stats_cb);

    rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    if (rk == NULL) {
        snprintf(errstr, errlen, "consumer: %s", err);
        goto failed;
    }

    /* serve errors and statistics from rd_kafka_consumer_poll() */
    rd_kafka_poll_set_consumer(rk);
    return rk;

failed:

    rd_kafka_conf_destroy(kc);
    return NULL;
}

static int
elearn_consumer_subscribe(elearn_consumer_t *c, char *errstr, size_t errlen)
{
    char *topics, *t, *save;
    rd_kafka_resp_err_t err;
    rd_kafka_topic_partition_list_t *list;

    topics = strdup(c->conf.topics);
    list = rd_kafka_topic_partition_list_new(4);
    if (topics == NULL) {
        snprintf(errstr, errlen, "consumer: out of memory");
        goto failed;
    }

    for (t = strtok_r(topics, ", ", &save); t != NULL;
         t = strtok_r(NULL, ", ", &save))
    {
        rd_kafka_topic_partition_list_add(list, t, RD_KAFKA_PARTITION_UA);
    }

    if (list->cnt == 0) {
        snprintf(errstr, errlen, "config: \"kafka.topics\" names no topic");
        goto failed;
    }

    err = rd_kafka_subscribe(c->rk, list);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errlen, "consumer: subscribe to %s: %s",
            c->conf.topics, rd_kafka_err2str(err));
        goto failed;
    }

    rd_kafka_topic_partition_list_destroy(list);
    free(topics);
    return 0;

failed:

    rd_kafka_topic_partition_list_destroy(list);
    free(topics);
    return -1;
}

elearn_consumer_t *
elearn_consumer_create(const elearn_consumer_conf_t *conf,
    elearn_metrics_t *metrics, elearn_consumer_handler_fn handler,
    elearn_consumer_batch_fn batch, void *ctx, char *errstr, size_t errlen)
{
    elearn_consumer_t *c;

    if (handler == NULL) {
        snprintf(errstr, errlen, "consumer: a message handler is required");
        return NULL;
    }

    c = calloc(1, sizeof(elearn_consumer_t));
    if (c == NULL) {
        snprintf(errstr, errlen, "consumer: out of memory");
        return NULL;
    }

    c->conf = *conf;
    c->metrics = metrics;
    c->handler = handler;
    c->batch = batch;
    c->ctx = ctx;
    atomic_store(&c->last_poll_ms, elearn_now_ms(CLOCK_MONOTONIC));
    pthread_mutex_init(&c->wd_lock, NULL);
    {
        pthread_condattr_t attr;

        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&c->wd_cond, &attr);
        pthread_condattr_destroy(&attr);
    }

    if (batch != NULL) {
        c->pending =
            calloc(ELEARN_CONSUMER_BATCH_MAX, sizeof(rd_kafka_message_t *));
        c->rejected = calloc(ELEARN_CONSUMER_BATCH_MAX, 1);
        if (c->pending == NULL || c->rejected == NULL) {
            snprintf(errstr, errlen, "consumer: out of memory");
            goto failed;
        }
    }

    if (metrics != NULL
        && elearn_consumer_define_metrics(c, errstr, errlen) != 0) {
        goto failed;
    }

    c->dlq = elearn_consumer_new_producer(c, errstr, errlen);
    if (c->dlq == NULL) {
        goto failed;
    }

    c->rk = elearn_consumer_new_consumer(c, errstr, errlen);
    if (c->rk == NULL) {
        goto failed;
    }

    if (elearn_consumer_subscribe(c, errstr, errlen) != 0) {
        goto failed;
    }

    elearn_log_fields(ELEARN_LOG_INFO, "consumer",
        json_pack("{s:s, s:s, s:s, s:i, s:i}", "brokers", c->conf.brokers,
            "group", c->conf.group_id, "topics", c->conf.topics,
            "retryAttempts", c->conf.retry_attempts, "batchSize",
            batch != NULL ? c->conf.batch_size : 1),
        "subscribed");

    return c;

failed:

    elearn_consumer_destroy(c);
    return NULL;
}

int
elearn_consumer_set_reload(
    elearn_consumer_t *c, const char *config_path, elearn_consumer_reload_fn fn)
{
    free(c->config_path);
    c->config_path = NULL;

    if (config_path != NULL) {
        c->config_path = strdup(config_path);
        if (c->config_path == NULL) {
            return -1;
        }
    }

    c->reload = fn;
    return 0;
}

void
elearn_consumer_destroy(elearn_consumer_t *c)
{
    size_t i;

    if (c == NULL) {
        return;
    }

    for (i = 0; i < c->npending; i++) {
        rd_kafka_message_destroy(c->pending[i]);
    }

    if (c->rk != NULL) {
        /* leave the group now rather than after the session timeout */
        if (!c->closed) {
            rd_kafka_consumer_close(c->rk);
        }
        rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }

    if (c->dlq != NULL) {
        rd_kafka_flush(c->dlq, 1000);
        rd_kafka_destroy(c->dlq);
    }

    pthread_cond_destroy(&c->wd_cond);
    pthread_mutex_destroy(&c->wd_lock);
    free(c->pending);
    free(c->rejected);
    free(c->config_path);
    free(c);
}

/* --- processing ---------------------------------------------------------- */

static void
elearn_consumer_view(
    const rd_kafka_message_t *rkm, int attempt, elearn_message_t *msg)
{
    rd_kafka_timestamp_type_t tstype;

    msg->topic = rd_kafka_topic_name(rkm->rkt);
    msg->partition = rkm->partition;
    msg->offset = rkm->offset;
    msg->key = rkm->key;
    msg->key_len = rkm->key_len;
    msg->value = rkm->payload;
    msg->value_len = rkm->len;
    msg->timestamp_ms = rd_kafka_message_timestamp(rkm, &tstype);
    msg->attempt = attempt;
    msg->rkm = rkm;
    msg->rejected = NULL;
}

void
elearn_message_reject(const elearn_message_t *msg)
{
    if (msg->rejected != NULL) {
        *msg->rejected = 1;
    }
}

int
elearn_message_header(const elearn_message_t *msg, const char *name,
    const void **value, size_t *len)
{
    rd_kafka_headers_t *hdrs;

    if (rd_kafka_message_headers(msg->rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
    {
        return -1;
    }

    if (rd_kafka_header_get_last(hdrs, name, value, len)
        != RD_KAFKA_RESP_ERR_NO_ERROR)
    {
        return -1;
    }

    return 0;
}

/* Stores offset + 1 for each message (the next one to read). */
static void
elearn_consumer_store(elearn_consumer_t *c, rd_kafka_message_t **rkms, size_t n)
{
    int i;
    size_t k;
    rd_kafka_resp_err_t err;
    rd_kafka_topic_partition_t *tp;
    rd_kafka_topic_partition_list_t *list;

    list = rd_kafka_topic_partition_list_new((int) n);

    for (k = 0; k < n; k++) {
        tp = rd_kafka_topic_partition_list_find(
            list, rd_kafka_topic_name(rkms[k]->rkt), rkms[k]->partition);
        if (tp == NULL) {
            tp = rd_kafka_topic_partition_list_add(
                list, rd_kafka_topic_name(rkms[k]->rkt), rkms[k]->partition);
        }
        if (rkms[k]->offset + 1 > tp->offset) {
            tp->offset = rkms[k]->offset + 1;
        }
    }

    err = rd_kafka_offsets_store(c->rk, list);

    for (i = 0; i < list->cnt; i++) {
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR || list->elems[i].err != 0) {
            /* revoked meanwhile: the new owner will redeliver the message */
            elearn_log(ELEARN_LOG_WARN, "consumer",
                "cannot store offset %" PRId64 " of %s [%" PRId32 "]: %s",
                list->elems[i].offset, list->elems[i].topic,
                list->elems[i].partition,
                rd_kafka_err2str(err != RD_KAFKA_RESP_ERR_NO_ERROR
                        ? err
                        : list->elems[i].err));
        }
    }

    rd_kafka_topic_partition_list_destroy(list);
}

/*
 * Produces rkm to <topic>.dlq and waits for the acknowledgement.  Returns 0
 * once the broker has it, -1 otherwise (errstr set).
 */
static int
elearn_consumer_dlq(elearn_consumer_t *c, const rd_kafka_message_t *rkm,
    const char *why, int attempts, char *errstr, size_t errlen)
{
    long long deadline;
    rd_kafka_resp_err_t err;
    rd_kafka_headers_t *hdrs, *orig;
    const char *topic;
    char dlq_topic[512], part[16], off[32], att[16], ts[32];

    topic = rd_kafka_topic_name(rkm->rkt);
    snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
    snprintf(part, sizeof(part), "%" PRId32, rkm->partition);
    snprintf(off, sizeof(off), "%" PRId64, rkm->offset);
    snprintf(att, sizeof(att), "%d", attempts);
    elearn_log_format_ts(elearn_now_ms(CLOCK_REALTIME), ts, sizeof(ts));

    if (rd_kafka_message_headers(rkm, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        hdrs = rd_kafka_headers_copy(orig);
    } else {
        hdrs = rd_kafka_headers_new(8);
    }

    rd_kafka_header_add(hdrs, "dlq.original.topic", -1, topic, -1);
    rd_kafka_header_add(hdrs, "dlq.original.partition", -1, part, -1);
    rd_kafka_header_add(hdrs, "dlq.original.offset", -1, off, -1);
    rd_kafka_header_add(hdrs, "dlq.error", -1, why, -1);
    rd_kafka_header_add(hdrs, "dlq.attempts", -1, att, -1);
    rd_kafka_header_add(hdrs, "dlq.consumer.group", -1, c->conf.group_id, -1);
    rd_kafka_header_add(hdrs, "dlq.failed.at", -1, ts, -1);

    c->dlq_seq++;
    c->dlq_err = RD_KAFKA_RESP_ERR_NO_ERROR;

    err = rd_kafka_producev(c->dlq, RD_KAFKA_V_TOPIC(dlq_topic),
        RD_KAFKA_V_KEY(rkm->key, rkm->key_len),
        RD_KAFKA_V_VALUE(rkm->payload, rkm->len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE((void *) (uintptr_t) c->dlq_seq), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* not enqueued: the headers are still ours */
        rd_kafka_headers_destroy(hdrs);
        snprintf(errstr, errlen, "DLQ produce to %s: %s", dlq_topic,
            rd_kafka_err2str(err));
        goto failed;
    }

    /*
     * message.timeout.ms equals our wait, so librdkafka itself fails the
     * message by then; the extra second lets that report arrive.
     */
    deadline = elearn_now_ms(CLOCK_MONOTONIC) + c->conf.dlq_timeout_ms + 1000;
    while (c->dlq_done_seq != c->dlq_seq
        && elearn_now_ms(CLOCK_MONOTONIC) < deadline)
    {
        rd_kafka_poll(c->dlq, 100);
    }

    if (c->dlq_done_seq != c->dlq_seq) {
        snprintf(errstr, errlen,
            "DLQ produce to %s: no acknowledgement in "
            "%lld ms",
            dlq_topic, c->conf.dlq_timeout_ms);
        goto failed;
    }

    if (c->dlq_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errlen, "DLQ produce to %s: %s", dlq_topic,
            rd_kafka_err2str(c->dlq_err));
        goto failed;
    }

    elearn_consumer_count(c, "elearn_consumer_dlq_total", topic, 1);
    elearn_log_fields(ELEARN_LOG_WARN, "consumer",
        json_pack("{s:s, s:i, s:I, s:i, s:s}", "topic", topic, "partition",
            (int) rkm->partition, "offset", (json_int_t) rkm->offset,
            "attempts", attempts, "error", why),
        "message sent to %s", dlq_topic);
    return 0;

failed:

    elearn_consumer_count(c, "elearn_consumer_dlq_errors_total", NULL, 1);
    return -1;
}

static void
elearn_consumer_set_fatal(elearn_consumer_t *c, const char *err)
{
    snprintf(c->fatal_err, sizeof(c->fatal_err), "%s", err);
    c->fatal = 1;
    atomic_store(&c->failed, 1);
    elearn_log(ELEARN_LOG_ERROR, "consumer", "%s: stopping", err);
}

/*
 * Handles one message through the per-message handler, with retries and the
 * DLQ.  Returns 0 when its offset is stored, -1 when the loop must stop
 * (stop requested, STOP, or the DLQ failed) with the offset not stored.
 */
static int
elearn_consumer_process(elearn_consumer_t *c, rd_kafka_message_t *rkm)
{
    int attempt;
    double secs;
    long long t0, backoff;
    elearn_message_t msg;
    elearn_consumer_result_t r;
    char why[512], err[768];

    for (attempt = 1;; attempt++) {
        elearn_consumer_view(rkm, attempt, &msg);
        why[0] = '\0';

        t0 = elearn_now_ms(CLOCK_MONOTONIC);
        r = c->handler(c->ctx, &msg, why, sizeof(why));
        secs = (double) (elearn_now_ms(CLOCK_MONOTONIC) - t0) / 1000.0;
        if (c->metrics != NULL) {
            elearn_metrics_observe(
                c->metrics, "elearn_consumer_batch_seconds", NULL, secs);
        }

        if (r == ELEARN_CONSUMER_OK) {
            elearn_consumer_store(c, &rkm, 1);
            return 0;
        }

        if (r == ELEARN_CONSUMER_STOP) {
            return -1;
        }

        if (why[0] == '\0') {
            snprintf(why, sizeof(why), "handler returned %s",
                r == ELEARN_CONSUMER_FAIL ? "FAIL" : "RETRY");
        }

        elearn_consumer_count(
            c, "elearn_consumer_failures_total", msg.topic, 1);

        if (r == ELEARN_CONSUMER_FAIL || attempt >= c->conf.retry_attempts) {
            break;
        }

        backoff = elearn_consumer_backoff_ms(
            c->conf.retry_backoff_ms, c->conf.retry_backoff_max_ms, attempt);

        elearn_log_fields(ELEARN_LOG_WARN, "consumer",
            json_pack("{s:s, s:i, s:I, s:i, s:s}", "topic", msg.topic,
                "partition", (int) msg.partition, "offset",
                (json_int_t) msg.offset, "attempt", attempt, "error", why),
            "transient failure, retrying in %lld ms", backoff);

        if (elearn_signal_sleep_ms(backoff) != 0) {
            /* stopping: leave it unstored, it comes back after restart */
            return -1;
        }

        elearn_consumer_count(c, "elearn_consumer_retries_total", NULL, 1);
    }

    if (elearn_consumer_dlq(c, rkm, why, attempt, err, sizeof(err)) != 0) {
        elearn_consumer_set_fatal(c, err);
        return -1;
    }

    elearn_consumer_store(c, &rkm, 1);
    return 0;
}

static void
elearn_consumer_drop_pending(elearn_consumer_t *c, size_t from)
{
    size_t i;

    for (i = from; i < c->npending; i++) {
        rd_kafka_message_destroy(c->pending[i]);
    }

    c->npending = 0;
}

/*
 * After the batch handler's success: the messages it rejected go through
 * the per-message handler (retries, DLQ), then every offset of the batch is
 * stored.  Returns 0, or -1 when the loop must stop (nothing more stored:
 * the batch comes back, and its effects are idempotent).  The pending list
 * is empty afterwards either way.
 */
static int
elearn_consumer_finish_batch(elearn_consumer_t *c)
{
    size_t i, n;

    n = c->npending;

    for (i = 0; i < n; i++) {
        if (!c->rejected[i]) {
            continue;
        }

        /* the handler is never NULL (elearn_consumer_create) */
        if (elearn_consumer_process(c, c->pending[i]) != 0) {
            elearn_consumer_drop_pending(c, 0);
            return -1;
        }
    }

    elearn_consumer_store(c, c->pending, n);
    elearn_consumer_drop_pending(c, 0);
    return 0;
}

/*
 * Handles the pending batch.  Returns 0 when every offset is stored, -1
 * when the loop must stop; the pending list is empty afterwards either way.
 */
static int
elearn_consumer_flush_batch(elearn_consumer_t *c)
{
    int attempt;
    size_t i, n;
    double secs;
    long long t0, backoff;
    elearn_message_t *msgs;
    elearn_consumer_result_t r;
    char why[512], err[768];

    n = c->npending;
    if (n == 0) {
        return 0;
    }

    msgs = calloc(n, sizeof(elearn_message_t));
    if (msgs == NULL) {
        elearn_consumer_set_fatal(c, "batch: out of memory");
        goto failed;
    }

    for (attempt = 1;; attempt++) {
        for (i = 0; i < n; i++) {
            elearn_consumer_view(c->pending[i], attempt, &msgs[i]);
            c->rejected[i] = 0;
            msgs[i].rejected = &c->rejected[i];
        }
        why[0] = '\0';

        t0 = elearn_now_ms(CLOCK_MONOTONIC);
        r = c->batch(c->ctx, msgs, n, why, sizeof(why));
        secs = (double) (elearn_now_ms(CLOCK_MONOTONIC) - t0) / 1000.0;
        if (c->metrics != NULL) {
            elearn_metrics_observe(
                c->metrics, "elearn_consumer_batch_seconds", NULL, secs);
        }

        if (r == ELEARN_CONSUMER_OK) {
            free(msgs);
            return elearn_consumer_finish_batch(c);
        }

        if (r == ELEARN_CONSUMER_STOP) {
            goto failed;
        }

        if (why[0] == '\0') {
            snprintf(why, sizeof(why), "batch handler returned %s",
                r == ELEARN_CONSUMER_FAIL ? "FAIL" : "RETRY");
        }

        if (r == ELEARN_CONSUMER_FAIL || attempt >= c->conf.retry_attempts) {
            break;
        }

        backoff = elearn_consumer_backoff_ms(
            c->conf.retry_backoff_ms, c->conf.retry_backoff_max_ms, attempt);
        elearn_log(ELEARN_LOG_WARN, "consumer",
            "batch of %zu: transient failure (%s), retrying in %lld ms", n, why,
            backoff);

        if (elearn_signal_sleep_ms(backoff) != 0) {
            goto failed;
        }

        elearn_consumer_count(c, "elearn_consumer_retries_total", NULL, 1);
    }

    free(msgs);
    msgs = NULL;

    elearn_log(ELEARN_LOG_WARN, "consumer",
        "batch of %zu failed (%s); handling its messages one by one", n, why);

    /* find the poison message(s): each message on its own, in order */
    for (i = 0; i < n; i++) {
        if (elearn_signal_stop_requested()) {
            /* finish the current message only: the rest come back later */
            elearn_consumer_drop_pending(c, i);
            return -1;
        }

        if (c->handler != NULL) {
            if (elearn_consumer_process(c, c->pending[i]) != 0) {
                elearn_consumer_drop_pending(c, i);
                return -1;
            }
        } else {
            if (elearn_consumer_dlq(
                    c, c->pending[i], why, attempt, err, sizeof(err))
                != 0) {
                elearn_consumer_set_fatal(c, err);
                elearn_consumer_drop_pending(c, i);
                return -1;
            }
            elearn_consumer_store(c, &c->pending[i], 1);
        }

        rd_kafka_message_destroy(c->pending[i]);
        c->pending[i] = NULL;
    }

    c->npending = 0;
    return 0;

failed:

    free(msgs);
    elearn_consumer_drop_pending(c, 0);
    return -1;
}

/* --- reload, health, watchdog -------------------------------------------- */

static void
elearn_consumer_reload_config(elearn_consumer_t *c)
{
    const char *level_name;
    elearn_config_t *cfg;
    elearn_log_level_t level;
    elearn_consumer_conf_t nc;
    char err[512];

    if (c->config_path == NULL) {
        elearn_log(ELEARN_LOG_INFO, "consumer",
            "SIGHUP: no configuration file to reload");
        return;
    }

    cfg = elearn_config_create(c->config_path, err, sizeof(err));
    if (cfg == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "consumer",
            "reload failed, keeping the running configuration: %s", err);
        return;
    }

    if (elearn_consumer_conf_load(&nc, cfg, err, sizeof(err)) != 0
        || elearn_config_get_str(
               cfg, "log.level", "info", &level_name, err, sizeof(err))
            != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "consumer",
            "reload failed, keeping the running configuration: %s", err);
        goto done;
    }

    if (elearn_log_parse_level(level_name, &level) != 0) {
        elearn_log(ELEARN_LOG_ERROR, "consumer",
            "reload failed, keeping the running configuration: config: "
            "\"log.level\" must be debug, info, warn or error");
        goto done;
    }

    elearn_log_set_level(level);

    /* safe live: they are read at each use */
    c->conf.retry_attempts = nc.retry_attempts;
    c->conf.retry_backoff_ms = nc.retry_backoff_ms;
    c->conf.retry_backoff_max_ms = nc.retry_backoff_max_ms;
    c->conf.batch_size = nc.batch_size;
    c->conf.batch_timeout_ms = nc.batch_timeout_ms;
    c->conf.shutdown_timeout_ms = nc.shutdown_timeout_ms;

    /* baked into the librdkafka handles */
    if (strcmp(nc.brokers, c->conf.brokers) != 0
        || strcmp(nc.group_id, c->conf.group_id) != 0
        || strcmp(nc.topics, c->conf.topics) != 0
        || strcmp(nc.client_id, c->conf.client_id) != 0
        || strcmp(nc.offset_reset, c->conf.offset_reset) != 0
        || nc.session_timeout_ms != c->conf.session_timeout_ms
        || nc.stats_interval_ms != c->conf.stats_interval_ms
        || nc.commit_interval_ms != c->conf.commit_interval_ms
        || nc.fetch_wait_ms != c->conf.fetch_wait_ms
        || nc.fetch_min_bytes != c->conf.fetch_min_bytes
        || nc.dlq_timeout_ms != c->conf.dlq_timeout_ms)
    {
        elearn_log(ELEARN_LOG_WARN, "consumer",
            "reload: kafka.* and consumer.dlq.timeout changes take effect "
            "after a restart");
    }

    if (c->reload != NULL) {
        c->reload(c->ctx, cfg);
    }

    elearn_log_fields(ELEARN_LOG_INFO, "consumer",
        json_pack("{s:s, s:i, s:i, s:I}", "logLevel",
            elearn_log_level_name(level), "retryAttempts",
            c->conf.retry_attempts, "batchSize", c->conf.batch_size,
            "batchTimeoutMs", (json_int_t) c->conf.batch_timeout_ms),
        "configuration reloaded");

done:

    elearn_config_destroy(cfg);
}

int
elearn_consumer_health(void *ctx, char *buf, size_t len)
{
    long long idle;
    elearn_consumer_t *c;

    c = ctx;

    if (atomic_load(&c->failed)) {
        snprintf(buf, len, "fatal error, stopping");
        return 0;
    }

    idle = elearn_now_ms(CLOCK_MONOTONIC) - atomic_load(&c->last_poll_ms);
    if (idle > ELEARN_CONSUMER_STALL_MS) {
        snprintf(buf, len, "no poll for %lld ms", idle);
        return 0;
    }

    snprintf(buf, len, "polling, %d partition(s) assigned",
        atomic_load(&c->assigned));
    return 1;
}

/*
 * Ends the process if a stop was requested more than shutdown_timeout_ms
 * ago and the drain is still running.  It starts counting when it first
 * sees the stop flag, even while a handler is still busy.
 */
static void *
elearn_consumer_watchdog(void *arg)
{
    long long stop_at, now;
    struct timespec ts;
    elearn_consumer_t *c;

    c = arg;
    stop_at = 0;
    elearn_signal_block_in_thread();

    pthread_mutex_lock(&c->wd_lock);

    while (!c->wd_done) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->wd_cond, &c->wd_lock, &ts);

        if (c->wd_done) {
            break;
        }

        now = elearn_now_ms(CLOCK_MONOTONIC);
        if (stop_at == 0
            && (elearn_signal_stop_requested() || atomic_load(&c->failed))) {
            stop_at = now;
        }

        if (stop_at != 0 && now - stop_at > c->conf.shutdown_timeout_ms) {
            elearn_log(ELEARN_LOG_ERROR, "consumer",
                "shutdown took longer than %lld ms: exiting now; "
                "uncommitted messages will be redelivered",
                c->conf.shutdown_timeout_ms);
            _exit(1);
        }
    }

    pthread_mutex_unlock(&c->wd_lock);
    return NULL;
}

/* --- the loop ------------------------------------------------------------ */

int
elearn_consumer_run(elearn_consumer_t *c, char *errstr, size_t errlen)
{
    int rc;
    long long now, wait;
    rd_kafka_resp_err_t err;
    rd_kafka_message_t *rkm;

    rc = 0;

    if (pthread_create(&c->watchdog, NULL, elearn_consumer_watchdog, c) != 0) {
        snprintf(errstr, errlen, "consumer: cannot start the watchdog");
        return -1;
    }
    c->watchdog_started = 1;

    while (!elearn_signal_stop_requested() && !c->fatal) {
        if (elearn_signal_take_reload()) {
            elearn_consumer_reload_config(c);
        }

        wait = ELEARN_CONSUMER_POLL_MS;
        if (c->npending > 0) {
            now = elearn_now_ms(CLOCK_MONOTONIC);
            wait = c->batch_started_ms + c->conf.batch_timeout_ms - now;
            if (wait > ELEARN_CONSUMER_POLL_MS) {
                wait = ELEARN_CONSUMER_POLL_MS;
            }
            if (wait < 0) {
                wait = 0;
            }
        }

        rkm = rd_kafka_consumer_poll(c->rk, (int) wait);
        atomic_store(&c->last_poll_ms, elearn_now_ms(CLOCK_MONOTONIC));

        /* serve the DLQ producer's error callbacks while idle */
        rd_kafka_poll(c->dlq, 0);

        if (rkm != NULL && rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            elearn_log(ELEARN_LOG_WARN, "consumer", "consume error: %s%s%s",
                rkm->rkt != NULL ? rd_kafka_topic_name(rkm->rkt) : "",
                rkm->rkt != NULL ? ": " : "", rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            rkm = NULL;
        }

        if (rkm != NULL) {
            elearn_consumer_count(c, "elearn_consumer_messages_total",
                rd_kafka_topic_name(rkm->rkt), 1);

            if (c->batch == NULL) {
                if (elearn_consumer_process(c, rkm) != 0) {
                    rd_kafka_message_destroy(rkm);
                    break;
                }
                rd_kafka_message_destroy(rkm);
                continue;
            }

            if (c->npending == 0) {
                c->batch_started_ms = elearn_now_ms(CLOCK_MONOTONIC);
            }
            c->pending[c->npending++] = rkm;
        }

        if (c->npending > 0
            && (c->npending >= (size_t) c->conf.batch_size
                || elearn_now_ms(CLOCK_MONOTONIC)
                    >= c->batch_started_ms + c->conf.batch_timeout_ms))
        {
            if (elearn_consumer_flush_batch(c) != 0) {
                break;
            }
        }
    }

    elearn_log(ELEARN_LOG_INFO, "consumer", "stopping: %s",
        c->fatal ? c->fatal_err : "signal received");

    /* finish the batch in hand unless we are stopping for an error */
    if (c->npending > 0 && !c->fatal) {
        elearn_consumer_flush_batch(c);
    }
    elearn_consumer_drop_pending(c, 0);

    elearn_consumer_commit_sync(c, "shutdown");

    err = rd_kafka_consumer_close(c->rk);
    c->closed = 1;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        elearn_log(
            ELEARN_LOG_WARN, "consumer", "close: %s", rd_kafka_err2str(err));
    }

    if (c->fatal) {
        snprintf(errstr, errlen, "%s", c->fatal_err);
        rc = -1;
    }

    pthread_mutex_lock(&c->wd_lock);
    c->wd_done = 1;
    pthread_cond_signal(&c->wd_cond);
    pthread_mutex_unlock(&c->wd_lock);
    pthread_join(c->watchdog, NULL);
    c->watchdog_started = 0;

    elearn_log(ELEARN_LOG_INFO, "consumer", "stopped");
    return rc;
}
