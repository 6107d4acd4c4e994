/*
 * test_config: elearn_config's parsing, environment overrides, typed getters
 * and the errors they give (which must name the key and its source), and
 * elearn_consumer_conf_load() on top of it.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "elearn_config.h"
#include "elearn_consumer.h"

static elearn_config_t *
parse(const char *text)
{
    elearn_config_t *cfg;
    char err[256];

    cfg = elearn_config_create_from_string(text, "t.conf", err, sizeof(err));
    if (cfg == NULL) {
        fail_msg("parse failed: %s", err);
    }

    return cfg;
}

static void
test_parse_basic(void **state)
{
    const char *v;
    elearn_config_t *cfg;
    char err[256];

    cfg = parse("# comment\n"
                "   # indented comment\n"
                "\n"
                "kafka.brokers = 127.0.0.1:9092\n"
                "  pg.conninfo=host=x password=a#b c  \n"
                "empty.value =\n");

    assert_int_equal(
        elearn_config_get_str(cfg, "kafka.brokers", NULL, &v, err, sizeof(err)),
        0);
    assert_string_equal(v, "127.0.0.1:9092");

    /* '#' inside a value is data; surrounding blanks are trimmed */
    assert_int_equal(
        elearn_config_get_str(cfg, "pg.conninfo", NULL, &v, err, sizeof(err)),
        0);
    assert_string_equal(v, "host=x password=a#b c");

    assert_int_equal(
        elearn_config_get_str(cfg, "empty.value", NULL, &v, err, sizeof(err)),
        0);
    assert_string_equal(v, "");

    assert_int_equal(
        elearn_config_get_str(cfg, "absent", "dflt", &v, err, sizeof(err)), 0);
    assert_string_equal(v, "dflt");

    elearn_config_destroy(cfg);
}

static void
test_required_missing(void **state)
{
    const char *v;
    elearn_config_t *cfg;
    char err[256];

    unsetenv("ELEARN_KAFKA_GROUP_ID");
    cfg = parse("");
    assert_int_equal(elearn_config_get_str(
                         cfg, "kafka.group.id", NULL, &v, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "\"kafka.group.id\" is required"));
    assert_non_null(strstr(err, "ELEARN_KAFKA_GROUP_ID"));
    elearn_config_destroy(cfg);
}

static void
test_syntax_errors(void **state)
{
    elearn_config_t *cfg;
    char err[256];

    cfg = elearn_config_create_from_string(
        "a = 1\nno equals sign\n", "x.conf", err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "x.conf:2:"));

    cfg = elearn_config_create_from_string(
        "Bad.Key = 1\n", "x.conf", err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "x.conf:1: invalid key"));

    cfg = elearn_config_create_from_string(
        "a = 1\n\na = 2\n", "x.conf", err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "x.conf:3: duplicate key \"a\""));
    assert_non_null(strstr(err, "line 1"));
}

