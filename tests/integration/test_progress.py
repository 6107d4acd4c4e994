"""Video progress, the request path (contract section 4, issue 5): every
validation case (and that a refused report writes nothing), 401/403/404/
409, the Redis merge, the exact event on elearn.progress, GET from Redis
and from PostgreSQL, the enrollment cache dropped on unenroll, the naive
bench location, the two acknowledgement modes with the broker stopped,
and reports refused (503, no event) while Redis is stopped."""

import json
import subprocess
import time
import uuid

import pytest
import requests

DURATION = 600


def redis(stack, *args):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p",
                          stack.env["ELEARN_REDIS_PORT"], *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def progress_hash(stack, uid, vid):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p",
                          stack.env["ELEARN_REDIS_PORT"], "HGETALL",
                          "progress:%d:%d" % (uid, vid)],
                         capture_output=True, text=True, check=True).stdout
    if out.strip() == "":
        return {}
    flat = out[:-1].split("\n")       # values may be empty strings
    return dict(zip(flat[::2], flat[1::2]))


def register(stack, base_url):
    email = "p%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": email, "password": "progress pass 1",
                            "displayName": "Prog " + email[:6]})
    assert r.status_code == 201, r.text
    h = {"Authorization": "Bearer " + stack.token(email, "progress pass 1")}
    return r.json()["userId"], h


@pytest.fixture(scope="module")
def course(base_url, stack):
    import psycopg2
    conn = psycopg2.connect(stack.env["ELEARN_PG_CONNINFO"])
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute("SELECT course_id FROM courses WHERE published "
                  "ORDER BY course_id LIMIT 1 OFFSET 777")
        cid = c.fetchone()[0]
        c.execute("INSERT INTO videos (course_id, title, position, "
                  "duration_seconds, status) VALUES (%s, 'progress test', "
                  "900, %s, 'ready') RETURNING video_id", (cid, DURATION))
        ready = c.fetchone()[0]
        c.execute("INSERT INTO videos (course_id, title, position, status) "
                  "VALUES (%s, 'progress test, queued', 901, 'queued') "
                  "RETURNING video_id", (cid,))
        queued = c.fetchone()[0]
    yield {"course": cid, "video": ready, "queued": queued}
    with conn.cursor() as c:
        c.execute("DELETE FROM videos WHERE video_id IN (%s, %s)",
                  (ready, queued))
    conn.close()


@pytest.fixture
def student(stack, base_url, course):
    uid, h = register(stack, base_url)
    r = requests.post(base_url + "/api/v1/courses/%d/enrollments"
                      % course["course"], headers=h)
    assert r.status_code == 201, r.text
    return uid, h


def url(base_url, vid):
    return base_url + "/api/v1/videos/%d/progress" % vid


def pg_row(pg, uid, vid, pos, watched, updated_at, completed_at=None):
    """What the daemon would have written for (uid, vid)."""
    with pg.cursor() as c:
        c.execute("INSERT INTO video_progress (user_id, video_id, "
                  "position_seconds, watched, completed_at, updated_at) "
                  "VALUES (%s, %s, %s, %s, %s, %s)",
                  (uid, vid, pos, watched, completed_at, updated_at))


def post(base_url, vid, h, body, **kw):
    if isinstance(body, (dict, list)):
        return requests.post(url(base_url, vid), headers=h, json=body,
                             timeout=30, **kw)
    hh = dict(h)
    hh.setdefault("Content-Type", "application/json")
    return requests.post(url(base_url, vid), headers=hh, data=body,
                         timeout=30, **kw)


