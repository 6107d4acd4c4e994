#!/usr/bin/python3
"""Memory of idle live-session participants in nginx's workers: the
counterpart, for /live/{id}, of tools/ws-idle-mem.py (whose measuring
functions it uses).  Logs in as the demo instructor, registers and enrolls
one student in course 1, creates --sessions sessions and joins each with
--per-session idle participants, --batch at a time (a join holds a request
until PostgreSQL and Redis answer: all at once would measure the peak of
in-flight requests, not the participants), then prints the growth of the
workers' resident memory per participant.  Run it against a freshly
started nginx of the demo stack.  Loopback only, bounded: at most 9,000
participants, 1,000 per session.

    tools/live-idle-mem.py [--port 8080] [--sessions 3] [--per-session 1000]
"""

import argparse
import base64
import importlib.util
import os
import resource
import time
import uuid

import requests

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    spec = importlib.util.spec_from_file_location(
        "ws_idle_mem", os.path.join(HERE, "ws-idle-mem.py"))
    wim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wim)

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int,
                    default=int(os.environ.get("ELEARN_HTTP_PORT", 8080)))
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--per-session", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50)
    a = ap.parse_args()
    per = min(a.per_session, 1000)
    sessions = max(1, min(a.sessions, 9000 // per))
    base = "http://127.0.0.1:%d" % a.port

    def login(email, password):
        r = requests.post(base + "/api/v1/auth/login",
                          json={"email": email, "password": password})
        r.raise_for_status()
        return r.json()["accessToken"]

    owner = login("instructor@elearn.dev", "instructor-dev-pass")
    email = "mem%s@test.elearn.dev" % uuid.uuid4().hex[:8]
    requests.post(base + "/api/v1/auth/register",
                  json={"email": email, "password": "live mem 1234",
                        "displayName": "Idle participant"}).raise_for_status()
    student = login(email, "live mem 1234")
    requests.post(base + "/api/v1/courses/1/enrollments",
                  headers={"Authorization": "Bearer " + student})

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (min(hard, sessions * per + 100), hard))
    pids = wim.workers(a.port)
    before = wim.rss(pids)
    socks = []
    for _ in range(sessions):
        r = requests.post(base + "/api/v1/courses/1/live-sessions",
                          headers={"Authorization": "Bearer " + owner},
                          json={"title": "idle", "capacity": per})
        r.raise_for_status()
        sid = r.json()["sessionId"]
        left = per
        while left:
            n = min(a.batch, left)
            key = base64.b64encode(os.urandom(16)).decode()
            req = ("GET /live/%d?access_token=%s HTTP/1.1\r\n"
                   "Host: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n"
                   % (sid, student, key)).encode()
            socks += wim.open_many(a.port, n, req)
            left -= n
    time.sleep(1.5)
    after = wim.rss(pids)
    print("idle live participants %d in %d sessions: workers +%.0f KiB, "
          "%.0f B/participant" % (len(socks), sessions,
                                   (after - before) / 1024,
                                   (after - before) / len(socks)))
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