static void
test_env_name(void **state)
{
    char buf[64];

    assert_int_equal(
        elearn_config_env_name("kafka.brokers", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "ELEARN_KAFKA_BROKERS");

    assert_int_equal(
        elearn_config_env_name("consumer.retry-backoff.max", buf, sizeof(buf)),
        0);
    assert_string_equal(buf, "ELEARN_CONSUMER_RETRY_BACKOFF_MAX");

    assert_int_equal(elearn_config_env_name("kafka.brokers", buf, 10), -1);
}

static void
test_env_override(void **state)
{
    const char *v;
    long long n;
    elearn_config_t *cfg;
    char err[256];

    cfg = parse("kafka.brokers = file:1\nmetrics.port = 9000\n");

    setenv("ELEARN_KAFKA_BROKERS", "env:2", 1);
    assert_int_equal(
        elearn_config_get_str(cfg, "kafka.brokers", NULL, &v, err, sizeof(err)),
        0);
    assert_string_equal(v, "env:2");

    /* the environment is read at each lookup (a reload sees changes) */
    setenv("ELEARN_KAFKA_BROKERS", "env:3", 1);
    assert_int_equal(
        elearn_config_get_str(cfg, "kafka.brokers", NULL, &v, err, sizeof(err)),
        0);
    assert_string_equal(v, "env:3");

    unsetenv("ELEARN_KAFKA_BROKERS");
    assert_int_equal(
        elearn_config_get_str(cfg, "kafka.brokers", NULL, &v, err, sizeof(err)),
        0);
    assert_string_equal(v, "file:1");

    /* a key absent from the file can still come from the environment */
    setenv("ELEARN_ONLY_IN_ENV", "42", 1);
    assert_int_equal(elearn_config_get_int(
                         cfg, "only.in.env", 0, 0, 100, &n, err, sizeof(err)),
        0);
    assert_int_equal(n, 42);
    unsetenv("ELEARN_ONLY_IN_ENV");

    /* a bad environment value is reported with the variable's name */
    setenv("ELEARN_METRICS_PORT", "80x", 1);
    assert_int_equal(elearn_config_get_int(cfg, "metrics.port", 0, 0, 65535, &n,
                         err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "\"metrics.port\""));
    assert_non_null(strstr(err, "from ELEARN_METRICS_PORT"));
    unsetenv("ELEARN_METRICS_PORT");

    elearn_config_destroy(cfg);
}

static void
test_int(void **state)
{
    long long n;
    elearn_config_t *cfg;
    char err[256];

    cfg = parse("a = 12\nb = -3\nc = 1e3\nd = 99999\ne = \nf = 12 \n");

    assert_int_equal(
        elearn_config_get_int(cfg, "a", 0, 0, 100, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 12);
    assert_int_equal(
        elearn_config_get_int(cfg, "b", 0, -10, 10, &n, err, sizeof(err)), 0);
    assert_int_equal(n, -3);
    assert_int_equal(
        elearn_config_get_int(cfg, "zz", 7, 0, 10, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 7);
    /* trailing blanks are trimmed by the parser */
    assert_int_equal(
        elearn_config_get_int(cfg, "f", 0, 0, 100, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 12);

    assert_int_equal(
        elearn_config_get_int(cfg, "c", 0, 0, 10000, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"c\" (t.conf:3)"));
    assert_non_null(strstr(err, "not an integer"));

    assert_int_equal(
        elearn_config_get_int(cfg, "d", 0, 0, 65535, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"d\""));
    assert_non_null(strstr(err, "out of range [0, 65535]"));

    assert_int_equal(
        elearn_config_get_int(cfg, "e", 0, 0, 1, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"e\""));

    elearn_config_destroy(cfg);
}

static void
test_parse_ms(void **state)
{
    long long ms;

    assert_int_equal(elearn_config_parse_ms("500ms", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(elearn_config_parse_ms("5s", &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(elearn_config_parse_ms("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(elearn_config_parse_ms("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(elearn_config_parse_ms("0", &ms), 0);
    assert_int_equal(ms, 0);

    /* a bare number is ambiguous, and so are these */
    assert_int_equal(elearn_config_parse_ms("5", &ms), -1);
    assert_int_equal(elearn_config_parse_ms("-5s", &ms), -1);
    assert_int_equal(elearn_config_parse_ms("5 s", &ms), -1);
    assert_int_equal(elearn_config_parse_ms("1.5s", &ms), -1);
    assert_int_equal(elearn_config_parse_ms("s", &ms), -1);
    assert_int_equal(elearn_config_parse_ms("", &ms), -1);
    assert_int_equal(elearn_config_parse_ms("5d", &ms), -1);
    assert_int_equal(elearn_config_parse_ms("99999999999999999h", &ms), -1);
}

static void
test_get_ms(void **state)
{
    long long ms;
    elearn_config_t *cfg;
    char err[256];

    cfg = parse("t1 = 250ms\nt2 = 5\nt3 = 2h\n");

    assert_int_equal(
        elearn_config_get_ms(cfg, "t1", 0, 0, 1000, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 250);

    assert_int_equal(
        elearn_config_get_ms(cfg, "t2", 0, 0, 1000, &ms, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"t2\" (t.conf:2)"));
    assert_non_null(strstr(err, "not a duration"));

    assert_int_equal(
        elearn_config_get_ms(cfg, "t3", 0, 0, 60000, &ms, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "\"t3\""));
    assert_non_null(strstr(err, "out of range"));

    assert_int_equal(elearn_config_get_ms(
                         cfg, "absent", 1234, 0, 60000, &ms, err, sizeof(err)),
        0);
    assert_int_equal(ms, 1234);

    elearn_config_destroy(cfg);
}

static void
test_bool(void **state)
{
    int b;
    elearn_config_t *cfg;
    char err[256];

    cfg = parse("a = yes\nb = off\nc = maybe\n");

    assert_int_equal(
        elearn_config_get_bool(cfg, "a", 0, &b, err, sizeof(err)), 0);
    assert_int_equal(b, 1);
    assert_int_equal(
        elearn_config_get_bool(cfg, "b", 1, &b, err, sizeof(err)), 0);
    assert_int_equal(b, 0);
    assert_int_equal(
        elearn_config_get_bool(cfg, "c", 0, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"c\""));
    assert_non_null(strstr(err, "not a boolean"));

    elearn_config_destroy(cfg);
}

static void
count_unused(void *ctx, const char *key)
{
    assert_string_equal(key, "kafka.brokrs");
    (*(int *) ctx)++;
}

static void
test_unused_keys(void **state)
{
    int n;
    const char *v;
    elearn_config_t *cfg;
    char err[256];

    cfg = parse("kafka.brokrs = typo\nlog.level = info\n");
    elearn_config_get_str(cfg, "log.level", NULL, &v, err, sizeof(err));
    elearn_config_get_str(cfg, "kafka.brokers", "x", &v, err, sizeof(err));

    n = 0;
    assert_int_equal(elearn_config_unused(cfg, count_unused, &n), 1);
    assert_int_equal(n, 1);

    elearn_config_destroy(cfg);
}

static void
test_file(void **state)
{
    FILE *f;
    const char *v;
    elearn_config_t *cfg;
    char path[] = "/tmp/elearn-test-config-XXXXXX", err[256];
    int fd;

    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs("kafka.topics = a, b\n", f);
    fclose(f);

    cfg = elearn_config_create(path, err, sizeof(err));
    assert_non_null(cfg);
    assert_string_equal(elearn_config_path(cfg), path);
    assert_int_equal(
        elearn_config_get_str(cfg, "kafka.topics", NULL, &v, err, sizeof(err)),
        0);
    assert_string_equal(v, "a, b");
    elearn_config_destroy(cfg);
    unlink(path);

    cfg = elearn_config_create("/nonexistent/x.conf", err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "/nonexistent/x.conf"));
}

static void
test_consumer_conf(void **state)
{
    elearn_config_t *cfg;
    elearn_consumer_conf_t conf;
    char err[256];

    unsetenv("ELEARN_KAFKA_BROKERS");
    unsetenv("ELEARN_CONSUMER_RETRY_ATTEMPTS");

    cfg = parse("kafka.brokers = b:1\nkafka.group.id = g\n"
                "kafka.topics = t\nconsumer.batch.timeout = 2s\n");
    assert_int_equal(
        elearn_consumer_conf_load(&conf, cfg, err, sizeof(err)), 0);
    assert_string_equal(conf.brokers, "b:1");
    assert_string_equal(conf.offset_reset, "earliest");
    assert_int_equal(conf.retry_attempts, 3);
    assert_int_equal(conf.retry_backoff_ms, 200);
    assert_int_equal(conf.batch_timeout_ms, 2000);
    assert_int_equal(conf.batch_size, 100);

    setenv("ELEARN_CONSUMER_RETRY_ATTEMPTS", "0", 1);
    assert_int_equal(
        elearn_consumer_conf_load(&conf, cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"consumer.retry.attempts\""));
    assert_non_null(strstr(err, "ELEARN_CONSUMER_RETRY_ATTEMPTS"));
    unsetenv("ELEARN_CONSUMER_RETRY_ATTEMPTS");
    elearn_config_destroy(cfg);

    cfg = parse("kafka.brokers = b:1\nkafka.topics = t\n");
    unsetenv("ELEARN_KAFKA_GROUP_ID");
    assert_int_equal(
        elearn_consumer_conf_load(&conf, cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"kafka.group.id\" is required"));
    elearn_config_destroy(cfg);
}

static void
test_backoff(void **state)
{
    assert_int_equal(elearn_consumer_backoff_ms(200, 5000, 1), 200);
    assert_int_equal(elearn_consumer_backoff_ms(200, 5000, 2), 400);
    assert_int_equal(elearn_consumer_backoff_ms(200, 5000, 3), 800);
    assert_int_equal(elearn_consumer_backoff_ms(200, 5000, 10), 5000);
    assert_int_equal(elearn_consumer_backoff_ms(200, 5000, 1000), 5000);
    assert_int_equal(elearn_consumer_backoff_ms(0, 5000, 3), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_basic),
        cmocka_unit_test(test_required_missing),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_env_name),
        cmocka_unit_test(test_env_override),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_parse_ms),
        cmocka_unit_test(test_get_ms),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_unused_keys),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_consumer_conf),
        cmocka_unit_test(test_backoff),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
