
/*
 * elearn kafka: one idempotent librdkafka producer per worker process,
 * driven by nginx's event loop.
 *
 * librdkafka runs its own threads, but everything it hands back to us
 * (delivery reports, statistics, errors and its log lines) is put on the
 * producer's main queue.  That queue writes a byte to a non-blocking pipe
 * whenever it goes from empty to non-empty; nginx watches the read end
 * like any other connection, and the read handler serves the queue with
 * rd_kafka_poll() until it is empty.  So every callback in this file runs
 * on the worker's event loop thread, where ngx_log_error() and our
 * counters are safe, and nothing polls per request.
 *
 * This file must never block the worker: produce only enqueues (a full
 * queue is answered NGX_BUSY, not waited out), and the only wait is the
 * flush at worker exit, bounded by elearn_kafka_flush_timeout.  Message
 * payloads are never logged.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <librdkafka/rdkafka.h>
#include <jansson.h>

#include "ngx_http_elearn_event.h"
#include "ngx_http_elearn_kafka.h"


/* statistics older than this mean the stats op stopped arriving */
#define NGX_HTTP_ELEARN_KAFKA_STATS_FRESH    3000

/* queue ops served per read event before yielding to other events */
#define NGX_HTTP_ELEARN_KAFKA_POLL_BATCH     64


struct ngx_http_elearn_kafka_s {
    rd_kafka_t                      *rk;

    /* the pipe librdkafka signals: nginx reads conn->fd, rd writes wfd */
    ngx_connection_t                *conn;
    ngx_fd_t                         wfd;

    ngx_msec_t                       flush_timeout;

    ngx_http_elearn_kafka_stats_t    stats;
    ngx_msec_t                       stats_time;
    unsigned                         stats_seen:1;
    unsigned                         fatal:1;

    /* delivery errors are logged at most once a second */
    time_t                           error_logged;
    ngx_uint_t                       errors_suppressed;
};


static ngx_int_t ngx_http_elearn_kafka_conf_set(rd_kafka_conf_t *conf,
    const char *name, const char *value);
static void ngx_http_elearn_kafka_close_pipe(ngx_http_elearn_kafka_t *kafka);
static void ngx_http_elearn_kafka_read_handler(ngx_event_t *rev);
static void ngx_http_elearn_kafka_dr_cb(rd_kafka_t *rk,
    const rd_kafka_message_t *msg, void *opaque);
static int ngx_http_elearn_kafka_stats_cb(rd_kafka_t *rk, char *json,
    size_t json_len, void *opaque);
static void ngx_http_elearn_kafka_error_cb(rd_kafka_t *rk, int err,
    const char *reason, void *opaque);
static void ngx_http_elearn_kafka_log_cb(const rd_kafka_t *rk, int level,
    const char *fac, const char *buf);


