/*
 * elearn_metrics: a small thread-safe registry of Prometheus metrics.
 *
 * Families live in a list in definition order (so the scrape is stable);
 * each family keeps its series in a list keyed by label values.  A daemon
 * has a handful of families and at most a few hundred series (one per
 * topic partition), so lists are enough.
 */

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elearn_metrics.h"

#define ELEARN_METRICS_MAX_LABELS 8
#define ELEARN_METRICS_MAX_BUCKETS 32

typedef struct elearn_metrics_series_s elearn_metrics_series_t;
typedef struct elearn_metrics_family_s elearn_metrics_family_t;

struct elearn_metrics_series_s {
    elearn_metrics_series_t *next;
    char **values;
    double value; /* counter, gauge; the sum for histograms */
    unsigned long long count;
    unsigned long long *bucket_counts;
};

struct elearn_metrics_family_s {
    elearn_metrics_family_t *next;
    char *name;
    char *help;
    elearn_metric_type_t type;
    char **labels;
    size_t nlabels;
    double *buckets;
    size_t nbuckets;
    elearn_metrics_series_t *series;
};

struct elearn_metrics_s {
    pthread_mutex_t lock;
    elearn_metrics_family_t *families;
    elearn_metrics_family_t *last;
};

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
    int failed;
} elearn_metrics_buf_t;

static void elearn_metrics_series_free(
    elearn_metrics_family_t *f, elearn_metrics_series_t *s);

elearn_metrics_t *
elearn_metrics_create(char *errstr, size_t errlen)
{
    elearn_metrics_t *m;

    m = calloc(1, sizeof(elearn_metrics_t));
    if (m == NULL) {
        snprintf(errstr, errlen, "metrics: out of memory");
        return NULL;
    }

    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        snprintf(errstr, errlen, "metrics: pthread_mutex_init failed");
        free(m);
        return NULL;
    }

    return m;
}

static void
elearn_metrics_family_free(elearn_metrics_family_t *f)
{
    size_t i;
    elearn_metrics_series_t *s, *next;

    for (s = f->series; s != NULL; s = next) {
        next = s->next;
        elearn_metrics_series_free(f, s);
    }

    if (f->labels != NULL) {
        for (i = 0; i < f->nlabels; i++) {
            free(f->labels[i]);
        }
    }

    free(f->labels);
    free(f->buckets);
    free(f->name);
    free(f->help);
    free(f);
}

void
elearn_metrics_destroy(elearn_metrics_t *m)
{
    elearn_metrics_family_t *f, *next;

    if (m == NULL) {
        return;
    }

    for (f = m->families; f != NULL; f = next) {
        next = f->next;
        elearn_metrics_family_free(f);
    }

    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int
elearn_metrics_valid_name(const char *name, int label)
{
    const char *p;

    if (name == NULL || *name == '\0' || isdigit((unsigned char) *name)) {
        return 0;
    }

    for (p = name; *p != '\0'; p++) {
        if (!(isalnum((unsigned char) *p) || *p == '_'
                || (*p == ':' && !label))) {
            return 0;
        }
    }

    return 1;
}

static elearn_metrics_family_t *
elearn_metrics_find(elearn_metrics_t *m, const char *name)
{
    elearn_metrics_family_t *f;

    for (f = m->families; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }

    return NULL;
}

int
elearn_metrics_define(elearn_metrics_t *m, const char *name,
    elearn_metric_type_t type, const char *help, const char *const *labels,
    const double *buckets, size_t nbuckets, char *errstr, size_t errlen)
{
    size_t i, n, len;
    elearn_metrics_family_t *f;

    f = NULL;

    if (!elearn_metrics_valid_name(name, 0)) {
        snprintf(errstr, errlen, "metrics: invalid metric name \"%s\"",
            name != NULL ? name : "(null)");
        return -1;
    }

    len = strlen(name);
    if (type == ELEARN_METRIC_COUNTER
        && (len < 6 || strcmp(name + len - 6, "_total") != 0))
    {
        snprintf(
            errstr, errlen, "metrics: counter \"%s\" must end in _total", name);
        return -1;
    }

    n = 0;
    while (labels != NULL && labels[n] != NULL) {
        if (!elearn_metrics_valid_name(labels[n], 1)
            || strcmp(labels[n], "le") == 0 || strncmp(labels[n], "__", 2) == 0)
        {
            snprintf(errstr, errlen, "metrics: \"%s\": invalid label \"%s\"",
                name, labels[n]);
            return -1;
        }
        n++;
    }

    if (n > ELEARN_METRICS_MAX_LABELS) {
        snprintf(errstr, errlen, "metrics: \"%s\": too many labels", name);
        return -1;
    }

    if (type == ELEARN_METRIC_HISTOGRAM) {
        if (nbuckets == 0 || nbuckets > ELEARN_METRICS_MAX_BUCKETS) {
            snprintf(errstr, errlen, "metrics: \"%s\": 1 to %d buckets", name,
                ELEARN_METRICS_MAX_BUCKETS);
            return -1;
        }

        for (i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i])
                || (i > 0 && buckets[i] <= buckets[i - 1])) {
                snprintf(errstr, errlen,
                    "metrics: \"%s\": buckets must be finite and ascending",
                    name);
                return -1;
            }
        }
    } else {
        nbuckets = 0;
    }

    pthread_mutex_lock(&m->lock);

    if (elearn_metrics_find(m, name) != NULL) {
        pthread_mutex_unlock(&m->lock);
        snprintf(errstr, errlen, "metrics: \"%s\" defined twice", name);
        return -1;
    }

    f = calloc(1, sizeof(elearn_metrics_family_t));
    if (f == NULL) {
        goto failed;
    }

    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help != NULL ? help : name);
    f->labels = calloc(n + 1, sizeof(char *));
    if (f->name == NULL || f->help == NULL || f->labels == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        f->labels[i] = strdup(labels[i]);
        if (f->labels[i] == NULL) {
            goto failed;
        }
        f->nlabels++;
    }

    if (nbuckets > 0) {
        f->buckets = malloc(nbuckets * sizeof(double));
        if (f->buckets == NULL) {
            goto failed;
        }
        memcpy(f->buckets, buckets, nbuckets * sizeof(double));
        f->nbuckets = nbuckets;
    }

    if (m->last != NULL) {
        m->last->next = f;
    } else {
        m->families = f;
    }
    m->last = f;

    pthread_mutex_unlock(&m->lock);
    return 0;

