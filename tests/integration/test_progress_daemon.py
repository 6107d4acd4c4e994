"""Integration tests of elearn-progress (workers/progress, issue 5).

Runs build/bin/elearn-progress against the test stack (real Kafka, real
PostgreSQL), producing progress.reported events straight to elearn.progress
as the module does, and checks: batching (many reports, few statements,
counted in pg_stat_statements), merging (newest position by report time,
union of intervals), late and replayed reports harmless, completion at the
ratio and not by seeking, course completion (and its one event, relayed by
the stack's elearn-outbox) exactly once under replay, poison messages
dead-lettered after 3 attempts without blocking their partition, SIGTERM
drain, kill -9 and a PostgreSQL outage without loss or DLQ.

Every test makes its own users (and the module fixture its own course), so
tests do not see each other's rows.  Every wait is bounded.
"""

import json
import os
import pathlib
import random
import signal
import subprocess
import threading
import time
import urllib.request
import uuid

import psycopg2
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from test_workers import Daemon, free_port

TOP = pathlib.Path(__file__).resolve().parents[2]
CONFIG = TOP / "config" / "progress.conf"
TOPIC = "elearn.progress"
DLQ = TOPIC + ".dlq"
COMPLETIONS = "elearn.course-completions"
GROUP = "elearn-progress"
PROMTOOL = "/usr/bin/promtool"
UPSERT_LIKE = "WITH input AS (%unnest%INSERT INTO video_progress%"


def q(dsn, sql, args=None):
    """One statement on a fresh connection (the PG outage test breaks
    long-lived ones); returns all rows or None."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def new_users(dsn, n):
    # @test.elearn.dev: the accounts tests make (not demo data)
    rows = q(dsn, "INSERT INTO users (email, password_hash, display_name)"
                  " SELECT 'pd-' || md5(random()::text) || '@test.elearn.dev',"
                  " '$argon2id$test', 'progress test'"
                  " FROM generate_series(1, %s) RETURNING user_id", (n,))
    return [r[0] for r in rows]


@pytest.fixture(scope="module")
def course(pg_dsn):
    """A published course with three ready videos (100, 200, 600 s) and one
    quiz, and a second course of ten videos without quizzes for load."""
    inst = q(pg_dsn, "SELECT user_id FROM users WHERE role = 'instructor'"
                     " ORDER BY user_id LIMIT 1")[0][0]

    def make(title, durations, quizzes):
        cid = q(pg_dsn, "INSERT INTO courses (instructor_id, title, category,"
                        " level, published) VALUES (%s, %s, 'testing',"
                        " 'beginner', true) RETURNING course_id",
                (inst, title))[0][0]
        vids = [q(pg_dsn, "INSERT INTO videos (course_id, title, position,"
                          " duration_seconds, status) VALUES (%s, %s, %s, %s,"
                          " 'ready') RETURNING video_id",
                  (cid, "v%d" % i, i, d))[0][0]
                for i, d in enumerate(durations)]
        qids = [q(pg_dsn, "INSERT INTO quizzes (course_id, title)"
                          " VALUES (%s, 'quiz') RETURNING quiz_id",
                  (cid,))[0][0] for _ in range(quizzes)]
        return {"id": cid, "videos": vids, "durations": durations,
                "quizzes": qids}

    made = {"a": make("progress daemon A", [100, 200, 600], 1),
            "b": make("progress daemon B", [300] * 10, 0)}
    yield made
    # the demo data's counts are checked elsewhere: leave none of ours
    # (the cascade takes videos, quizzes, progress and completions along)
    q(pg_dsn, "DELETE FROM courses WHERE course_id = ANY(%s)",
      ([c["id"] for c in made.values()],))


def report(user, video, pos, watched, at_ms, course_id=1, duration=600):
    return {
        "eventId": str(uuid.uuid4()),
        "type": "progress.reported",
        "occurredAt": "2026-11-27T12:00:00.000Z",
        "schemaVersion": 1,
        "data": {"userId": user, "videoId": video, "courseId": course_id,
                 "positionSeconds": pos, "watched": watched,
                 "durationSeconds": duration, "reportedAtMs": at_ms},
    }


@pytest.fixture
def producer(kafka_brokers):
    p = Producer({"bootstrap.servers": kafka_brokers,
                  "enable.idempotence": True, "linger.ms": 5})
    yield p
    p.flush(10)


def send(producer, ev, raw=None, key=None):
    value = raw if raw is not None else json.dumps(ev)
    if key is None:
        key = str(ev["data"]["userId"])
    for _ in range(100):
        try:
            producer.produce(TOPIC, value=value, key=key)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


@pytest.fixture
def start_daemon(build_dir, stack_env, tmp_path):
    started = []

    def start(**extra):
        d = Daemon(build_dir, stack_env,
                   tmp_path / ("progress-%d.log" % len(started)),
                   config=CONFIG, binary="elearn-progress", extra=extra)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
            d.log.close()


def progress_rows(dsn, users):
    rows = q(dsn, "SELECT user_id, video_id, position_seconds, watched::text,"
                  " watched_seconds, reported_at_ms, completed_at, updated_at"
                  " FROM video_progress WHERE user_id = ANY(%s)", (users,))
    return {(r[0], r[1]): r[2:] for r in rows}


def wait_for(what, check, timeout=60, interval=0.3):
    """Calls check() until it returns a true value; bounded."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
        except psycopg2.OperationalError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)"
                         % (timeout, what, last))


