/*
 * elearn_consumer: the Kafka consumer-group loop every worker daemon runs.
 *
 * Delivery is at-least-once.  librdkafka commits automatically
 * (enable.auto.commit=true) but only offsets this loop stored
 * (enable.auto.offset.store=false), and an offset is stored only after the
 * handler reported success, i.e. after the daemon's database COMMIT.  A
 * crash between the COMMIT and the next auto-commit redelivers the message,
 * so handlers must be idempotent (INSERT ... ON CONFLICT).
 *
 * Handler results: OK stores the offset; RETRY (transient) calls the handler
 * again on the same message with exponential backoff, up to
 * consumer.retry.attempts attempts in all (default 3); FAIL (permanent), or
 * RETRY on the last attempt, sends the message to "<topic>.dlq" through an
 * idempotent producer, waits for the broker's acknowledgement and only then
 * stores the offset, so a poison message never blocks its partition and is
 * never lost.  If the dead-letter produce fails, the offset is not stored
 * and the loop stops with an error (the message comes back after restart).
 * STOP means "shutting down, leave this message unstored".
 *
 * Dead-letter messages keep the original key, value and headers, plus:
 *   dlq.original.topic, dlq.original.partition, dlq.original.offset,
 *   dlq.error, dlq.attempts, dlq.consumer.group, dlq.failed.at (RFC 3339).
 *
 * Batches: with a batch handler, messages are collected up to
 * consumer.batch.size or consumer.batch.timeout after the first one, and
 * their offsets stored after the batch handler succeeds.  A batch handler
 * may also commit the batch without some of its messages: it marks each of
 * them with elearn_message_reject() and returns OK; the library then passes
 * the rejected messages, in order, through the per-message handler (retries,
 * DLQ) and only then stores the batch's offsets.  A batch that still
 * fails after its retries is replayed message by message through the
 * per-message handler (which finds the poison message and dead-letters only
 * it); without a per-message handler every message of the batch goes to the
 * DLQ.  A pending batch is handled before its partitions are revoked.
 *
 * Rebalances are logged; on revoke the stored offsets are committed
 * synchronously, so the next owner starts right after our last success.
 * SIGTERM/SIGINT: stop polling, finish the current message or batch, commit
 * synchronously, close the consumer.  The whole drain is bounded by
 * consumer.shutdown.timeout: a watchdog ends the process (exit 1) past it,
 * leaving uncommitted messages to be redelivered.  SIGHUP re-reads the
 * configuration and applies what is safe live (log level, retry and batch
 * settings).
 *
 * Metrics (when a registry is given): elearn_consumer_messages_total{topic},
 * _failures_total{topic}, _retries_total, _dlq_total{topic},
 * _dlq_errors_total, _rebalances_total, _assigned_partitions,
 * _lag{topic,partition} (from librdkafka statistics, consumer_lag), and the
 * _batch_seconds histogram (time per handler call).
 *
 * Must never: store an offset before the handler's success (or the DLQ's
 * acknowledgement), or block shutdown without bound.
 */

#ifndef ELEARN_CONSUMER_H
#define ELEARN_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "elearn_config.h"
#include "elearn_metrics.h"

typedef enum {
    ELEARN_CONSUMER_OK = 0,
    ELEARN_CONSUMER_RETRY,
    ELEARN_CONSUMER_FAIL,
    ELEARN_CONSUMER_STOP
} elearn_consumer_result_t;

/* A consumed message as handlers see it; valid during the handler call. */
typedef struct {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key; /* NULL if none */
    size_t key_len;
    const void *value; /* NULL for a tombstone */
    size_t value_len;
    int64_t timestamp_ms; /* -1 if unknown */
    int attempt;          /* 1 for the first call */
    const rd_kafka_message_t *rkm;
    unsigned char *rejected; /* batch calls only: see elearn_message_reject */
} elearn_message_t;

/*
 * Per-message handler.  On RETRY or FAIL it writes the reason into errstr
 * (it goes into the log and the DLQ's dlq.error header).
 */
typedef elearn_consumer_result_t (*elearn_consumer_handler_fn)(
    void *ctx, const elearn_message_t *msg, char *errstr, size_t errlen);

/*
 * Batch handler: all n messages succeed or fail together (one transaction).
 * msgs[i].attempt is the batch's attempt.
 */
typedef elearn_consumer_result_t (*elearn_consumer_batch_fn)(void *ctx,
    const elearn_message_t *msgs, size_t n, char *errstr, size_t errlen);