failed:

    pthread_mutex_unlock(&m->lock);
    if (f != NULL) {
        elearn_metrics_family_free(f);
    }
    snprintf(errstr, errlen, "metrics: out of memory");
    return -1;
}

static void
elearn_metrics_series_free(
    elearn_metrics_family_t *f, elearn_metrics_series_t *s)
{
    size_t i;

    if (s->values != NULL) {
        for (i = 0; i < f->nlabels; i++) {
            free(s->values[i]);
        }
    }

    free(s->values);
    free(s->bucket_counts);
    free(s);
}

/* Finds or creates a series; called with the lock held. */
static elearn_metrics_series_t *
elearn_metrics_series(elearn_metrics_family_t *f, const char *const *values)
{
    size_t i;
    elearn_metrics_series_t *s;

    for (s = f->series; s != NULL; s = s->next) {
        for (i = 0; i < f->nlabels; i++) {
            if (strcmp(s->values[i], values[i] != NULL ? values[i] : "") != 0) {
                break;
            }
        }

        if (i == f->nlabels) {
            return s;
        }
    }

    s = calloc(1, sizeof(elearn_metrics_series_t));
    if (s == NULL) {
        return NULL;
    }

    s->values = calloc(f->nlabels + 1, sizeof(char *));
    if (s->values == NULL) {
        goto failed;
    }

    for (i = 0; i < f->nlabels; i++) {
        s->values[i] = strdup(values[i] != NULL ? values[i] : "");
        if (s->values[i] == NULL) {
            goto failed;
        }
    }

    if (f->nbuckets > 0) {
        s->bucket_counts = calloc(f->nbuckets, sizeof(unsigned long long));
        if (s->bucket_counts == NULL) {
            goto failed;
        }
    }

    s->next = f->series;
    f->series = s;
    return s;

failed:

    elearn_metrics_series_free(f, s);
    return NULL;
}

typedef enum {
    ELEARN_METRICS_OP_ADD,
    ELEARN_METRICS_OP_SET,
    ELEARN_METRICS_OP_OBSERVE
} elearn_metrics_op_t;

