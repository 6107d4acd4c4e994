/*
 * elearn_pg: a small blocking libpq wrapper for the worker daemons.
 *
 * Daemons may block (they are not nginx), so this is plain synchronous
 * libpq: connect with exponential backoff (and a connect_timeout, so a dead
 * host does not hang a connect forever), parameterised statements only, and
 * BEGIN/COMMIT/ROLLBACK helpers.  Each failure is classified as transient
 * (connection lost, serialization failure, deadlock, server shutting down:
 * trying again can succeed) or permanent (bad data, constraint violation:
 * trying again gives the same answer), which is exactly the RETRY/FAIL
 * choice a consumer handler has to make.
 *
 * Must never: log the connection string unmasked, or build SQL from data.
 */

#ifndef ELEARN_PG_H
#define ELEARN_PG_H

#include <stddef.h>

#include <libpq-fe.h>

typedef struct elearn_pg_s elearn_pg_t;

/*
 * Creates a handle for conninfo (key/value or URI form) without connecting.
 * application_name may be NULL.  Returns the handle or NULL with errstr set.
 */
elearn_pg_t *elearn_pg_create(const char *conninfo,
    const char *application_name, char *errstr, size_t errlen);

/* Closes the connection and frees the handle.  NULL is allowed. */
void elearn_pg_destroy(elearn_pg_t *pg);

/*
 * Connects (or reconnects, if the connection is bad), retrying with
 * exponential backoff from 100 ms up to 5 s, logging each failure (with the
 * password masked).  Gives up after max_wait_ms (-1: never) or when a stop
 * was requested (elearn_signal).  Returns 0 when connected, -1 otherwise
 * with errstr set.  A healthy connection returns 0 at once.
 */
int elearn_pg_connect(
    elearn_pg_t *pg, long long max_wait_ms, char *errstr, size_t errlen);

/* Returns non-zero if the connection is up as far as libpq knows. */
int elearn_pg_connected(const elearn_pg_t *pg);

/*
 * Runs one parameterised statement (text parameters, NULL for SQL NULL).
 * Returns the result (PGRES_COMMAND_OK or PGRES_TUPLES_OK), which the
 * caller must PQclear(), or NULL with errstr set ("pg: 22P02: invalid input
 * syntax for type uuid ...") and the failure classified (see
 * elearn_pg_last_transient()).
 */
PGresult *elearn_pg_exec(elearn_pg_t *pg, const char *sql, int nparams,
    const char *const *values, char *errstr, size_t errlen);

/* elearn_pg_exec() for statements whose result is not needed: 0 or -1. */
int elearn_pg_command(elearn_pg_t *pg, const char *sql, int nparams,
    const char *const *values, char *errstr, size_t errlen);

/* BEGIN, COMMIT and ROLLBACK.  Each returns 0 or -1 with errstr set. */
int elearn_pg_begin(elearn_pg_t *pg, char *errstr, size_t errlen);
int elearn_pg_commit(elearn_pg_t *pg, char *errstr, size_t errlen);

/*
 * ROLLBACK, for failure paths: never fails loudly (a lost connection has
 * rolled back already); returns 0 or -1.
 */
int elearn_pg_rollback(elearn_pg_t *pg);

/*
 * Returns 1 if the last failure of elearn_pg_exec()/commit/connect was
 * transient (worth retrying), 0 if permanent.
 */
int elearn_pg_last_transient(const elearn_pg_t *pg);

/*
 * Returns 1 if a SQLSTATE (5 characters, may be NULL for "no server
 * answer") names a transient failure, 0 otherwise.
 */
int elearn_pg_sqlstate_transient(const char *sqlstate);

/* The connection string with its password masked, for logs. */
const char *elearn_pg_masked_conninfo(const elearn_pg_t *pg);

/* The underlying connection (NULL before the first connect). */
PGconn *elearn_pg_conn(elearn_pg_t *pg);

#endif /* ELEARN_PG_H */
