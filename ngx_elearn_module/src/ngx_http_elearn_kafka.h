
/*
 * elearn kafka: one idempotent librdkafka producer per worker process.
 *
 * Delivery reports and statistics arrive on librdkafka's main queue,
 * which signals an fd (rd_kafka_queue_io_event_enable) that nginx
 * watches: nothing polls per request.  At worker exit the producer
 * flushes for at most elearn_kafka_flush_timeout.
 */


#ifndef _NGX_HTTP_ELEARN_KAFKA_H_INCLUDED_
#define _NGX_HTTP_ELEARN_KAFKA_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


typedef struct {
    ngx_uint_t   queued;            /* messages in the local queue */
    ngx_uint_t   delivered;
    ngx_uint_t   delivery_errors;
    ngx_uint_t   queue_full;        /* produce refused: 503 */
    ngx_uint_t   brokers_up;        /* brokers in state UP */
} ngx_http_elearn_kafka_stats_t;


/*
 * durable: the producer of durable progress reports, whose 204 waits for
 * the delivery report: elearn_kafka_durable_linger instead of
 * elearn_kafka_linger, client.id elearn-nginx-durable-<pid>.
 */
ngx_http_elearn_kafka_t *ngx_http_elearn_kafka_create(ngx_cycle_t *cycle,
    ngx_http_elearn_main_conf_t *emcf, ngx_uint_t durable);

/* Flushes for at most elearn_kafka_flush_timeout, then destroys. */
void ngx_http_elearn_kafka_destroy(ngx_http_elearn_kafka_t *kafka);

/*
 * Queues one message (copied).  Returns NGX_OK when queued, NGX_BUSY when
 * the local queue is full (answer 503), NGX_ERROR otherwise (unknown
 * topic, no producer).
 */
ngx_int_t ngx_http_elearn_kafka_produce(ngx_http_elearn_kafka_t *kafka,
    const char *topic, const u_char *key, size_t key_len,
    const u_char *value, size_t value_len);

/*
 * Whether the producer has at least one broker connection up, from the
 * last statistics (refreshed every second); never blocks.
 */
ngx_int_t ngx_http_elearn_kafka_ready(ngx_http_elearn_kafka_t *kafka);

void ngx_http_elearn_kafka_get_stats(ngx_http_elearn_kafka_t *kafka,
    ngx_http_elearn_kafka_stats_t *stats);


/*
 * A delivery report wanted for one message (durable acknowledgements).
 * The caller allocates it (outside any request pool: it may outlive the
 * request) and keeps it valid until handler runs; handler runs exactly
 * once, on the event loop, with NGX_OK when the broker acknowledged the
 * message (acks=all, idempotent) or NGX_ERROR when delivery failed, and
 * then owns the report (it frees it).  A caller whose request goes away
 * first must detach itself from the report, never free it.
 */
typedef struct ngx_http_elearn_kafka_report_s  ngx_http_elearn_kafka_report_t;

typedef void (*ngx_http_elearn_kafka_report_pt)(
    ngx_http_elearn_kafka_report_t *report, ngx_int_t rc);

struct ngx_http_elearn_kafka_report_s {
    ngx_http_elearn_kafka_report_pt   handler;
    void                             *data;
};

/*
 * ngx_http_elearn_kafka_produce() with a delivery report: on NGX_OK the
 * report's handler will be called; on any other return it will not.
 */
ngx_int_t ngx_http_elearn_kafka_produce_report(ngx_http_elearn_kafka_t *kafka,
    const char *topic, const u_char *key, size_t key_len,
    const u_char *value, size_t value_len,
    ngx_http_elearn_kafka_report_t *report);


#endif /* _NGX_HTTP_ELEARN_KAFKA_H_INCLUDED_ */