static int
elearn_metrics_update(elearn_metrics_t *m, const char *name,
    const char *const *values, double v, elearn_metrics_op_t op)
{
    size_t i;
    elearn_metrics_family_t *f;
    elearn_metrics_series_t *s;

    if (isnan(v)) {
        return -1;
    }

    pthread_mutex_lock(&m->lock);

    f = elearn_metrics_find(m, name);
    if (f == NULL || (f->nlabels > 0 && values == NULL)) {
        goto failed;
    }

    switch (op) {
    case ELEARN_METRICS_OP_ADD:
        if (f->type == ELEARN_METRIC_HISTOGRAM
            || (f->type == ELEARN_METRIC_COUNTER && v < 0))
        {
            goto failed;
        }
        break;
    case ELEARN_METRICS_OP_SET:
        if (f->type != ELEARN_METRIC_GAUGE) {
            goto failed;
        }
        break;
    case ELEARN_METRICS_OP_OBSERVE:
        if (f->type != ELEARN_METRIC_HISTOGRAM) {
            goto failed;
        }
        break;
    }

    s = elearn_metrics_series(f, values);
    if (s == NULL) {
        goto failed;
    }

    switch (op) {
    case ELEARN_METRICS_OP_ADD:
        s->value += v;
        break;
    case ELEARN_METRICS_OP_SET:
        s->value = v;
        break;
    case ELEARN_METRICS_OP_OBSERVE:
        s->value += v;
        s->count++;
        for (i = 0; i < f->nbuckets; i++) {
            if (v <= f->buckets[i]) {
                s->bucket_counts[i]++;
            }
        }
        break;
    }

    pthread_mutex_unlock(&m->lock);
    return 0;

failed:

    pthread_mutex_unlock(&m->lock);
    return -1;
}

int
elearn_metrics_add(
    elearn_metrics_t *m, const char *name, const char *const *values, double v)
{
    return elearn_metrics_update(m, name, values, v, ELEARN_METRICS_OP_ADD);
}

int
elearn_metrics_set(
    elearn_metrics_t *m, const char *name, const char *const *values, double v)
{
    return elearn_metrics_update(m, name, values, v, ELEARN_METRICS_OP_SET);
}

int
elearn_metrics_observe(
    elearn_metrics_t *m, const char *name, const char *const *values, double v)
{
    return elearn_metrics_update(m, name, values, v, ELEARN_METRICS_OP_OBSERVE);
}

int
elearn_metrics_clear(elearn_metrics_t *m, const char *name)
{
    elearn_metrics_family_t *f;
    elearn_metrics_series_t *s, *next;

    pthread_mutex_lock(&m->lock);

    f = elearn_metrics_find(m, name);
    if (f == NULL) {
        pthread_mutex_unlock(&m->lock);
        return -1;
    }

    for (s = f->series; s != NULL; s = next) {
        next = s->next;
        elearn_metrics_series_free(f, s);
    }
    f->series = NULL;

    pthread_mutex_unlock(&m->lock);
    return 0;
}

int
elearn_metrics_get(
    elearn_metrics_t *m, const char *name, const char *const *values, double *v)
{
    size_t i;
    elearn_metrics_family_t *f;
    elearn_metrics_series_t *s;

    pthread_mutex_lock(&m->lock);

    f = elearn_metrics_find(m, name);
    if (f == NULL || (f->nlabels > 0 && values == NULL)) {
        goto failed;
    }

    for (s = f->series; s != NULL; s = s->next) {
        for (i = 0; i < f->nlabels; i++) {
            if (strcmp(s->values[i], values[i] != NULL ? values[i] : "") != 0) {
                break;
            }
        }

        if (i == f->nlabels) {
            *v = s->value;
            pthread_mutex_unlock(&m->lock);
            return 0;
        }
    }

failed:

    pthread_mutex_unlock(&m->lock);
    return -1;
}

/* --- rendering ----------------------------------------------------------- */

static void
elearn_metrics_putn(elearn_metrics_buf_t *b, const char *p, size_t n)
{
    size_t cap;
    char *nb;

    if (b->failed) {
        return;
    }

    if (b->len + n + 1 > b->cap) {
        cap = b->cap != 0 ? b->cap : 4096;
        while (b->len + n + 1 > cap) {
            cap *= 2;
        }

        nb = realloc(b->buf, cap);
        if (nb == NULL) {
            b->failed = 1;
            return;
        }

        b->buf = nb;
        b->cap = cap;
    }

    memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void
elearn_metrics_puts(elearn_metrics_buf_t *b, const char *s)
{
    elearn_metrics_putn(b, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3)))
elearn_metrics_printf(elearn_metrics_buf_t *b, const char *fmt, ...)
{
    int n;
    va_list ap;
    char tmp[128];

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);

    if (n < 0 || (size_t) n >= sizeof(tmp)) {
        b->failed = 1;
        return;
    }

    elearn_metrics_putn(b, tmp, (size_t) n);
}