def consumer_on(kafka_brokers, topic):
    import confluent_kafka as ck
    consumer = ck.Consumer({"bootstrap.servers": kafka_brokers,
                            "group.id": "test-prog-" + uuid.uuid4().hex,
                            "auto.offset.reset": "latest",
                            "enable.auto.commit": False})
    assigned = []
    consumer.subscribe([topic], on_assign=lambda c, p: assigned.extend(p))
    deadline = time.time() + 30
    while not assigned and time.time() < deadline:
        consumer.poll(0.5)
    assert assigned, "no partition assigned"
    for p in consumer.assignment():
        consumer.position([p])
    time.sleep(1)
    return consumer


def events_of(consumer, uid, n, timeout=30):
    got = []
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        ev = json.loads(m.value())
        if ev.get("data", {}).get("userId") == uid:
            got.append((m.key(), ev))
    return got


# --- who may report ------------------------------------------------------

def test_needs_a_token(base_url, course):
    r = post(base_url, course["video"], {}, {"positionSeconds": 1,
                                             "watched": []})
    assert r.status_code == 401
    assert "invalid_token" in r.headers.get("WWW-Authenticate", "")
    r = requests.get(url(base_url, course["video"]))
    assert r.status_code == 401


def test_unknown_video_is_404(base_url, student):
    _, h = student
    body = {"positionSeconds": 1, "watched": []}
    r = post(base_url, 999999999, h, body)
    assert r.status_code == 404, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert requests.get(url(base_url, 999999999),
                        headers=h).status_code == 404


def test_not_transcoded_is_409(base_url, student, course):
    _, h = student
    r = post(base_url, course["queued"], h, {"positionSeconds": 1,
                                             "watched": []})
    assert r.status_code == 409, r.text
    assert r.json()["type"] == "/problems/not-ready"
    assert requests.get(url(base_url, course["queued"]),
                        headers=h).status_code == 409


def test_not_enrolled_is_403_and_writes_nothing(stack, base_url, course):
    uid, h = register(stack, base_url)
    for _ in range(2):      # the second answer comes from the cache
        r = post(base_url, course["video"], h,
                 {"positionSeconds": 1, "watched": [[0, 1]]})
        assert r.status_code == 403, r.text
        assert r.json()["type"] == "/problems/not-enrolled"
    assert requests.get(url(base_url, course["video"]),
                        headers=h).status_code == 403
    assert progress_hash(stack, uid, course["video"]) == {}
    # an instructor is not enrolled either
    ih = {"Authorization": "Bearer " + stack.token(
        "instructor@elearn.dev", "instructor-dev-pass")}
    r = post(base_url, course["video"], ih, {"positionSeconds": 1,
                                             "watched": []})
    assert r.status_code == 403


# --- validation ----------------------------------------------------------

BAD = [
    # (body, status, fields in errors)
    ('{"positionSeconds": 1, "watched": [', 400, None),
    ('[1, 2]', 400, None),
    ('{"positionSeconds": NaN, "watched": []}', 400, None),
    ('{"positionSeconds": Infinity, "watched": []}', 400, None),
    ('{"positionSeconds": 1e400, "watched": []}', 400, None),
    ('{"positionSeconds": 1, "positionSeconds": 2, "watched": []}', 400,
     None),
    ({"watched": []}, 422, ["positionSeconds"]),
    ({"positionSeconds": -1, "watched": []}, 422, ["positionSeconds"]),
    ({"positionSeconds": "12", "watched": []}, 422, ["positionSeconds"]),
    ({"positionSeconds": True, "watched": []}, 422, ["positionSeconds"]),
    ({"positionSeconds": None, "watched": []}, 422, ["positionSeconds"]),
    ({"positionSeconds": DURATION + 5.5, "watched": []}, 422,
     ["positionSeconds"]),
    ({"positionSeconds": 1}, 422, ["watched"]),
    ({"positionSeconds": 1, "watched": {"0": 1}}, 422, ["watched"]),
    ({"positionSeconds": 1, "watched": [[i, i + 0.5] for i in range(65)]},
     422, ["watched"]),
    ({"positionSeconds": 1, "watched": [[5, 5]]}, 422, ["watched[0]"]),
    ({"positionSeconds": 1, "watched": [[10, 5]]}, 422, ["watched[0]"]),
    ({"positionSeconds": 1, "watched": [[-1, 5]]}, 422, ["watched[0]"]),
    ({"positionSeconds": 1, "watched": [[0, 10], [5, 20]]}, 422,
     ["watched[1]"]),
    ({"positionSeconds": 1, "watched": [[20, 30], [0, 10]]}, 422,
     ["watched[1]"]),
    ({"positionSeconds": 1, "watched": [[0, "9"]]}, 422, ["watched[0]"]),
    ({"positionSeconds": 1, "watched": [[0]]}, 422, ["watched[0]"]),
    ({"positionSeconds": 1, "watched": [[0, 1, 2]]}, 422, ["watched[0]"]),
    ({"positionSeconds": 1, "watched": [5]}, 422, ["watched[0]"]),
    ({"positionSeconds": 1, "watched": [[0, 10], [DURATION, DURATION + 6]]},
     422, ["watched[1]"]),
    ({"positionSeconds": -3, "watched": [[3, 1]]}, 422,
     ["positionSeconds", "watched[0]"]),
]