def multirange(intervals):
    """The text PostgreSQL gives for the union of [from, to) intervals."""
    merged = []
    for a, b in sorted(intervals):
        if a == b:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return "{" + ",".join("[%d,%d)" % (a, b) for a, b in merged) + "}"


def read_topic(brokers, topic, want, timeout=30, settle=0):
    """Reads topic from the start with a fresh group until every partition
    reached its end (then settle more seconds); returns [(key, value dict or
    raw text, headers)] of the messages want(value) accepts."""
    c = Consumer({"bootstrap.servers": brokers,
                  "group.id": "pd-read-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest",
                  "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.subscribe([topic])
    found, eof, assigned = [], set(), None
    deadline = time.time() + timeout
    settle_until = None
    try:
        while time.time() < deadline:
            m = c.poll(0.3)
            if assigned is None and c.assignment():
                assigned = {tp.partition for tp in c.assignment()}
            if m is None:
                pass
            elif m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    eof.add(m.partition())
            else:
                raw = m.value().decode(errors="replace")
                try:
                    v = json.loads(raw)
                except ValueError:
                    v = raw
                if want(v):
                    found.append((m.key(), v, dict(
                        (k, val.decode()) for k, val in (m.headers() or []))))
            if assigned and eof >= assigned:
                if settle_until is None:
                    settle_until = time.time() + settle
                if time.time() >= settle_until:
                    return found
        raise AssertionError("%s: not read to the end in %ss" % (topic,
                                                                 timeout))
    finally:
        c.close()


def upsert_calls(dsn):
    r = q(dsn, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
               " WHERE query LIKE %s", (UPSERT_LIKE,))
    return int(r[0][0])


def high_watermarks(brokers, topic=TOPIC):
    c = Consumer({"bootstrap.servers": brokers,
                  "group.id": "pd-wm-" + uuid.uuid4().hex})
    try:
        md = c.list_topics(topic, timeout=10)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p),
                                           timeout=10)[1]
                for p in md.topics[topic].partitions}
    finally:
        c.close()


