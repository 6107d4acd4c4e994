/*
 * elearn_config: the daemons' configuration file with environment overrides.
 *
 * The file is parsed once into a small array of entries (a daemon has tens
 * of keys, so a linear search is the simplest correct thing).  Values taken
 * from the environment are copied into the entry, so every string handed out
 * lives exactly as long as the config object, whatever setenv() does later.
 *
 * Must never: put a string value into an error or a log line (it may be a
 * password); errors name the key and its source.
 */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elearn_config.h"

#define ELEARN_CONFIG_KEY_MAX 128

typedef struct {
    char *key;
    char *value;     /* from the file, NULL if only asked for */
    char *env_value; /* copy of the environment's value at the last lookup */
    int line;
    int used;
} elearn_config_entry_t;

struct elearn_config_s {
    char *path;
    char *origin;
    elearn_config_entry_t *entries;
    size_t nentries;
    size_t cap;
};

static int elearn_config_parse(
    elearn_config_t *cfg, const char *text, char *errstr, size_t errlen);
static elearn_config_entry_t *elearn_config_entry(
    elearn_config_t *cfg, const char *key, int add);
static int elearn_config_lookup(elearn_config_t *cfg, const char *key,
    const char **value, char *src, size_t srclen);

elearn_config_t *
elearn_config_create(const char *path, char *errstr, size_t errlen)
{
    FILE *f;
    long size;
    char *text;
    elearn_config_t *cfg;

    if (path == NULL) {
        return elearn_config_create_from_string(
            "", "(no file)", errstr, errlen);
    }

    text = NULL;
    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(errstr, errlen, "config: cannot open %s: %s", path,
            strerror(errno));
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        snprintf(errstr, errlen, "config: cannot read %s: %s", path,
            strerror(errno));
        goto failed;
    }

    text = malloc((size_t) size + 1);
    if (text == NULL) {
        snprintf(errstr, errlen, "config: out of memory");
        goto failed;
    }

    if (fread(text, 1, (size_t) size, f) != (size_t) size) {
        snprintf(errstr, errlen, "config: cannot read %s", path);
        goto failed;
    }

    text[size] = '\0';
    fclose(f);
    f = NULL;

    cfg = elearn_config_create_from_string(text, path, errstr, errlen);
    free(text);
    text = NULL;

    if (cfg == NULL) {
        return NULL;
    }

    cfg->path = strdup(path);
    if (cfg->path == NULL) {
        snprintf(errstr, errlen, "config: out of memory");
        elearn_config_destroy(cfg);
        return NULL;
    }

    return cfg;

failed:

    free(text);
    if (f != NULL) {
        fclose(f);
    }
    return NULL;
}

elearn_config_t *
elearn_config_create_from_string(
    const char *text, const char *origin, char *errstr, size_t errlen)
{
    elearn_config_t *cfg;

    cfg = calloc(1, sizeof(elearn_config_t));
    if (cfg == NULL) {
        snprintf(errstr, errlen, "config: out of memory");
        return NULL;
    }

    cfg->origin = strdup(origin != NULL ? origin : "(string)");
    if (cfg->origin == NULL) {
        snprintf(errstr, errlen, "config: out of memory");
        goto failed;
    }

    if (elearn_config_parse(cfg, text, errstr, errlen) != 0) {
        goto failed;
    }

    return cfg;

failed:

    elearn_config_destroy(cfg);
    return NULL;
}

void
elearn_config_destroy(elearn_config_t *cfg)
{
    size_t i;

    if (cfg == NULL) {
        return;
    }

    for (i = 0; i < cfg->nentries; i++) {
        free(cfg->entries[i].key);
        free(cfg->entries[i].value);
        free(cfg->entries[i].env_value);
    }

    free(cfg->entries);
    free(cfg->path);
    free(cfg->origin);
    free(cfg);
}

const char *
elearn_config_path(const elearn_config_t *cfg)
{
    return cfg->path;
}

int
elearn_config_env_name(const char *key, char *buf, size_t len)
{
    size_t i, n;

    n = strlen(key);
    if (len < sizeof("ELEARN_") + n) {
        return -1;
    }

    memcpy(buf, "ELEARN_", 7);

    for (i = 0; i < n; i++) {
        if (key[i] == '.' || key[i] == '-') {
            buf[7 + i] = '_';
        } else {
            buf[7 + i] = (char) toupper((unsigned char) key[i]);
        }
    }

    buf[7 + n] = '\0';
    return 0;
}

