/*
 * elearn_signal: the daemons' signal handling, as flags only.
 *
 * Handlers store to volatile sig_atomic_t and nothing else.  The stop flag
 * is sticky: once a daemon decided to stop, nothing un-decides it.
 */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "elearn_signal.h"

static volatile sig_atomic_t elearn_signal_stop;
static volatile sig_atomic_t elearn_signal_reload;

static void
elearn_signal_handler(int signo)
{
    if (signo == SIGHUP) {
        elearn_signal_reload = 1;
    } else {
        elearn_signal_stop = 1;
    }
}

int
elearn_signal_install(char *errstr, size_t errlen)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = elearn_signal_handler;
    sigemptyset(&sa.sa_mask);
    /* no SA_RESTART: a blocking call should return EINTR and look at flags */
    sa.sa_flags = 0;

    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0
        || sigaction(SIGHUP, &sa, NULL) != 0)
    {
        snprintf(errstr, errlen, "signal: sigaction: %s", strerror(errno));
        return -1;
    }

    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        snprintf(errstr, errlen, "signal: sigaction: %s", strerror(errno));
        return -1;
    }

    return 0;
}

int
elearn_signal_stop_requested(void)
{
    return elearn_signal_stop != 0;
}

void
elearn_signal_request_stop(void)
{
    elearn_signal_stop = 1;
}

int
elearn_signal_take_reload(void)
{
    if (elearn_signal_reload == 0) {
        return 0;
    }

    elearn_signal_reload = 0;
    return 1;
}

int
elearn_signal_block_in_thread(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);

    return pthread_sigmask(SIG_BLOCK, &set, NULL) == 0 ? 0 : -1;
}

int
elearn_signal_sleep_ms(long long ms)
{
    long long step;
    struct timespec ts;

    while (ms > 0) {
        if (elearn_signal_stop) {
            return -1;
        }

        step = ms < 50 ? ms : 50;
        ts.tv_sec = 0;
        ts.tv_nsec = step * 1000000L;
        nanosleep(&ts, NULL);
        ms -= step;
    }

    return elearn_signal_stop ? -1 : 0;
}
