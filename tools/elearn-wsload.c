
/*
 * elearn-wsload: the WebSocket load generator of `make bench`
 * (tools/bench-ws.sh).  One thread, one epoll loop, many connections.
 *
 * It is an RFC 6455 client (the handshake with its Sec-WebSocket-Accept
 * check, masked frames out, ping answered by pong, fragmented messages
 * reassembled, the close handshake) that opens up to --connections
 * sockets at --rate per second, each bound to one of --sources source
 * addresses in 127.0.0.0/8 (with IP_BIND_ADDRESS_NO_PORT, so that every
 * source address has its own ephemeral port range towards the target).
 * Several processes run side by side with --proc-index: each takes its own
 * block of source addresses.  Every run is bounded by a hard cap on the
 * connection count (and by the open-file limit, whose soft value is raised
 * to the hard one), on the duration and on the message count.
 *
 * Modes:
 *   idle    hold the connections open until --duration (or SIGTERM) and
 *           report how many were established and how many failed; with
 *           --ready-file, the file is written once every connection has
 *           been tried, so that a script can measure the server then.
 *   fanout  the subscribers, then one publisher that sends --messages
 *           messages, one every --interval-ms.  Each message body starts
 *           with "wsload <seq> <CLOCK_REALTIME ns>"; a subscriber takes the
 *           clock when it parses the frame, and the difference is the
 *           delivery latency (send to receipt).  Reported: delivered and
 *           expected (the open subscribers at each publish), lost,
 *           duplicates, and the latency percentiles over all deliveries.
 *           With --pub-paths, one publisher per line, each the owner of
 *           a session (or channel) whose subscribers take the same line
 *           of --paths; the publishers are spread over --interval-ms.
 *
 * Targets:
 *   nchan   subscribe: a WebSocket GET of --path (nchan_subscriber);
 *           publish: HTTP/1.1 POSTs of the body to --pub-path on one
 *           keep-alive connection driven by the same loop.
 *   elearn  subscribe: a WebSocket GET of --path (/live/{id}?access_token=
 *           ..., or the lines of --paths in turn: one per session and
 *           participant); publish: the owner's WebSocket (--pub-path) sending
 *           {"type":"broadcast","body":"..."} text frames (contract s7).
 *   http    idle only: one keep-alive GET of --path per connection, then
 *           held idle (the reference of nginx's cost per connection).
 *
 * Output: one JSON line on standard output, a human summary on standard
 * error.  Exit status 0 when every connection was established (and, in
 * fanout, the publisher worked), 1 otherwise, 2 on a usage error.
 *
 * SHA-1 and base64 of the handshake come from OpenSSL's libcrypto.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 100000      /* per process, also <= open-file limit */
#define MAX_SECONDS 3600      /* per run */
#define MAX_MESSAGES 100000   /* per run */
#define MAX_SAMPLES 20000000  /* latencies kept (160 MB) */
#define MAX_SOURCES 4096      /* source addresses per process */
#define MAX_MSG (1024 * 1024) /* largest message accepted */
#define MAX_HEADER 16384      /* largest HTTP response header */
#define FD_RESERVE 16         /* files kept for stdio, epoll, ... */
#define RBUF_SIZE 65536
#define CLOSE_WAIT_NS 2000000000 /* for the server's close at the end */
#define RETRY_DELAY_NS 1000000000
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MARK "wsload "

enum { MODE_IDLE, MODE_FANOUT };
enum { TARGET_NCHAN, TARGET_ELEARN, TARGET_HTTP };
enum { ROLE_SUB, ROLE_PUB_WS, ROLE_PUB_HTTP, ROLE_HTTP };
enum {
    ST_NEW,
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_OPEN,
    ST_CLOSING,
    ST_RETRY, /* failed before the upgrade, waiting to try again */
    ST_DONE
};

/* why a connection failed or ended */
enum {
    F_REFUSED,
    F_TIMEOUT,
    F_RESET,
    F_NOADDR,
    F_FILES,
    F_STATUS,
    F_ACCEPT,
    F_PROTOCOL,
    F_EOF,
    F_OTHER,
    F_COUNT
};

static const char *fail_names[F_COUNT] = {"refused", "timeout", "reset",
    "no_address", "no_files", "http_status", "bad_accept", "protocol", "closed",
    "other"};

typedef struct {
    int fd;
    uint8_t state;
    uint8_t role;
    uint8_t close_sent;
    uint8_t frag_op;
    uint8_t opened;   /* the handshake succeeded once */
    uint8_t tries;    /* retries made */
    uint8_t why;      /* of the last failure, while retrying */
    uint16_t session; /* with --pub-paths: the publisher's line */
    uint32_t src;     /* source address, host order */
    int64_t started;  /* monotonic ns, for the handshake timeout */
    char *in;         /* bytes not parsed yet */
    size_t in_len;
    size_t in_cap;
    char *out; /* bytes not written yet */
    size_t out_len;
    size_t out_off;
    char *frag; /* a fragmented message being reassembled */
    size_t frag_len;
    char accept[32];  /* the Sec-WebSocket-Accept expected */
    int64_t last_seq; /* of the messages received */
    uint32_t received;
    uint32_t dups;
} conn_t;

typedef struct {
    int mode;
    int target;
    const char *host;
    int port;
    const char *path;
    const char *pub_path;
    const char *paths_file;
    const char *ready_file;
    const char *start_file;
    const char *pub_paths_file;
    const char *samples_file;
    const char *label;
    long conns;
    long seconds;
    long rate;
    long max_pending;
    long messages;
    long interval_ms;
    long size;
    long settle_ms;
    long drain_ms;
    long timeout_ms;
    long retries;
    long proc_index;
    long sources;
    uint32_t src_base;
    int quiet;
} opts_t;

static opts_t o;
static conn_t *conns; /* o.conns subscribers, then the publisher */
static conn_t *pubs;  /* npubs publishers after the subscribers */
static long npubs = 1;
static char **pub_paths; /* --pub-paths: one per session */
static long npub_paths;
static long *open_by_session;
static int64_t *pub_next; /* when each publisher sends next */
static long *pub_sent;
static long pubs_down;
static int ep = -1;
static struct sockaddr_in dst;
static char **paths; /* --paths: connection i takes line i % npaths */
static long npaths;
static volatile sig_atomic_t stop_signal;
static char rbuf[RBUF_SIZE];
static uint64_t rng;

/* counters */
static long pending, established, open_subs, dropped;
static long fails[F_COUNT], failed;
static long closed_clean;
static long published, pub_acks, pub_errors;
static long expected, delivered, dups, other_frames, pings;
static long *per_seq_expected; /* by message: open subscribers at its send */
static long *per_seq_delivered;
static int64_t *samples;
static long nsamples, max_samples;
static int64_t first_connect_ns, all_tried_ns;
static char first_error[256];
static int pub_failed;
static int last_status; /* of the last refused upgrade */
static long *retry_q;   /* subscribers to try again, due in order */
static long retry_head, retry_tail, retried;

static int64_t
mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t
rnd(void)
{
    /* xorshift64*: the masking keys of a load generator need no more */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}

static void
on_signal(int sig)
{
    stop_signal = sig;
}

/* keeps the first error of the run for the report */
static void
note_error(const char *msg, int err)
{
    if (first_error[0] != '\0') {
        return;
    }
    if (err != 0) {
        snprintf(
            first_error, sizeof(first_error), "%s: %s", msg, strerror(err));
    } else {
        snprintf(first_error, sizeof(first_error), "%s", msg);
    }
}

