#!/usr/bin/python3
"""Broadcast delivery latency of a live session, measured from one Python
process: N WebSocket participants join /live/{id}, the owner broadcasts M
messages (one at a time, each carrying its send time), and every
participant's receipt time is taken from one epoll loop.

A Python client is slow (the field notes measured one 8x slower than a C
client on the same broadcasts): the figures are an upper bound on the
server's, good for comparing designs and runs on one machine, not for
absolute claims.  Also prints how the sockets spread over nginx's worker
processes and how many Redis PUBLISH calls each message cost.

    tools/live-fanout.py --port 8080 --redis-port 56379 --token T \
        --owner-token O --session S [-n 1000] [-m 20]

Bounded: at most 1000 participants (the session's capacity cap), 100
messages, 120 seconds.
"""

import argparse
import base64
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import time


def handshake(port, path):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: %s\r\n\r\n" % (path, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
    return s, rest


def frames(buf):
    """Complete server frames in buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        op, ln = buf[0] & 0x0f, buf[1] & 0x7f
        i = 2
        if ln == 126:
            if len(buf) < 4:
                break
            ln, i = struct.unpack("!H", buf[2:4])[0], 4
        elif ln == 127:
            if len(buf) < 10:
                break
            ln, i = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < i + ln:
            break
        out.append((op, buf[i:i + ln]))
        buf = buf[i + ln:]
    return out, buf


def client_frame(text):
    data = text.encode()
    mask = os.urandom(4)
    hdr = bytes([0x81])
    if len(data) < 126:
        hdr += bytes([0x80 | len(data)])
    else:
        hdr += bytes([0x80 | 126]) + struct.pack("!H", len(data))
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def publishes(redis_port):
    out = subprocess.run(["redis-cli", "-p", str(redis_port), "info",
                          "commandstats"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if line.startswith("cmdstat_publish:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def workers_of(port, local_ports):
    """How many of our sockets each nginx process holds."""
    out = subprocess.run(["ss", "-tnpH", "state", "established",
                          "( sport = :%d )" % port], capture_output=True,
                         text=True).stdout
    count = {}
    for line in out.splitlines():
        parts = line.split()
        peer = int(parts[3].rsplit(":", 1)[1])
        if peer in local_ports and "pid=" in line:
            pid = line.split("pid=")[1].split(",")[0]
            count[pid] = count.get(pid, 0) + 1
    return count


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--owner-token", required=True)
    ap.add_argument("--session", type=int, required=True)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("-m", type=int, default=20)
    a = ap.parse_args()
    n, m = min(a.n, 1000), min(a.m, 100)
    deadline = time.time() + 120

    path = "/live/%d?access_token=%s" % (a.session, a.token)
    socks = []
    for _ in range(n):
        s, rest = handshake(a.port, path)
        s.setblocking(False)
        socks.append([s, rest])
    owner, orest = handshake(a.port, "/live/%d?access_token=%s"
                             % (a.session, a.owner_token))
    local = {s.getsockname()[1] for s, _ in socks}
    spread = workers_of(a.port, local)

    sel = selectors.DefaultSelector()
    for i, (s, _) in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    time.sleep(0.5)

    def pump(until, want, seen):
        while len(seen) < want and time.time() < until:
            for key, _ in sel.select(0.2):
                i = key.data
                s = socks[i][0]
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                now = time.time()
                fs, socks[i][1] = frames(socks[i][1] + chunk)
                for op, payload in fs:
                    if op != 1:
                        continue
                    msg = json.loads(payload)
                    if msg.get("type") == "broadcast":
                        seen.append(now - float(msg["body"]))

    # drain welcomes and presence
    pump(time.time() + 1, 1 << 30, [])

    before = publishes(a.redis_port)
    lat = []
    for _ in range(m):
        seen = []
        owner.sendall(client_frame(json.dumps(
            {"type": "broadcast", "body": "%.6f" % time.time()})))
        pump(min(deadline, time.time() + 10), n, seen)
        lat += seen
        if len(seen) < n:
            print("lost: %d of %d" % (n - len(seen), n), file=sys.stderr)
    after = publishes(a.redis_port)

    print("participants %d, messages %d, delivered %d of %d" % (
        n, m, len(lat), n * m))
    print("latency ms: p50 %.1f p90 %.1f p99 %.1f max %.1f" % tuple(
        1000 * pct(lat, p) for p in (50, 90, 99, 100)))
    print("sockets per nginx process: %s" % (
        ", ".join("%s: %d" % kv for kv in sorted(spread.items())) or "?"))
    print("redis PUBLISH per message: %.2f" % ((after - before) / m))
    for s, _ in socks:
        s.close()
    owner.close()


if __name__ == "__main__":
    main()
