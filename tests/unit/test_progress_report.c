/*
 * test_progress_report: elearn-progress's parsing of progress.reported
 * events (every wrong type or range is refused, naming the field) and the
 * in-memory merge of a batch per (user, video): the newest position by
 * report time, the union of intervals, and the array literals the upsert
 * takes.  Links workers/progress/progress_report.c itself.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "progress.h"

#define EVENT(data)                                                            \
    "{\"eventId\":\"e1\",\"type\":\"progress.reported\",\"occurredAt\":"       \
    "\"2026-11-27T12:00:00.000Z\",\"schemaVersion\":1,\"data\":" data "}"

#define DATA(pos, watched, at)                                                 \
    "{\"userId\":1,\"videoId\":2,\"courseId\":3,\"positionSeconds\":" pos      \
    ",\"watched\":" watched ",\"durationSeconds\":600,\"reportedAtMs\":" at    \
    "}"

static int
parse(const char *text, pr_report_t *r, char *err, size_t len)
{
    return pr_report_parse(text, strlen(text), r, err, len);
}

static void
test_parse_valid(void **state)
{
    pr_report_t r;
    char err[256];

    assert_int_equal(
        parse(EVENT(DATA("120", "[[0,30],[60,90],[5,5]]", "1795000000123")), &r,
            err, sizeof(err)),
        0);
    assert_int_equal(r.user_id, 1);
    assert_int_equal(r.video_id, 2);
    assert_int_equal(r.position, 120);
    assert_true(r.reported_at_ms == 1795000000123LL);
    /* the empty interval [5,5) is dropped */
    assert_int_equal(r.niv, 2);
    assert_int_equal(r.iv[1].from, 60);
    assert_int_equal(r.iv[1].to, 90);
    pr_report_free(&r);
}

static void
expect_refused(const char *text, const char *words)
{
    pr_report_t r;
    char err[256];

    err[0] = '\0';
    if (parse(text, &r, err, sizeof(err)) == 0) {
        pr_report_free(&r);
        fail_msg("accepted: %s", text);
    }

    if (strstr(err, words) == NULL) {
        fail_msg("error \"%s\" does not say \"%s\"", err, words);
    }
}

static void
test_parse_refuses(void **state)
{
    expect_refused("", "empty");
    expect_refused("not json", "invalid JSON");
    expect_refused("[1,2]", "eventId");
    expect_refused(
        EVENT(DATA("\"120\"", "[]", "1")), "positionSeconds: not an integer");
    expect_refused(
        EVENT(DATA("12.5", "[]", "1")), "positionSeconds: not an integer");
    expect_refused(EVENT(DATA("-1", "[]", "1")), "positionSeconds: -1");
    expect_refused(EVENT(DATA("1", "[[30,0]]", "1")), "watched[0]");
    expect_refused(EVENT(DATA("1", "[[-5,3]]", "1")), "watched[0]");
    expect_refused(EVENT(DATA("1", "[[0,3],[1]]", "1")), "watched[1]");
    expect_refused(EVENT(DATA("1", "[[0,3.5]]", "1")), "watched[0]");
    expect_refused(EVENT(DATA("1", "{}", "1")), "watched: not an array");
    expect_refused(EVENT(DATA("1", "[[0,3000000000]]", "1")), "watched[0]");
    expect_refused(EVENT(DATA("1", "[]", "null")), "reportedAtMs");
    expect_refused(EVENT("{\"userId\":1,\"videoId\":2,\"courseId\":3,"
                         "\"positionSeconds\":1,\"watched\":[]}"),
        "reportedAtMs: missing");
    expect_refused(EVENT("{\"userId\":0,\"videoId\":2}"), "userId: 0");
    expect_refused(EVENT("[]"), "data: not an object");
    expect_refused("{\"eventId\":\"e\",\"type\":\"other\",\"schemaVersion\":1,"
                   "\"data\":{}}",
        "type");
    expect_refused("{\"eventId\":\"e\",\"type\":\"progress.reported\","
                   "\"schemaVersion\":2,\"data\":{}}",
        "schemaVersion");
}

