/*
 * test_log: elearn_log's JSON lines (escaping, fields, levels, timestamps)
 * and the conninfo password masking.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "elearn_log.h"

static void
test_ts(void **state)
{
    char buf[32];

    assert_int_equal(elearn_log_format_ts(0, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    assert_int_equal(
        elearn_log_format_ts(1714564800123LL, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "2024-05-01T12:00:00.123Z");
    assert_int_equal(elearn_log_format_ts(0, buf, 10), -1);
}

static void
test_render_escaping(void **state)
{
    char *line;
    json_t *obj;
    json_error_t jerr;
    const char *nasty = "quote \" backslash \\ newline \n tab \t ctl \x01 "
                        "utf8 \xc3\xa9";

    line = elearn_log_render(1714564800123LL, ELEARN_LOG_WARN, "consumer",
        nasty, json_pack("{s:s, s:i}", "topic", "a\"b", "partition", 2));
    assert_non_null(line);

    /* one line, valid JSON, and the message comes back byte for byte */
    assert_null(strchr(line, '\n'));
    obj = json_loads(line, 0, &jerr);
    assert_non_null(obj);
    assert_string_equal(json_string_value(json_object_get(obj, "msg")), nasty);
    assert_string_equal(
        json_string_value(json_object_get(obj, "level")), "warn");
    assert_string_equal(
        json_string_value(json_object_get(obj, "subsystem")), "consumer");
    assert_string_equal(json_string_value(json_object_get(obj, "ts")),
        "2024-05-01T12:00:00.123Z");
    assert_string_equal(
        json_string_value(json_object_get(obj, "topic")), "a\"b");
    assert_int_equal(json_integer_value(json_object_get(obj, "partition")), 2);

    /* ts, level, subsystem, msg come first */
    assert_true(strncmp(line, "{\"ts\":", 6) == 0);

    json_decref(obj);
    free(line);
}

static void
test_render_fields_cannot_override(void **state)
{
    char *line;
    json_t *obj;

    line = elearn_log_render(0, ELEARN_LOG_INFO, "x", "real",
        json_pack("{s:s, s:s}", "msg", "fake", "level", "error"));
    assert_non_null(line);
    obj = json_loads(line, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(obj, "msg")), "real");
    assert_string_equal(
        json_string_value(json_object_get(obj, "level")), "info");
    json_decref(obj);
    free(line);
}

static void
test_render_invalid_utf8(void **state)
{
    char *line;
    json_t *obj;

    line = elearn_log_render(0, ELEARN_LOG_INFO, "x", "bad \xff byte", NULL);
    assert_non_null(line);
    obj = json_loads(line, 0, NULL);
    assert_non_null(obj);
    json_decref(obj);
    free(line);
}

static void
test_levels_and_stream(void **state)
{
    FILE *f;
    char buf[4096];
    size_t n;
    elearn_log_level_t l;

    assert_int_equal(elearn_log_parse_level("debug", &l), 0);
    assert_int_equal(l, ELEARN_LOG_DEBUG);
    assert_int_equal(elearn_log_parse_level("warning", &l), 0);
    assert_int_equal(l, ELEARN_LOG_WARN);
    assert_int_equal(elearn_log_parse_level("loud", &l), -1);
    assert_string_equal(elearn_log_level_name(ELEARN_LOG_ERROR), "error");

    f = tmpfile();
    assert_non_null(f);
    elearn_log_set_stream(f);
    elearn_log_set_level(ELEARN_LOG_WARN);

    elearn_log(ELEARN_LOG_INFO, "t", "dropped %d", 1);
    elearn_log_fields(
        ELEARN_LOG_DEBUG, "t", json_pack("{s:i}", "a", 1), "dropped too");
    elearn_log(ELEARN_LOG_ERROR, "t", "kept %d", 2);

    elearn_log_set_stream(NULL);
    elearn_log_set_level(ELEARN_LOG_INFO);

    rewind(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);

    assert_null(strstr(buf, "dropped"));
    assert_non_null(strstr(buf, "\"msg\":\"kept 2\""));
    assert_non_null(strstr(buf, "\"level\":\"error\""));
    assert_int_equal(buf[n - 1], '\n');
}

static void
check_mask(const char *in, const char *want)
{
    char buf[256];

    elearn_log_mask_conninfo(in, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void
test_mask_conninfo(void **state)
{
    char small[12];

    check_mask("host=h port=5432 dbname=d user=u password=s3cret",
        "host=h port=5432 dbname=d user=u password=***");
    check_mask("password=s3cret host=h", "password=*** host=h");
    check_mask(
        "host=h password = 's3 \\' cret' user=u", "host=h password=*** user=u");
    check_mask("host=h password=a\\ b user=u", "host=h password=*** user=u");
    check_mask("host=h user=u", "host=h user=u");
    check_mask("host=h passwordx=keep", "host=h passwordx=keep");
    check_mask("postgresql://u:s3cret@h:5432/d?sslmode=disable",
        "postgresql://u:***@h:5432/d?sslmode=disable");
    check_mask("postgres://u:p%40ss@h/d", "postgres://u:***@h/d");
    check_mask("postgresql://u@h/d?password=s3cret&sslmode=require",
        "postgresql://u@h/d?password=***&sslmode=require");
    check_mask("postgresql://h/d", "postgresql://h/d");
    check_mask("", "");

    /* truncation never exposes part of a password */
    elearn_log_mask_conninfo(
        "password=abcdefghijkl host=h", small, sizeof(small));
    assert_null(strstr(small, "abc"));
    assert_true(strlen(small) < sizeof(small));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ts),
        cmocka_unit_test(test_render_escaping),
        cmocka_unit_test(test_render_fields_cannot_override),
        cmocka_unit_test(test_render_invalid_utf8),
        cmocka_unit_test(test_levels_and_stream),
        cmocka_unit_test(test_mask_conninfo),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
