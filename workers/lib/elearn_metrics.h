/*
 * elearn_metrics: a small thread-safe registry of Prometheus metrics.
 *
 * A daemon defines its metric families once (name, type, help, label
 * names, histogram buckets) and then updates series by label values from
 * any thread; elearn_metrics_render() produces the Prometheus text
 * exposition format (version 0.0.4) that elearn_metrics_http serves and
 * that `promtool check metrics` accepts.  One mutex guards everything:
 * updates are a few per message, far below where contention matters.
 *
 * Must never: put unescaped label values into the output (a topic name is
 * data, and a quote in it would corrupt the whole scrape).
 */

#ifndef ELEARN_METRICS_H
#define ELEARN_METRICS_H

#include <stddef.h>

typedef struct elearn_metrics_s elearn_metrics_t;

typedef enum {
    ELEARN_METRIC_COUNTER,
    ELEARN_METRIC_GAUGE,
    ELEARN_METRIC_HISTOGRAM
} elearn_metric_type_t;

/* Creates an empty registry, or returns NULL with errstr set. */
elearn_metrics_t *elearn_metrics_create(char *errstr, size_t errlen);

/* Frees the registry.  NULL is allowed. */
void elearn_metrics_destroy(elearn_metrics_t *m);

/*
 * Defines a family.  labels is a NULL-terminated array of label names (NULL
 * for none); buckets (ascending upper bounds, without +Inf) only for
 * histograms.  Counter names must end in "_total".  Returns 0, or -1 with
 * errstr naming the metric (bad name, duplicate, bad buckets).
 */
int elearn_metrics_define(elearn_metrics_t *m, const char *name,
    elearn_metric_type_t type, const char *help, const char *const *labels,
    const double *buckets, size_t nbuckets, char *errstr, size_t errlen);

/*
 * Adds v to the counter or gauge series with these label values (as many as
 * the family has label names; NULL if none), creating it at 0 first.
 * Returns 0, or -1 if the family is unknown, v is negative for a counter, or
 * memory ran out.
 */
int elearn_metrics_add(
    elearn_metrics_t *m, const char *name, const char *const *values, double v);

/* Sets a gauge series.  Returns 0 or -1 as elearn_metrics_add(). */
int elearn_metrics_set(
    elearn_metrics_t *m, const char *name, const char *const *values, double v);

/* Records one observation in a histogram series.  Returns 0 or -1. */
int elearn_metrics_observe(
    elearn_metrics_t *m, const char *name, const char *const *values, double v);

/*
 * Drops every series of a family (a gauge per partition whose partition was
 * revoked must disappear, not freeze).  Returns 0, or -1 if unknown.
 */
int elearn_metrics_clear(elearn_metrics_t *m, const char *name);

/*
 * Reads the current value of a counter or gauge series into *v (tests and
 * health checks).  Returns 0, or -1 if the series does not exist.
 */
int elearn_metrics_get(elearn_metrics_t *m, const char *name,
    const char *const *values, double *v);

/*
 * Renders every family in the text exposition format into a malloc()ed,
 * NUL-terminated string (length in *len if len is not NULL), or NULL when
 * memory ran out.  The caller free()s it.
 */
char *elearn_metrics_render(elearn_metrics_t *m, size_t *len);

#endif /* ELEARN_METRICS_H */
