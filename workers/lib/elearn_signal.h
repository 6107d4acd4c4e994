/*
 * elearn_signal: the daemons' signal handling, as flags only.
 *
 * SIGTERM and SIGINT ask the daemon to stop (drain and exit 0), SIGHUP asks
 * it to reload its configuration, SIGPIPE is ignored (a metrics client that
 * hangs up must not kill the daemon).  The handlers only set sig_atomic_t
 * flags; the main loop polls them.  Nothing else is async-signal-safe.
 *
 * Must never: do work inside a signal handler.
 */

#ifndef ELEARN_SIGNAL_H
#define ELEARN_SIGNAL_H

#include <stddef.h>

/*
 * Installs the handlers.  Returns 0, or -1 with errstr set.
 */
int elearn_signal_install(char *errstr, size_t errlen);

/* Returns non-zero once SIGTERM/SIGINT arrived or a stop was requested. */
int elearn_signal_stop_requested(void);

/* Requests a stop as SIGTERM would (used on fatal errors and in tests). */
void elearn_signal_request_stop(void);

/* Returns non-zero, once, for each SIGHUP received since the last call. */
int elearn_signal_take_reload(void);

/*
 * Blocks the daemons' signals in the calling thread (call it at the start of
 * helper threads) so they are delivered to threads that poll the flags
 * promptly.  Returns 0 or -1.
 */
int elearn_signal_block_in_thread(void);

/*
 * Sleeps up to ms milliseconds, waking early (in <= 50 ms) when a stop is
 * requested.  Returns 0 if no stop was requested, -1 if one was (before,
 * during or by the end of the sleep).
 */
int elearn_signal_sleep_ms(long long ms);

#endif /* ELEARN_SIGNAL_H */