ngx_http_elearn_kafka_t *
ngx_http_elearn_kafka_create(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf, ngx_uint_t durable)
{
    int                       fds[2];
    char                      errstr[512];
    u_char                   *p, brokers[1024], num[NGX_INT64_LEN + 1];
    rd_kafka_t               *rk;
    rd_kafka_conf_t          *conf;
    rd_kafka_queue_t         *mainq;
    ngx_connection_t         *c;
    ngx_http_elearn_kafka_t  *kafka;

    if (emcf->kafka_brokers.len == 0) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "elearn kafka: no brokers configured");
        return NULL;
    }

    if (emcf->kafka_brokers.len >= sizeof(brokers)) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "elearn kafka: broker list too long");
        return NULL;
    }

    p = ngx_cpymem(brokers, emcf->kafka_brokers.data,
                   emcf->kafka_brokers.len);
    *p = '\0';

    kafka = ngx_pcalloc(cycle->pool, sizeof(ngx_http_elearn_kafka_t));
    if (kafka == NULL) {
        return NULL;
    }

    kafka->wfd = NGX_INVALID_FILE;
    kafka->flush_timeout = emcf->kafka_flush_timeout;

    /* an unmerged value would be -1 for librdkafka: wait forever at exit */
    if (kafka->flush_timeout == NGX_CONF_UNSET_MSEC
        || kafka->flush_timeout > NGX_MAX_INT32_VALUE)
    {
        kafka->flush_timeout = 5000;
    }

    conf = rd_kafka_conf_new();

    if (ngx_http_elearn_kafka_conf_set(conf, "bootstrap.servers",
                                       (char *) brokers)
        != NGX_OK)
    {
        goto failed_conf;
    }

    if (ngx_http_elearn_kafka_conf_set(conf, "enable.idempotence", "true")
        != NGX_OK)
    {
        goto failed_conf;
    }

    ngx_sprintf(num, "%M%Z", durable ? emcf->kafka_durable_linger
                                     : emcf->kafka_linger);
    if (ngx_http_elearn_kafka_conf_set(conf, "linger.ms", (char *) num)
        != NGX_OK)
    {
        goto failed_conf;
    }

    ngx_sprintf(num, "%ui%Z", emcf->kafka_queue_max);
    if (ngx_http_elearn_kafka_conf_set(conf, "queue.buffering.max.messages",
                                       (char *) num)
        != NGX_OK)
    {
        goto failed_conf;
    }

    /*
     * statistics feed /readyz; a killed broker must come back within a
     * few seconds, hence the short reconnect backoff cap
     */
    if (ngx_http_elearn_kafka_conf_set(conf, "statistics.interval.ms", "1000")
        != NGX_OK
        || ngx_http_elearn_kafka_conf_set(conf, "reconnect.backoff.max.ms",
                                          "1000")
           != NGX_OK)
    {
        goto failed_conf;
    }

    /*
     * log lines go to a queue served by rd_kafka_poll() too: nginx's
     * logging must never be called from librdkafka's threads
     */
    if (ngx_http_elearn_kafka_conf_set(conf, "log.queue", "true") != NGX_OK
        || ngx_http_elearn_kafka_conf_set(conf, "log.connection.close",
                                          "false")
           != NGX_OK)
    {
        goto failed_conf;
    }

    ngx_sprintf(num, "%P%Z", ngx_pid);
    p = durable ? ngx_cpymem(brokers, "elearn-nginx-durable-",
                             sizeof("elearn-nginx-durable-") - 1)
                : ngx_cpymem(brokers, "elearn-nginx-",
                             sizeof("elearn-nginx-") - 1);
    p = ngx_cpystrn(p, num, brokers + sizeof(brokers) - p);
    if (ngx_http_elearn_kafka_conf_set(conf, "client.id", (char *) brokers)
        != NGX_OK)
    {
        goto failed_conf;
    }

    rd_kafka_conf_set_opaque(conf, kafka);
    rd_kafka_conf_set_dr_msg_cb(conf, ngx_http_elearn_kafka_dr_cb);
    rd_kafka_conf_set_stats_cb(conf, ngx_http_elearn_kafka_stats_cb);
    rd_kafka_conf_set_error_cb(conf, ngx_http_elearn_kafka_error_cb);
    rd_kafka_conf_set_log_cb(conf, ngx_http_elearn_kafka_log_cb);

    /* on success rd_kafka_new() owns conf */
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "elearn kafka: rd_kafka_new() failed: %s", errstr);
        goto failed_conf;
    }

    kafka->rk = rk;

    /* NULL: forward the log queue to the main queue */
    if (rd_kafka_set_log_queue(rk, NULL) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "elearn kafka: rd_kafka_set_log_queue() failed");
        goto failed;
    }

    if (pipe2(fds, O_NONBLOCK|O_CLOEXEC) == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "elearn kafka: pipe2() failed");
        goto failed;
    }

    kafka->wfd = fds[1];

    /* the pipe is ours, not librdkafka's: closed with the connection */

    c = ngx_http_elearn_event_attach(fds[0], cycle->log,
                                     ngx_http_elearn_kafka_read_handler,
                                     NULL, kafka);
    if (c == NULL) {
        ngx_close_file(fds[0]);
        goto failed;
    }

    kafka->conn = c;

    mainq = rd_kafka_queue_get_main(rk);
    rd_kafka_queue_io_event_enable(mainq, fds[1], "1", 1);
    rd_kafka_queue_destroy(mainq);

    /*
     * ops queued before the fd was attached raised no event: serve them
     * now, on the next pass of the event loop
     */
    ngx_post_event(c->read, &ngx_posted_next_events);

    ngx_log_error(NGX_LOG_INFO, cycle->log, 0,
                  "elearn kafka: producer %s started, brokers \"%V\"",
                  rd_kafka_name(rk), &emcf->kafka_brokers);

    return kafka;

failed_conf:

    if (kafka->rk == NULL) {
        rd_kafka_conf_destroy(conf);
    }

failed:

    if (kafka->rk != NULL) {
        rd_kafka_destroy(kafka->rk);
        kafka->rk = NULL;
    }

    ngx_http_elearn_kafka_close_pipe(kafka);

    return NULL;
}


