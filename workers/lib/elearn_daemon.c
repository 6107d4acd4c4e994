/*
 * elearn_daemon: the common start of the daemons (see elearn_daemon.h).
 */

#include <stdio.h>
#include <unistd.h>

#include "elearn_daemon.h"
#include "elearn_log.h"
#include "elearn_signal.h"

elearn_config_t *
elearn_daemon_init(
    int argc, char **argv, const char *name, const char *config, int *status)
{
    int opt;
    const char *path, *level_name;
    elearn_config_t *cfg;
    elearn_log_level_t level;
    char err[1024];

    path = config;
    *status = 1;

    while ((opt = getopt(argc, argv, "c:h")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            fprintf(stderr, "usage: %s [-c config-file]\n", name);
            *status = 0;
            return NULL;
        default:
            fprintf(stderr, "usage: %s [-c config-file]\n", name);
            *status = 2;
            return NULL;
        }
    }

    if (elearn_signal_install(err, sizeof(err)) != 0) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        return NULL;
    }

    cfg = elearn_config_create(path, err, sizeof(err));
    if (cfg == NULL) {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        return NULL;
    }

    if (elearn_config_get_str(
            cfg, "log.level", "info", &level_name, err, sizeof(err))
        != 0)
    {
        elearn_log(ELEARN_LOG_ERROR, "main", "%s", err);
        elearn_config_destroy(cfg);
        return NULL;
    }

    if (elearn_log_parse_level(level_name, &level) != 0) {
        elearn_log(ELEARN_LOG_ERROR, "main",
            "config: \"log.level\" must be debug, info, warn or error");
        elearn_config_destroy(cfg);
        return NULL;
    }

    elearn_log_set_level(level);

    return cfg;
}

static void
elearn_daemon_unused(void *ctx, const char *key)
{
    elearn_log(ELEARN_LOG_WARN, "main",
        "config: unknown key \"%s\" in %s (typo?)", key, (const char *) ctx);
}

void
elearn_daemon_warn_unused(elearn_config_t *cfg)
{
    elearn_config_unused(
        cfg, elearn_daemon_unused, (void *) elearn_config_path(cfg));
}