@pytest.mark.parametrize("body,status,fields", BAD)
def test_bad_report_is_a_problem_and_writes_nothing(stack, base_url, course,
                                                    student, body, status,
                                                    fields):
    uid, h = student
    r = post(base_url, course["video"], h, body)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    if fields is not None:
        assert sorted(e["field"] for e in r.json()["errors"]) == \
            sorted(fields), r.text
    assert progress_hash(stack, uid, course["video"]) == {}


@pytest.mark.parametrize("body,fields", [
    ({"positionSeconds": DURATION + 5.0004, "watched": []},
     ["positionSeconds"]),
    ({"positionSeconds": 1, "watched": [[0, 1], [DURATION, DURATION + 5.01]]},
     ["watched[1]"]),
    ({"positionSeconds": 1e300, "watched": [[0, 1e300]]},
     ["positionSeconds", "watched[0]"]),
])
def test_bounds_with_everything_cached(stack, base_url, course, student,
                                       body, fields):
    """With video:{id} and enroll:{user}:{course} cached a report takes
    one script, which refuses what reaches past the video (with the same
    field errors) and writes nothing."""
    uid, h = student
    v = course["video"]
    for pos in (1, 2):          # the second one finds both keys cached
        assert post(base_url, v, h, {"positionSeconds": pos,
                                     "watched": []}).status_code == 204
    before = progress_hash(stack, uid, v)
    r = post(base_url, v, h, body)
    assert r.status_code == 422, r.text
    assert sorted(e["field"] for e in r.json()["errors"]) == fields
    assert progress_hash(stack, uid, v) == before
    # exactly at duration + slack is fine, and clamped to the duration
    r = post(base_url, v, h, {"positionSeconds": DURATION + 5,
                              "watched": [[DURATION - 1, DURATION + 5]]})
    assert r.status_code == 204
    hsh = progress_hash(stack, uid, v)
    assert (hsh["pos"], hsh["w"]) == (str(DURATION),
                                      "%d-%d" % (DURATION - 1, DURATION))


def test_bad_reports_produce_no_event(stack, base_url, course, student,
                                      kafka_brokers):
    """Every refused report of BAD, then one good one: the topic gets
    exactly one event of this user, the good one's."""
    uid, h = student
    consumer = consumer_on(kafka_brokers, "elearn.progress")
    try:
        for body, status, _ in BAD:
            assert post(base_url, course["video"], h, body).status_code \
                == status
        assert post(base_url, course["video"], h, {
            "positionSeconds": 42, "watched": [[40, 42]]}).status_code == 204
        got = events_of(consumer, uid, 2, timeout=10)
    finally:
        consumer.close()
    assert [ev["data"]["positionSeconds"] for _, ev in got] == [42]


