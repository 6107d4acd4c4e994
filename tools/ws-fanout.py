#!/usr/bin/env python3
"""Fan-out of one shared frame to N WebSocket connections, through the
echo location's "broadcast:" command (elearn_ws_echo on; run nginx with
one worker, ELEARN_NGINX_WORKERS=1, so that every connection is in the
list of the worker that broadcasts).

Reports, over R rounds: the worker's own time to queue and write the frame
to every connection (from the echo's "stats"), and the delivery latency
seen by the clients from send to receipt (p50, p99, max).  The clients are
one Python epoll loop, much slower than a C client: its latencies are an
upper bound.  Loopback only, bounded: N at most 9,000, R at most 100.

    ELEARN_WS_ECHO=on ELEARN_NGINX_WORKERS=1 tools/stack.sh start nginx
    tools/ws-fanout.py [--port 8080] [--count 1000] [--rounds 20]
"""

import argparse
import base64
import json
import os
import resource
import select
import socket
import struct
import sys
import time

HANDSHAKE = ("GET /ws-echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n")


def frame(payload):
    key = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else \
        struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((HANDSHAKE % key).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise SystemExit("closed during the handshake")
        buf += d
    if b" 101 " not in buf.split(b"\r\n", 1)[0]:
        raise SystemExit("no upgrade: %r" % buf[:80])
    return s


def recv_frame(s):
    s.setblocking(True)
    head = s.recv(2)
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", s.recv(2))[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return data


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int,
                    default=int(os.environ.get("ELEARN_HTTP_PORT", 8080)))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--size", type=int, default=100)
    a = ap.parse_args()
    n, rounds = min(a.count, 9000), min(a.rounds, 100)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))

    socks = [connect(a.port) for _ in range(n)]
    ep = select.epoll()
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
    byfd = {s.fileno(): s for s in socks}
    sender = socks[0]

    lat, server = [], []
    for r in range(rounds):
        payload = ("broadcast:%04d:" % r).encode()
        payload += b"x" * max(0, a.size - len(payload))
        want = len(payload) + (2 if len(payload) < 126 else 4)
        got = {fd: 0 for fd in byfd}
        left = n
        t0 = time.perf_counter()
        sender.sendall(frame(payload))
        deadline = t0 + 10
        while left and time.perf_counter() < deadline:
            for fd, _ in ep.poll(1):
                try:
                    d = byfd[fd].recv(65536)
                except BlockingIOError:
                    continue
                if got[fd] < want <= got[fd] + len(d):
                    lat.append(time.perf_counter() - t0)
                    left -= 1
                got[fd] += len(d)
        if left:
            raise SystemExit("round %d: %d connections got nothing" % (r, left))
        sender.setblocking(True)
        sender.sendall(frame(b"stats"))
        st = json.loads(recv_frame(sender))
        sender.setblocking(False)
        server.append(st["lastBroadcast"]["micros"])
        if st["lastBroadcast"]["receivers"] != n:
            raise SystemExit("the worker broadcast to %d of %d: run nginx "
                             "with one worker" %
                             (st["lastBroadcast"]["receivers"], n))
        time.sleep(0.05)

    print("fan-out of one %d-byte frame to %d connections, %d rounds" %
          (a.size, n, rounds))
    print("  worker: queue + write to all: median %.2f ms, max %.2f ms" %
          (pct(server, 50) / 1000, max(server) / 1000))
    print("  clients (Python epoll, an upper bound): p50 %.2f ms, "
          "p99 %.2f ms, max %.2f ms" % (pct(lat, 50) * 1000,
                                         pct(lat, 99) * 1000,
                                         max(lat) * 1000))
    for s in socks:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
