"""Integration tests of the workers' library through elearn-testconsumer.

Runs build/bin/elearn-testconsumer against the test stack (Kafka + PostgreSQL
from conftest.py's fixtures: stack_env, pg_dsn, kafka_brokers, build_dir) and
checks the delivery contract of workers/lib/elearn_consumer.h: every event
stored exactly once, duplicates harmless, transient failures retried, poison
messages dead-lettered with their provenance headers without blocking their
partition, a clean bounded drain on SIGTERM with nothing lost, at-least-once
after kill -9, SIGHUP reload, and /metrics that promtool accepts.

Each test uses fresh eventIds, so tests do not see each other's rows.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid

import psycopg2
import pytest
from confluent_kafka import Consumer, Producer

TOP = pathlib.Path(os.environ.get("ELEARN_TOP")
                   or pathlib.Path(__file__).resolve().parents[2])
CONFIG = TOP / "config" / "testconsumer.conf"
TOPIC = "elearn.test"
DLQ = TOPIC + ".dlq"
PROMTOOL = "/usr/bin/promtool"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event(data=None, event_id=None):
    return {
        "eventId": event_id or str(uuid.uuid4()),
        "type": "test.event",
        "occurredAt": "2024-05-01T12:00:00.000Z",
        "schemaVersion": 1,
        "data": data or {},
    }


class Daemon:
    """One daemon process (elearn-testconsumer unless binary says another)
    with its own metrics port and log."""

    def __init__(self, build_dir, env, log_path, config=CONFIG, extra=None,
                 binary="elearn-testconsumer"):
        self.port = free_port()
        self.log_path = log_path
        e = dict(os.environ)
        e.update(env)
        e["ELEARN_METRICS_PORT"] = str(self.port)
        e.update(extra or {})
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [str(pathlib.Path(build_dir) / "bin" / binary),
             "-c", str(config)],
            env=e, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(TOP))
        self.wait_assigned()

    def metrics_text(self):
        url = "http://127.0.0.1:%d/metrics" % self.port
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def metric(self, name, labels=""):
        """Value of one series (labels as rendered, e.g. 'topic="x"')."""
        want = name + ("{%s}" % labels if labels else "")
        for line in self.metrics_text().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return None

    def wait_assigned(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, "consumer died:\n" + self.logs()
            try:
                if (self.metric("elearn_consumer_assigned_partitions") or 0) > 0:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("no partitions assigned in %ss:\n%s"
                             % (timeout, self.logs()))

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        return pathlib.Path(self.log_path).read_text(errors="replace")[-8000:]

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends sig; returns (exit code, seconds it took)."""
        t0 = time.time()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("no exit within %ss:\n%s"
                                 % (timeout, self.logs()))
        finally:
            self.log.close()
        return rc, time.time() - t0


@pytest.fixture
def start_consumer(build_dir, stack_env, tmp_path):
    started = []

    def start(**kw):
        c = Daemon(build_dir, stack_env,
                         tmp_path / ("consumer-%d.log" % len(started)), **kw)
        started.append(c)
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
            c.log.close()


@pytest.fixture
def producer(kafka_brokers):
    p = Producer({"bootstrap.servers": kafka_brokers,
                  "enable.idempotence": True})
    yield p
    p.flush(10)


@pytest.fixture
def db(pg_dsn):
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    yield conn
    conn.close()


def produce(producer, ev, key=None, raw=None):
    """Produces one event; returns (partition, offset) once acknowledged."""
    done = {}

    def report(err, msg):
        done["err"], done["msg"] = err, msg

    value = raw if raw is not None else json.dumps(ev)
    producer.produce(TOPIC, value=value, key=key or str(uuid.uuid4()),
                     on_delivery=report)
    producer.flush(15)
    assert done.get("err") is None, done
    return done["msg"].partition(), done["msg"].offset()


def counts(db, ids):
    with db.cursor() as cur:
        cur.execute("SELECT event_id::text, count(*) FROM test_events"
                    " WHERE event_id = ANY(%s::uuid[]) GROUP BY 1", (ids,))
        return dict(cur.fetchall())


