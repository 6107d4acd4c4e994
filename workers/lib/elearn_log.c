/*
 * elearn_log: JSON-line logging for the worker daemons.
 *
 * Lines are built with jansson (so escaping is jansson's, not ours) and
 * written whole with one fwrite() under a mutex: librdkafka calls our log
 * callback from its own threads and the metrics server logs from its thread.
 * The level is an atomic so SIGHUP can change it while other threads log.
 *
 * Must never: log a password (see elearn_log_mask_conninfo()), or block on
 * anything but stderr.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "elearn_log.h"

#define ELEARN_LOG_MSG_MAX 4096

static atomic_int elearn_log_level = ELEARN_LOG_INFO;
static FILE *elearn_log_stream;
static pthread_mutex_t elearn_log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *elearn_log_names[] = {"debug", "info", "warn", "error"};

static void elearn_log_write(elearn_log_level_t level, const char *subsystem,
    json_t *fields, const char *fmt, va_list ap);

void
elearn_log_set_level(elearn_log_level_t level)
{
    atomic_store(&elearn_log_level, (int) level);
}

elearn_log_level_t
elearn_log_get_level(void)
{
    return (elearn_log_level_t) atomic_load(&elearn_log_level);
}

int
elearn_log_parse_level(const char *name, elearn_log_level_t *level)
{
    if (name == NULL) {
        return -1;
    }

    if (strcmp(name, "debug") == 0) {
        *level = ELEARN_LOG_DEBUG;
    } else if (strcmp(name, "info") == 0) {
        *level = ELEARN_LOG_INFO;
    } else if (strcmp(name, "warn") == 0 || strcmp(name, "warning") == 0) {
        *level = ELEARN_LOG_WARN;
    } else if (strcmp(name, "error") == 0) {
        *level = ELEARN_LOG_ERROR;
    } else {
        return -1;
    }

    return 0;
}

const char *
elearn_log_level_name(elearn_log_level_t level)
{
    if ((unsigned) level > ELEARN_LOG_ERROR) {
        return "error";
    }

    return elearn_log_names[level];
}

void
elearn_log_set_stream(FILE *stream)
{
    pthread_mutex_lock(&elearn_log_lock);
    elearn_log_stream = stream;
    pthread_mutex_unlock(&elearn_log_lock);
}

void
elearn_log(
    elearn_log_level_t level, const char *subsystem, const char *fmt, ...)
{
    va_list ap;

    if ((int) level < atomic_load(&elearn_log_level)) {
        return;
    }

    va_start(ap, fmt);
    elearn_log_write(level, subsystem, NULL, fmt, ap);
    va_end(ap);
}

void
elearn_log_fields(elearn_log_level_t level, const char *subsystem,
    json_t *fields, const char *fmt, ...)
{
    va_list ap;

    if ((int) level < atomic_load(&elearn_log_level)) {
        json_decref(fields);
        return;
    }

    va_start(ap, fmt);
    elearn_log_write(level, subsystem, fields, fmt, ap);
    va_end(ap);
}

static void
elearn_log_write(elearn_log_level_t level, const char *subsystem,
    json_t *fields, const char *fmt, va_list ap)
{
    char *line;
    FILE *out;
    char msg[ELEARN_LOG_MSG_MAX];
    struct timespec now;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    clock_gettime(CLOCK_REALTIME, &now);

    line =
        elearn_log_render((long long) now.tv_sec * 1000 + now.tv_nsec / 1000000,
            level, subsystem, msg, fields);
    if (line == NULL) {
        return;
    }

    pthread_mutex_lock(&elearn_log_lock);
    out = elearn_log_stream != NULL ? elearn_log_stream : stderr;
    fputs(line, out);
    fputc('\n', out);
    fflush(out);
    pthread_mutex_unlock(&elearn_log_lock);

    free(line);
}

char *
elearn_log_render(long long ts_ms, elearn_log_level_t level,
    const char *subsystem, const char *msg, json_t *fields)
{
    char *line;
    json_t *obj, *jmsg;
    char ts[32];

    line = NULL;

    if (elearn_log_format_ts(ts_ms, ts, sizeof(ts)) != 0) {
        goto failed;
    }

    /*
     * jansson rejects invalid UTF-8; a message built from bytes off the wire
     * must still produce a line, so fall back to a placeholder.
     */
    jmsg = json_string(msg != NULL ? msg : "");
    if (jmsg == NULL) {
        jmsg = json_string("(message not valid UTF-8)");
    }

    obj = json_object();
    if (obj == NULL) {
        json_decref(jmsg);
        goto failed;
    }

    if (json_object_set_new(obj, "ts", json_string(ts)) != 0
        || json_object_set_new(
               obj, "level", json_string(elearn_log_level_name(level)))
            != 0
        || json_object_set_new(obj, "subsystem",
               json_string(subsystem != NULL ? subsystem : "main"))
            != 0
        || json_object_set_new(obj, "msg", jmsg) != 0)
    {
        json_decref(obj);
        goto failed;
    }

    if (fields != NULL && json_is_object(fields)) {
        json_object_update_missing(obj, fields);
    }

    line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);