/* Escapes HELP text (\\ and \n) or label values (also \"). */
static void
elearn_metrics_escape(elearn_metrics_buf_t *b, const char *s, int quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\') {
            elearn_metrics_puts(b, "\\\\");
        } else if (*s == '\n') {
            elearn_metrics_puts(b, "\\n");
        } else if (*s == '"' && quote) {
            elearn_metrics_puts(b, "\\\"");
        } else {
            elearn_metrics_putn(b, s, 1);
        }
    }
}

static void
elearn_metrics_value(elearn_metrics_buf_t *b, double v)
{
    if (isinf(v)) {
        elearn_metrics_puts(b, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        elearn_metrics_printf(b, "%.0f", v);
    } else {
        /* the shortest form that reads back as the same double */
        int prec;
        char tmp[64];

        for (prec = 15; prec < 17; prec++) {
            snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
            if (strtod(tmp, NULL) == v) {
                break;
            }
        }

        elearn_metrics_printf(b, "%.*g", prec, v);
    }
}

/* Writes {a="x",b="y"[,le="..."]} (nothing when there are no labels). */
static void
elearn_metrics_labels(elearn_metrics_buf_t *b, elearn_metrics_family_t *f,
    elearn_metrics_series_t *s, const char *le)
{
    size_t i;

    if (f->nlabels == 0 && le == NULL) {
        return;
    }

    elearn_metrics_puts(b, "{");

    for (i = 0; i < f->nlabels; i++) {
        if (i > 0) {
            elearn_metrics_puts(b, ",");
        }
        elearn_metrics_puts(b, f->labels[i]);
        elearn_metrics_puts(b, "=\"");
        elearn_metrics_escape(b, s->values[i], 1);
        elearn_metrics_puts(b, "\"");
    }

    if (le != NULL) {
        if (f->nlabels > 0) {
            elearn_metrics_puts(b, ",");
        }
        elearn_metrics_puts(b, "le=\"");
        elearn_metrics_puts(b, le);
        elearn_metrics_puts(b, "\"");
    }

    elearn_metrics_puts(b, "}");
}

static void
elearn_metrics_render_family(
    elearn_metrics_buf_t *b, elearn_metrics_family_t *f)
{
    size_t i;
    char le[64];
    elearn_metrics_series_t *s;
    static const char *types[] = {"counter", "gauge", "histogram"};

    elearn_metrics_printf(b, "# HELP %s ", f->name);
    elearn_metrics_escape(b, f->help, 0);
    elearn_metrics_printf(b, "\n# TYPE %s %s\n", f->name, types[f->type]);

    for (s = f->series; s != NULL; s = s->next) {
        if (f->type != ELEARN_METRIC_HISTOGRAM) {
            elearn_metrics_puts(b, f->name);
            elearn_metrics_labels(b, f, s, NULL);
            elearn_metrics_puts(b, " ");
            elearn_metrics_value(b, s->value);
            elearn_metrics_puts(b, "\n");
            continue;
        }

        for (i = 0; i < f->nbuckets; i++) {
            snprintf(le, sizeof(le), "%g", f->buckets[i]);
            elearn_metrics_printf(b, "%s_bucket", f->name);
            elearn_metrics_labels(b, f, s, le);
            elearn_metrics_printf(b, " %llu\n", s->bucket_counts[i]);
        }

        elearn_metrics_printf(b, "%s_bucket", f->name);
        elearn_metrics_labels(b, f, s, "+Inf");
        elearn_metrics_printf(b, " %llu\n", s->count);

        elearn_metrics_printf(b, "%s_sum", f->name);
        elearn_metrics_labels(b, f, s, NULL);
        elearn_metrics_puts(b, " ");
        elearn_metrics_value(b, s->value);
        elearn_metrics_puts(b, "\n");

        elearn_metrics_printf(b, "%s_count", f->name);
        elearn_metrics_labels(b, f, s, NULL);
        elearn_metrics_printf(b, " %llu\n", s->count);
    }
}

char *
elearn_metrics_render(elearn_metrics_t *m, size_t *len)
{
    elearn_metrics_buf_t b;
    elearn_metrics_family_t *f;

    memset(&b, 0, sizeof(b));

    pthread_mutex_lock(&m->lock);

    for (f = m->families; f != NULL; f = f->next) {
        elearn_metrics_render_family(&b, f);
    }

    pthread_mutex_unlock(&m->lock);

    /* an empty registry still answers with an empty (valid) body */
    elearn_metrics_putn(&b, "", 0);

    if (b.failed) {
        free(b.buf);
        return NULL;
    }

    if (len != NULL) {
        *len = b.len;
    }

    return b.buf;
}