void
ngx_http_elearn_kafka_destroy(ngx_http_elearn_kafka_t *kafka)
{
    int                rc;
    rd_kafka_queue_t  *mainq;

    if (kafka == NULL || kafka->rk == NULL) {
        return;
    }

    /* serves delivery reports itself, on this thread */
    rc = rd_kafka_flush(kafka->rk, (int) kafka->flush_timeout);

    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn kafka: flush timed out after %M ms, "
                      "%d messages lost",
                      kafka->flush_timeout, rd_kafka_outq_len(kafka->rk));

        /* so that rd_kafka_destroy() does not wait for them either */
        rd_kafka_purge(kafka->rk,
                       RD_KAFKA_PURGE_F_QUEUE|RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(kafka->rk, 0);
    }

    mainq = rd_kafka_queue_get_main(kafka->rk);
    rd_kafka_queue_io_event_enable(mainq, -1, NULL, 0);
    rd_kafka_queue_destroy(mainq);

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "elearn kafka: producer stopped, delivered %ui, "
                  "delivery errors %ui",
                  kafka->stats.delivered, kafka->stats.delivery_errors);

    rd_kafka_destroy(kafka->rk);
    kafka->rk = NULL;

    ngx_http_elearn_kafka_close_pipe(kafka);
}


ngx_int_t
ngx_http_elearn_kafka_produce(ngx_http_elearn_kafka_t *kafka,
    const char *topic, const u_char *key, size_t key_len,
    const u_char *value, size_t value_len)
{
    return ngx_http_elearn_kafka_produce_report(kafka, topic, key, key_len,
                                                value, value_len, NULL);
}


ngx_int_t
ngx_http_elearn_kafka_produce_report(ngx_http_elearn_kafka_t *kafka,
    const char *topic, const u_char *key, size_t key_len,
    const u_char *value, size_t value_len,
    ngx_http_elearn_kafka_report_t *report)
{
    rd_kafka_resp_err_t  err;

    if (kafka == NULL || kafka->rk == NULL) {
        return NGX_ERROR;
    }

    err = rd_kafka_producev(kafka->rk,
                            RD_KAFKA_V_TOPIC(topic),
                            RD_KAFKA_V_KEY((void *) key, key_len),
                            RD_KAFKA_V_VALUE((void *) value, value_len),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_OPAQUE(report),
                            RD_KAFKA_V_END);

    switch (err) {

    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return NGX_OK;

    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        kafka->stats.queue_full++;
        return NGX_BUSY;

    default:
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn kafka: produce to \"%s\" failed: %s",
                      topic, rd_kafka_err2str(err));
        return NGX_ERROR;
    }
}


ngx_int_t
ngx_http_elearn_kafka_ready(ngx_http_elearn_kafka_t *kafka)
{
    if (kafka == NULL || kafka->rk == NULL || kafka->fatal
        || !kafka->stats_seen)
    {
        return NGX_ERROR;
    }

    if (ngx_current_msec - kafka->stats_time
        >= NGX_HTTP_ELEARN_KAFKA_STATS_FRESH)
    {
        return NGX_ERROR;
    }

    return kafka->stats.brokers_up > 0 ? NGX_OK : NGX_ERROR;
}


void
ngx_http_elearn_kafka_get_stats(ngx_http_elearn_kafka_t *kafka,
    ngx_http_elearn_kafka_stats_t *stats)
{
    if (kafka == NULL) {
        ngx_memzero(stats, sizeof(ngx_http_elearn_kafka_stats_t));
        return;
    }

    *stats = kafka->stats;

    /* stale statistics must not keep reporting brokers up */
    if (!kafka->stats_seen
        || ngx_current_msec - kafka->stats_time
           >= NGX_HTTP_ELEARN_KAFKA_STATS_FRESH)
    {
        stats->brokers_up = 0;
    }
}


static ngx_int_t
ngx_http_elearn_kafka_conf_set(rd_kafka_conf_t *conf, const char *name,
    const char *value)
{
    char  errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr))
        != RD_KAFKA_CONF_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, ngx_cycle->log, 0,
                      "elearn kafka: %s=\"%s\": %s", name, value, errstr);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Closes both ends of the event pipe, whichever are open; librdkafka must
 * no longer write to it (destroyed, or never told of it).
 */

static void
ngx_http_elearn_kafka_close_pipe(ngx_http_elearn_kafka_t *kafka)
{
    if (kafka->conn != NULL) {
        ngx_close_connection(kafka->conn);
        kafka->conn = NULL;
    }

    if (kafka->wfd != NGX_INVALID_FILE) {
        ngx_close_file(kafka->wfd);
        kafka->wfd = NGX_INVALID_FILE;
    }
}


