/*
 * progress_report: parse progress.reported events and merge a batch of them
 * per (user, video), in memory, before the one upsert statement.
 *
 * The event (produced by the module for POST /videos/{id}/progress):
 *   {"eventId": "<uuid>", "type": "progress.reported", "occurredAt": "...",
 *    "schemaVersion": 1, "data": {"userId": 1, "videoId": 2, "courseId": 3,
 *    "positionSeconds": 120, "watched": [[0, 30], [60, 90]],
 *    "durationSeconds": 600, "reportedAtMs": 1795000000123}}
 * Every number must be a JSON integer in range; intervals are half-open
 * [from, to) whole seconds.  Merging needs no trust in their order: they
 * are sorted and coalesced here, and clipped to the video's duration by the
 * statement.
 *
 * Must never: accept a value it would have to guess about (a float, a
 * negative second, a reversed interval): those are poison messages.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "progress.h"

/* --- text buffers -------------------------------------------------------- */

int
pr_buf_printf(pr_buf_t *b, const char *fmt, ...)
{
    int n;
    char *p;
    size_t cap;
    va_list ap;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->data != NULL ? b->data + b->len : NULL,
            b->data != NULL ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);

        if (n < 0) {
            return -1;
        }

        if (b->data != NULL && b->len + (size_t) n < b->cap) {
            b->len += (size_t) n;
            return 0;
        }

        cap = b->cap != 0 ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t) n + 1) {
            cap *= 2;
        }

        p = realloc(b->data, cap);
        if (p == NULL) {
            return -1;
        }
        b->data = p;
        b->cap = cap;
        b->data[b->len] = '\0';
    }
}