static const char *
role_name(const conn_t *c)
{
    return c->role == ROLE_SUB || c->role == ROLE_HTTP ? "connect"
                                                       : "publisher";
}

/* --- connection bookkeeping ------------------------------------------- */

static int
is_pub(const conn_t *c)
{
    return c->role == ROLE_PUB_WS || c->role == ROLE_PUB_HTTP;
}

static void
sub_opened(conn_t *c, int delta)
{
    open_subs += delta;
    if (open_by_session != NULL) {
        open_by_session[c->session] += delta;
    }
}

static void
conn_free(conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
        pending--;
    }
    if (c->state == ST_OPEN && c->role == ROLE_SUB) {
        sub_opened(c, -1);
    }
    if (is_pub(c) && c->state != ST_DONE) {
        pubs_down++;
    }
    c->state = ST_DONE;
    free(c->in);
    free(c->out);
    free(c->frag);
    c->in = c->out = c->frag = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_off = c->frag_len = 0;
}

/* a connection that never opened, or a publisher that broke */
static void
conn_fail(conn_t *c, int why, int err)
{
    char what[128];
    int open;

    open = c->state == ST_OPEN || c->state == ST_CLOSING;
    if (!open && !is_pub(c) && c->tries < o.retries
        && (why == F_TIMEOUT || why == F_RESET || why == F_EOF
            || (why == F_STATUS && last_status == 503)))
    {
        /* as a client would after Retry-After: again in a second */
        c->tries++;
        c->why = (uint8_t) why;
        retried++;
        conn_free(c);
        c->state = ST_RETRY;
        c->started = mono_ns() + RETRY_DELAY_NS;
        retry_q[retry_tail++ % o.conns] = c - conns;
        return;
    }
    if (open) {
        /* it was established: the server (or the network) ended it */
        if (c->state == ST_OPEN && !is_pub(c)) {
            dropped++;
        }
    } else {
        failed++;
        fails[why]++;
    }
    if (is_pub(c)) {
        pub_failed = 1;
    }
    snprintf(what, sizeof(what), "%s %s:%d%s%s%s", role_name(c),
        inet_ntoa(dst.sin_addr), o.port, open ? " (after the upgrade)" : "",
        err == 0 ? ": " : "", err == 0 ? fail_names[why] : "");
    note_error(what, err);
    conn_free(c);
}

static int
conn_flush(conn_t *c)
{
    ssize_t n;

    while (c->out_off < c->out_len) {
        n = send(
            c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                return 0;
            }
            conn_fail(c, errno == ECONNRESET ? F_RESET : F_OTHER, errno);
            return -1;
        }
        c->out_off += (size_t) n;
    }
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = 0;
    return 0;
}

/* queues bytes and writes what the socket takes now */
static int
conn_send(conn_t *c, const void *p, size_t len)
{
    char *b;

    b = realloc(c->out, c->out_len + len);
    if (b == NULL) {
        conn_fail(c, F_OTHER, ENOMEM);
        return -1;
    }
    c->out = b;
    memcpy(c->out + c->out_len, p, len);
    c->out_len += len;
    return conn_flush(c);
}

/* one masked frame, client to server */
static int
ws_send(conn_t *c, int op, const char *p, size_t len)
{
    unsigned char *f;
    uint32_t key;
    size_t h, i;
    int rc;

    f = malloc(len + 14);
    if (f == NULL) {
        conn_fail(c, F_OTHER, ENOMEM);
        return -1;
    }
    f[0] = (unsigned char) (0x80 | op);
    if (len < 126) {
        f[1] = (unsigned char) (0x80 | len);
        h = 2;
    } else if (len < 65536) {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char) (len >> 8);
        f[3] = (unsigned char) len;
        h = 4;
    } else {
        f[1] = 0x80 | 127;
        for (i = 0; i < 8; i++) {
            f[2 + i] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
        }
        h = 10;
    }
    key = (uint32_t) rnd();
    memcpy(f + h, &key, 4);
    for (i = 0; i < len; i++) {
        f[h + 4 + i] = (unsigned char) p[i] ^ f[h + (i & 3)];
    }
    rc = conn_send(c, f, h + 4 + len);
    free(f);
    return rc;
}

static int
ws_close(conn_t *c, int code)
{
    char b[2];

    b[0] = (char) (code >> 8);
    b[1] = (char) code;
    c->close_sent = 1;
    if (c->state == ST_OPEN && c->role == ROLE_SUB) {
        sub_opened(c, -1);
    }
    c->state = ST_CLOSING;
    return ws_send(c, 0x8, b, 2);
}

/* --- the handshake ---------------------------------------------------- */

static void
ws_key(conn_t *c, char *key)
{
    unsigned char raw[16], sha[SHA_DIGEST_LENGTH];
    char buf[96];
    uint64_t a, b;

    a = rnd();
    b = rnd();
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *) key, raw, 16); /* 24 chars + NUL */
    snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
    SHA1((unsigned char *) buf, strlen(buf), sha);
    EVP_EncodeBlock((unsigned char *) c->accept, sha, sizeof(sha));
}


static int
send_request(conn_t *c, long i)
{
    char req[10240], key[32];
    const char *path;
    int n;

    if (c->role == ROLE_PUB_HTTP) {
        return 0; /* the POSTs come later */
    }
    path = c->role == ROLE_PUB_WS
        ? (pub_paths ? pub_paths[c->session] : o.pub_path)
        : npaths > 0 ? paths[i % npaths]
                     : o.path;
    if (c->role == ROLE_HTTP) {
        n = snprintf(req, sizeof(req),
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
            "User-Agent: elearn-wsload\r\n\r\n",
            path, o.host, o.port);
    } else {
        ws_key(c, key);
        n = snprintf(req, sizeof(req),
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            "User-Agent: elearn-wsload\r\n\r\n",
            path, o.host, o.port, key);
    }
    if (n < 0 || (size_t) n >= sizeof(req)) {
        conn_fail(c, F_OTHER, ENAMETOOLONG);
        return -1;
    }
    return conn_send(c, req, (size_t) n);
}

/* the value of header `name` in an HTTP head, or NULL */
static const char *
header_value(const char *head, size_t len, const char *name, size_t *vlen)
{
    const char *p, *end, *eol, *v;
    size_t nl;

    nl = strlen(name);
    end = head + len;
    p = memchr(head, '\n', len);
    while (p != NULL && p + 1 < end) {
        p++;
        eol = memchr(p, '\n', (size_t) (end - p));
        if (eol == NULL) {
            break;
        }
        if ((size_t) (eol - p) > nl && p[nl] == ':'
            && strncasecmp(p, name, nl) == 0) {
            v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            *vlen = (size_t) (eol - v);
            while (*vlen > 0 && (v[*vlen - 1] == '\r' || v[*vlen - 1] == ' ')) {
                (*vlen)--;
            }
            return v;
        }
        p = eol;
    }
    return NULL;
}

static int
http_status(const char *head, size_t len)
{
    if (len < 12 || memcmp(head, "HTTP/1.", 7) != 0) {
        return -1;
    }
    return atoi(head + 9);
}

