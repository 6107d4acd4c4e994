#!/usr/bin/env python3
"""Memory of idle WebSocket connections in nginx's workers.

Opens N idle WebSocket connections to the echo location (elearn_ws_echo
on, ELEARN_WS_ECHO=on in the loopback stack), or with --kind http N idle
keep-alive HTTP connections (one request each to /healthz: the baseline,
nginx's own idle connection), and reports the growth of the workers'
resident memory per connection, with the kernel's memory apart: TCP
buffers (/proc/net/sockstat) and the socket slabs (/proc/slabinfo, needs
root), both machine-wide, so noisy.  Run each kind against a
freshly started nginx: memory freed by closed connections stays in the
workers' heaps and would be reused by the next kind.  Loopback only,
bounded: N at most 9,000 (one client process; open files are capped at
20,000 here), a few seconds.

    tools/ws-idle-mem.py [--port 8080] [--count 5000] [--kind ws|http]
"""

import argparse
import base64
import os
import resource
import socket
import subprocess
import sys
import time


def workers(port):
    out = subprocess.run(["ss", "-ltnpH", "sport = :%d" % port],
                         capture_output=True, text=True).stdout
    pids = set()
    for part in out.split("pid=")[1:]:
        pids.add(int(part.split(",")[0]))
    result = []
    for pid in pids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"worker process" in f.read():
                    result.append(pid)
        except OSError:
            pass
    if not result:
        # the listener is held by the master: take its worker children
        for pid in pids:
            kids = subprocess.run(["pgrep", "-P", str(pid)],
                                  capture_output=True, text=True).stdout
            result += [int(k) for k in kids.split()]
    return sorted(result)


def rss(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    return total


def tcp_mem():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1]) * 4096
    return 0


def slab():
    """Bytes of the kernel's per-socket slabs (TCP sockets, their inodes,
    open files), machine-wide: both ends of each loopback connection."""
    total = 0
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("TCP", "sock_inode_cache", "filp"):
                    total += int(parts[1]) * int(parts[3])
    except (OSError, ValueError, IndexError):
        return 0
    return total


def open_many(port, n, request):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(request)
        socks.append(s)
    for s in socks:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise SystemExit("connection closed during the handshake")
            buf += d
        head = buf.split(b"\r\n", 1)[0]
        if b" 101 " not in head and b" 200 " not in head:
            raise SystemExit("unexpected answer: %r" % head)
    return socks


def measure(port, n, request, label):
    pids = workers(port)
    before, kbefore, sbefore = rss(pids), tcp_mem(), slab()
    socks = open_many(port, n, request)
    time.sleep(1.0)
    after, kafter, safter = rss(pids), tcp_mem(), slab()
    for s in socks:
        s.close()
    per = (after - before) / n
    print("%-22s %6d conns  workers +%8.0f KiB  %7.0f B/conn  "
          "kernel: buffers +%6.0f KiB, socket slabs +%5.0f B/conn "
          "(both ends)" % (label, n, (after - before) / 1024, per,
                           (kafter - kbefore) / 1024,
                           (safter - sbefore) / n))
    time.sleep(1.0)
    return per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int,
                    default=int(os.environ.get("ELEARN_HTTP_PORT", 8080)))
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--kind", choices=("ws", "http"), default="ws")
    a = ap.parse_args()
    n = min(a.count, 9000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
    key = base64.b64encode(os.urandom(16)).decode()
    ws = ("GET /ws-echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
          "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
          "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode()
    http = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    if a.kind == "http":
        measure(a.port, n, http, "idle keep-alive HTTP")
    else:
        measure(a.port, n, ws, "idle WebSocket")


if __name__ == "__main__":
    sys.exit(main())