def commit_group_offsets(brokers, offsets):
    """Sets elearn-progress's committed offsets (the group must be empty:
    its daemon stopped)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": GROUP,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(TOPIC, p, o)
                          for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def dlq_total(d):
    return d.metric("elearn_consumer_dlq_total", 'topic="%s"' % TOPIC) or 0


def total_lag(d):
    lags = [float(line.split()[-1]) for line in d.metrics_text().splitlines()
            if line.startswith('elearn_consumer_lag{topic="%s"' % TOPIC)]
    return sum(lags) if lags else None


# --- tests ------------------------------------------------------------------


def test_batching_merges_reports_into_few_statements(
        start_daemon, producer, pg_dsn, course, kafka_brokers):
    """2,000 reports for 500 (user, video) pairs, sent in shuffled order:
    each pair ends with the position of its newest report and the union of
    its intervals, written by a handful of statements."""
    vids = course["b"]["videos"]
    users = new_users(pg_dsn, 50)
    base = int(time.time() * 1000)
    evs, want = [], {}
    for u in users:
        for v in vids:
            parts = [(k, report(u, v, 40 * k + 30, [[40 * k, 40 * k + 30]],
                                base + k, course["b"]["id"], 300))
                     for k in range(4)]
            want[(u, v)] = (150, multirange([[40 * k, 40 * k + 30]
                                             for k in range(4)]))
            evs.extend(e for _, e in parts)
    random.shuffle(evs)  # order within a key must not matter

    # what other tests reported over HTTP (their videos and users gone
    # since) is not this test's to count: start the group at the end
    commit_group_offsets(kafka_brokers, high_watermarks(kafka_brokers))
    before = upsert_calls(pg_dsn)
    for ev in evs:
        send(producer, ev)
    producer.flush(30)

    d = start_daemon()
    got = wait_for("2,000 reports merged", lambda: (
        lambda rows: rows if len(rows) == len(want)
        and all(rows[k][0] == want[k][0] for k in want) else None)(
            progress_rows(pg_dsn, users)), timeout=90)
    for k, (pos, watched) in want.items():
        assert got[k][0] == pos, k
        assert got[k][1] == watched, k
        assert got[k][2] == 120
        assert got[k][4] is None  # 120 of 300 s: not completed

    calls = upsert_calls(pg_dsn) - before
    print("2,000 reports, 500 rows: %d upsert statements" % calls)
    assert 1 <= calls <= 20, "%d upsert statements for 2,000 reports" % calls

    text = d.metrics_text()
    for name in ("elearn_progress_batch_rows_bucket",
                 "elearn_progress_flush_seconds_bucket",
                 "elearn_progress_delay_seconds_bucket",
                 "elearn_progress_rows_total", "elearn_progress_rows_per_second",
                 "elearn_consumer_lag", "elearn_consumer_dlq_total"):
        assert name in text, name
    if os.access(PROMTOOL, os.X_OK):
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    assert d.stop()[0] == 0


def test_late_and_replayed_reports_change_nothing(
        start_daemon, producer, pg_dsn, course):
    d = start_daemon()
    u = new_users(pg_dsn, 1)[0]
    v, v2 = course["a"]["videos"][2], course["a"]["videos"][1]
    newest = report(u, v, 300, [[200, 300]], 2000)
    send(producer, newest)
    producer.flush(10)
    row = wait_for("the newest report", lambda: progress_rows(
        pg_dsn, [u]).get((u, v)))
    assert row[:4] == (300, "{[200,300)}", 100, 2000)

    # a late report (older reportedAtMs) and a replay of the newest one; a
    # report for another video of the user (same key, same partition, so
    # processed after them) tells when they were handled
    send(producer, report(u, v, 50, [[0, 50]], 1000))
    send(producer, newest)
    send(producer, report(u, v2, 10, [[0, 10]], 3000))
    producer.flush(10)
    wait_for("the marker report", lambda: progress_rows(
        pg_dsn, [u]).get((u, v2)))

    after = progress_rows(pg_dsn, [u])[(u, v)]
    # the late report's interval counts (a union), its position does not
    assert after[:4] == (300, "{[0,50),[200,300)}", 150, 2000)

    # the same events again: nothing is written at all
    stamp = after[5]
    send(producer, report(u, v, 50, [[0, 50]], 1000))
    send(producer, newest)
    send(producer, report(u, v2, 20, [[10, 20]], 4000))
    producer.flush(10)
    wait_for("the second marker", lambda: progress_rows(
        pg_dsn, [u])[(u, v2)][0] == 20)
    again = progress_rows(pg_dsn, [u])[(u, v)]
    assert again == after
    assert again[5] == stamp  # updated_at: the row was not rewritten
    assert d.stop()[0] == 0


def test_seek_to_end_with_a_short_interval_does_not_complete(
        start_daemon, producer, pg_dsn, course):
    d = start_daemon()
    u = new_users(pg_dsn, 1)[0]
    v = course["a"]["videos"][2]  # 600 s
    send(producer, report(u, v, 595, [[585, 595]], 1000))
    producer.flush(10)
    row = wait_for("the report", lambda: progress_rows(
        pg_dsn, [u]).get((u, v)))
    assert row[0] == 595 and row[2] == 10
    assert row[4] is None
    assert d.stop()[0] == 0


def test_completion_at_ninety_percent_and_clipping(
        start_daemon, producer, pg_dsn, course):
    d = start_daemon()
    u = new_users(pg_dsn, 1)[0]
    v100, v200 = course["a"]["videos"][0], course["a"]["videos"][1]

    # 179 of 200 s: not yet; one more second: 180 = 90 %
    send(producer, report(u, v200, 179, [[0, 179]], 1000))
    # intervals past the end are clipped to the video's duration
    send(producer, report(u, v100, 100, [[0, 1000]], 1000))
    producer.flush(10)
    rows = wait_for("both rows", lambda: (
        lambda r: r if len(r) == 2 else None)(progress_rows(pg_dsn, [u])))
    assert rows[(u, v200)][2] == 179 and rows[(u, v200)][4] is None
    assert rows[(u, v100)][1] == "{[0,100)}"
    assert rows[(u, v100)][2] == 100 and rows[(u, v100)][4] is not None

    send(producer, report(u, v200, 180, [[179, 180]], 2000))
    producer.flush(10)
    row = wait_for("completion", lambda: (
        lambda r: r if r[4] is not None else None)(
            progress_rows(pg_dsn, [u])[(u, v200)]))
    assert row[2] == 180

    # completed_at is set once: more watching does not move it
    done_at = row[4]
    send(producer, report(u, v200, 200, [[180, 200]], 3000))
    producer.flush(10)
    row = wait_for("the last report", lambda: (
        lambda r: r if r[0] == 200 else None)(
            progress_rows(pg_dsn, [u])[(u, v200)]))
    assert row[4] == done_at
    assert d.stop()[0] == 0


def complete_course_reports(u, c):
    return [report(u, v, dur, [[0, dur]], 1000 + i, c["id"], dur)
            for i, (v, dur) in enumerate(zip(c["videos"], c["durations"]))]


def completion_events(brokers, u, cid, settle=0):
    return read_topic(brokers, COMPLETIONS, lambda v: isinstance(v, dict)
                      and v.get("data", {}).get("userId") == u
                      and v.get("data", {}).get("courseId") == cid,
                      settle=settle)


def test_course_completion_event_exactly_once_under_replay(
        start_daemon, producer, pg_dsn, kafka_brokers, course):
    c = course["a"]
    u, lazy = new_users(pg_dsn, 2)
    for user in (u, lazy):
        q(pg_dsn, "INSERT INTO enrollments (user_id, course_id)"
                  " VALUES (%s, %s)", (user, c["id"]))
    # u passed the quiz; lazy has a failed attempt only
    for user, passed in ((u, True), (lazy, False)):
        q(pg_dsn, "INSERT INTO quiz_submissions (quiz_id, user_id, answers,"
                  " status, score, max_score, passed, graded_at)"
                  " VALUES (%s, %s, '{}', 'graded', %s, 10, %s, now())",
          (c["quizzes"][0], user, 9 if passed else 3, passed))
    count0 = q(pg_dsn, "SELECT coalesce(max(completion_count), 0) FROM"
                       " course_analytics_summary WHERE course_id = %s",
               (c["id"],))[0][0]

    marks = high_watermarks(kafka_brokers)
    d = start_daemon()
    for ev in complete_course_reports(u, c) + complete_course_reports(lazy, c):
        send(producer, ev)
    producer.flush(10)

    row = wait_for("the completion recorded", lambda: q(
        pg_dsn, "SELECT event_id::text, completed_at"
                " FROM course_completions WHERE user_id = %s"
                " AND course_id = %s", (u, c["id"])), timeout=60)[0]
    # elearn-outbox (which the test stack runs) relays it from event_outbox
    evs = wait_for("the course.completed event", lambda: completion_events(
        kafka_brokers, u, c["id"]), timeout=30)
    assert len(evs) == 1, evs
    key, ev, _ = evs[0]
    assert key == str(u).encode()
    assert ev["type"] == "course.completed" and ev["schemaVersion"] == 1
    assert ev["eventId"] == row[0]
    assert ev["data"]["completedAt"] == ev["occurredAt"]
    assert ev["occurredAt"].endswith("Z")

    # the quiz was not passed: every video completed, the course is not
    wait_for("lazy's videos", lambda: (
        lambda r: len(r) == 3 and all(x[4] for x in r.values()))(
            progress_rows(pg_dsn, [lazy])))
    assert q(pg_dsn, "SELECT 1 FROM course_completions WHERE user_id = %s",
             (lazy,)) == []
    # ... but its progressPercent counts the steps done: 3 videos of 3,
    # 0 quizzes of 1
    assert wait_for("lazy's percentage", lambda: (
        lambda r: r if r[0][0] == 75 else None)(q(
            pg_dsn, "SELECT progress_percent, status FROM enrollments"
                    " WHERE user_id = %s AND course_id = %s",
            (lazy, c["id"]))))[0] == (75, "active")

    assert q(pg_dsn, "SELECT status, completed_at IS NOT NULL,"
                     " progress_percent"
                     " FROM enrollments WHERE user_id = %s AND course_id = %s",
             (u, c["id"]))[0] == ("completed", True, 100)
    count1 = q(pg_dsn, "SELECT completion_count FROM course_analytics_summary"
                       " WHERE course_id = %s", (c["id"],))[0][0]
    assert count1 == count0 + 1

    # replay: the group's offsets back to before these reports
    assert d.stop()[0] == 0
    commit_group_offsets(kafka_brokers, marks)
    d2 = start_daemon()
    marker = new_users(pg_dsn, 1)[0]
    send(producer, report(marker, c["videos"][0], 1, [[0, 1]], 1))
    producer.flush(10)
    wait_for("the replay to pass", lambda: progress_rows(pg_dsn, [marker]),
             timeout=60)
    wait_for("lag to drain", lambda: total_lag(d2) == 0, timeout=30)

    assert len(completion_events(kafka_brokers, u, c["id"], settle=2)) == 1
    assert q(pg_dsn, "SELECT completion_count FROM course_analytics_summary"
                     " WHERE course_id = %s", (c["id"],))[0][0] == count1

    # passing the quiz later completes the course through the same function
    # (what a grader calls), and the outbox publishes it
    q(pg_dsn, "INSERT INTO quiz_submissions (quiz_id, user_id, answers,"
              " status, score, max_score, passed, graded_at)"
              " VALUES (%s, %s, '{}', 'graded', 10, 10, true, now())",
      (c["quizzes"][0], lazy))
    assert q(pg_dsn, "SELECT user_id FROM"
                     " elearn_record_course_completions(%s, %s)",
             ([lazy], [c["id"]])) == [(lazy,)]
    # and only once
    assert q(pg_dsn, "SELECT user_id FROM"
                     " elearn_record_course_completions(%s, %s)",
             ([lazy], [c["id"]])) == []
    assert q(pg_dsn, "SELECT progress_percent FROM enrollments"
                     " WHERE user_id = %s AND course_id = %s",
             (lazy, c["id"]))[0][0] == 100
    evs = wait_for("lazy's event", lambda: completion_events(
        kafka_brokers, lazy, c["id"]), timeout=30)
    assert len(completion_events(kafka_brokers, lazy, c["id"], settle=2)) == 1
    assert evs[0][1]["eventId"] == q(
        pg_dsn, "SELECT elearn_completion_event_id(%s, %s)::text",
        (lazy, c["id"]))[0][0]
    assert d2.stop()[0] == 0


def test_poison_goes_to_dlq_after_three_attempts_partition_moves_on(
        start_daemon, producer, pg_dsn, kafka_brokers, course):
    d = start_daemon()
    before = dlq_total(d)
    invalid0 = d.metric("elearn_progress_reports_total", 'result="invalid"')
    unknown0 = d.metric("elearn_progress_reports_total", 'result="unknown"')
    u = new_users(pg_dsn, 1)[0]
    key = str(u)  # one key: one partition, in order
    v = course["a"]["videos"][2]
    tag = uuid.uuid4().hex
    bad_json = "not json " + tag
    wrong_type = report(u, v, "12", [[0, 12]], 1000)
    wrong_type["eventId"] = "wrong-type-" + tag
    a_float = report(u, v, 12.5, [[0, 12]], 1000)
    a_float["eventId"] = "float-" + tag
    reversed_iv = report(u, v, 12, [[12, 0]], 1000)
    reversed_iv["eventId"] = "reversed-" + tag
    unknown = report(u, 9_000_000_000, 12, [[0, 12]], 1000)
    unknown["eventId"] = "unknown-video-" + tag
    poison = [wrong_type, a_float, reversed_iv, unknown]

    send(producer, report(u, v, 10, [[0, 10]], 1000), key=key)
    send(producer, None, raw=bad_json, key=key)
    for ev in poison:
        send(producer, ev, key=key)
    send(producer, report(u, v, 20, [[10, 20]], 2000), key=key)
    producer.flush(10)

    # the report behind the poison is processed: the partition moves on
    row = wait_for("the report after the poison", lambda: (
        lambda r: r if r and r[0] == 20 else None)(
            progress_rows(pg_dsn, [u]).get((u, v))), timeout=60)
    assert row[1] == "{[0,20)}"

    def tagged(val):
        return (val == bad_json or isinstance(val, dict)
                and str(val.get("eventId", "")).endswith(tag))

    found = wait_for("5 messages in the DLQ", lambda: (
        lambda f: f if len(f) >= 5 else None)(
            read_topic(kafka_brokers, DLQ, tagged)), timeout=30)
    assert len(found) == 5
    for _, _, h in found:
        assert h["dlq.attempts"] == "3"
        assert h["dlq.original.topic"] == TOPIC
        assert h["dlq.consumer.group"] == GROUP
    errors = " | ".join(h["dlq.error"] for _, _, h in found)
    for word in ("invalid JSON", "positionSeconds", "watched[0]",
                 "unknown video"):
        assert word in errors, errors
    assert dlq_total(d) - before == 5
    assert d.metric("elearn_progress_reports_total",
                    'result="invalid"') - invalid0 == 4
    assert d.metric("elearn_progress_reports_total",
                    'result="unknown"') - unknown0 == 1
    assert d.stop()[0] == 0


def test_sigterm_flushes_what_it_holds(start_daemon, producer, pg_dsn,
                                       kafka_brokers, course):
    # a batch that would wait a minute: only the drain can write it
    d = start_daemon(ELEARN_CONSUMER_BATCH_TIMEOUT="60s",
                     ELEARN_CONSUMER_BATCH_SIZE="10000")
    users = new_users(pg_dsn, 20)
    v = course["b"]["videos"][0]
    seen0 = d.metric("elearn_consumer_messages_total",
                     'topic="%s"' % TOPIC) or 0
    for i, u in enumerate(users):
        for k in range(10):
            send(producer, report(u, v, 10 * k + 10, [[10 * k, 10 * k + 10]],
                                  1000 + k, course["b"]["id"], 300))
    producer.flush(10)
    wait_for("the daemon to hold 200 reports", lambda: d.metric(
        "elearn_consumer_messages_total", 'topic="%s"' % TOPIC) - seen0
        >= 200, timeout=30)
    assert progress_rows(pg_dsn, users) == {}

    rc, took = d.stop(signal.SIGTERM, timeout=15)
    assert rc == 0, d.logs()
    assert took < 10
    rows = progress_rows(pg_dsn, users)
    assert len(rows) == 20
    assert all(r[0] == 100 and r[1] == "{[0,100)}" for r in rows.values())

    # and the offsets were committed: nothing is left for the group
    marks = high_watermarks(kafka_brokers)
    c = Consumer({"bootstrap.servers": kafka_brokers, "group.id": GROUP})
    try:
        committed = c.committed([TopicPartition(TOPIC, p) for p in marks],
                                timeout=10)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in committed
            if marks[tp.partition] > 0} == {
                p: o for p, o in marks.items() if o > 0}


class Load:
    """Produces reports for n keys at about rate/s from a thread: report k
    of a key has position 10 k + 10, interval [10 k, 10 k + 10) and time
    base + k, so the expected final state is known."""

    def __init__(self, producer, users, video, course_id, per_key, rate):
        self.producer, self.users, self.video = producer, users, video
        self.course_id, self.per_key, self.rate = course_id, per_key, rate
        self.sent = {u: 0 for u in users}
        self.thread = threading.Thread(target=self.run)

    def run(self):
        t0 = time.time()
        n = 0
        for k in range(self.per_key):
            for u in self.users:
                send(self.producer, report(u, self.video, 10 * k + 10,
                                           [[10 * k, 10 * k + 10]], 1000 + k,
                                           self.course_id, 600))
                self.sent[u] = k + 1
                n += 1
                ahead = n / self.rate - (time.time() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        self.producer.flush(60)

    def expected(self):
        return {(u, self.video): (10 * k, "{[0,%d)}" % (10 * k), 10 * k)
                for u, k in self.sent.items()}

    def landed(self, dsn):
        rows = progress_rows(dsn, self.users)
        want = self.expected()
        if len(rows) != len(want):
            return None
        if any(rows[key][:3] != want[key] for key in want):
            return None
        return rows


def test_kill9_mid_load_loses_nothing_applies_nothing_twice(
        start_daemon, producer, pg_dsn, course):
    d = start_daemon(ELEARN_CONSUMER_BATCH_TIMEOUT="200ms")
    users = new_users(pg_dsn, 40)
    load = Load(producer, users, course["a"]["videos"][2], course["a"]["id"],
                per_key=40, rate=200)
    load.thread.start()
    # kill once some batches are committed, while reports still arrive
    wait_for("a first committed batch", lambda: progress_rows(pg_dsn, users),
             timeout=30, interval=0.1)
    time.sleep(0.5)
    mid_load = load.thread.is_alive()
    d.proc.kill()
    d.proc.wait()
    d.log.close()
    load.thread.join(60)
    assert not load.thread.is_alive()
    assert mid_load, "the load was over before the kill"

    d2 = start_daemon(ELEARN_CONSUMER_BATCH_TIMEOUT="200ms")
    rows = wait_for("every report", lambda: load.landed(pg_dsn), timeout=120)
    # positions are the last sent, the union exactly what was sent (a report
    # applied twice would not change it; one lost would leave a gap)
    for key, r in rows.items():
        assert r[0] == 400 and r[1] == "{[0,400)}" and r[2] == 400
        assert r[3] == 1000 + 39
        assert r[4] is None  # 400 of 600 s
    assert d2.stop()[0] == 0


def test_pg_outage_retries_without_dlq_and_lag_drains(
        start_daemon, producer, pg_dsn, stack, course):
    d = start_daemon(ELEARN_CONSUMER_BATCH_TIMEOUT="200ms")
    before = dlq_total(d)
    retries0 = d.metric("elearn_progress_pg_retries_total")
    users = new_users(pg_dsn, 30)
    load = Load(producer, users, course["a"]["videos"][2], course["a"]["id"],
                per_key=30, rate=100)
    load.thread.start()
    time.sleep(2)
    stack.stop("pg")
    try:
        time.sleep(15)
        assert d.proc.poll() is None, d.logs()
    finally:
        stack.start("pg")
    load.thread.join(60)
    assert not load.thread.is_alive()

    wait_for("every report after the outage", lambda: load.landed(pg_dsn),
             timeout=120)
    assert dlq_total(d) == before
    assert d.metric("elearn_progress_pg_retries_total") > retries0
    wait_for("lag to drain", lambda: total_lag(d) == 0, timeout=60)
    assert d.stop()[0] == 0
    # the tests after this one need nginx's pool back
    stack.wait_ready(60)


def test_stack_script_starts_and_stops_the_daemon(stack):
    """`tools/stack.sh start progress` (what `make run` does after the
    migrations) and a plain `stop`."""
    port = free_port()
    old = stack.env.get("ELEARN_PROGRESS_METRICS_PORT")
    stack.env["ELEARN_PROGRESS_METRICS_PORT"] = str(port)
    pidfile = pathlib.Path(stack.var) / "progress" / "progress.pid"
    try:
        stack.start("progress")
        assert pidfile.exists()
        url = "http://127.0.0.1:%d/healthz" % port
        body = wait_for("the daemon's /healthz", lambda: json.loads(
            urllib.request.urlopen(url, timeout=5).read()), timeout=30)
        assert body["status"] == "ok"
        assert "progress: up" in stack.sh(
            os.path.join(TOP, "tools", "stack.sh"), "status").stdout
    finally:
        stack.stop("progress")
        if old is None:
            stack.env.pop("ELEARN_PROGRESS_METRICS_PORT")
        else:
            stack.env["ELEARN_PROGRESS_METRICS_PORT"] = old
    assert not pidfile.exists()
