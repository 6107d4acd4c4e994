/*
 * test_metrics: the Prometheus registry (definitions, updates, escaping,
 * histogram rendering), `promtool check metrics` on its output when promtool
 * is installed, and elearn_metrics_http's /metrics, /healthz, 404 and 405.
 */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "elearn_metrics.h"
#include "elearn_metrics_http.h"

static const char *topic_label[] = {"topic", NULL};
static const char *two_labels[] = {"topic", "partition", NULL};
static const double buckets[] = {0.1, 1, 10};

static elearn_metrics_t *
registry(void)
{
    elearn_metrics_t *m;
    char err[256];

    m = elearn_metrics_create(err, sizeof(err));
    assert_non_null(m);

    assert_int_equal(elearn_metrics_define(m, "t_messages_total",
                         ELEARN_METRIC_COUNTER, "Messages.\nSecond line \\.",
                         topic_label, NULL, 0, err, sizeof(err)),
        0);
    assert_int_equal(elearn_metrics_define(m, "t_lag", ELEARN_METRIC_GAUGE,
                         "Lag.", two_labels, NULL, 0, err, sizeof(err)),
        0);
    assert_int_equal(
        elearn_metrics_define(m, "t_seconds", ELEARN_METRIC_HISTOGRAM,
            "Durations.", NULL, buckets, 3, err, sizeof(err)),
        0);
    return m;
}

static void
test_define_errors(void **state)
{
    elearn_metrics_t *m;
    const char *bad_label[] = {"le", NULL};
    const double unsorted[] = {1, 0.5};
    char err[256];

    m = registry();

    assert_int_equal(
        elearn_metrics_define(m, "t_messages_total", ELEARN_METRIC_COUNTER, "x",
            NULL, NULL, 0, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "defined twice"));

    assert_int_equal(elearn_metrics_define(m, "t_count", ELEARN_METRIC_COUNTER,
                         "x", NULL, NULL, 0, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "_total"));

    assert_int_equal(elearn_metrics_define(m, "9bad", ELEARN_METRIC_GAUGE, "x",
                         NULL, NULL, 0, err, sizeof(err)),
        -1);
    assert_int_equal(elearn_metrics_define(m, "t_g", ELEARN_METRIC_GAUGE, "x",
                         bad_label, NULL, 0, err, sizeof(err)),
        -1);
    assert_int_equal(elearn_metrics_define(m, "t_h", ELEARN_METRIC_HISTOGRAM,
                         "x", NULL, unsorted, 2, err, sizeof(err)),
        -1);

    elearn_metrics_destroy(m);
}

static void
test_updates(void **state)
{
    double v;
    elearn_metrics_t *m;
    const char *a[] = {"a"};
    const char *lag[] = {"a", "0"};

    m = registry();

    assert_int_equal(elearn_metrics_add(m, "t_messages_total", a, 2), 0);
    assert_int_equal(elearn_metrics_add(m, "t_messages_total", a, 3), 0);
    assert_int_equal(elearn_metrics_get(m, "t_messages_total", a, &v), 0);
    assert_true(v == 5);

    /* counters only go up; gauges are set; histograms observed */
    assert_int_equal(elearn_metrics_add(m, "t_messages_total", a, -1), -1);
    assert_int_equal(elearn_metrics_set(m, "t_messages_total", a, 1), -1);
    assert_int_equal(elearn_metrics_add(m, "t_seconds", NULL, 1), -1);
    assert_int_equal(elearn_metrics_add(m, "unknown_total", NULL, 1), -1);

    assert_int_equal(elearn_metrics_set(m, "t_lag", lag, 7), 0);
    assert_int_equal(elearn_metrics_get(m, "t_lag", lag, &v), 0);
    assert_true(v == 7);
    assert_int_equal(elearn_metrics_clear(m, "t_lag"), 0);
    assert_int_equal(elearn_metrics_get(m, "t_lag", lag, &v), -1);

    elearn_metrics_destroy(m);
}

