#!/usr/bin/python3
"""What one more subscriber of a channel costs Redis per PUBLISH: the
figure behind the live sessions' one-subscription-per-worker design
(docs/ARCHITECTURE.md, "Live sessions").  For k = 1, 2, 4, 8 raw
subscribers of a scratch channel, publishes 20,000 300-byte messages in
pipelines of 100 and prints Redis's own CPU time per PUBLISH (the delta of
INFO commandstats) and the wall time per message.

    tools/live-pubsub-cost.py REDIS_PORT

Loopback only; bounded (80,000 publishes in all).
"""

import socket
import subprocess
import sys
import threading
import time


def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def stats(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "info",
                          "commandstats"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if line.startswith("cmdstat_publish:"):
            f = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            return int(f["calls"]), int(f["usec"])
    return 0, 0


def main():
    port = int(sys.argv[1])
    msg, n = b"x" * 300, 20000
    for k in (1, 2, 4, 8):
        subs = [socket.create_connection(("127.0.0.1", port))
                for _ in range(k)]
        for s in subs:
            s.sendall(cmd("SUBSCRIBE", "elearn:bench:pubsub-cost"))
            s.recv(100)
        stop = []

        def drain(s):
            s.settimeout(0.2)
            while not stop:
                try:
                    s.recv(1 << 20)
                except socket.timeout:
                    pass

        threads = [threading.Thread(target=drain, args=(s,)) for s in subs]
        for t in threads:
            t.start()
        p = socket.create_connection(("127.0.0.1", port))
        batch = cmd("PUBLISH", "elearn:bench:pubsub-cost", msg) * 100
        c0, u0 = stats(port)
        t0 = time.time()
        for _ in range(n // 100):
            p.sendall(batch)
            buf = b""
            while buf.count(b"\r\n") < 100:
                buf += p.recv(65536)
        wall = time.time() - t0
        c1, u1 = stats(port)
        print("subscribers %d: redis %.2f us per PUBLISH, wall %.1f us per "
              "message" % (k, (u1 - u0) / max(1, c1 - c0), wall / n * 1e6))
        stop.append(1)
        for t in threads:
            t.join()
        for s in subs + [p]:
            s.close()


if __name__ == "__main__":
    main()