static long
content_length(const char *head, size_t len)
{
    const char *v;
    size_t vl;

    v = header_value(head, len, "Content-Length", &vl);
    return v == NULL ? 0 : strtol(v, NULL, 10);
}

static void
on_open(conn_t *c)
{
    pending--;
    c->state = ST_OPEN;
    c->opened = 1;
    if (c->role == ROLE_SUB || c->role == ROLE_HTTP) {
        established++;
        if (c->role == ROLE_SUB) {
            sub_opened(c, 1);
        }
    }
}

/* the response to the upgrade (or to the idle GET); returns the bytes
 * consumed, 0 to wait for more, -1 when the connection is gone */
static long
parse_handshake(conn_t *c, const char *d, size_t len)
{
    const char *end, *v;
    char what[64];
    size_t hl, vl;
    long body;
    int st;

    end = memmem(d, len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len > MAX_HEADER) {
            conn_fail(c, F_PROTOCOL, 0);
            return -1;
        }
        return 0;
    }
    hl = (size_t) (end - d) + 4;
    st = http_status(d, hl);
    last_status = st;
    if (c->role == ROLE_HTTP) {
        body = content_length(d, hl);
        if (st < 200 || st > 299) {
            snprintf(what, sizeof(what), "GET %s answered %d", o.path, st);
            note_error(what, 0);
            conn_fail(c, F_STATUS, 0);
            return -1;
        }
        if ((size_t) body > len - hl) {
            return 0; /* the body is still coming */
        }
        on_open(c);
        return (long) (hl + (size_t) body);
    }
    if (st != 101) {
        snprintf(what, sizeof(what), "upgrade of %s answered %d",
            c->role == ROLE_PUB_WS ? "the publisher" : "a subscriber", st);
        note_error(what, 0);
        conn_fail(c, F_STATUS, 0);
        return -1;
    }
    v = header_value(d, hl, "Sec-WebSocket-Accept", &vl);
    if (v == NULL || vl != strlen(c->accept) || memcmp(v, c->accept, vl) != 0) {
        note_error("upgrade: wrong Sec-WebSocket-Accept", 0);
        conn_fail(c, F_ACCEPT, 0);
        return -1;
    }
    v = header_value(d, hl, "Upgrade", &vl);
    if (v == NULL || vl != 9 || strncasecmp(v, "websocket", 9) != 0) {
        note_error("upgrade: no Upgrade: websocket", 0);
        conn_fail(c, F_PROTOCOL, 0);
        return -1;
    }
    on_open(c);
    return (long) hl;
}

/* --- messages --------------------------------------------------------- */

static int64_t
parse_num(const char **p, const char *end)
{
    int64_t v;

    v = -1;
    while (*p < end && **p >= '0' && **p <= '9') {
        v = (v < 0 ? 0 : v * 10) + (**p - '0');
        (*p)++;
    }
    return v;
}

static void
on_message(conn_t *c, const char *p, size_t len, int64_t now)
{
    const char *m, *end;
    int64_t seq, ts;

    if (c->role != ROLE_SUB) {
        /* the owner's own socket: an error frame means a refused publish */
        if (memmem(p, len, "\"type\":\"error\"", 14) != NULL) {
            pub_errors++;
        }
        return;
    }
    m = memmem(p, len, MARK, sizeof(MARK) - 1);
    if (m == NULL) {
        other_frames++;
        return;
    }
    end = p + len;
    m += sizeof(MARK) - 1;
    seq = parse_num(&m, end);
    if (m < end && *m == ' ') {
        m++;
    }
    ts = parse_num(&m, end);
    if (seq < 1 || ts < 0) {
        other_frames++;
        return;
    }
    if (seq <= c->last_seq) {
        c->dups++;
        dups++;
        return;
    }
    c->last_seq = seq;
    c->received++;
    delivered++;
    if (seq <= o.messages) {
        per_seq_delivered[seq - 1]++;
    }
    if (nsamples < max_samples) {
        samples[nsamples++] = now - ts;
    }
}

/* frames from the server; returns bytes consumed or -1 when gone */
static long
parse_frames(conn_t *c, const char *d, size_t len)
{
    const unsigned char *u;
    size_t off, h, plen, i;
    int op, fin;
    char *f;

    off = 0;
    while (len - off >= 2) {
        u = (const unsigned char *) d + off;
        fin = u[0] & 0x80;
        op = u[0] & 0x0f;
        if ((u[0] & 0x70) || (u[1] & 0x80)) {
            /* reserved bits, or a masked frame from a server */
            note_error("frame: reserved bits or a mask from the server", 0);
            conn_fail(c, F_PROTOCOL, 0);
            return -1;
        }
        plen = u[1] & 0x7f;
        h = 2;
        if (plen == 126) {
            if (len - off < 4) {
                break;
            }
            plen = ((size_t) u[2] << 8) | u[3];
            h = 4;
        } else if (plen == 127) {
            if (len - off < 10) {
                break;
            }
            plen = 0;
            for (i = 0; i < 8; i++) {
                plen = (plen << 8) | u[2 + i];
            }
            h = 10;
        }
        if (plen > MAX_MSG || ((op & 0x8) && (plen > 125 || !fin))) {
            note_error("frame: oversized or fragmented control frame", 0);
            conn_fail(c, F_PROTOCOL, 0);
            return -1;
        }
        if (len - off < h + plen) {
            break;
        }
        off += h;
        switch (op) {
        case 0x1:
        case 0x2:
            if (c->frag != NULL) {
                conn_fail(c, F_PROTOCOL, 0);
                return -1;
            }
            if (fin) {
                on_message(c, d + off, plen, real_ns());
                break;
            }
            c->frag = malloc(plen > 0 ? plen : 1);
            if (c->frag == NULL) {
                conn_fail(c, F_OTHER, ENOMEM);
                return -1;
            }
            memcpy(c->frag, d + off, plen);
            c->frag_len = plen;
            c->frag_op = (uint8_t) op;
            break;
        case 0x0:
            if (c->frag == NULL || c->frag_len + plen > MAX_MSG) {
                conn_fail(c, F_PROTOCOL, 0);
                return -1;
            }
            f = realloc(c->frag, c->frag_len + plen + 1);
            if (f == NULL) {
                conn_fail(c, F_OTHER, ENOMEM);
                return -1;
            }
            c->frag = f;
            memcpy(c->frag + c->frag_len, d + off, plen);
            c->frag_len += plen;
            if (fin) {
                on_message(c, c->frag, c->frag_len, real_ns());
                free(c->frag);
                c->frag = NULL;
                c->frag_len = 0;
            }
            break;
        case 0x8:
            if (c->close_sent) {
                closed_clean++;
                conn_free(c);
                return -1;
            }
            /* the server closes: answer with its code, then hang up */
            if (c->state == ST_OPEN && c->role == ROLE_SUB) {
                dropped++;
            }
            if (ws_close(c, plen >= 2 ? (u[h] << 8) | u[h + 1] : 1000) == 0) {
                conn_free(c);
            }
            if (is_pub(c)) {
                pub_failed = 1;
                note_error("publish: the server closed the publisher", 0);
            }
            return -1;
        case 0x9:
            pings++;
            if (ws_send(c, 0xA, d + off, plen) != 0) {
                return -1;
            }
            break;
        case 0xA:
            break;
        default:
            note_error("frame: unknown opcode from the server", 0);
            conn_fail(c, F_PROTOCOL, 0);
            return -1;
        }
        off += plen;
    }
    return (long) off;
}

