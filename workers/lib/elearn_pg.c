/*
 * elearn_pg: a small blocking libpq wrapper for the worker daemons.
 *
 * The connection string is passed to PQconnectdbParams() as an expanded
 * dbname after our defaults (connect_timeout=5, application_name), so any
 * value the operator set wins.  Errors from the server carry their SQLSTATE
 * into errstr so a log line says what kind of failure it was.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elearn_log.h"
#include "elearn_pg.h"
#include "elearn_signal.h"

#define ELEARN_PG_BACKOFF_MIN_MS 100
#define ELEARN_PG_BACKOFF_MAX_MS 5000

struct elearn_pg_s {
    PGconn *conn;
    char *conninfo;
    char *appname;
    char masked[1024];
    int last_transient;
};

elearn_pg_t *
elearn_pg_create(const char *conninfo, const char *application_name,
    char *errstr, size_t errlen)
{
    elearn_pg_t *pg;

    pg = calloc(1, sizeof(elearn_pg_t));
    if (pg == NULL) {
        snprintf(errstr, errlen, "pg: out of memory");
        return NULL;
    }

    pg->conninfo = strdup(conninfo);
    pg->appname =
        strdup(application_name != NULL ? application_name : "elearn-worker");
    if (pg->conninfo == NULL || pg->appname == NULL) {
        snprintf(errstr, errlen, "pg: out of memory");
        goto failed;
    }

    elearn_log_mask_conninfo(conninfo, pg->masked, sizeof(pg->masked));
    return pg;

failed:

    elearn_pg_destroy(pg);
    return NULL;
}

void
elearn_pg_destroy(elearn_pg_t *pg)
{
    if (pg == NULL) {
        return;
    }

    if (pg->conn != NULL) {
        PQfinish(pg->conn);
    }

    free(pg->conninfo);
    free(pg->appname);
    free(pg);
}

int
elearn_pg_connected(const elearn_pg_t *pg)
{
    return pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK;
}

PGconn *
elearn_pg_conn(elearn_pg_t *pg)
{
    return pg->conn;
}

const char *
elearn_pg_masked_conninfo(const elearn_pg_t *pg)
{
    return pg->masked;
}

int
elearn_pg_last_transient(const elearn_pg_t *pg)
{
    return pg->last_transient;
}

/* Copies libpq's message without its trailing newline. */
static void
elearn_pg_message(const char *what, const char *sqlstate, const char *msg,
    char *errstr, size_t errlen)
{
    size_t n;

    if (msg == NULL) {
        msg = "";
    }

    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) {
        n--;
    }

    if (sqlstate != NULL) {
        snprintf(
            errstr, errlen, "pg: %s: %s: %.*s", what, sqlstate, (int) n, msg);
    } else {
        snprintf(errstr, errlen, "pg: %s: %.*s", what, (int) n, msg);
    }
}

/* libpq prints notices to stderr itself, which would break the JSON lines */
static void
elearn_pg_notice(void *arg, const char *message)
{
    size_t n;

    n = strlen(message);
    while (n > 0 && message[n - 1] == '\n') {
        n--;
    }

    elearn_log(ELEARN_LOG_DEBUG, "pg", "%.*s", (int) n, message);
}

static int
elearn_pg_try_connect(elearn_pg_t *pg, char *errstr, size_t errlen)
{
    const char *keys[] = {
        "connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", pg->appname, pg->conninfo, NULL};

    if (pg->conn != NULL) {
        PQfinish(pg->conn);
    }

    pg->conn = PQconnectdbParams(keys, vals, 1);
    if (pg->conn == NULL) {
        snprintf(errstr, errlen, "pg: connect: out of memory");
        return -1;
    }

    if (PQstatus(pg->conn) != CONNECTION_OK) {
        elearn_pg_message(
            "connect", NULL, PQerrorMessage(pg->conn), errstr, errlen);
        return -1;
    }

    PQsetNoticeProcessor(pg->conn, elearn_pg_notice, NULL);
    return 0;
}

