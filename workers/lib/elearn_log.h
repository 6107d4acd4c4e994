/*
 * elearn_log: JSON-line logging for the worker daemons.
 *
 * Every line written to stderr is one JSON object:
 * {"ts":"2024-05-01T12:00:00.123Z","level":"info","subsystem":"consumer",
 *  "msg":"...", <extra fields>}, so log shippers parse it without regexes.
 * Lines are written whole under a lock, so threads never interleave.
 *
 * This file must never log a secret: callers pass connection strings through
 * elearn_log_mask_conninfo() first, and nothing here prints configuration
 * values on its own.
 */

#ifndef ELEARN_LOG_H
#define ELEARN_LOG_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

typedef enum {
    ELEARN_LOG_DEBUG = 0,
    ELEARN_LOG_INFO,
    ELEARN_LOG_WARN,
    ELEARN_LOG_ERROR
} elearn_log_level_t;

/*
 * Sets the minimum level written; lines below it are dropped.  Safe to call
 * from any thread at any time (SIGHUP reload uses it).  Default: info.
 */
void elearn_log_set_level(elearn_log_level_t level);

/* Returns the current minimum level. */
elearn_log_level_t elearn_log_get_level(void);

/*
 * Parses "debug", "info", "warn" (or "warning") or "error" into *level.
 * Returns 0, or -1 if the name is unknown (*level untouched).
 */
int elearn_log_parse_level(const char *name, elearn_log_level_t *level);

/* Returns the lower-case name of a level ("info"). */
const char *elearn_log_level_name(elearn_log_level_t level);

/*
 * Redirects output (tests use a tmpfile); NULL restores stderr.  The stream
 * is not closed by the logger.
 */
void elearn_log_set_stream(FILE *stream);

/*
 * Writes one line at the given level: msg is printf-formatted.  subsystem
 * names the part of the daemon speaking ("consumer", "pg", "metrics").
 */
void elearn_log(elearn_log_level_t level, const char *subsystem,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Like elearn_log(), with extra fields: "fields" is a JSON object whose
 * members are added to the line (ts, level, subsystem and msg cannot be
 * overridden).  The reference to "fields" is always stolen, on every path;
 * NULL means no extra fields.
 */
void elearn_log_fields(elearn_log_level_t level, const char *subsystem,
    json_t *fields, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Renders one log line (without the trailing newline) into a malloc()ed
 * string, or returns NULL on allocation failure.  "fields" is stolen as in
 * elearn_log_fields().  ts_ms is milliseconds since the epoch.  Used by the
 * logger itself and by tests.
 */
char *elearn_log_render(long long ts_ms, elearn_log_level_t level,
    const char *subsystem, const char *msg, json_t *fields);

/*
 * Formats ts_ms (milliseconds since the epoch) as RFC 3339 UTC with
 * milliseconds ("2024-05-01T12:00:00.123Z") into buf (at least 25 bytes).
 * Returns 0, or -1 if buf is too small.
 */
int elearn_log_format_ts(long long ts_ms, char *buf, size_t len);

/*
 * Copies a libpq connection string into buf with every password replaced by
 * "***": the key/value form (password=secret, password='se cret'), the URI
 * form (postgresql://user:secret@host) and a password=... URI parameter.
 * Always NUL-terminates (truncating if needed, never leaking a partial
 * password).  Returns buf, so it can be used inline in a log call.
 */
char *elearn_log_mask_conninfo(const char *conninfo, char *buf, size_t len);

#endif /* ELEARN_LOG_H */
