"""The transactional outbox (sql/migrations/0011_event_outbox.sql) and its
relay, elearn-outbox (workers/outbox): an enrollment and its event commit
together; the relay publishes every row and deletes it only once the
broker acknowledged it, so a broker outage delays events and loses none;
one relay is active at a time."""

import json
import os
import subprocess
import time
import uuid

import confluent_kafka as ck
import requests

from test_enrollments import enroll, hdr, published, register, unenroll

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def metric(port, name):
    text = requests.get("http://127.0.0.1:%s/metrics" % port,
                        timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s not in the relay's /metrics" % name)


def outbox_rows(pg, uid):
    with pg.cursor() as cur:
        cur.execute("SELECT payload FROM event_outbox "
                    "WHERE payload::json->'data'->>'userId' = %s "
                    "ORDER BY outbox_id", (str(uid),))
        return [json.loads(r[0]) for r in cur.fetchall()]


def consume_for(brokers, uid, want, timeout):
    """The elearn.enrollments events of user uid, read from the start."""
    c = ck.Consumer({"bootstrap.servers": brokers,
                     "group.id": "test-outbox-" + uuid.uuid4().hex,
                     "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
    c.subscribe(["elearn.enrollments"])
    got = []
    deadline = time.time() + timeout
    try:
        while len(got) < want and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            ev = json.loads(m.value())
            if ev.get("data", {}).get("userId") == uid:
                got.append(ev)
    finally:
        c.close()
    return got


def new_student(stack, base_url, pg):
    email, password = register(base_url)
    with pg.cursor() as cur:
        cur.execute("SELECT user_id FROM users WHERE email = %s", (email,))
        uid = cur.fetchone()[0]
    return uid, hdr(stack, email, password)


def test_broker_outage_delays_events_and_loses_none(stack, base_url, pg,
                                                     kafka_brokers):
    uid, h = new_student(stack, base_url, pg)
    courses = published(pg, 3, 400)
    port = stack.env["ELEARN_OUTBOX_METRICS_PORT"]
    before = metric(port, "elearn_outbox_published_total")
    stack.stop("kafka")
    try:
        # enrolling does not need the broker at all
        for cid in courses:
            assert enroll(base_url, h, cid).status_code == 201
        assert unenroll(base_url, h, courses[0]).status_code == 204
        time.sleep(2)
        rows = outbox_rows(pg, uid)
        assert [(e["type"], e["data"]["courseId"]) for e in rows] == \
            [("enrollment.created", c) for c in courses] + \
            [("enrollment.deleted", courses[0])]
    finally:
        stack.start("kafka")
    events = consume_for(kafka_brokers, uid, 4, 90)
    # every event exactly as committed; in commit order per key (course)
    key = lambda e: e["eventId"]
    assert sorted(events, key=key) == sorted(rows, key=key)
    first = [e["type"] for e in events
             if e["data"]["courseId"] == courses[0]]
    assert first == ["enrollment.created", "enrollment.deleted"]
    deadline = time.time() + 30
    while outbox_rows(pg, uid) and time.time() < deadline:
        time.sleep(0.2)
    assert outbox_rows(pg, uid) == []
    assert metric(port, "elearn_outbox_published_total") - before >= 4


def test_event_is_written_with_the_enrollment(stack, base_url, pg):
    """A failed statement leaves neither: enrolling in a course that does
    not exist writes no event."""
    uid, h = new_student(stack, base_url, pg)
    assert enroll(base_url, h, 999999999).status_code == 404
    assert outbox_rows(pg, uid) == []
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM enrollments WHERE user_id = %s",
                    (uid,))
        assert cur.fetchone()[0] == 0


def test_second_relay_is_a_standby(stack, build_dir, tmp_path):
    """Two relays would interleave a key's events: the second one waits
    on the advisory lock and says so on /healthz, then takes over when
    the first one stops."""
    env = dict(stack.env, ELEARN_METRICS_PORT="19484")
    log = open(tmp_path / "second.log", "w")
    p = subprocess.Popen([os.path.join(build_dir, "bin", "elearn-outbox"),
                          "-c", os.path.join(TOP, "config", "outbox.conf")],
                         env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def health():
            try:
                return requests.get("http://127.0.0.1:19484/healthz",
                                    timeout=2).text
            except requests.RequestException:
                return ""
        deadline = time.time() + 15
        while "standby" not in health() and time.time() < deadline:
            time.sleep(0.2)
        assert "standby" in health()
        stack.stop("outbox")
        deadline = time.time() + 15
        while "active" not in health() and time.time() < deadline:
            time.sleep(0.2)
        assert "active" in health()
    finally:
        p.terminate()
        assert p.wait(timeout=15) == 0
        stack.start("outbox")