int
elearn_pg_connect(
    elearn_pg_t *pg, long long max_wait_ms, char *errstr, size_t errlen)
{
    long long waited, backoff;

    if (elearn_pg_connected(pg)) {
        return 0;
    }

    waited = 0;
    backoff = ELEARN_PG_BACKOFF_MIN_MS;

    for (;;) {
        if (elearn_pg_try_connect(pg, errstr, errlen) == 0) {
            elearn_log(ELEARN_LOG_INFO, "pg", "connected to %s", pg->masked);
            return 0;
        }

        /* most connect failures (server down, starting up) pass */
        pg->last_transient = 1;

        elearn_log(ELEARN_LOG_WARN, "pg", "%s (%s); retrying in %lld ms",
            errstr, pg->masked, backoff);

        if (max_wait_ms >= 0 && waited + backoff > max_wait_ms) {
            return -1;
        }

        if (elearn_signal_sleep_ms(backoff) != 0) {
            snprintf(errstr, errlen, "pg: connect: stop requested");
            return -1;
        }

        waited += backoff;
        backoff *= 2;
        if (backoff > ELEARN_PG_BACKOFF_MAX_MS) {
            backoff = ELEARN_PG_BACKOFF_MAX_MS;
        }
    }
}

int
elearn_pg_sqlstate_transient(const char *s)
{
    if (s == NULL || strlen(s) != 5) {
        /* no answer from the server: the connection broke */
        return 1;
    }

    return strncmp(s, "08", 2) == 0 /* connection exception */
        || strcmp(s, "40001") == 0  /* serialization failure */
        || strcmp(s, "40P01") == 0  /* deadlock detected */
        || strncmp(s, "53", 2) == 0 /* insufficient resources */
        || strcmp(s, "57P01") == 0  /* admin shutdown */
        || strcmp(s, "57P02") == 0  /* crash shutdown */
        || strcmp(s, "57P03") == 0  /* cannot connect now */
        || strcmp(s, "57014") == 0  /* query canceled (timeout) */
        || strcmp(s, "55P03") == 0; /* lock not available */
}

PGresult *
elearn_pg_exec(elearn_pg_t *pg, const char *sql, int nparams,
    const char *const *values, char *errstr, size_t errlen)
{
    PGresult *res;
    const char *state;
    ExecStatusType st;

    if (pg->conn == NULL || PQstatus(pg->conn) != CONNECTION_OK) {
        pg->last_transient = 1;
        snprintf(errstr, errlen, "pg: not connected");
        return NULL;
    }

    res = PQexecParams(pg->conn, sql, nparams, NULL, values, NULL, NULL, 0);
    if (res == NULL) {
        pg->last_transient = 1;
        elearn_pg_message(
            "exec", NULL, PQerrorMessage(pg->conn), errstr, errlen);
        return NULL;
    }

    st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        return res;
    }

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    pg->last_transient = PQstatus(pg->conn) != CONNECTION_OK
        || elearn_pg_sqlstate_transient(state);
    elearn_pg_message("exec", state, PQresultErrorMessage(res), errstr, errlen);
    PQclear(res);
    return NULL;
}

int
elearn_pg_command(elearn_pg_t *pg, const char *sql, int nparams,
    const char *const *values, char *errstr, size_t errlen)
{
    PGresult *res;

    res = elearn_pg_exec(pg, sql, nparams, values, errstr, errlen);
    if (res == NULL) {
        return -1;
    }

    PQclear(res);
    return 0;
}

int
elearn_pg_begin(elearn_pg_t *pg, char *errstr, size_t errlen)
{
    return elearn_pg_command(pg, "BEGIN", 0, NULL, errstr, errlen);
}

int
elearn_pg_commit(elearn_pg_t *pg, char *errstr, size_t errlen)
{
    /*
     * A COMMIT whose answer is lost leaves us not knowing whether the rows
     * are in: the message is retried, which is why handlers must be
     * idempotent (ON CONFLICT).
     */
    return elearn_pg_command(pg, "COMMIT", 0, NULL, errstr, errlen);
}

int
elearn_pg_rollback(elearn_pg_t *pg)
{
    char err[256];

    if (pg->conn == NULL || PQstatus(pg->conn) != CONNECTION_OK) {
        return -1;
    }

    return elearn_pg_command(pg, "ROLLBACK", 0, NULL, err, sizeof(err));
}