def test_body_limits(stack, base_url, course, student):
    uid, h = student
    big = {"positionSeconds": 1, "watched": [], "pad": "x" * 4100}
    r = post(base_url, course["video"], h, big)
    assert r.status_code == 413, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")

    # chunked: no Content-Length to refuse it by
    def chunks():
        yield b'{"positionSeconds": 1, "watched": [], "pad": "'
        for _ in range(5):
            yield b"y" * 1000
        yield b'"}'
    r = post(base_url, course["video"], h, chunks())
    assert r.status_code == 413, r.text

    r = post(base_url, course["video"], dict(h, **{
        "Content-Type": "text/plain"}), '{"positionSeconds": 1}')
    assert r.status_code == 415
    # exactly at the limit is fine
    body = '{"positionSeconds": 1, "watched": [], "pad": "%s"}'
    body = body % ("z" * (4096 - len(body % "")))
    assert len(body) == 4096
    assert post(base_url, course["video"], h, body).status_code == 204
    assert progress_hash(stack, uid, course["video"])["pos"] == "1"


# --- the write-behind path -------------------------------------------------

def test_report_lands_in_redis_and_as_the_event(stack, base_url, course,
                                                student, kafka_brokers):
    uid, h = student
    consumer = consumer_on(kafka_brokers, "elearn.progress")
    try:
        t0 = int(time.time() * 1000)
        r = post(base_url, course["video"], h, {
            "positionSeconds": 120.4,
            "watched": [[0, 10], [10.2, 20.4], [40, 59.6],
                        [599.7, 604.9]]})
        t1 = int(time.time() * 1000)
        assert r.status_code == 204, r.text
        assert r.content == b""
        got = events_of(consumer, uid, 1)
    finally:
        consumer.close()

    assert len(got) == 1, got
    key, ev = got[0]
    assert key == str(uid).encode()
    assert set(ev) == {"eventId", "type", "occurredAt", "schemaVersion",
                       "data"}
    u = uuid.UUID(ev["eventId"])
    assert u.version == 4 and str(u) == ev["eventId"]
    assert ev["type"] == "progress.reported"
    assert ev["schemaVersion"] == 1
    data = ev["data"]
    at = data.pop("reportedAtMs")
    assert t0 - 1000 <= at <= t1 + 1000
    assert data == {"userId": uid, "videoId": course["video"],
                    "courseId": course["course"], "positionSeconds": 120,
                    "watched": [[0, 20], [40, 60]],
                    "durationSeconds": DURATION}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at // 1000))
    assert ev["occurredAt"] == "%s.%03dZ" % (stamp, at % 1000)

    hsh = progress_hash(stack, uid, course["video"])
    # x: when the TTL set by this first report runs out (module clock)
    assert int(hsh.pop("x")) == at + 30 * 86400 * 1000
    assert hsh == {"pos": "120", "at": str(at), "w": "0-20,40-60",
                   "ws": "40"}
    ttl = int(redis(stack, "TTL", "progress:%d:%d" % (uid, course["video"])))
    assert 29 * 86400 < ttl <= 30 * 86400