static void
ngx_http_elearn_kafka_read_handler(ngx_event_t *rev)
{
    u_char                    buf[64];
    ssize_t                   n;
    ngx_uint_t                i;
    ngx_connection_t         *c;
    ngx_http_elearn_kafka_t  *kafka;

    c = rev->data;
    kafka = c->data;

    if (kafka->rk == NULL) {
        return;
    }

    /*
     * Drain the pipe before serving the queue: an op enqueued after the
     * queue was found empty writes a new byte, and so a new edge.
     */
    for ( ;; ) {
        n = read(c->fd, buf, sizeof(buf));

        if (n > 0) {
            continue;
        }

        if (n == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }

        if (n == -1 && ngx_errno != NGX_EAGAIN) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                          "elearn kafka: read() from event pipe failed");
        }

        break;
    }

    rev->ready = 0;

    for (i = 0; i < NGX_HTTP_ELEARN_KAFKA_POLL_BATCH; i++) {
        if (rd_kafka_poll(kafka->rk, 0) == 0) {
            break;
        }
    }

    if (i == NGX_HTTP_ELEARN_KAFKA_POLL_BATCH) {
        /* more to do: continue after the other events of this pass */
        ngx_post_event(rev, &ngx_posted_next_events);
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn kafka: cannot watch the event pipe");
    }
}


static void
ngx_http_elearn_kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg,
    void *opaque)
{
    ngx_http_elearn_kafka_t  *kafka = opaque;

    ngx_http_elearn_kafka_report_t  *report;

    report = msg->_private;

    if (report != NULL) {
        report->handler(report, msg->err == RD_KAFKA_RESP_ERR_NO_ERROR
                                ? NGX_OK : NGX_ERROR);
    }

    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        kafka->stats.delivered++;
        return;
    }

    kafka->stats.delivery_errors++;

    /* a broker outage fails messages by the thousand: one line a second */
    if (kafka->error_logged == ngx_time()) {
        kafka->errors_suppressed++;
        return;
    }

    kafka->error_logged = ngx_time();

    if (kafka->errors_suppressed == 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn kafka: delivery to \"%s\" [%d] failed: %s",
                      rd_kafka_topic_name(msg->rkt), (int) msg->partition,
                      rd_kafka_err2str(msg->err));
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "elearn kafka: delivery to \"%s\" [%d] failed: %s "
                  "(%ui more since the last line)",
                  rd_kafka_topic_name(msg->rkt), (int) msg->partition,
                  rd_kafka_err2str(msg->err), kafka->errors_suppressed);

    kafka->errors_suppressed = 0;
}


static int
ngx_http_elearn_kafka_stats_cb(rd_kafka_t *rk, char *json, size_t json_len,
    void *opaque)
{
    ngx_http_elearn_kafka_t  *kafka = opaque;

    json_t        *root, *brokers, *broker, *v;
    ngx_uint_t     up;
    const char    *name, *state;
    json_error_t   error;

    root = json_loadb(json, json_len, 0, &error);
    if (root == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "elearn kafka: bad statistics JSON: %s", error.text);
        return 0;
    }

    v = json_object_get(root, "msg_cnt");
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        kafka->stats.queued = (ngx_uint_t) json_integer_value(v);
    }

    /*
     * Count real brokers only: the bootstrap entries and the internal
     * broker have nodeid -1.
     */
    up = 0;
    brokers = json_object_get(root, "brokers");

    json_object_foreach(brokers, name, broker) {
        v = json_object_get(broker, "nodeid");
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            continue;
        }

        state = json_string_value(json_object_get(broker, "state"));
        if (state != NULL && ngx_strcmp(state, "UP") == 0) {
            up++;
        }
    }

    kafka->stats.brokers_up = up;
    kafka->stats_time = ngx_current_msec;
    kafka->stats_seen = 1;

    json_decref(root);

    /* 0: librdkafka frees json */
    return 0;
}


static void
ngx_http_elearn_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
    void *opaque)
{
    char                      errstr[512];
    rd_kafka_resp_err_t       ferr;
    ngx_http_elearn_kafka_t  *kafka = opaque;

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        /* the idempotent producer cannot go on: /readyz reports it */
        kafka->fatal = 1;

        ferr = rd_kafka_fatal_error(rk, errstr, sizeof(errstr));

        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "elearn kafka: fatal error %s: %s",
                      rd_kafka_err2name(ferr), errstr);
        return;
    }

    /* the log callback has said it already, as a "FAIL" line */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT) {
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "elearn kafka: %s: %s",
                  rd_kafka_err2name((rd_kafka_resp_err_t) err), reason);
}


static void
ngx_http_elearn_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac,
    const char *buf)
{
    ngx_uint_t  nlevel;

    /* syslog levels 0 (emerg) .. 7 (debug); nginx's are one higher */
    nlevel = (level < 0) ? NGX_LOG_EMERG : (ngx_uint_t) level + 1;

    if (nlevel > NGX_LOG_DEBUG) {
        nlevel = NGX_LOG_DEBUG;
    }

    ngx_log_error(nlevel, ngx_cycle->log, 0,
                  "elearn kafka: %s: %s", fac, buf);
}