def wait_rows(db, ids, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = counts(db, ids)
        if len(got) == len(ids):
            return got
        time.sleep(0.2)
    missing = set(ids) - set(counts(db, ids))
    raise AssertionError("%d of %d events missing, e.g. %s"
                         % (len(missing), len(ids), sorted(missing)[:3]))


def dlq_messages(kafka_brokers, want_values, timeout=30):
    """Reads elearn.test.dlq from the start with a fresh group and returns
    {value: headers dict} for the wanted values."""
    c = Consumer({"bootstrap.servers": kafka_brokers,
                  "group.id": "test-dlq-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([DLQ])
    found = {}
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and len(found) < len(want_values):
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            v = m.value().decode(errors="replace")
            if v in want_values:
                found[v] = {k: val.decode() for k, val in (m.headers() or [])}
    finally:
        c.close()
    return found


# --- tests ------------------------------------------------------------------


def test_events_stored_once_duplicates_ignored(start_consumer, producer, db):
    c = start_consumer()
    evs = [event({"i": i}) for i in range(30)]
    for ev in evs:
        produce(producer, ev)
    # the same eventId twice (a producer retry, a replay): one row
    produce(producer, evs[0])
    produce(producer, evs[1], key="other-key")

    got = wait_rows(db, [e["eventId"] for e in evs])
    assert set(got.values()) == {1}

    with db.cursor() as cur:
        cur.execute("SELECT payload FROM test_events WHERE event_id = %s",
                    (evs[5]["eventId"],))
        assert cur.fetchone()[0]["data"] == {"i": 5}

    assert c.stop()[0] == 0


def test_fail_times_succeeds_after_retries(start_consumer, producer, db):
    c = start_consumer()
    before = c.metric("elearn_consumer_retries_total")
    ev = event({"failTimes": 2})
    produce(producer, ev)

    wait_rows(db, [ev["eventId"]])
    assert c.metric("elearn_consumer_retries_total") >= before + 2
    assert c.stop()[0] == 0


def test_poison_goes_to_dlq_and_partition_keeps_going(
        start_consumer, producer, db, kafka_brokers):
    c = start_consumer()
    key = "poison-" + uuid.uuid4().hex  # one key: one partition, in order
    permanent = event({"poison": "permanent"})
    transient = event({"poison": "transient"})
    invalid = "not json " + uuid.uuid4().hex
    after = [event({"after": i}) for i in range(3)]

    p_perm = produce(producer, permanent, key=key)
    p_tran = produce(producer, transient, key=key)
    p_inv = produce(producer, None, key=key, raw=invalid)
    for ev in after:
        produce(producer, ev, key=key)

    # the events behind the poison are processed: the partition is not stuck
    wait_rows(db, [e["eventId"] for e in after], timeout=60)
    assert counts(db, [permanent["eventId"], transient["eventId"]]) == {}

    values = {json.dumps(permanent): ("1", p_perm, "poison: permanent"),
              json.dumps(transient): ("3", p_tran, "poison: transient"),
              invalid: ("1", p_inv, "invalid JSON")}
    found = dlq_messages(kafka_brokers, set(values))
    assert set(found) == set(values), "DLQ has %d of 3" % len(found)

    for value, (attempts, (part, off), err) in values.items():
        h = found[value]
        assert h["dlq.original.topic"] == TOPIC
        assert h["dlq.original.partition"] == str(part)
        assert h["dlq.original.offset"] == str(off)
        assert h["dlq.attempts"] == attempts
        assert err in h["dlq.error"]
        assert h["dlq.consumer.group"] == "elearn-testconsumer"
        assert "dlq.failed.at" in h

    assert c.metric("elearn_consumer_dlq_total", 'topic="elearn.test"') >= 3
    assert c.stop()[0] == 0


@pytest.mark.parametrize("batch", ["false", "true"])
def test_sigterm_while_flowing_loses_nothing(
        start_consumer, producer, db, batch):
    extra = {"ELEARN_TESTCONSUMER_BATCH": batch}
    c = start_consumer(extra=extra)
    evs = [event({"n": i}) for i in range(600)]
    stop = threading.Event()

    def flow():
        for ev in evs:
            producer.produce(TOPIC, json.dumps(ev), key=ev["eventId"])
            producer.poll(0)
            time.sleep(0.003)
        producer.flush(15)
        stop.set()

    t = threading.Thread(target=flow)
    t.start()
    time.sleep(1.0)
    rc, took = c.stop(signal.SIGTERM, timeout=10)
    assert rc == 0, c.logs()
    assert took < 10
    t.join()

    # the rest is picked up after a restart, and nothing twice
    c2 = start_consumer(extra=extra)
    got = wait_rows(db, [e["eventId"] for e in evs], timeout=60)
    assert set(got.values()) == {1}
    assert c2.stop()[0] == 0


def test_kill9_is_at_least_once(start_consumer, producer, db):
    c = start_consumer()
    evs = [event({"k": i}) for i in range(300)]
    for ev in evs[:150]:
        producer.produce(TOPIC, json.dumps(ev), key=ev["eventId"])
    producer.flush(15)
    time.sleep(0.5)
    c.proc.kill()
    c.proc.wait()
    c.log.close()

    for ev in evs[150:]:
        producer.produce(TOPIC, json.dumps(ev), key=ev["eventId"])
    producer.flush(15)

    # offsets not yet committed are redelivered; ON CONFLICT absorbs them
    c2 = start_consumer()
    got = wait_rows(db, [e["eventId"] for e in evs], timeout=90)
    assert set(got.values()) == {1}
    assert c2.stop()[0] == 0


def test_batch_mode_isolates_poison(start_consumer, producer, db,
                                    kafka_brokers):
    c = start_consumer(extra={"ELEARN_TESTCONSUMER_BATCH": "true",
                              "ELEARN_CONSUMER_BATCH_TIMEOUT": "300ms"})
    key = "batch-" + uuid.uuid4().hex
    good = [event({"b": i}) for i in range(40)]
    poison = event({"poison": "permanent"})
    for ev in good[:20]:
        producer.produce(TOPIC, json.dumps(ev), key=key)
    producer.produce(TOPIC, json.dumps(poison), key=key)
    for ev in good[20:]:
        producer.produce(TOPIC, json.dumps(ev), key=key)
    producer.flush(15)

    got = wait_rows(db, [e["eventId"] for e in good])
    assert set(got.values()) == {1}
    assert counts(db, [poison["eventId"]]) == {}
    assert json.dumps(poison) in dlq_messages(kafka_brokers,
                                              {json.dumps(poison)})
    assert c.stop()[0] == 0


def test_metrics_pass_promtool_and_lag_drains(start_consumer, producer, db):
    c = start_consumer()
    evs = [event({"m": i}) for i in range(20)]
    for ev in evs:
        produce(producer, ev)
    wait_rows(db, [e["eventId"] for e in evs])

    text = c.metrics_text()
    if os.access(PROMTOOL, os.X_OK):
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    for name in ("elearn_consumer_messages_total", "elearn_consumer_failures_total",
                 "elearn_consumer_retries_total", "elearn_consumer_dlq_total",
                 "elearn_consumer_batch_seconds_bucket"):
        assert name in text

    # lag comes from librdkafka statistics (1 s) after the auto-commit (1 s)
    deadline = time.time() + 30
    lags = {}
    while time.time() < deadline:
        lags = {line.split()[0]: float(line.split()[1])
                for line in c.metrics_text().splitlines()
                if line.startswith('elearn_consumer_lag{topic="elearn.test"')}
        if lags and all(v == 0 for v in lags.values()):
            break
        time.sleep(0.5)
    assert lags and all(v == 0 for v in lags.values()), lags

    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % c.port,
                                timeout=5) as r:
        assert r.status == 200
        assert json.loads(r.read())["status"] == "ok"
    assert c.stop()[0] == 0


def test_sighup_reloads_log_level(start_consumer, tmp_path):
    conf = tmp_path / "testconsumer.conf"
    conf.write_text(CONFIG.read_text())
    c = start_consumer(config=conf)

    conf.write_text(CONFIG.read_text().replace("log.level = info",
                                               "log.level = debug"))
    c.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and '"logLevel":"debug"' not in c.logs():
        time.sleep(0.2)
    assert '"configuration reloaded"' in c.logs()
    assert '"logLevel":"debug"' in c.logs()

    # a broken file is refused and the daemon keeps running
    conf.write_text("this is not a config\n")
    c.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert c.proc.poll() is None
    assert "keeping the running configuration" in c.logs()
    assert c.stop()[0] == 0


def test_logs_are_json_without_password(start_consumer, stack_env):
    c = start_consumer()
    assert c.stop()[0] == 0
    password = None
    for part in stack_env["ELEARN_PG_CONNINFO"].split():
        if part.startswith("password="):
            password = part.split("=", 1)[1]
    for line in c.logs().splitlines():
        rec = json.loads(line)
        assert {"ts", "level", "subsystem", "msg"} <= set(rec)
        if password:
            assert password not in line