/*
 * Reload hook: called on SIGHUP with the freshly read configuration (valid
 * only during the call) after the consumer applied its own live settings.
 */
typedef void (*elearn_consumer_reload_fn)(void *ctx, elearn_config_t *cfg);

typedef struct {
    char brokers[1024];           /* kafka.brokers (required) */
    char group_id[256];           /* kafka.group.id (required) */
    char topics[1024];            /* kafka.topics, comma-separated (required) */
    char client_id[128];          /* kafka.client.id, default "elearn-worker" */
    char offset_reset[16];        /* kafka.auto.offset.reset: earliest */
    long long session_timeout_ms; /* kafka.session.timeout: 10s */
    long long stats_interval_ms;  /* kafka.statistics.interval: 1s */
    long long commit_interval_ms; /* kafka.commit.interval: 1s */
    long long fetch_wait_ms;      /* kafka.fetch.wait: 500ms */
    long long fetch_min_bytes;    /* kafka.fetch.min.bytes: 1 */
    int retry_attempts;           /* consumer.retry.attempts: 3 */
    long long retry_backoff_ms;   /* consumer.retry.backoff: 200ms */
    long long retry_backoff_max_ms; /* consumer.retry.backoff.max: 5s */
    int batch_size;                 /* consumer.batch.size: 100 */
    long long batch_timeout_ms;     /* consumer.batch.timeout: 500ms */
    long long dlq_timeout_ms;       /* consumer.dlq.timeout: 10s */
    long long shutdown_timeout_ms;  /* consumer.shutdown.timeout: 8s */
} elearn_consumer_conf_t;

typedef struct elearn_consumer_s elearn_consumer_t;

/*
 * Fills conf from cfg (file + environment), with the defaults above.
 * Returns 0, or -1 with errstr naming the bad key.
 */
int elearn_consumer_conf_load(elearn_consumer_conf_t *conf,
    elearn_config_t *cfg, char *errstr, size_t errlen);

/*
 * Creates the consumer (subscribed, not yet polling) and the DLQ producer.
 * handler is required; batch may be NULL (per-message mode).  metrics may be
 * NULL.  Returns the consumer or NULL with errstr set.
 */
elearn_consumer_t *elearn_consumer_create(const elearn_consumer_conf_t *conf,
    elearn_metrics_t *metrics, elearn_consumer_handler_fn handler,
    elearn_consumer_batch_fn batch, void *ctx, char *errstr, size_t errlen);

/*
 * Makes SIGHUP re-read config_path (copied) and call fn (may be NULL).
 * Returns 0 or -1 (out of memory).
 */
int elearn_consumer_set_reload(elearn_consumer_t *c, const char *config_path,
    elearn_consumer_reload_fn fn);

/*
 * Runs the loop until SIGTERM/SIGINT (elearn_signal) or a fatal error, then
 * drains as described above.  Returns 0 after a clean stop, -1 after a
 * fatal error (errstr says which).  Call elearn_signal_install() first.
 */
int elearn_consumer_run(elearn_consumer_t *c, char *errstr, size_t errlen);

/* Destroys the consumer and the producer.  NULL is allowed. */
void elearn_consumer_destroy(elearn_consumer_t *c);

/*
 * Health callback for elearn_metrics_http (ctx is the consumer): healthy
 * while the loop polls (at least every 30 s outside handlers) and no fatal
 * error happened.  Thread-safe.
 */
int elearn_consumer_health(void *ctx, char *buf, size_t len);

/*
 * Finds the last header called name.  Returns 0 with *value and *len set, or -1
 * if the message has no such header.
 */
int elearn_message_header(const elearn_message_t *msg, const char *name,
    const void **value, size_t *len);

/*
 * In a batch handler: marks msg as not handled by the batch (a poison
 * message the handler isolated).  If the batch handler then returns OK, the
 * rejected messages go through the per-message handler (retries, DLQ)
 * before the batch's offsets are stored; with any other result the marks
 * are ignored.  Outside a batch call it does nothing.
 */
void elearn_message_reject(const elearn_message_t *msg);

/*
 * Backoff before attempt "attempt + 1": base * 2^(attempt - 1), capped at
 * max.  Exposed for tests.
 */
long long elearn_consumer_backoff_ms(
    long long base_ms, long long max_ms, int attempt);

#endif /* ELEARN_CONSUMER_H */