/* responses to the nchan publisher's POSTs */
static long
parse_pub_responses(conn_t *c, const char *d, size_t len)
{
    const char *end, *v;
    size_t off, hl, vl;
    long body;
    int st;

    off = 0;
    for (;;) {
        end = memmem(d + off, len - off, "\r\n\r\n", 4);
        if (end == NULL) {
            if (len - off > MAX_HEADER) {
                conn_fail(c, F_PROTOCOL, 0);
                return -1;
            }
            return (long) off;
        }
        hl = (size_t) (end - (d + off)) + 4;
        st = http_status(d + off, hl);
        v = header_value(d + off, hl, "Transfer-Encoding", &vl);
        if (v != NULL) {
            /* chunked: nchan does not send it; wait for the last chunk */
            end = memmem(d + off + hl, len - off - hl, "\r\n0\r\n\r\n", 7);
            if (end == NULL) {
                return (long) off;
            }
            body = end + 7 - (d + off + hl);
        } else {
            body = content_length(d + off, hl);
            if ((size_t) body > len - off - hl) {
                return (long) off;
            }
        }
        if (st >= 200 && st <= 299) {
            pub_acks++;
        } else {
            pub_errors++;
            if (first_error[0] == '\0') {
                snprintf(first_error, sizeof(first_error),
                    "publish: POST answered %d", st);
            }
        }
        off += hl + (size_t) body;
    }
}

static long
parse_input(conn_t *c, const char *d, size_t len)
{
    long n, m;

    switch (c->state) {
    case ST_HANDSHAKE:
        n = parse_handshake(c, d, len);
        if (n <= 0 || c->role == ROLE_HTTP) {
            return n;
        }
        m = parse_frames(c, d + n, len - (size_t) n);
        return m < 0 ? -1 : n + m;
    case ST_OPEN:
    case ST_CLOSING:
        if (c->role == ROLE_PUB_HTTP) {
            return parse_pub_responses(c, d, len);
        }
        if (c->role == ROLE_HTTP) {
            return (long) len; /* nothing more is expected */
        }
        return parse_frames(c, d, len);
    default:
        return (long) len;
    }
}

static void
conn_read(conn_t *c)
{
    const char *d;
    size_t len;
    int short_read;
    ssize_t n;
    long used;
    char *b;

    for (;;) {
        if (c->in_len > 0) {
            if (c->in_cap - c->in_len < 16384) {
                if (c->in_len > MAX_MSG + MAX_HEADER) {
                    conn_fail(c, F_PROTOCOL, 0);
                    return;
                }
                b = realloc(c->in, c->in_cap * 2 + 16384);
                if (b == NULL) {
                    conn_fail(c, F_OTHER, ENOMEM);
                    return;
                }
                c->in = b;
                c->in_cap = c->in_cap * 2 + 16384;
            }
            n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
            d = c->in;
            len = c->in_len + (size_t) (n > 0 ? n : 0);
        } else {
            n = read(c->fd, rbuf, sizeof(rbuf));
            d = rbuf;
            len = (size_t) (n > 0 ? n : 0);
        }
        if (n == 0) {
            if (c->close_sent) {
                closed_clean++;
                conn_free(c);
            } else {
                conn_fail(c, F_EOF, 0);
            }
            return;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                conn_fail(c, errno == ECONNRESET ? F_RESET : F_OTHER, errno);
            }
            return;
        }
        short_read = d == rbuf ? (size_t) n < sizeof(rbuf)
                               : c->in_len + (size_t) n < c->in_cap;
        used = parse_input(c, d, len);
        if (used < 0 || c->state == ST_DONE) {
            return;
        }
        len -= (size_t) used;
        if (len == 0) {
            c->in_len = 0;
            if (c->in_cap > 65536) {
                free(c->in);
                c->in = NULL;
                c->in_cap = 0;
            }
            if (short_read) {
                /* the socket is drained: edge-triggered epoll tells when
                 * more comes, a read that would say EAGAIN is saved */
                return;
            }
            continue;
        }
        if (d == rbuf) {
            if (c->in_cap < len + 16384) {
                b = realloc(c->in, len + 16384);
                if (b == NULL) {
                    conn_fail(c, F_OTHER, ENOMEM);
                    return;
                }
                c->in = b;
                c->in_cap = len + 16384;
            }
        }
        memmove(c->in, d + used, len);
        c->in_len = len;
    }
}

/* --- connecting ------------------------------------------------------- */

static int
conn_start(conn_t *c, uint32_t src)
{
    struct sockaddr_in sa;
    int fd, one, err;
    struct epoll_event ev;

    c->fd = -1;
    c->src = src;
    c->last_seq = 0;
    c->started = mono_ns();
    c->state = ST_CONNECTING;
    pending++;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = errno;
        conn_fail(c, err == EMFILE || err == ENFILE ? F_FILES : F_OTHER, err);
        return -1;
    }
    c->fd = fd;
    one = 1;
    /* the port is chosen at connect() for the whole 4-tuple */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(src);
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        conn_fail(c, F_NOADDR, errno);
        return -1;
    }
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        conn_fail(c, F_OTHER, errno);
        return -1;
    }
    if (connect(fd, (struct sockaddr *) &dst, sizeof(dst)) != 0
        && errno != EINPROGRESS)
    {
        err = errno;
        conn_fail(c,
            err == ECONNREFUSED        ? F_REFUSED
                : err == EADDRNOTAVAIL ? F_NOADDR
                                       : F_OTHER,
            err);
        return -1;
    }
    return 0;
}

static void
conn_event(conn_t *c, uint32_t events, long i)
{
    socklen_t sl;
    int err;

    if (c->state == ST_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }
        err = 0;
        sl = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        if (err != 0) {
            conn_fail(c,
                err == ECONNREFUSED     ? F_REFUSED
                    : err == ECONNRESET ? F_RESET
                    : err == ETIMEDOUT  ? F_TIMEOUT
                                        : F_OTHER,
                err);
            return;
        }
        if (first_connect_ns == 0) {
            first_connect_ns = mono_ns();
        }
        c->state = ST_HANDSHAKE;
        if (c->role == ROLE_PUB_HTTP) {
            on_open(c);
        }
        if (send_request(c, i) != 0) {
            return;
        }
    }
    if ((events & EPOLLOUT) && c->out_len > 0) {
        if (conn_flush(c) != 0) {
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        conn_read(c);
    }
}

/* --- publishing ------------------------------------------------------- */

static int
publish(conn_t *pub, long seq)
{
    static char body[MAX_MSG / 4], msg[MAX_MSG / 4 + 512];
    int n, m;

    n = snprintf(body, sizeof(body), MARK "%ld %" PRId64 " ", seq, real_ns());
    if (n < o.size) {
        memset(body + n, 'x', (size_t) (o.size - n));
        n = (int) o.size;
    }
    body[n] = '\0';
    expected += open_by_session[pub->session];
    per_seq_expected[seq - 1] += open_by_session[pub->session];
    published++;
    if (o.target == TARGET_NCHAN) {
        m = snprintf(msg, sizeof(msg),
            "POST %s HTTP/1.1\r\nHost: %s:%d\r\n"
            "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
            pub_paths ? pub_paths[pub->session] : o.pub_path, o.host, o.port, n,
            body);
        return conn_send(pub, msg, (size_t) m);
    }
    m = snprintf(
        msg, sizeof(msg), "{\"type\":\"broadcast\",\"body\":\"%s\"}", body);
    return ws_send(pub, 0x1, msg, (size_t) m);
}

