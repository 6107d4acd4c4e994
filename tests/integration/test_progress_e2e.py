"""Video progress end to end (issue 5, "Reliability tests"): reports
posted over HTTP to the module, through Kafka, written by elearn-progress
into PostgreSQL.  Every report that got a 204 must be in PostgreSQL in the
end, none applied twice, the final positions the last sent:

- with the daemon killed (kill -9) in the middle of the load;
- with the broker stopped for 15 s in the middle of the load, in the
  default (queued) mode, where the 204s go on;
- the same in durable mode, where reports are refused (503) while the
  broker is away and nothing that got a 204 is lost.

Each test makes its own students and video; every wait is bounded."""

import re
import threading
import time
import uuid

import psycopg2
import pytest
import requests

from test_progress_daemon import (CONFIG, commit_group_offsets,
                                  high_watermarks, wait_for)
from test_workers import Daemon

DURATION = 3600
STEP = 10           # seconds per report


@pytest.fixture
def video(pg_dsn):
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute("SELECT course_id FROM courses WHERE published "
                  "ORDER BY course_id LIMIT 1 OFFSET 555")
        cid = c.fetchone()[0]
        c.execute("INSERT INTO videos (course_id, title, position, "
                  "duration_seconds, status) VALUES (%s, 'e2e progress', "
                  "950, %s, 'ready') RETURNING video_id", (cid, DURATION))
        vid = c.fetchone()[0]
    yield {"course": cid, "video": vid}
    with conn.cursor() as c:
        c.execute("DELETE FROM videos WHERE video_id = %s", (vid,))
    conn.close()


def students(stack, base_url, course, n):
    out = []
    for _ in range(n):
        email = "e2e%s@test.elearn.dev" % uuid.uuid4().hex[:12]
        r = requests.post(base_url + "/api/v1/auth/register",
                          json={"email": email, "password": "e2e pass 123",
                                "displayName": "E2E"}, timeout=30)
        assert r.status_code == 201, r.text
        uid = r.json()["userId"]
        h = {"Authorization": "Bearer " + stack.token(email,
                                                      "e2e pass 123")}
        r = requests.post(base_url + "/api/v1/courses/%d/enrollments"
                          % course, headers=h, timeout=30)
        assert r.status_code == 201, r.text
        out.append((uid, h))
    return out


@pytest.fixture
def daemon(build_dir, stack_env, kafka_brokers, tmp_path):
    """elearn-progress from the end of elearn.progress (what other tests
    reported is not ours), small batches so a kill finds some committed."""
    commit_group_offsets(kafka_brokers, high_watermarks(kafka_brokers))
    started = []

    def start():
        d = Daemon(build_dir, stack_env,
                   tmp_path / ("progress-%d.log" % len(started)),
                   config=CONFIG, binary="elearn-progress",
                   extra={"ELEARN_CONSUMER_BATCH_TIMEOUT": "200ms"})
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d.log.close()


class Reporters:
    """One thread per student, each posting reports k = 0, 1, ... in
    order (position STEP k + STEP, interval [STEP k, STEP k + STEP)) at
    about `rate` a second, for `seconds`.  Remembers which got a 204."""

    def __init__(self, base_url, vid, studs, rate, seconds):
        self.url = base_url + "/api/v1/videos/%d/progress" % vid
        self.studs, self.rate, self.seconds = studs, rate, seconds
        self.ok = {uid: [] for uid, _ in studs}
        self.last = {}
        self.codes = []
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(s,))
                        for s in studs]

    def run(self, stud):
        uid, h = stud
        s = requests.Session()
        t0 = time.time()
        k = 0
        while time.time() - t0 < self.seconds \
                and STEP * (k + 1) <= DURATION:
            body = {"positionSeconds": STEP * k + STEP,
                    "watched": [[STEP * k, STEP * k + STEP]]}
            try:
                r = s.post(self.url, json=body, headers=h, timeout=30)
                code = r.status_code
            except requests.RequestException as e:
                code = 0
                self.errors.append(repr(e))
            self.codes.append(code)
            self.last[uid] = code
            if code == 204:
                self.ok[uid].append(k)
            k += 1
            ahead = k / self.rate - (time.time() - t0)
            if ahead > 0:
                time.sleep(ahead)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(self.seconds + 120)
            assert not t.is_alive()


