/*
 * elearn_config: the daemons' configuration file with environment overrides.
 *
 * A file in config/ holds "key = value" lines; a line whose first non-blank
 * character is '#' is a comment (a '#' elsewhere is part of the value, so
 * passwords may contain it).  Keys are lower case with '.', '_' or '-'.
 * Every key can be overridden from the environment: kafka.brokers by
 * ELEARN_KAFKA_BROKERS, i.e. "ELEARN_" + the key upper-cased with '.' and
 * '-' turned into '_'.  The environment wins over the file, and is read at
 * each lookup, so a reload sees the current environment.
 *
 * Typed getters check values and produce errors that name the key and where
 * the value came from ("kafka.batch.size" (from ELEARN_KAFKA_BATCH_SIZE): ...)
 * so an operator finds the bad line at once.
 *
 * A reload (SIGHUP) is a new elearn_config_create() of the same path: the
 * caller applies what is safe to change live and destroys the old object.
 * Strings returned by the getters live as long as the config object.
 *
 * Must never: log or put a value into an error message (values may be
 * secrets); errors name keys and sources only, plus the offending value for
 * numeric keys, which are never secret.
 */

#ifndef ELEARN_CONFIG_H
#define ELEARN_CONFIG_H

#include <stddef.h>

typedef struct elearn_config_s elearn_config_t;

/*
 * Reads the file at path.  path NULL means "no file": only the environment
 * and defaults count.  Returns the config, or NULL with errstr naming the
 * file and line ("config/x.conf:3: expected key = value").
 */
elearn_config_t *elearn_config_create(
    const char *path, char *errstr, size_t errlen);

/*
 * Parses configuration text (the file's content) as elearn_config_create()
 * does; "origin" names it in errors.  Used by tests.
 */
elearn_config_t *elearn_config_create_from_string(
    const char *text, const char *origin, char *errstr, size_t errlen);

/* Frees the config and every string it returned.  NULL is allowed. */
void elearn_config_destroy(elearn_config_t *cfg);

/* The path the config was read from, or NULL. */
const char *elearn_config_path(const elearn_config_t *cfg);

/*
 * Builds the environment variable name of key ("kafka.brokers" ->
 * "ELEARN_KAFKA_BROKERS") into buf.  Returns 0, or -1 if buf is too small.
 */
int elearn_config_env_name(const char *key, char *buf, size_t len);

/*
 * Looks key up: the environment first, then the file.  Sets *value to the
 * string (owned by cfg) or to def if the key is absent (def may be NULL).
 * Returns 0, or -1 if the key is absent and def is NULL ("required").
 */
int elearn_config_get_str(elearn_config_t *cfg, const char *key,
    const char *def, const char **value, char *errstr, size_t errlen);

/*
 * Integer value in [min, max] (decimal, optional sign).  Absent: *value =
 * def.  Returns 0, or -1 with an error naming the key if the value is not an
 * integer or out of range.
 */
int elearn_config_get_int(elearn_config_t *cfg, const char *key, long long def,
    long long min, long long max, long long *value, char *errstr,
    size_t errlen);

/*
 * Duration in milliseconds in [min_ms, max_ms]: a non-negative integer with
 * a unit, "ms", "s", "m" or "h" ("500ms", "5s", "2m"); "0" alone is allowed.
 * A bare number other than 0 is an error: "5" could mean seconds or
 * milliseconds, and guessing wrong is a silent outage.  Absent: *value =
 * def_ms.  Returns 0 or -1 with an error naming the key.
 */
int elearn_config_get_ms(elearn_config_t *cfg, const char *key,
    long long def_ms, long long min_ms, long long max_ms, long long *value,
    char *errstr, size_t errlen);

/*
 * Boolean: true/false, yes/no, on/off, 1/0.  Absent: *value = def.
 * Returns 0 or -1 with an error naming the key.
 */
int elearn_config_get_bool(elearn_config_t *cfg, const char *key, int def,
    int *value, char *errstr, size_t errlen);

/*
 * Parses a duration string as elearn_config_get_ms() does.  Returns 0, or -1
 * if it is not a valid duration.
 */
int elearn_config_parse_ms(const char *s, long long *ms);

/*
 * Calls fn(ctx, key) for every key of the file that no getter asked for:
 * a typo in a key name otherwise silently falls back to the default.
 * Returns the number of such keys.
 */
int elearn_config_unused(const elearn_config_t *cfg,
    void (*fn)(void *ctx, const char *key), void *ctx);

#endif /* ELEARN_CONFIG_H */