/* --- options ---------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: elearn-wsload --port P [options]\n"
        "  --mode idle|fanout        (idle)\n"
        "  --target nchan|elearn|http (nchan; http: idle keep-alive GETs)\n"
        "  --host A.B.C.D            target address (127.0.0.1)\n"
        "  --path PATH               subscriber path (/sub/wsload)\n"
        "  --paths FILE              subscriber paths, one a line, taken\n"
        "                            in turn (sessions, tokens)\n"
        "  --pub-paths FILE          one publisher per line (sessions):\n"
        "                            subscriber i joins line i %% K of\n"
        "                            --paths, published by line i %% K\n"
        "  --samples-out FILE        every latency (ns), one a line\n"
        "  --pub-path PATH           nchan: POST path (/pub/wsload);\n"
        "                            elearn: the owner's WebSocket path\n"
        "  -c, --connections N       (100; at most %d and the file limit)\n"
        "  -d, --duration S          whole run, seconds (30; at most %d)\n"
        "  -r, --rate R              connections started per second (2000)\n"
        "  --max-pending N           handshakes in flight at most (256)\n"
        "  -m, --messages M          fanout messages (10; at most %d)\n"
        "  -i, --interval-ms MS      between messages (100)\n"
        "  --size B                  message body bytes (64)\n"
        "  --settle-ms MS            after the last subscriber (200)\n"
        "  --drain-ms MS             wait for stragglers (5000)\n"
        "  --timeout-ms MS           handshake timeout (10000)\n"
        "  --retries K               a subscriber refused with 503, timed\n"
        "                            out or cut before the upgrade tries\n"
        "                            again a second later, K times (0)\n"
        "  --proc-index I            this process's block of sources (0)\n"
        "  --sources K               source addresses per process (16)\n"
        "  --src-base A.B.C.D        first source address (127.0.1.1)\n"
        "  --ready-file PATH         written once every connection is tried;\n"
        "                            fanout: PATH.done once drained, then\n"
        "                            the sockets stay open until a signal\n"
        "                            (60 s at most)\n"
        "  --start-file PATH         fanout: publish only once PATH exists\n"
        "                            (after --settle-ms), so that a script\n"
        "                            can read the server between the joins\n"
        "                            and the first message\n"
        "  --label TEXT              copied into the JSON line\n"
        "  -q, --quiet               no progress on standard error\n",
        MAX_CONNS, MAX_SECONDS, MAX_MESSAGES);
}

static int
num_opt(const char *name, const char *v, long lo, long hi, long *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || end == v || n < lo || n > hi) {
        fprintf(stderr, "elearn-wsload: %s must be %ld..%ld, not \"%s\"\n",
            name, lo, hi, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int
parse_opts(int argc, char **argv)
{
    static const struct option lo[] = {{"mode", 1, NULL, 'M'},
        {"target", 1, NULL, 'T'}, {"host", 1, NULL, 'H'},
        {"port", 1, NULL, 'p'}, {"path", 1, NULL, 'P'},
        {"pub-path", 1, NULL, 'U'}, {"paths", 1, NULL, 'K'},
        {"pub-paths", 1, NULL, 'G'}, {"samples-out", 1, NULL, 'W'},
        {"connections", 1, NULL, 'c'}, {"duration", 1, NULL, 'd'},
        {"rate", 1, NULL, 'r'}, {"max-pending", 1, NULL, 'x'},
        {"messages", 1, NULL, 'm'}, {"interval-ms", 1, NULL, 'i'},
        {"size", 1, NULL, 's'}, {"settle-ms", 1, NULL, 'S'},
        {"drain-ms", 1, NULL, 'D'}, {"timeout-ms", 1, NULL, 'O'},
        {"retries", 1, NULL, 'Y'}, {"proc-index", 1, NULL, 'I'},
        {"sources", 1, NULL, 'k'}, {"src-base", 1, NULL, 'B'},
        {"ready-file", 1, NULL, 'R'}, {"label", 1, NULL, 'L'},
        {"start-file", 1, NULL, 'g'}, {"quiet", 0, NULL, 'q'},
        {"help", 0, NULL, 'h'}, {NULL, 0, NULL, 0}};
    struct in_addr a;
    long port;
    int ch, rc;

    o.host = "127.0.0.1";
    o.conns = 100;
    o.seconds = 30;
    o.rate = 2000;
    o.max_pending = 256;
    o.messages = 10;
    o.interval_ms = 100;
    o.size = 64;
    o.settle_ms = 200;
    o.drain_ms = 5000;
    o.timeout_ms = 10000;
    o.sources = 16;
    o.src_base = 0x7f000101; /* 127.0.1.1 */
    o.label = "";
    port = 0;
    rc = 0;
    while ((ch = getopt_long(argc, argv, "c:d:r:m:i:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'M':
            if (strcmp(optarg, "idle") == 0) {
                o.mode = MODE_IDLE;
            } else if (strcmp(optarg, "fanout") == 0) {
                o.mode = MODE_FANOUT;
            } else {
                fprintf(stderr, "elearn-wsload: --mode idle|fanout\n");
                rc = -1;
            }
            break;
        case 'T':
            if (strcmp(optarg, "nchan") == 0) {
                o.target = TARGET_NCHAN;
            } else if (strcmp(optarg, "elearn") == 0) {
                o.target = TARGET_ELEARN;
            } else if (strcmp(optarg, "http") == 0) {
                o.target = TARGET_HTTP;
            } else {
                fprintf(stderr, "elearn-wsload: --target nchan|elearn|http\n");
                rc = -1;
            }
            break;
        case 'H':
            o.host = optarg;
            break;
        case 'p':
            rc |= num_opt("--port", optarg, 1, 65535, &port);
            break;
        case 'P':
            o.path = optarg;
            break;
        case 'U':
            o.pub_path = optarg;
            break;
        case 'G':
            o.pub_paths_file = optarg;
            break;
        case 'W':
            o.samples_file = optarg;
            break;
        case 'K':
            o.paths_file = optarg;
            break;
        case 'c':
            rc |= num_opt("--connections", optarg, 1, MAX_CONNS, &o.conns);
            break;
        case 'd':
            rc |= num_opt("--duration", optarg, 1, MAX_SECONDS, &o.seconds);
            break;
        case 'r':
            rc |= num_opt("--rate", optarg, 1, 1000000, &o.rate);
            break;
        case 'x':
            rc |=
                num_opt("--max-pending", optarg, 1, MAX_CONNS, &o.max_pending);
            break;
        case 'm':
            rc |= num_opt("--messages", optarg, 1, MAX_MESSAGES, &o.messages);
            break;
        case 'i':
            rc |= num_opt("--interval-ms", optarg, 0, 60000, &o.interval_ms);
            break;
        case 's':
            rc |= num_opt("--size", optarg, 32, MAX_MSG / 4 - 1, &o.size);
            break;
        case 'S':
            rc |= num_opt("--settle-ms", optarg, 0, 60000, &o.settle_ms);
            break;
        case 'D':
            rc |= num_opt("--drain-ms", optarg, 0, 600000, &o.drain_ms);
            break;
        case 'O':
            rc |= num_opt("--timeout-ms", optarg, 1, 600000, &o.timeout_ms);
            break;
        case 'Y':
            rc |= num_opt("--retries", optarg, 0, 100, &o.retries);
            break;
        case 'I':
            rc |= num_opt("--proc-index", optarg, 0, 255, &o.proc_index);
            break;
        case 'k':
            rc |= num_opt("--sources", optarg, 1, MAX_SOURCES, &o.sources);
            break;
        case 'B':
            if (inet_pton(AF_INET, optarg, &a) != 1
                || (ntohl(a.s_addr) >> 24) != 127) {
                fprintf(stderr,
                    "elearn-wsload: --src-base must be in "
                    "127.0.0.0/8\n");
                rc = -1;
            }
            o.src_base = ntohl(a.s_addr);
            break;
        case 'R':
            o.ready_file = optarg;
            break;
        case 'g':
            o.start_file = optarg;
            break;
        case 'L':
            o.label = optarg;
            break;
        case 'q':
            o.quiet = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (rc != 0) {
        return -1;
    }
    if (optind < argc || port == 0) {
        fprintf(stderr, "elearn-wsload: --port is required\n");
        usage(stderr);
        return -1;
    }
    o.port = (int) port;
    if (o.target == TARGET_HTTP && o.mode != MODE_IDLE) {
        fprintf(stderr, "elearn-wsload: --target http is for --mode idle\n");
        return -1;
    }
    if (o.path == NULL) {
        o.path = o.target == TARGET_HTTP ? "/" : "/sub/wsload";
    }
    if (o.pub_path == NULL) {
        if (o.target == TARGET_ELEARN && o.mode == MODE_FANOUT
            && o.pub_paths_file == NULL)
        {
            fprintf(stderr,
                "elearn-wsload: --target elearn needs "
                "--pub-path (the owner's /live/... URL)\n");
            return -1;
        }
        o.pub_path = "/pub/wsload";
    }
    if ((uint64_t) o.src_base + (uint64_t) (o.proc_index + 1) * o.sources
        > 0x7ffffffeULL)
    {
        fprintf(stderr, "elearn-wsload: source addresses past 127/8\n");
        return -1;
    }
    if (inet_pton(AF_INET, o.host, &a) != 1) {
        fprintf(stderr, "elearn-wsload: --host must be an IPv4 address\n");
        return -1;
    }
    memset(&dst, 0, sizeof(dst));
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t) o.port);
    dst.sin_addr = a;
    return 0;
}

