/*
 * elearn-progress: the daemon's internal interfaces.
 *
 * progress_report.c parses progress.reported events and merges a batch of
 * them per (user, video) in memory: the newest position by reportedAtMs,
 * the union of the watched intervals.  main.c ties it to the consumer loop
 * and PostgreSQL.
 *
 * Must never: trust a report's types or ranges without checking them (a
 * bad report is a poison message, not a crash or a bad row).
 */

#ifndef ELEARN_PROGRESS_H
#define ELEARN_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

/* a report carries at most this many intervals (the API allows 64) */
#define PR_MAX_INTERVALS 4096

/* [from, to) in whole seconds */
typedef struct {
    int32_t from;
    int32_t to;
} pr_interval_t;

typedef struct {
    int64_t user_id;
    int64_t video_id;
    int64_t reported_at_ms;
    int32_t position;
    size_t msg; /* index of its message in the batch */
    pr_interval_t *iv;
    size_t niv;
} pr_report_t;

/* one (user, video) row of a batch: reports [first, last) after the sort */
typedef struct {
    int64_t user_id;
    int64_t video_id;
    int64_t reported_at_ms;
    int32_t position;
    size_t first;
    size_t last;
} pr_row_t;

/* a growable NUL-terminated text buffer */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} pr_buf_t;

/*
 * Parses one event (the value of an elearn.progress message) into r.
 * Returns 0, or -1 with errstr saying what is wrong (a permanent failure).
 * On 0 the caller frees r with pr_report_free().
 */
int pr_report_parse(
    const void *value, size_t len, pr_report_t *r, char *errstr, size_t errlen);

/* Frees the intervals of r.  Safe on a zeroed report. */
void pr_report_free(pr_report_t *r);

/*
 * Sorts the n reports by (user, video, reportedAtMs, message order) and
 * merges them into rows (*rows malloc()ed, *nrows of them): the position of
 * the newest report (the later message on a tie), and the watched union
 * written into the array-literal buffers the upsert takes ($1 users, $2
 * videos, $3 positions, $4 watched multiranges, $5 report times).  Returns
 * 0, or -1 when memory ran out.
 */
int pr_merge(pr_report_t *reports, size_t n, pr_row_t **rows, size_t *nrows,
    pr_buf_t params[5]);

/* Appends printf-formatted text.  Returns 0 or -1 (out of memory). */
int pr_buf_printf(pr_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Empties b, keeping its memory. */
void pr_buf_reset(pr_buf_t *b);

/* Frees b's memory. */
void pr_buf_free(pr_buf_t *b);

#endif /* ELEARN_PROGRESS_H */
