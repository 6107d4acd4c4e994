/*
 * elearn_daemon: what every daemon's main() does first.
 *
 * Options (-c config-file, -h), the signal handlers (elearn_signal), the
 * configuration file with its ELEARN_* overrides (elearn_config) and the
 * "log.level" key, in that order, so a daemon's main() starts with its own
 * keys.  Errors are logged here as JSON lines.
 */

#ifndef ELEARN_DAEMON_H
#define ELEARN_DAEMON_H

#include "elearn_config.h"

/*
 * Returns the configuration (the caller destroys it), or NULL with
 * *status the exit status: 0 after -h, 2 for a bad option, 1 for a
 * failure.  name is the program's name for the usage line; config is the
 * file read without -c.
 */
elearn_config_t *elearn_daemon_init(
    int argc, char **argv, const char *name, const char *config, int *status);

/*
 * Warns of every key of the file that no elearn_config_get_*() asked for
 * (a typo), naming the file.
 */
void elearn_daemon_warn_unused(elearn_config_t *cfg);

#endif /* ELEARN_DAEMON_H */