static void
test_render(void **state)
{
    char *text;
    elearn_metrics_t *m;
    const char *q[] = {"we\"ird\\to\npic"};
    const char *lag[] = {"a", "1"};

    m = registry();
    elearn_metrics_add(m, "t_messages_total", q, 1);
    elearn_metrics_set(m, "t_lag", lag, 3);
    elearn_metrics_observe(m, "t_seconds", NULL, 0.05);
    elearn_metrics_observe(m, "t_seconds", NULL, 5);
    elearn_metrics_observe(m, "t_seconds", NULL, 50);

    text = elearn_metrics_render(m, NULL);
    assert_non_null(text);

    assert_non_null(strstr(text,
        "# HELP t_messages_total Messages.\\nSecond "
        "line \\\\.\n"));
    assert_non_null(strstr(text, "# TYPE t_messages_total counter\n"));
    assert_non_null(
        strstr(text, "t_messages_total{topic=\"we\\\"ird\\\\to\\npic\"} 1\n"));
    assert_non_null(strstr(text, "t_lag{topic=\"a\",partition=\"1\"} 3\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{le=\"0.1\"} 1\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{le=\"1\"} 1\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{le=\"10\"} 2\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(text, "t_seconds_sum 55.05"));
    assert_non_null(strstr(text, "t_seconds_count 3\n"));

    free(text);
    elearn_metrics_destroy(m);
}

static void
test_promtool(void **state)
{
    int rc;
    FILE *p;
    char *text;
    elearn_metrics_t *m;
    const char *a[] = {"elearn.test"};

    /* config/debian-packages.txt installs it (package prometheus) */
    assert_int_equal(access("/usr/bin/promtool", X_OK), 0);

    m = registry();
    elearn_metrics_add(m, "t_messages_total", a, 1);
    elearn_metrics_observe(m, "t_seconds", NULL, 0.5);

    text = elearn_metrics_render(m, NULL);
    assert_non_null(text);

    p = popen("/usr/bin/promtool check metrics >/dev/null 2>&1", "w");
    assert_non_null(p);
    fputs(text, p);
    rc = pclose(p);
    assert_int_equal(rc, 0);

    free(text);
    elearn_metrics_destroy(m);
}

static int
health(void *ctx, char *buf, size_t len)
{
    snprintf(buf, len, "%s", *(int *) ctx ? "fine" : "stuck");
    return *(int *) ctx;
}

/* One request over a fresh connection; returns the whole response. */
static char *
http_get(int port, const char *request)
{
    int fd;
    size_t got;
    ssize_t n;
    char *buf;
    struct sockaddr_in sin;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short) port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
    assert_true(write(fd, request, strlen(request)) > 0);

    buf = calloc(1, 65536);
    got = 0;
    while ((n = read(fd, buf + got, 65535 - got)) > 0) {
        got += (size_t) n;
    }
    close(fd);
    return buf;
}

static void
test_http(void **state)
{
    int ok, port;
    char *r;
    elearn_metrics_t *m;
    elearn_metrics_http_t *h;
    const char *a[] = {"x"};
    char err[256];

    m = registry();
    elearn_metrics_add(m, "t_messages_total", a, 4);
    ok = 1;

    h = elearn_metrics_http_create(NULL, 0, m, health, &ok, err, sizeof(err));
    assert_non_null(h);
    port = elearn_metrics_http_port(h);
    assert_true(port > 0);

    r = http_get(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.0 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(r, "text/plain; version=0.0.4"));
    assert_non_null(strstr(r, "t_messages_total{topic=\"x\"} 4\n"));
    free(r);

    r = http_get(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.0 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(r, "\"status\":\"ok\""));
    free(r);

    ok = 0;
    r = http_get(port, "GET /healthz HTTP/1.0\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.0 503 ", 13) == 0);
    assert_non_null(strstr(r, "stuck"));
    free(r);

    r = http_get(port, "GET /nope HTTP/1.0\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.0 404 ", 13) == 0);
    free(r);

    r = http_get(port, "POST /metrics HTTP/1.0\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.0 405 ", 13) == 0);
    assert_non_null(strstr(r, "Allow: GET"));
    free(r);

    /* the port is taken: a second server fails with a clear error */
    assert_null(elearn_metrics_http_create(
        "127.0.0.1", port, m, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "bind 127.0.0.1:"));

    elearn_metrics_http_destroy(h);
    elearn_metrics_destroy(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_define_errors),
        cmocka_unit_test(test_updates),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_promtool),
        cmocka_unit_test(test_http),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