static void
report(pr_report_t *r, long long user, long long video, int pos, long long at,
    size_t msg, const int *iv, size_t niv)
{
    size_t i;

    memset(r, 0, sizeof(pr_report_t));
    r->user_id = user;
    r->video_id = video;
    r->position = pos;
    r->reported_at_ms = at;
    r->msg = msg;
    r->niv = niv;
    r->iv = calloc(niv > 0 ? niv : 1, sizeof(pr_interval_t));
    assert_non_null(r->iv);
    for (i = 0; i < niv; i++) {
        r->iv[i].from = iv[2 * i];
        r->iv[i].to = iv[2 * i + 1];
    }
}

static void
test_merge(void **state)
{
    size_t i, nrows;
    pr_row_t *rows;
    pr_report_t r[6];
    pr_buf_t params[5];
    static const int a[] = {60, 90, 0, 30};
    static const int b[] = {30, 40, 85, 100};
    static const int c[] = {500, 510};
    static const int d[] = {0, 10};

    memset(params, 0, sizeof(params));

    /* user 7, video 1: three reports out of order; the newest by report
     * time has position 95, although it is not the last message */
    report(&r[0], 7, 1, 40, 2000, 0, b, 2);
    report(&r[1], 7, 1, 95, 3000, 1, a, 2);
    report(&r[2], 7, 1, 10, 1000, 2, NULL, 0);
    /* user 3, video 9: a tie on report time: the later message wins */
    report(&r[3], 3, 9, 5, 500, 3, c, 1);
    report(&r[4], 3, 9, 6, 500, 4, d, 1);
    /* user 7, video 2: alone, no interval */
    report(&r[5], 7, 2, 1, 100, 5, NULL, 0);

    assert_int_equal(pr_merge(r, 6, &rows, &nrows, params), 0);
    assert_int_equal(nrows, 3);

    /* sorted by (user, video) */
    assert_int_equal(rows[0].user_id, 3);
    assert_int_equal(rows[0].position, 6);
    assert_int_equal(rows[1].user_id, 7);
    assert_int_equal(rows[1].video_id, 1);
    assert_int_equal(rows[1].position, 95);
    assert_true(rows[1].reported_at_ms == 3000);
    assert_int_equal(rows[1].last - rows[1].first, 3);
    assert_int_equal(rows[2].video_id, 2);

    assert_string_equal(params[0].data, "{3,7,7}");
    assert_string_equal(params[1].data, "{9,1,2}");
    assert_string_equal(params[2].data, "{6,95,1}");
    /* [0,30)+[30,40) touch, [85,100) overlaps [60,90) */
    assert_string_equal(params[3].data,
        "{\"{[0,10),[500,510)}\",\"{[0,40),[60,100)}\",\"{}\"}");
    assert_string_equal(params[4].data, "{500,3000,100}");

    free(rows);
    for (i = 0; i < 6; i++) {
        pr_report_free(&r[i]);
    }

    /* an empty batch: empty arrays */
    assert_int_equal(pr_merge(r, 0, &rows, &nrows, params), 0);
    assert_int_equal(nrows, 0);
    assert_string_equal(params[3].data, "{}");

    for (i = 0; i < 5; i++) {
        pr_buf_free(&params[i]);
    }
}

static void
test_buf_grows(void **state)
{
    int i;
    pr_buf_t b;

    memset(&b, 0, sizeof(b));
    for (i = 0; i < 5000; i++) {
        assert_int_equal(pr_buf_printf(&b, "%d,", i % 10), 0);
    }
    assert_int_equal(b.len, 10000);
    assert_int_equal(strlen(b.data), 10000);
    assert_memory_equal(b.data + 9990, "5,6,7,8,9,", 10);
    pr_buf_reset(&b);
    assert_string_equal(b.data, "");
    pr_buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_buf_grows),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