void
pr_buf_reset(pr_buf_t *b)
{
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

void
pr_buf_free(pr_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* --- parsing ------------------------------------------------------------- */

/* An integer member of obj in [min, max] into *v; -1 with errstr if not. */
static int
pr_get_int(json_t *obj, const char *name, json_int_t min, json_int_t max,
    json_int_t *v, char *errstr, size_t errlen)
{
    json_t *j;

    j = json_object_get(obj, name);
    if (!json_is_integer(j)) {
        snprintf(errstr, errlen, "data.%s: %s", name,
            j == NULL ? "missing" : "not an integer");
        return -1;
    }

    *v = json_integer_value(j);
    if (*v < min || *v > max) {
        snprintf(
            errstr, errlen, "data.%s: %lld out of range", name, (long long) *v);
        return -1;
    }

    return 0;
}

static int
pr_parse_watched(json_t *data, pr_report_t *r, char *errstr, size_t errlen)
{
    size_t i;
    json_t *w, *pair, *a, *b;
    json_int_t from, to;

    w = json_object_get(data, "watched");
    if (!json_is_array(w)) {
        snprintf(errstr, errlen, "data.watched: %s",
            w == NULL ? "missing" : "not an array");
        return -1;
    }

    if (json_array_size(w) > PR_MAX_INTERVALS) {
        snprintf(errstr, errlen, "data.watched: more than %d intervals",
            PR_MAX_INTERVALS);
        return -1;
    }

    if (json_array_size(w) == 0) {
        return 0;
    }

    r->iv = calloc(json_array_size(w), sizeof(pr_interval_t));
    if (r->iv == NULL) {
        snprintf(errstr, errlen, "out of memory");
        return -1;
    }

    json_array_foreach(w, i, pair)
    {
        a = json_array_get(pair, 0);
        b = json_array_get(pair, 1);

        if (!json_is_array(pair) || json_array_size(pair) != 2
            || !json_is_integer(a) || !json_is_integer(b))
        {
            snprintf(
                errstr, errlen, "data.watched[%zu]: not a pair of integers", i);
            return -1;
        }

        from = json_integer_value(a);
        to = json_integer_value(b);
        if (from < 0 || to < from || to > INT32_MAX) {
            snprintf(errstr, errlen,
                "data.watched[%zu]: [%lld, %lld) is not an interval of "
                "seconds",
                i, (long long) from, (long long) to);
            return -1;
        }

        if (from == to) {
            continue; /* empty: nothing watched */
        }

        r->iv[r->niv].from = (int32_t) from;
        r->iv[r->niv].to = (int32_t) to;
        r->niv++;
    }

    return 0;
}

int
pr_report_parse(
    const void *value, size_t len, pr_report_t *r, char *errstr, size_t errlen)
{
    json_t *root, *data, *type, *version;
    json_int_t v;
    json_error_t jerr;

    memset(r, 0, sizeof(pr_report_t));

    if (value == NULL || len == 0) {
        snprintf(errstr, errlen, "empty message");
        return -1;
    }

    root = json_loadb(value, len, 0, &jerr);
    if (root == NULL) {
        snprintf(errstr, errlen, "invalid JSON at %d:%d: %s", jerr.line,
            jerr.column, jerr.text);
        return -1;
    }

    type = json_object_get(root, "type");
    version = json_object_get(root, "schemaVersion");
    data = json_object_get(root, "data");

    if (!json_is_string(json_object_get(root, "eventId"))) {
        snprintf(errstr, errlen, "envelope without a string eventId");
        goto failed;
    }

    if (!json_is_string(type)
        || strcmp(json_string_value(type), "progress.reported") != 0)
    {
        snprintf(errstr, errlen, "type is not \"progress.reported\"");
        goto failed;
    }

    if (!json_is_integer(version) || json_integer_value(version) != 1) {
        snprintf(errstr, errlen, "schemaVersion is not 1");
        goto failed;
    }

    if (!json_is_object(data)) {
        snprintf(errstr, errlen, "data: not an object");
        goto failed;
    }

    if (pr_get_int(data, "userId", 1, INT64_MAX, &v, errstr, errlen) != 0) {
        goto failed;
    }
    r->user_id = v;

    if (pr_get_int(data, "videoId", 1, INT64_MAX, &v, errstr, errlen) != 0) {
        goto failed;
    }
    r->video_id = v;

    /* checked, not used: the video's course comes from the database */
    if (pr_get_int(data, "courseId", 1, INT64_MAX, &v, errstr, errlen) != 0) {
        goto failed;
    }

    if (pr_get_int(data, "positionSeconds", 0, INT32_MAX, &v, errstr, errlen)
        != 0) {
        goto failed;
    }
    r->position = (int32_t) v;

    if (pr_get_int(data, "reportedAtMs", 0, INT64_MAX, &v, errstr, errlen) != 0)
    {
        goto failed;
    }
    r->reported_at_ms = v;

    /* optional; the database's duration is the one that counts */
    if (json_object_get(data, "durationSeconds") != NULL
        && pr_get_int(data, "durationSeconds", 0, INT32_MAX, &v, errstr, errlen)
            != 0)
    {
        goto failed;
    }

    if (pr_parse_watched(data, r, errstr, errlen) != 0) {
        goto failed;
    }

    json_decref(root);
    return 0;

failed:

    json_decref(root);
    pr_report_free(r);
    return -1;
}

void
pr_report_free(pr_report_t *r)
{
    free(r->iv);
    r->iv = NULL;
    r->niv = 0;
}

/* --- merging ------------------------------------------------------------- */

static int
pr_report_cmp(const void *pa, const void *pb)
{
    const pr_report_t *a = pa, *b = pb;

    if (a->user_id != b->user_id) {
        return a->user_id < b->user_id ? -1 : 1;
    }
    if (a->video_id != b->video_id) {
        return a->video_id < b->video_id ? -1 : 1;
    }
    if (a->reported_at_ms != b->reported_at_ms) {
        return a->reported_at_ms < b->reported_at_ms ? -1 : 1;
    }
    if (a->msg != b->msg) {
        return a->msg < b->msg ? -1 : 1;
    }
    return 0;
}

static int
pr_interval_cmp(const void *pa, const void *pb)
{
    const pr_interval_t *a = pa, *b = pb;

    if (a->from != b->from) {
        return a->from < b->from ? -1 : 1;
    }
    return a->to < b->to ? -1 : (a->to > b->to);
}

/*
 * Writes the union of the intervals of reports [first, last) as a quoted
 * multirange literal ("{[0,30),[60,90)}") into b, using *tmp (grown as
 * needed) for the sort.
 */
static int
pr_write_union(pr_report_t *reports, size_t first, size_t last, pr_buf_t *b,
    pr_interval_t **tmp, size_t *tmpcap)
{
    size_t i, n, k;
    pr_interval_t *p, cur;

    n = 0;
    for (i = first; i < last; i++) {
        n += reports[i].niv;
    }

    if (n > *tmpcap) {
        p = realloc(*tmp, n * sizeof(pr_interval_t));
        if (p == NULL) {
            return -1;
        }
        *tmp = p;
        *tmpcap = n;
    }

    n = 0;
    for (i = first; i < last; i++) {
        memcpy(*tmp + n, reports[i].iv, reports[i].niv * sizeof(pr_interval_t));
        n += reports[i].niv;
    }

    qsort(*tmp, n, sizeof(pr_interval_t), pr_interval_cmp);

    if (pr_buf_printf(b, "\"{") != 0) {
        return -1;
    }

    k = 0;
    for (i = 0; i < n; i++) {
        cur = (*tmp)[i];

        /* overlapping or touching: [0,30) + [30,40) = [0,40) */
        while (i + 1 < n && (*tmp)[i + 1].from <= cur.to) {
            i++;
            if ((*tmp)[i].to > cur.to) {
                cur.to = (*tmp)[i].to;
            }
        }

        if (pr_buf_printf(b, "%s[%d,%d)", k++ > 0 ? "," : "", (int) cur.from,
                (int) cur.to)
            != 0)
        {
            return -1;
        }
    }

    return pr_buf_printf(b, "}\"");
}

int
pr_merge(pr_report_t *reports, size_t n, pr_row_t **rows, size_t *nrows,
    pr_buf_t params[5])
{
    size_t i, j, k, tmpcap;
    pr_row_t *out, *row;
    pr_interval_t *tmp;
    const char *sep;

    *rows = NULL;
    *nrows = 0;
    tmp = NULL;
    tmpcap = 0;

    for (k = 0; k < 5; k++) {
        pr_buf_reset(&params[k]);
        if (pr_buf_printf(&params[k], "{") != 0) {
            return -1;
        }
    }

    if (n == 0) {
        goto close;
    }

    out = calloc(n, sizeof(pr_row_t));
    if (out == NULL) {
        return -1;
    }

    qsort(reports, n, sizeof(pr_report_t), pr_report_cmp);

    k = 0;
    for (i = 0; i < n; i = j) {
        j = i + 1;
        while (j < n && reports[j].user_id == reports[i].user_id
            && reports[j].video_id == reports[i].video_id)
        {
            j++;
        }

        /* sorted by report time, then message order: the last is newest */
        row = &out[k];
        row->user_id = reports[i].user_id;
        row->video_id = reports[i].video_id;
        row->reported_at_ms = reports[j - 1].reported_at_ms;
        row->position = reports[j - 1].position;
        row->first = i;
        row->last = j;

        sep = k > 0 ? "," : "";
        if (pr_buf_printf(&params[0], "%s%lld", sep, (long long) row->user_id)
                != 0
            || pr_buf_printf(
                   &params[1], "%s%lld", sep, (long long) row->video_id)
                != 0
            || pr_buf_printf(&params[2], "%s%d", sep, (int) row->position) != 0
            || pr_buf_printf(&params[3], "%s", sep) != 0
            || pr_write_union(reports, i, j, &params[3], &tmp, &tmpcap) != 0
            || pr_buf_printf(
                   &params[4], "%s%lld", sep, (long long) row->reported_at_ms)
                != 0)
        {
            free(out);
            free(tmp);
            return -1;
        }

        k++;
    }

    free(tmp);
    *rows = out;
    *nrows = k;

close:

    for (k = 0; k < 5; k++) {
        if (pr_buf_printf(&params[k], "}") != 0) {
            free(*rows);
            *rows = NULL;
            *nrows = 0;
            return -1;
        }
    }

    return 0;
}
