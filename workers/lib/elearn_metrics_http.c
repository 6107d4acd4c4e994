/*
 * elearn_metrics_http: a tiny HTTP/1.0 server for GET /metrics and
 * GET /healthz, on its own thread.
 *
 * The thread poll()s the listening socket and the read end of a pipe; the
 * destroy path writes to the pipe so the thread wakes and exits at once.
 * Each accepted connection gets a 2 s receive/send timeout, one request is
 * read (up to 4 KB, enough for any request line we answer), one response is
 * written, and the connection is closed (HTTP/1.0, Connection: close).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "elearn_log.h"
#include "elearn_metrics_http.h"
#include "elearn_signal.h"

#define ELEARN_HTTP_REQ_MAX 4096

struct elearn_metrics_http_s {
    int fd;
    int pipe[2];
    int port;
    pthread_t thread;
    int started;
    elearn_metrics_t *metrics;
    elearn_health_fn health;
    void *health_ctx;
};

static void *elearn_metrics_http_run(void *arg);

elearn_metrics_http_t *
elearn_metrics_http_create(const char *addr, int port,
    elearn_metrics_t *metrics, elearn_health_fn health, void *health_ctx,
    char *errstr, size_t errlen)
{
    int one;
    socklen_t slen;
    elearn_metrics_http_t *h;
    struct sockaddr_in sin;

    if (addr == NULL) {
        addr = "127.0.0.1";
    }

    h = calloc(1, sizeof(elearn_metrics_http_t));
    if (h == NULL) {
        snprintf(errstr, errlen, "metrics: out of memory");
        return NULL;
    }

    h->fd = -1;
    h->pipe[0] = -1;
    h->pipe[1] = -1;
    h->metrics = metrics;
    h->health = health;
    h->health_ctx = health_ctx;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short) port);
    if (port < 0 || port > 65535
        || inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        snprintf(errstr, errlen, "metrics: invalid address %s:%d", addr, port);
        goto failed;
    }

    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->fd == -1) {
        snprintf(errstr, errlen, "metrics: socket: %s", strerror(errno));
        goto failed;
    }

    one = 1;
    if (setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
        snprintf(errstr, errlen, "metrics: setsockopt: %s", strerror(errno));
        goto failed;
    }

    if (bind(h->fd, (struct sockaddr *) &sin, sizeof(sin)) != 0) {
        snprintf(errstr, errlen, "metrics: bind %s:%d: %s", addr, port,
            strerror(errno));
        goto failed;
    }

    if (listen(h->fd, 16) != 0) {
        snprintf(errstr, errlen, "metrics: listen: %s", strerror(errno));
        goto failed;
    }

    slen = sizeof(sin);
    if (getsockname(h->fd, (struct sockaddr *) &sin, &slen) != 0) {
        snprintf(errstr, errlen, "metrics: getsockname: %s", strerror(errno));
        goto failed;
    }
    h->port = ntohs(sin.sin_port);

    if (pipe2(h->pipe, O_CLOEXEC) != 0) {
        snprintf(errstr, errlen, "metrics: pipe: %s", strerror(errno));
        goto failed;
    }

    if (pthread_create(&h->thread, NULL, elearn_metrics_http_run, h) != 0) {
        snprintf(errstr, errlen, "metrics: pthread_create failed");
        goto failed;
    }

    h->started = 1;
    return h;

failed:

    elearn_metrics_http_destroy(h);
    return NULL;
}

int
elearn_metrics_http_port(const elearn_metrics_http_t *h)
{
    return h->port;
}

void
elearn_metrics_http_destroy(elearn_metrics_http_t *h)
{
    ssize_t n;

    if (h == NULL) {
        return;
    }

    if (h->started) {
        do {
            n = write(h->pipe[1], "x", 1);
        } while (n == -1 && errno == EINTR);
        pthread_join(h->thread, NULL);
    }

    if (h->fd != -1) {
        close(h->fd);
    }

    if (h->pipe[0] != -1) {
        close(h->pipe[0]);
        close(h->pipe[1]);
    }

    free(h);
}

static int
elearn_metrics_http_send(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w == -1) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t) w;
    }

    return 0;
}

static void
elearn_metrics_http_respond(
    int fd, int status, const char *ctype, const char *body, size_t len)
{
    int n;
    char head[256];
    const char *reason;

    switch (status) {
    case 200:
        reason = "OK";
        break;
    case 404:
        reason = "Not Found";
        break;
    case 405:
        reason = "Method Not Allowed";
        break;
    case 503:
        reason = "Service Unavailable";
        break;
    default:
        reason = "Bad Request";
        break;
    }

    n = snprintf(head, sizeof(head),
        "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
        "%sConnection: close\r\n\r\n",
        status, reason, ctype, len, status == 405 ? "Allow: GET\r\n" : "");

    if (elearn_metrics_http_send(fd, head, (size_t) n) == 0 && len > 0) {
        elearn_metrics_http_send(fd, body, len);
    }
}

static void
elearn_metrics_http_serve(elearn_metrics_http_t *h, int fd)
{
    int ok;
    char *text, *sp, *path_end;
    size_t got, len;
    ssize_t n;
    struct timeval tv;
    char req[ELEARN_HTTP_REQ_MAX + 1], why[200], body[300];

    tv.tv_sec = 2;
    tv.tv_usec = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    /* read until the end of the request line; the headers do not matter */
    got = 0;
    while (got < ELEARN_HTTP_REQ_MAX) {
        n = recv(fd, req + got, ELEARN_HTTP_REQ_MAX - got, 0);
        if (n <= 0) {
            if (n == -1 && errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t) n;
        req[got] = '\0';
        if (strchr(req, '\n') != NULL) {
            break;
        }
    }
    req[got] = '\0';

    if (strchr(req, '\n') == NULL) {
        elearn_metrics_http_respond(fd, 400, "text/plain", "bad request\n", 12);
        return;
    }

    sp = strchr(req, ' ');
    if (sp == NULL) {
        elearn_metrics_http_respond(fd, 400, "text/plain", "bad request\n", 12);
        return;
    }

    *sp = '\0';
    path_end = sp + 1 + strcspn(sp + 1, " ?\r\n");
    *path_end = '\0';

    if (strcmp(req, "GET") != 0 && strcmp(req, "HEAD") != 0) {
        elearn_metrics_http_respond(
            fd, 405, "text/plain", "method not allowed\n", 19);
        return;
    }

    if (strcmp(sp + 1, "/metrics") == 0) {
        text = elearn_metrics_render(h->metrics, &len);
        if (text == NULL) {
            elearn_metrics_http_respond(
                fd, 503, "text/plain", "out of memory\n", 14);
            return;
        }
        elearn_metrics_http_respond(fd, 200,
            "text/plain; version=0.0.4; charset=utf-8", text,
            strcmp(req, "HEAD") == 0 ? 0 : len);
        free(text);
        return;
    }

    if (strcmp(sp + 1, "/healthz") == 0) {
        ok = 1;
        snprintf(why, sizeof(why), "serving");
        if (h->health != NULL) {
            ok = h->health(h->health_ctx, why, sizeof(why));
        }

        /* "why" is ours, plain ASCII without quotes */
        n = snprintf(body, sizeof(body),
            "{\"status\":\"%s\",\"detail\":\"%s\"}\n", ok ? "ok" : "failing",
            why);
        elearn_metrics_http_respond(fd, ok ? 200 : 503, "application/json",
            body, (size_t) n < sizeof(body) ? (size_t) n : sizeof(body) - 1);
        return;
    }

    elearn_metrics_http_respond(fd, 404, "text/plain", "not found\n", 10);
}

static void *
elearn_metrics_http_run(void *arg)
{
    int fd;
    elearn_metrics_http_t *h;
    struct pollfd pfd[2];

    h = arg;
    elearn_signal_block_in_thread();

    for (;;) {
        pfd[0].fd = h->fd;
        pfd[0].events = POLLIN;
        pfd[1].fd = h->pipe[0];
        pfd[1].events = POLLIN;

        if (poll(pfd, 2, -1) == -1) {
            if (errno == EINTR) {
                continue;
            }
            elearn_log(
                ELEARN_LOG_ERROR, "metrics", "poll: %s", strerror(errno));
            return NULL;
        }

        if (pfd[1].revents != 0) {
            return NULL;
        }

        if (pfd[0].revents == 0) {
            continue;
        }

        fd = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                elearn_log(
                    ELEARN_LOG_WARN, "metrics", "accept: %s", strerror(errno));
                /* EMFILE and friends: do not spin */
                usleep(100000);
            }
            continue;
        }

        elearn_metrics_http_serve(h, fd);
        close(fd);
    }
}
