/*
 * elearn_metrics_http: a tiny HTTP/1.0 server for GET /metrics and
 * GET /healthz, on its own thread.
 *
 * Daemons are not nginx: their main thread blocks in the consumer loop, so
 * the scrape endpoint runs on a separate thread that only reads the
 * thread-safe metrics registry.  One connection at a time, one request per
 * connection, a read timeout so a silent client cannot wedge it, and
 * 127.0.0.1 by default so it is not exposed beyond the host.
 *
 * Must never: touch daemon state other than the registry and the health
 * callback, or let a slow client block the daemon.
 */

#ifndef ELEARN_METRICS_HTTP_H
#define ELEARN_METRICS_HTTP_H

#include <stddef.h>

#include "elearn_metrics.h"

typedef struct elearn_metrics_http_s elearn_metrics_http_t;

/*
 * Health callback: returns 1 if healthy, 0 if not, writing a short reason
 * into buf either way.  Called on the server thread: it must be thread-safe.
 */
typedef int (*elearn_health_fn)(void *ctx, char *buf, size_t len);

/*
 * Binds addr:port (addr NULL means 127.0.0.1; port 0 picks a free port, see
 * elearn_metrics_http_port()) and starts the server thread.  health may be
 * NULL (always healthy).  Returns the server, or NULL with errstr set
 * ("metrics: bind 127.0.0.1:9464: Address already in use").
 */
elearn_metrics_http_t *elearn_metrics_http_create(const char *addr, int port,
    elearn_metrics_t *metrics, elearn_health_fn health, void *health_ctx,
    char *errstr, size_t errlen);

/* The port actually bound. */
int elearn_metrics_http_port(const elearn_metrics_http_t *h);

/*
 * Stops the thread (within about one read timeout) and frees the server.
 * NULL is allowed.
 */
void elearn_metrics_http_destroy(elearn_metrics_http_t *h);

#endif /* ELEARN_METRICS_HTTP_H */