def rows(dsn, vid, uids):
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as c:
            c.execute("SELECT user_id, position_seconds, watched::text "
                      "FROM video_progress WHERE video_id = %s "
                      "AND user_id = ANY(%s)", (vid, uids))
            return {r[0]: (r[1], r[2]) for r in c.fetchall()}
    finally:
        conn.close()


def intervals(text):
    return [(int(a), int(b)) for a, b in re.findall(r"\[(\d+),(\d+)\)",
                                                     text)]


def covered(text, k):
    lo, hi = STEP * k, STEP * k + STEP
    return any(a <= lo and hi <= b for a, b in intervals(text))


def all_landed(dsn, vid, load, exact):
    """Every 204'd report is in PostgreSQL.  exact: nothing else was
    written either, so the union is one interval and the position the
    last report's."""
    got = rows(dsn, vid, list(load.ok))
    for uid, ks in load.ok.items():
        if not ks:
            continue
        if uid not in got:
            return None
        pos, watched = got[uid]
        if exact:
            last = max(ks)
            if (pos, watched) != (STEP * last + STEP,
                                  "{[0,%d)}" % (STEP * last + STEP)):
                return None
        elif pos < STEP * max(ks) + STEP or \
                not all(covered(watched, k) for k in ks):
            return None
    return got


def test_kill9_of_the_daemon_mid_load_loses_no_204(stack, base_url, pg_dsn,
                                                   video, daemon):
    studs = students(stack, base_url, video["course"], 12)
    d = daemon()
    load = Reporters(base_url, video["video"], studs, rate=10,
                     seconds=12).start()
    wait_for("a first committed batch",
             lambda: rows(pg_dsn, video["video"], list(load.ok)),
             timeout=30, interval=0.1)
    time.sleep(1)
    d.proc.kill()                       # kill -9, batches in hand lost
    d.proc.wait()
    time.sleep(2)                       # reports go on meanwhile
    d2 = daemon()
    load.join()
    assert set(load.codes) == {204}, set(load.codes)
    wait_for("every 204'd report in PostgreSQL",
             lambda: all_landed(pg_dsn, video["video"], load, exact=True),
             timeout=120)
    assert d2.stop()[0] == 0


def test_broker_outage_queued_mode_204s_continue_and_all_land(
        stack, base_url, pg_dsn, video, daemon):
    studs = students(stack, base_url, video["course"], 8)
    d = daemon()
    load = Reporters(base_url, video["video"], studs, rate=5,
                     seconds=30).start()
    time.sleep(4)
    stack.stop("kafka")
    try:
        n0 = len(load.codes)
        time.sleep(15)
        during = load.codes[n0:]
    finally:
        stack.start("kafka")
    load.join()
    # the producer's queue holds them: the 204s did not stop
    assert len(during) > 8 * 5 * 10, len(during)
    assert set(during) == {204}, set(during)
    assert set(load.codes) == {204}
    wait_for("every report after the broker returned",
             lambda: all_landed(pg_dsn, video["video"], load, exact=True),
             timeout=180)
    assert d.stop()[0] == 0


def test_broker_outage_durable_mode_refuses_and_loses_no_204(
        stack, base_url, pg_dsn, video, daemon):
    old = stack.reconfigure(ELEARN_PROGRESS_ACK="durable")
    log_start = len(stack.nginx_error_log())
    try:
        studs = students(stack, base_url, video["course"], 6)
        d = daemon()
        load = Reporters(base_url, video["video"], studs, rate=4,
                         seconds=35).start()
        time.sleep(4)
        stack.stop("kafka")
        try:
            n0 = len(load.codes)
            time.sleep(15)
            during = load.codes[n0:]
        finally:
            stack.start("kafka")
        load.join()
        assert 503 in during, set(during)
        assert set(load.codes) <= {204, 503}, load.errors[:3]
        # a refusal is one answer (it once went on to write and answer
        # again: "header already sent" and a reset connection)
        assert "header already sent" not in \
            stack.nginx_error_log()[log_start:]
        # and it recovers: every student's last report was a 204 again
        assert set(load.last.values()) == {204}, load.last
        wait_for("every 204'd report",
                 lambda: all_landed(pg_dsn, video["video"], load,
                                    exact=False),
                 timeout=180)
        assert d.stop()[0] == 0
    finally:
        stack.reconfigure(**old)