failed:

    json_decref(fields);
    return line;
}

int
elearn_log_format_ts(long long ts_ms, char *buf, size_t len)
{
    time_t sec;
    struct tm tm;
    int n;

    sec = (time_t) (ts_ms / 1000);
    if (gmtime_r(&sec, &tm) == NULL) {
        return -1;
    }

    n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
        tm.tm_sec, (int) (ts_ms % 1000));
    if (n < 0 || (size_t) n >= len) {
        return -1;
    }

    return 0;
}

/* --- conninfo masking ---------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len;
    size_t used;
} elearn_log_sbuf_t;

static void
elearn_log_put(elearn_log_sbuf_t *s, const char *p, size_t n)
{
    size_t room;

    if (s->len == 0) {
        return;
    }

    room = s->len - 1 - s->used;
    if (n > room) {
        n = room;
    }

    memcpy(s->buf + s->used, p, n);
    s->used += n;
    s->buf[s->used] = '\0';
}

static void
elearn_log_mask_uri(const char *c, elearn_log_sbuf_t *s)
{
    const char *p, *auth_end, *at, *colon, *q, *amp, *eq;

    p = strstr(c, "://") + 3;
    elearn_log_put(s, c, (size_t) (p - c));

    auth_end = p + strcspn(p, "/?#");

    /* the last '@' of the authority ends the userinfo */
    at = NULL;
    for (q = p; q < auth_end; q++) {
        if (*q == '@') {
            at = q;
        }
    }

    if (at != NULL) {
        colon = memchr(p, ':', (size_t) (at - p));
        if (colon != NULL) {
            elearn_log_put(s, p, (size_t) (colon - p));
            elearn_log_put(s, ":***", 4);
            p = at;
        }
    }

    q = strchr(p, '?');
    if (q == NULL) {
        elearn_log_put(s, p, strlen(p));
        return;
    }

    elearn_log_put(s, p, (size_t) (q + 1 - p));
    p = q + 1;

    for (;;) {
        amp = p + strcspn(p, "&#");
        eq = memchr(p, '=', (size_t) (amp - p));

        if (eq != NULL && (size_t) (eq - p) == 8
            && strncmp(p, "password", 8) == 0) {
            elearn_log_put(s, "password=***", 12);
        } else {
            elearn_log_put(s, p, (size_t) (amp - p));
        }

        if (*amp == '\0') {
            return;
        }

        if (*amp == '#') {
            elearn_log_put(s, amp, strlen(amp));
            return;
        }

        elearn_log_put(s, "&", 1);
        p = amp + 1;
    }
}

static void
elearn_log_mask_kv(const char *c, elearn_log_sbuf_t *s)
{
    const char *p, *kw, *val;
    size_t kwlen;

    p = c;

    while (*p != '\0') {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            elearn_log_put(s, p, 1);
            p++;
            continue;
        }

        kw = p;
        while (*p != '\0' && *p != '=' && *p != ' ' && *p != '\t') {
            p++;
        }
        kwlen = (size_t) (p - kw);

        while (*p == ' ' || *p == '\t') {
            p++;
        }

        if (*p != '=') {
            /* not key=value: copy the word as is */
            elearn_log_put(s, kw, (size_t) (p - kw));
            continue;
        }

        p++;
        while (*p == ' ' || *p == '\t') {
            p++;
        }

        /* the value: 'quoted with \' escapes' or a bare word */
        val = p;
        if (*p == '\'') {
            p++;
            while (*p != '\0' && *p != '\'') {
                if (*p == '\\' && p[1] != '\0') {
                    p++;
                }
                p++;
            }
            if (*p == '\'') {
                p++;
            }
        } else {
            while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\n') {
                if (*p == '\\' && p[1] != '\0') {
                    p++;
                }
                p++;
            }
        }

        if (kwlen == 8 && strncmp(kw, "password", 8) == 0) {
            elearn_log_put(s, "password=***", 12);
        } else {
            elearn_log_put(s, kw, (size_t) (val - kw));
            elearn_log_put(s, val, (size_t) (p - val));
        }
    }
}

char *
elearn_log_mask_conninfo(const char *conninfo, char *buf, size_t len)
{
    elearn_log_sbuf_t s;

    s.buf = buf;
    s.len = len;
    s.used = 0;

    if (len == 0) {
        return buf;
    }

    buf[0] = '\0';

    if (conninfo == NULL) {
        return buf;
    }

    if (strncmp(conninfo, "postgresql://", 13) == 0
        || strncmp(conninfo, "postgres://", 11) == 0)
    {
        elearn_log_mask_uri(conninfo, &s);
    } else {
        elearn_log_mask_kv(conninfo, &s);
    }

    return buf;
}