static int
elearn_config_valid_key(const char *k, size_t n)
{
    size_t i;

    if (n == 0 || n >= ELEARN_CONFIG_KEY_MAX) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (!(islower((unsigned char) k[i]) || isdigit((unsigned char) k[i])
                || k[i] == '.' || k[i] == '_' || k[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}

static int
elearn_config_parse(
    elearn_config_t *cfg, const char *text, char *errstr, size_t errlen)
{
    const char *p, *eol, *eq, *ks, *ke, *vs, *ve;
    int line;
    elearn_config_entry_t *e;

    line = 0;

    for (p = text; *p != '\0'; p = *eol != '\0' ? eol + 1 : eol) {
        line++;
        eol = p + strcspn(p, "\n");

        ks = p;
        while (ks < eol && isspace((unsigned char) *ks)) {
            ks++;
        }

        if (ks == eol || *ks == '#') {
            continue;
        }

        eq = memchr(ks, '=', (size_t) (eol - ks));
        if (eq == NULL) {
            snprintf(errstr, errlen, "%s:%d: expected \"key = value\"",
                cfg->origin, line);
            return -1;
        }

        ke = eq;
        while (ke > ks && isspace((unsigned char) ke[-1])) {
            ke--;
        }

        if (!elearn_config_valid_key(ks, (size_t) (ke - ks))) {
            snprintf(errstr, errlen,
                "%s:%d: invalid key (lower-case letters, digits, '.', '_', "
                "'-')",
                cfg->origin, line);
            return -1;
        }

        vs = eq + 1;
        while (vs < eol && isspace((unsigned char) *vs)) {
            vs++;
        }

        ve = eol;
        while (ve > vs && isspace((unsigned char) ve[-1])) {
            ve--;
        }

        {
            char key[ELEARN_CONFIG_KEY_MAX];

            memcpy(key, ks, (size_t) (ke - ks));
            key[ke - ks] = '\0';

            e = elearn_config_entry(cfg, key, 0);
            if (e != NULL) {
                snprintf(errstr, errlen,
                    "%s:%d: duplicate key \"%s\" (first on line %d)",
                    cfg->origin, line, key, e->line);
                return -1;
            }

            e = elearn_config_entry(cfg, key, 1);
            if (e == NULL) {
                snprintf(errstr, errlen, "config: out of memory");
                return -1;
            }
        }

        e->line = line;
        e->value = strndup(vs, (size_t) (ve - vs));
        if (e->value == NULL) {
            snprintf(errstr, errlen, "config: out of memory");
            return -1;
        }
    }

    return 0;
}

static elearn_config_entry_t *
elearn_config_entry(elearn_config_t *cfg, const char *key, int add)
{
    size_t i, cap;
    elearn_config_entry_t *e;

    for (i = 0; i < cfg->nentries; i++) {
        if (strcmp(cfg->entries[i].key, key) == 0) {
            return &cfg->entries[i];
        }
    }

    if (!add) {
        return NULL;
    }

    if (cfg->nentries == cfg->cap) {
        cap = cfg->cap != 0 ? cfg->cap * 2 : 16;
        e = realloc(cfg->entries, cap * sizeof(elearn_config_entry_t));
        if (e == NULL) {
            return NULL;
        }
        cfg->entries = e;
        cfg->cap = cap;
    }

    e = &cfg->entries[cfg->nentries];
    memset(e, 0, sizeof(elearn_config_entry_t));

    e->key = strdup(key);
    if (e->key == NULL) {
        return NULL;
    }

    cfg->nentries++;
    return e;
}

/*
 * Finds the value of key and describes where it came from in src, for
 * errors.  Returns 1 if found, 0 if absent, -1 on allocation failure.
 */
static int
elearn_config_lookup(elearn_config_t *cfg, const char *key, const char **value,
    char *src, size_t srclen)
{
    const char *env;
    elearn_config_entry_t *e;
    char name[ELEARN_CONFIG_KEY_MAX + 8];

    e = elearn_config_entry(cfg, key, 1);
    if (e == NULL) {
        return -1;
    }

    e->used = 1;

    if (elearn_config_env_name(key, name, sizeof(name)) == 0) {
        env = getenv(name);
        if (env != NULL) {
            if (e->env_value == NULL || strcmp(e->env_value, env) != 0) {
                free(e->env_value);
                e->env_value = strdup(env);
                if (e->env_value == NULL) {
                    return -1;
                }
            }

            snprintf(src, srclen, "from %s", name);
            *value = e->env_value;
            return 1;
        }
    }

    if (e->value != NULL) {
        snprintf(src, srclen, "%s:%d", cfg->origin, e->line);
        *value = e->value;
        return 1;
    }

    snprintf(src, srclen, "default");
    return 0;
}

int
elearn_config_get_str(elearn_config_t *cfg, const char *key, const char *def,
    const char **value, char *errstr, size_t errlen)
{
    int rc;
    char src[256], name[ELEARN_CONFIG_KEY_MAX + 8];

    rc = elearn_config_lookup(cfg, key, value, src, sizeof(src));
    if (rc < 0) {
        snprintf(errstr, errlen, "config: out of memory");
        return -1;
    }

    if (rc == 1) {
        return 0;
    }

    if (def == NULL) {
        if (elearn_config_env_name(key, name, sizeof(name)) != 0) {
            name[0] = '\0';
        }
        snprintf(errstr, errlen,
            "config: \"%s\" is required (set it in %s or %s)", key, cfg->origin,
            name);
        return -1;
    }

    *value = def;
    return 0;
}

int
elearn_config_get_int(elearn_config_t *cfg, const char *key, long long def,
    long long min, long long max, long long *value, char *errstr, size_t errlen)
{
    int rc;
    char *end;
    long long v;
    const char *s;
    char src[256];

    rc = elearn_config_lookup(cfg, key, &s, src, sizeof(src));
    if (rc < 0) {
        snprintf(errstr, errlen, "config: out of memory");
        return -1;
    }

    if (rc == 0) {
        *value = def;
        return 0;
    }

    errno = 0;
    v = strtoll(s, &end, 10);
    if (*s == '\0' || isspace((unsigned char) *s) || *end != '\0'
        || errno == ERANGE)
    {
        snprintf(errstr, errlen,
            "config: \"%s\" (%s): \"%.32s\" is not an "
            "integer",
            key, src, s);
        return -1;
    }

    if (v < min || v > max) {
        snprintf(errstr, errlen,
            "config: \"%s\" (%s): %lld is out of range [%lld, %lld]", key, src,
            v, min, max);
        return -1;
    }

    *value = v;
    return 0;
}

int
elearn_config_parse_ms(const char *s, long long *ms)
{
    char *end;
    long long v, mul;

    if (!isdigit((unsigned char) *s)) {
        return -1;
    }

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno == ERANGE) {
        return -1;
    }

    if (strcmp(end, "ms") == 0) {
        mul = 1;
    } else if (strcmp(end, "s") == 0) {
        mul = 1000;
    } else if (strcmp(end, "m") == 0) {
        mul = 60 * 1000;
    } else if (strcmp(end, "h") == 0) {
        mul = 3600 * 1000;
    } else if (*end == '\0' && v == 0) {
        mul = 1;
    } else {
        return -1;
    }

    if (v > (long long) (9.2e18 / (double) mul)) {
        return -1;
    }

    *ms = v * mul;
    return 0;
}

int
elearn_config_get_ms(elearn_config_t *cfg, const char *key, long long def_ms,
    long long min_ms, long long max_ms, long long *value, char *errstr,
    size_t errlen)
{
    int rc;
    long long v;
    const char *s;
    char src[256];

    rc = elearn_config_lookup(cfg, key, &s, src, sizeof(src));
    if (rc < 0) {
        snprintf(errstr, errlen, "config: out of memory");
        return -1;
    }

    if (rc == 0) {
        *value = def_ms;
        return 0;
    }

    if (elearn_config_parse_ms(s, &v) != 0) {
        snprintf(errstr, errlen,
            "config: \"%s\" (%s): \"%.32s\" is not a duration (a number "
            "with ms, s, m or h: \"500ms\", \"5s\")",
            key, src, s);
        return -1;
    }

    if (v < min_ms || v > max_ms) {
        snprintf(errstr, errlen,
            "config: \"%s\" (%s): %lldms is out of range [%lldms, %lldms]", key,
            src, v, min_ms, max_ms);
        return -1;
    }

    *value = v;
    return 0;
}

int
elearn_config_get_bool(elearn_config_t *cfg, const char *key, int def,
    int *value, char *errstr, size_t errlen)
{
    int rc;
    const char *s;
    char src[256];

    rc = elearn_config_lookup(cfg, key, &s, src, sizeof(src));
    if (rc < 0) {
        snprintf(errstr, errlen, "config: out of memory");
        return -1;
    }

    if (rc == 0) {
        *value = def;
        return 0;
    }

    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0
        || strcmp(s, "1") == 0)
    {
        *value = 1;
    } else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0
        || strcmp(s, "off") == 0 || strcmp(s, "0") == 0)
    {
        *value = 0;
    } else {
        snprintf(errstr, errlen,
            "config: \"%s\" (%s): \"%.32s\" is not a boolean (true/false, "
            "yes/no, on/off, 1/0)",
            key, src, s);
        return -1;
    }

    return 0;
}

int
elearn_config_unused(const elearn_config_t *cfg,
    void (*fn)(void *ctx, const char *key), void *ctx)
{
    int n;
    size_t i;

    n = 0;

    for (i = 0; i < cfg->nentries; i++) {
        if (cfg->entries[i].value != NULL && !cfg->entries[i].used) {
            fn(ctx, cfg->entries[i].key);
            n++;
        }
    }

    return n;
}