static int
load_lines(const char *file, char ***paths, long *npaths)
{
    char line[8192];
    size_t n;
    FILE *f;
    char **t;

    if (file == NULL) {
        return 0;
    }
    f = fopen(file, "r");
    if (f == NULL) {
        fprintf(stderr, "elearn-wsload: %s: %s\n", file, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL && *npaths < MAX_CONNS) {
        n = strcspn(line, "\r\n");
        if (n == 0) {
            continue;
        }
        line[n] = '\0';
        t = realloc(*paths, sizeof(char *) * (size_t) (*npaths + 1));
        if (t != NULL) {
            *paths = t;
            t[*npaths] = strdup(line);
        }
        if (t == NULL || t[*npaths] == NULL) {
            fclose(f);
            fprintf(stderr, "elearn-wsload: out of memory\n");
            return -1;
        }
        (*npaths)++;
    }
    fclose(f);
    if (*npaths == 0) {
        fprintf(stderr, "elearn-wsload: %s: no paths\n", file);
        return -1;
    }
    return 0;
}

/* --paths and --pub-paths: one subscriber path per publisher */
static int
load_paths(void)
{
    if (load_lines(o.paths_file, &paths, &npaths) != 0
        || load_lines(o.pub_paths_file, &pub_paths, &npub_paths) != 0)
    {
        return -1;
    }
    if (pub_paths == NULL) {
        return 0;
    }
    if (o.mode != MODE_FANOUT || npub_paths > MAX_SOURCES
        || npaths != npub_paths) {
        fprintf(stderr,
            "elearn-wsload: --pub-paths is for --mode fanout, "
            "at most %d lines, as many as --paths has\n",
            MAX_SOURCES);
        return -1;
    }
    npubs = npub_paths;
    return 0;
}

/* raises the soft open-file limit to the hard one; checks N fits */
static int
raise_files(long need)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("elearn-wsload: getrlimit");
        return -1;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("elearn-wsload: setrlimit");
            return -1;
        }
    }
    if ((rlim_t) need + FD_RESERVE > rl.rlim_cur) {
        fprintf(stderr,
            "elearn-wsload: %ld connections need %ld open files, the limit "
            "is %llu: run more processes (--proc-index)\n",
            need, need + FD_RESERVE, (unsigned long long) rl.rlim_cur);
        return -1;
    }
    return 0;
}

/* --- the report ------------------------------------------------------- */

static int
cmp64(const void *a, const void *b)
{
    int64_t x, y;

    x = *(const int64_t *) a;
    y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static double
pct(double q)
{
    long k;

    if (nsamples == 0) {
        return 0;
    }
    k = (long) (q * (double) nsamples + 0.999999) - 1;
    if (k < 0) {
        k = 0;
    }
    if (k >= nsamples) {
        k = nsamples - 1;
    }
    return (double) samples[k] / 1e6;
}

static void
addr_str(uint32_t a, char *out)
{
    struct in_addr ia;

    ia.s_addr = htonl(a);
    inet_ntop(AF_INET, &ia, out, INET_ADDRSTRLEN);
}

static void
json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            printf("\\%c", *s);
        } else if ((unsigned char) *s < 0x20) {
            printf("\\u%04x", *s);
        } else {
            putchar(*s);
        }
    }
    putchar('"');
}

/* where the losses are: the messages that missed subscribers (the first
 * 20), and how many of the subscribers that opened missed any */
static void
report_losses(void)
{
    long i, n, short_subs;

    printf(",\"missing_by_seq\":{");
    n = 0;
    for (i = 0; i < o.messages && n < 20; i++) {
        if (per_seq_delivered[i] < per_seq_expected[i]) {
            printf("%s\"%ld\":%ld", n++ ? "," : "", i + 1,
                per_seq_expected[i] - per_seq_delivered[i]);
        }
    }
    short_subs = 0;
    for (i = 0; i < o.conns; i++) {
        if (conns[i].opened && conns[i].received < pub_sent[conns[i].session]) {
            short_subs++;
        }
    }
    printf("},\"subscribers_short\":%ld", short_subs);
}