def test_reports_merge_and_position_follows_the_newest(stack, base_url,
                                                       course, student):
    uid, h = student
    v = course["video"]
    steps = [(10, [[0, 10]]), (30, [[20, 30]]), (25, [[5, 25]]),
             (3, []), (50, [[30, 31], [45, 50]])]
    for pos, watched in steps:
        r = post(base_url, v, h, {"positionSeconds": pos,
                                  "watched": watched})
        assert r.status_code == 204, r.text
    hsh = progress_hash(stack, uid, v)
    assert hsh["w"] == "0-31,45-50" and hsh["ws"] == "36"
    assert hsh["pos"] == "50"

    r = requests.get(url(base_url, v), headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["videoId"] == v
    assert body["positionSeconds"] == 50
    assert body["watchedSeconds"] == 36
    assert body["watchedPercent"] == 36 * 100 // DURATION
    assert body["completed"] is False
    assert body["updatedAt"].endswith("Z")


def test_seeking_to_the_end_does_not_complete(base_url, course, student):
    _, h = student
    v = course["video"]
    r = post(base_url, v, h, {"positionSeconds": DURATION,
                              "watched": [[DURATION - 5, DURATION]]})
    assert r.status_code == 204
    body = requests.get(url(base_url, v), headers=h).json()
    assert body["positionSeconds"] == DURATION
    assert body["completed"] is False
    # 90% of the video, in two reports, completes it
    post(base_url, v, h, {"positionSeconds": 300, "watched": [[0, 300]]})
    body = requests.get(url(base_url, v), headers=h).json()
    assert body["completed"] is False
    post(base_url, v, h, {"positionSeconds": 540,
                          "watched": [[300, 535]]})
    body = requests.get(url(base_url, v), headers=h).json()
    assert body["watchedSeconds"] == 540 and body["completed"] is True
    assert body["watchedPercent"] == 90


def test_get_without_anything_reported(base_url, course, student):
    _, h = student
    r = requests.get(url(base_url, course["video"]), headers=h)
    assert r.status_code == 200
    assert r.json() == {"videoId": course["video"], "positionSeconds": 0,
                        "watchedSeconds": 0, "watchedPercent": 0,
                        "completed": False, "updatedAt": None}


def test_get_falls_back_to_postgresql(stack, base_url, pg, course, student):
    uid, h = student
    v = course["video"]
    assert post(base_url, v, h, {"positionSeconds": 7,
                                 "watched": [[0, 7]]}).status_code == 204
    pg_row(pg, uid, v, 33, "{[0,100),[200,260)}",
           "2026-01-02T03:04:05.678Z", "2026-01-02T03:04:05Z")
    # Redis answers while it has the key ...
    assert requests.get(url(base_url, v), headers=h).json()[
        "positionSeconds"] == 7
    # ... PostgreSQL once it has not
    redis(stack, "DEL", "progress:%d:%d" % (uid, v))
    r = requests.get(url(base_url, v), headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"videoId": v, "positionSeconds": 33,
                        "watchedSeconds": 160,
                        "watchedPercent": 160 * 100 // DURATION,
                        "completed": True,
                        "updatedAt": "2026-01-02T03:04:05.678Z"}


def test_get_seeds_an_expired_key_from_postgresql(stack, base_url, pg,
                                                  course, student):
    """A key created by reports after the old one expired knows only those
    reports: the first GET merges PostgreSQL's row into it once, so the
    union and the completion survive the expiry."""
    uid, h = student
    v = course["video"]
    pg_row(pg, uid, v, 550, "{[0,540)}", "2026-01-02T03:04:05Z",
           "2026-01-02T03:04:05Z")
    # the Redis key expired; the student comes back and watches a bit more
    assert post(base_url, v, h, {"positionSeconds": 580,
                                 "watched": [[570, 580]]}).status_code == 204
    assert progress_hash(stack, uid, v)["ws"] == "10"
    for _ in range(2):          # seeds, then answers from the seeded key
        r = requests.get(url(base_url, v), headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["positionSeconds"] == 580       # Redis's is newer
        assert body["watchedSeconds"] == 550
        assert body["completed"] is True
    hsh = progress_hash(stack, uid, v)
    assert (hsh["w"], hsh["s"], hsh["c"]) == ("0-540,570-580", "1", "1")
    # later reports merge into the seeded union
    assert post(base_url, v, h, {"positionSeconds": 590,
                                 "watched": [[580, 590]]}).status_code == 204
    assert requests.get(url(base_url, v), headers=h).json()[
        "watchedSeconds"] == 560


# --- the enrollment cache ---------------------------------------------------

def test_unenroll_drops_the_enrollment_cache(stack, base_url, course,
                                             student):
    uid, h = student
    v, cid = course["video"], course["course"]
    body = {"positionSeconds": 1, "watched": []}
    assert post(base_url, v, h, body).status_code == 204
    assert redis(stack, "GET", "enroll:%d:%d" % (uid, cid)) == "1"
    r = requests.delete(base_url + "/api/v1/courses/%d/enrollments/me" % cid,
                        headers=h)
    assert r.status_code == 204
    # the very next request, whichever worker takes it
    for _ in range(4):
        assert post(base_url, v, h, body).status_code == 403
    assert redis(stack, "GET", "enroll:%d:%d" % (uid, cid)) == "0"
    r = requests.post(base_url + "/api/v1/courses/%d/enrollments" % cid,
                      headers=h)
    assert r.status_code == 201
    for _ in range(4):
        assert post(base_url, v, h, body).status_code == 204


def test_enrollment_and_video_are_cached(stack, base_url, pg, course,
                                         student):
    uid, h = student
    v, cid = course["video"], course["course"]
    assert post(base_url, v, h, {"positionSeconds": 1,
                                 "watched": []}).status_code == 204
    meta = redis(stack, "HGETALL", "video:%d" % v).split("\n")
    assert dict(zip(meta[::2], meta[1::2])) == {
        "courseId": str(cid), "durationSeconds": str(DURATION)}
    ttl = int(redis(stack, "TTL", "enroll:%d:%d" % (uid, cid)))
    assert 0 < ttl <= 300
    # an untranscoded video is not cached: it must turn 2xx once ready
    post(base_url, course["queued"], h, {"positionSeconds": 1,
                                         "watched": []})
    assert redis(stack, "EXISTS", "video:%d" % course["queued"]) == "0"


def test_scripts_reload_after_a_script_flush(stack, base_url, course,
                                             student):
    """Redis forgets its scripts on a restart: EVALSHA's NOSCRIPT makes
    the module send the text once (both scripts: lookup and merge)."""
    uid, h = student
    v = course["video"]
    assert post(base_url, v, h, {"positionSeconds": 1,
                                 "watched": [[0, 1]]}).status_code == 204
    redis(stack, "SCRIPT", "FLUSH")
    for i in range(4):          # each worker meets NOSCRIPT on its own
        r = post(base_url, v, h, {"positionSeconds": 2 + i,
                                  "watched": [[1 + i, 2 + i]]})
        assert r.status_code == 204, r.text
    assert progress_hash(stack, uid, v)["w"] == "0-5"


# --- the naive location ------------------------------------------------------

def test_naive_location_upserts_postgresql(base_url, pg, course, student):
    uid, h = student
    v = course["video"]
    naive = base_url + "/bench/naive/api/v1/videos/%d/progress" % v
    r = requests.post(naive, headers=h, json={"positionSeconds": -1,
                                              "watched": []})
    assert r.status_code == 422
    r = requests.post(naive, headers=h, json={"positionSeconds": 12.6,
                                              "watched": [[0, 12.6]]})
    assert r.status_code == 204, r.text
    r = requests.post(naive, headers=h, json={"positionSeconds": 20,
                                              "watched": [[10, 20]]})
    assert r.status_code == 204, r.text
    with pg.cursor() as c:
        c.execute("SELECT position_seconds, watched::text, watched_seconds "
                  "FROM video_progress WHERE user_id = %s AND video_id = %s",
                  (uid, v))
        assert c.fetchone() == (20, "{[0,20)}", 20)


# --- acknowledgement modes with the broker down ------------------------------

def wait_for(fn, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError("timed out waiting for " + what + ": %r" % last)


def post_until_taken(base_url, vid, h, body, timeout, what):
    """Posts body until it is answered 204; 503 (a dependency not back
    yet) is the only other answer allowed meanwhile."""
    def taken():
        r = post(base_url, vid, h, body)
        assert r.status_code in (204, 503), r.text
        return r.status_code == 204
    wait_for(taken, timeout, what)


def test_redis_outage_refuses_reports_and_get_reads_postgresql(
        stack, base_url, pg, course, student, kafka_brokers):
    """Without Redis (and elearn_revocation_fail_open on, so a token still
    passes) a report cannot be stored for resume: it is a 503 problem
    and no event is produced for it (the event is PostgreSQL's only way
    in).  GET answers from PostgreSQL.  Once Redis is back, reports are
    taken again, and only that one reaches the topic."""
    uid, h = student
    v = course["video"]
    pg_row(pg, uid, v, 40, "{[0,40)}", "2026-01-02T03:04:05Z")
    old = stack.reconfigure(ELEARN_REVOCATION_FAIL_OPEN="on")
    consumer = consumer_on(kafka_brokers, "elearn.progress")
    try:
        stack.stop("redis")
        try:
            time.sleep(1.0)
            r = post(base_url, v, h, {"positionSeconds": 55,
                                      "watched": [[40, 55]]})
            assert r.status_code == 503, r.text
            assert r.headers["Content-Type"].startswith(
                "application/problem+json")
            assert r.json()["type"].endswith("/dependency-unavailable")
            r = requests.get(url(base_url, v), headers=h, timeout=30)
            assert r.status_code == 200, r.text
            assert (r.json()["positionSeconds"],
                    r.json()["watchedSeconds"]) == (40, 40)
        finally:
            stack.start("redis")
        post_until_taken(base_url, v, h, {"positionSeconds": 66,
                                          "watched": [[55, 66]]}, 30,
                         "a report taken after Redis came back")
        got = events_of(consumer, uid, 2, timeout=10)
        assert [ev["data"]["positionSeconds"] for _, ev in got] == [66]
    finally:
        consumer.close()
        stack.reconfigure(**old)


def test_queued_mode_keeps_answering_while_the_broker_is_down(
        stack, base_url, course, student, kafka_brokers):
    uid, h = student
    v = course["video"]
    consumer = consumer_on(kafka_brokers, "elearn.progress")
    try:
        stack.stop("kafka")
        try:
            r = post(base_url, v, h, {"positionSeconds": 77,
                                      "watched": [[70, 77]]})
            assert r.status_code == 204, r.text
            assert progress_hash(stack, uid, v)["pos"] == "77"
        finally:
            stack.start("kafka")
        stack.wait_ready(60)
        # held in the producer's queue, delivered once the broker is back
        got = events_of(consumer, uid, 1, timeout=60)
        assert [ev["data"]["positionSeconds"] for _, ev in got] == [77]
    finally:
        consumer.close()


def test_durable_mode_answers_503_without_the_broker(stack, base_url, course,
                                                     student):
    uid, h = student
    v = course["video"]
    old = stack.reconfigure(ELEARN_PROGRESS_ACK="durable",
                            ELEARN_PROGRESS_ACK_TIMEOUT="3s")
    try:
        # the fresh producer's first ack (metadata, producer id) may take
        # longer than the 3 s timeout on a busy machine: a 503 is fine then
        post_until_taken(base_url, v, h, {"positionSeconds": 5,
                                          "watched": [[0, 5]]}, 60,
                         "a durable 204 from the fresh producer")

        stack.stop("kafka")
        try:
            t = time.time()
            r = post(base_url, v, h, {"positionSeconds": 9,
                                      "watched": [[5, 9]]})
            assert time.time() - t < 3 + 2
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert r.headers["Content-Type"].startswith(
                "application/problem+json")
            # once the producer knows the brokers are down: 503 at once
            time.sleep(3)
            t = time.time()
            r = post(base_url, v, h, {"positionSeconds": 9,
                                      "watched": [[5, 9]]})
            assert r.status_code == 503
            assert time.time() - t < 1
        finally:
            stack.start("kafka")

        def acked():
            r = post(base_url, v, h, {"positionSeconds": 11,
                                      "watched": [[9, 11]]})
            return r.status_code == 204
        wait_for(acked, 90, "a durable 204 after the broker came back")
        assert progress_hash(stack, uid, v)["pos"] == "11"
    finally:
        stack.reconfigure(**old)


def test_durable_reports_have_a_producer_of_their_own(stack, base_url,
                                                      course, student):
    """The queued producer's long linger does not delay a durable 204:
    durable reports go through their own producer
    (elearn_kafka_durable_linger)."""
    uid, h = student
    v = course["video"]
    old = stack.reconfigure(ELEARN_PROGRESS_ACK="durable",
                            ELEARN_KAFKA_LINGER="3000ms",
                            ELEARN_KAFKA_DURABLE_LINGER="5ms")
    try:
        def acked():
            return post(base_url, v, h, {"positionSeconds": 1,
                                         "watched": [[0, 1]]}
                        ).status_code == 204
        wait_for(acked, 60, "a durable 204")
        t = time.time()
        r = post(base_url, v, h, {"positionSeconds": 2, "watched": [[1, 2]]})
        assert r.status_code == 204, r.text
        assert time.time() - t < 2.5
    finally:
        stack.reconfigure(**old)


def test_durable_waits_for_the_delivery_report_and_survives_closed_clients(
        stack, base_url, course, student):
    """A slow delivery report (the durable producer's linger 1.5 s): a
    durable 204 waits for it, a client that gives up first leaves a report
    that arrives for a request that is gone, and a report that arrives
    after the ack timeout finds its request answered; neither may touch
    the request (the worker would crash, or answer twice)."""
    uid, h = student
    v = course["video"]
    log_before = len(stack.nginx_error_log())
    old = stack.reconfigure(ELEARN_PROGRESS_ACK="durable",
                            ELEARN_PROGRESS_ACK_TIMEOUT="5s",
                            ELEARN_KAFKA_DURABLE_LINGER="1500ms")
    try:
        t = time.time()
        r = post(base_url, v, h, {"positionSeconds": 1, "watched": [[0, 1]]})
        assert r.status_code == 204, r.text
        assert time.time() - t >= 1.2
        # clients that close before the report (one linger batch may
        # answer the last few in time)
        closed = 0
        for i in range(20):
            try:
                requests.post(url(base_url, v), headers=h, timeout=0.2,
                              json={"positionSeconds": 2 + i,
                                    "watched": [[1 + i, 2 + i]]})
            except requests.exceptions.ReadTimeout:
                closed += 1
        assert closed >= 10
        time.sleep(2.5)
        r = post(base_url, v, h, {"positionSeconds": 30,
                                  "watched": [[29, 30]]})
        assert r.status_code == 204, r.text
    finally:
        stack.reconfigure(**old)
    # the ack timeout answers first, the report comes after it
    old = stack.reconfigure(ELEARN_PROGRESS_ACK="durable",
                            ELEARN_PROGRESS_ACK_TIMEOUT="500ms",
                            ELEARN_KAFKA_DURABLE_LINGER="1500ms")
    try:
        for _ in range(3):
            t = time.time()
            r = post(base_url, v, h, {"positionSeconds": 31,
                                      "watched": [[30, 31]]})
            assert r.status_code == 503, r.text
            assert "Retry-After" in r.headers
            assert 0.4 <= time.time() - t < 1.4
            time.sleep(2)       # the next one starts a batch of its own
        assert requests.get(url(base_url, v), headers=h).status_code == 200
    finally:
        stack.reconfigure(**old)
    log = stack.nginx_error_log()[log_before:]
    assert "exited on signal" not in log, log[-3000:]
    assert "[alert]" not in log, log[-3000:]
    assert progress_hash(stack, uid, v)["w"] == "0-21,29-31"