static int
report(int64_t t0, int64_t t_end, const char *stopped)
{
    static const char *modes[] = {"idle", "fanout"};
    static const char *targets[] = {"nchan", "elearn", "http"};
    char first[INET_ADDRSTRLEN], last[INET_ADDRSTRLEN];
    double mean, connect_s;
    struct rusage ru;
    long i, lost;
    int ok;

    qsort(samples, (size_t) nsamples, sizeof(int64_t), cmp64);
    mean = 0;
    for (i = 0; i < nsamples; i++) {
        mean += (double) samples[i];
    }
    mean = nsamples ? mean / (double) nsamples / 1e6 : 0;
    lost = expected - delivered;
    getrusage(RUSAGE_SELF, &ru);
    addr_str(o.src_base + (uint32_t) (o.proc_index * o.sources), first);
    addr_str(o.src_base + (uint32_t) (o.proc_index * o.sources + o.sources - 1),
        last);
    connect_s = all_tried_ns ? (double) (all_tried_ns - t0) / 1e9 : -1;
    ok = established == o.conns
        && (o.mode == MODE_IDLE
            || (!pub_failed && pub_errors == 0
                && published == o.messages * npubs));

    printf("{\"tool\":\"elearn-wsload\",\"label\":");
    json_str(o.label);
    printf(",\"mode\":\"%s\",\"target\":\"%s\",\"port\":%d,"
           "\"proc_index\":%ld,\"sources\":%ld,\"source_first\":\"%s\","
           "\"source_last\":\"%s\",\"connections\":%ld,\"established\":%ld,"
           "\"failed\":%ld,\"dropped\":%ld,\"retried\":%ld,"
           "\"fail_reasons\":{",
        modes[o.mode], targets[o.target], o.port, o.proc_index, o.sources,
        first, last, o.conns, established, failed, dropped, retried);
    for (i = 0; i < F_COUNT; i++) {
        printf("%s\"%s\":%ld", i ? "," : "", fail_names[i], fails[i]);
    }
    printf("},\"connect_s\":");
    if (connect_s < 0) {
        printf("null");
    } else {
        printf("%.3f", connect_s);
    }
    printf(",\"elapsed_s\":%.3f,\"closed_clean\":%ld,\"pings\":%ld,"
           "\"client_maxrss_kb\":%ld,\"client_cpu_s\":%.3f",
        (double) (t_end - t0) / 1e9, closed_clean, pings, ru.ru_maxrss,
        (double) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
            + (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    if (o.mode == MODE_FANOUT) {
        printf(",\"sessions\":%ld,\"messages\":%ld,\"published\":%ld,"
               "\"publish_acks\":%ld,"
               "\"publish_errors\":%ld,\"publisher_failed\":%s,"
               "\"interval_ms\":%ld,\"size\":%ld,\"expected\":%ld,"
               "\"delivered\":%ld,\"lost\":%ld,\"duplicates\":%ld,"
               "\"other_frames\":%ld,\"latency_ms\":{\"samples\":%ld,"
               "\"min\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
               "\"max\":%.3f,\"mean\":%.3f}",
            npubs, o.messages, published, pub_acks, pub_errors,
            pub_failed ? "true" : "false", o.interval_ms, o.size, expected,
            delivered, lost, dups, other_frames, nsamples,
            nsamples ? (double) samples[0] / 1e6 : 0, pct(0.5), pct(0.9),
            pct(0.99), nsamples ? (double) samples[nsamples - 1] / 1e6 : 0,
            mean);
    }
    if (o.mode == MODE_FANOUT) {
        report_losses();
    }
    printf(",\"stopped\":\"%s\",\"error\":", stopped);
    json_str(first_error);
    printf(",\"ok\":%s}\n", ok ? "true" : "false");
    fflush(stdout);

    fprintf(stderr,
        "elearn-wsload %s %s: %ld/%ld connected, %ld failed, %ld dropped, "
        "sources %s-%s (%ld), connect phase %.2f s, run %.2f s (%s)\n",
        modes[o.mode], targets[o.target], established, o.conns, failed, dropped,
        first, last, o.sources, connect_s < 0 ? 0 : connect_s,
        (double) (t_end - t0) / 1e9, stopped);
    if (o.mode == MODE_FANOUT) {
        fprintf(stderr,
            "  %ld/%ld messages published (%ld acks, %ld errors), "
            "%ld/%ld delivered, %ld lost, %ld duplicates\n"
            "  latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f "
            "(%ld samples)\n",
            published, o.messages * npubs, pub_acks, pub_errors, delivered,
            expected, lost, dups, pct(0.5), pct(0.9), pct(0.99),
            nsamples ? (double) samples[nsamples - 1] / 1e6 : 0, nsamples);
    }
    if (first_error[0] != '\0') {
        fprintf(stderr, "elearn-wsload: %s: %s\n", ok ? "first error" : "error",
            first_error);
    }
    return ok ? 0 : 1;
}

/* --- the loop --------------------------------------------------------- */

static void
write_ready(void)
{
    char tmp[4096];
    FILE *f;

    if (o.ready_file == NULL) {
        return;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", o.ready_file);
    f = fopen(tmp, "w");
    if (f == NULL) {
        return;
    }
    fprintf(f, "%ld %ld\n", established, failed);
    fclose(f);
    rename(tmp, o.ready_file);
}

/* fanout with --ready-file: "<file>.done" tells a script that this
 * process has published and drained; the connections stay open (and
 * answered) until a signal or a minute, so that the script can read the
 * server's counters before anyone leaves */
static void
linger(void)
{
    struct epoll_event evs[1024];
    char done[4096];
    int64_t until;
    FILE *f;
    int n, k;

    snprintf(done, sizeof(done), "%s.done", o.ready_file);
    f = fopen(done, "w");
    if (f != NULL) {
        fprintf(f, "%ld %ld\n", delivered, expected);
        fclose(f);
    }
    until = mono_ns() + 60 * (int64_t) 1000000000;
    while (!stop_signal && mono_ns() < until) {
        n = epoll_wait(ep, evs, 1024, 100);
        for (k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;

            if (c->state != ST_DONE) {
                conn_event(c, evs[k].events, c - conns);
            }
        }
    }
}

/* --samples-out: every latency in ns, sorted, for merging processes */
static int
write_samples(void)
{
    FILE *f;
    long i;

    f = fopen(o.samples_file, "w");
    if (f == NULL) {
        fprintf(
            stderr, "elearn-wsload: %s: %s\n", o.samples_file, strerror(errno));
        return -1;
    }
    for (i = 0; i < nsamples; i++) {
        fprintf(f, "%" PRId64 "\n", samples[i]);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static void
check_timeouts(int64_t now)
{
    long i;

    for (i = 0; i < o.conns + npubs; i++) {
        if ((conns[i].state == ST_CONNECTING || conns[i].state == ST_HANDSHAKE)
            && now - conns[i].started > o.timeout_ms * 1000000)
        {
            conn_fail(&conns[i], F_TIMEOUT, ETIMEDOUT);
        }
    }
}

static void
close_all(void)
{
    struct epoll_event evs[1024];
    int64_t until;
    long i, open;
    int n, k;

    open = 0;
    for (i = 0; i < o.conns + npubs; i++) {
        conn_t *c = &conns[i];

        if (c->state == ST_OPEN && c->role != ROLE_HTTP
            && c->role != ROLE_PUB_HTTP) {
            if (ws_close(c, 1000) == 0) {
                open++;
            }
        } else if (c->state == ST_RETRY) {
            /* its retry did not come before the end */
            failed++;
            fails[c->why]++;
            conn_free(c);
        } else if (c->state != ST_DONE && c->state != ST_NEW
            && c->state != ST_CLOSING) {
            conn_free(c);
        }
    }
    until = mono_ns() + CLOSE_WAIT_NS;
    while (open > 0 && mono_ns() < until) {
        n = epoll_wait(ep, evs, 1024, 50);
        for (k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;

            if (c->state == ST_DONE) {
                continue;
            }
            conn_event(c, evs[k].events, c - conns);
            if (c->state == ST_DONE) {
                open--;
            }
        }
    }
    for (i = 0; i < o.conns + npubs; i++) {
        if (conns[i].state != ST_DONE && conns[i].state != ST_NEW) {
            conn_free(&conns[i]);
        }
    }
}

int
main(int argc, char **argv)
{
    int64_t t0, now, deadline, next_tick, pub_at, drain_until, next_pub;
    struct epoll_event evs[1024];
    const char *stopped;
    long i, nstart, want, next_sub, pubs_open;
    struct sigaction sa;
    uint32_t src0;
    int n, k, rc, timeout;

    if (parse_opts(argc, argv) != 0 || load_paths() != 0) {
        return 2;
    }
    if (raise_files(o.conns + npubs) != 0) {
        return 2;
    }
    if (getrandom(&rng, sizeof(rng), 0) != sizeof(rng) || rng == 0) {
        rng = (uint64_t) real_ns() | 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    conns = calloc((size_t) (o.conns + npubs), sizeof(conn_t));
    retry_q = calloc((size_t) o.conns, sizeof(long));
    if (o.mode == MODE_FANOUT) {
        max_samples = o.conns * o.messages;
        if (max_samples > MAX_SAMPLES) {
            max_samples = MAX_SAMPLES;
        }
        samples = malloc(sizeof(int64_t) * (size_t) max_samples);
        per_seq_expected = calloc((size_t) o.messages, sizeof(long));
        per_seq_delivered = calloc((size_t) o.messages, sizeof(long));
        open_by_session = calloc((size_t) npubs, sizeof(long));
        pub_next = calloc((size_t) npubs, sizeof(int64_t));
        pub_sent = calloc((size_t) npubs, sizeof(long));
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || retry_q == NULL || ep < 0
        || (o.mode == MODE_FANOUT
            && (!samples || !per_seq_expected || !per_seq_delivered
                || !open_by_session || !pub_next || !pub_sent)))
    {
        perror("elearn-wsload: setup");
        return 2;
    }
    for (i = 0; i < o.conns + npubs; i++) {
        conns[i].fd = -1;
        conns[i].role = o.target == TARGET_HTTP ? ROLE_HTTP : ROLE_SUB;
        conns[i].session = (uint16_t) (i % npubs);
    }
    pubs = &conns[o.conns];
    src0 = o.src_base + (uint32_t) (o.proc_index * o.sources);

    t0 = mono_ns();
    deadline = t0 + (int64_t) o.seconds * 1000000000;
    next_tick = t0 + 1000000000;
    pub_at = 0;
    drain_until = 0;
    next_sub = 0;
    stopped = "duration";

    for (i = 0; i < npubs; i++) {
        if (o.mode == MODE_FANOUT) {
            /* the publishers first: a refused target shows at once */
            pubs[i].role =
                o.target == TARGET_NCHAN ? ROLE_PUB_HTTP : ROLE_PUB_WS;
            pubs[i].session = (uint16_t) i;
            conn_start(&pubs[i], src0 + (uint32_t) (i % o.sources));
        } else {
            pubs[i].state = ST_DONE;
        }
    }

    for (;;) {
        now = mono_ns();
        if (stop_signal) {
            stopped = "signal";
            break;
        }
        if (now >= deadline) {
            break;
        }
        if (o.mode == MODE_FANOUT && pubs_down > 0) {
            stopped = "publisher failed";
            break;
        }
        /* start subscribers at the rate, a bounded number in flight */
        want = (long) ((double) (now - t0) / 1e9 * (double) o.rate) + 1;
        if (want > o.conns) {
            want = o.conns;
        }
        nstart = 0;
        while (retry_head < retry_tail && pending < o.max_pending
            && nstart < 1024) {
            i = retry_q[retry_head % o.conns];
            if (conns[i].started > now) {
                break;
            }
            retry_head++;
            conn_start(&conns[i], src0 + (uint32_t) (i % o.sources));
            nstart++;
        }
        while (next_sub < want && pending < o.max_pending && nstart < 1024) {
            conn_start(
                &conns[next_sub], src0 + (uint32_t) (next_sub % o.sources));
            next_sub++;
            nstart++;
        }
        if (established == 0 && failed >= (o.conns < 50 ? o.conns : 50)) {
            stopped = "no connection";
            break;
        }
        if (all_tried_ns == 0 && next_sub == o.conns && pending == 0
            && retry_head == retry_tail)
        {
            all_tried_ns = now;
            write_ready();
            if (!o.quiet) {
                fprintf(stderr,
                    "elearn-wsload: %ld established, %ld failed "
                    "in %.2f s\n",
                    established, failed, (double) (now - t0) / 1e9);
            }
        }
        pubs_open = 0;
        for (i = 0; o.mode == MODE_FANOUT && i < npubs; i++) {
            pubs_open += pubs[i].state == ST_OPEN;
        }
        if (o.mode == MODE_FANOUT && all_tried_ns != 0 && pub_at == 0
            && pubs_open == npubs
            && (o.start_file == NULL || access(o.start_file, F_OK) == 0))
        {
            /* the publishers spread over one interval */
            pub_at = now + o.settle_ms * 1000000;
            for (i = 0; i < npubs; i++) {
                pub_next[i] = pub_at + o.interval_ms * 1000000 * i / npubs;
            }
        }
        next_pub = INT64_MAX;
        if (pub_at != 0) {
            for (i = 0; i < npubs && pubs_down == 0; i++) {
                while (pub_sent[i] < o.messages && now >= pub_next[i]) {
                    if (publish(&pubs[i], ++pub_sent[i]) != 0) {
                        break;
                    }
                    pub_next[i] += o.interval_ms * 1000000;
                    if (pub_next[i] < now) {
                        pub_next[i] = now; /* late: no burst to catch up */
                    }
                }
                if (pub_sent[i] < o.messages && pub_next[i] < next_pub) {
                    next_pub = pub_next[i];
                }
            }
        }
        if (pub_at != 0) {
            if (published == o.messages * npubs && drain_until == 0) {
                drain_until = now + o.drain_ms * 1000000;
            }
            if (drain_until != 0
                && ((delivered >= expected
                        && (o.target != TARGET_NCHAN
                            || pub_acks + pub_errors >= published))
                    || now >= drain_until))
            {
                stopped = delivered >= expected ? "all delivered" : "drain";
                break;
            }
        }
        if (now >= next_tick) {
            check_timeouts(now);
            next_tick = now + 1000000000;
        }

        timeout = 100;
        if (next_sub < o.conns) {
            timeout = 1;
        } else if (retry_head < retry_tail) {
            timeout = 10;
        } else if (next_pub != INT64_MAX) {
            k = (int) ((next_pub - now) / 1000000);
            timeout = k < 0 ? 0 : k < 100 ? k : 100;
        } else if (drain_until != 0) {
            timeout = 10;
        }
        n = epoll_wait(ep, evs, 1024, timeout);
        for (k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;

            if (c->state != ST_DONE) {
                conn_event(c, evs[k].events, c - conns);
            }
        }
    }
    now = mono_ns();
    if (all_tried_ns == 0) {
        /* stopped before every connection was tried: count the rest */
        write_ready();
    }
    if (o.mode == MODE_FANOUT && o.ready_file != NULL && !stop_signal) {
        linger();
    }
    close_all();
    rc = report(t0, now, stopped);
    if (o.samples_file != NULL && write_samples() != 0) {
        rc = 1;
    }
    return rc;
}
