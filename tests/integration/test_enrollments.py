"""Enrollments (contract section 3, issue 4 "Courses and enrollments"):
idempotent enroll, unenroll, my enrollments and a course's enrollments
with both pagination styles, role and ownership checks, and the events
on elearn.enrollments."""

import json
import time
import uuid

import pytest
import requests


def register(base_url):
    email = "e%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": email, "password": "enroll pass 123",
                            "displayName": "Enr " + email[:6]})
    assert r.status_code == 201, r.text
    return email, "enroll pass 123"


@pytest.fixture
def student(stack, base_url):
    email, password = register(base_url)
    return {"Authorization": "Bearer " + stack.token(email, password)}


def hdr(stack, email, password):
    return {"Authorization": "Bearer " + stack.token(email, password)}


def enroll(base_url, h, cid):
    return requests.post(base_url + "/api/v1/courses/%d/enrollments" % cid,
                         headers=h, timeout=30)


def unenroll(base_url, h, cid):
    return requests.delete(
        base_url + "/api/v1/courses/%d/enrollments/me" % cid,
        headers=h, timeout=30)


def published(pg, n, offset=0):
    with pg.cursor() as c:
        c.execute("SELECT course_id FROM courses WHERE published "
                  "ORDER BY course_id LIMIT %s OFFSET %s", (n, offset))
        return [r[0] for r in c.fetchall()]


def count_of(pg, cid):
    with pg.cursor() as c:
        c.execute("SELECT enrollment_count FROM courses WHERE course_id = %s",
                  (cid,))
        return c.fetchone()[0]


def test_enroll_is_idempotent_and_counts(base_url, pg, student):
    cid = published(pg, 1, 40)[0]
    before = count_of(pg, cid)
    r = enroll(base_url, student, cid)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["courseId"] == cid and body["status"] == "active"
    assert body["enrolledAt"].endswith("Z")
    assert count_of(pg, cid) == before + 1
    again = enroll(base_url, student, cid)
    assert again.status_code == 200, again.text
    assert again.json() == body
    assert count_of(pg, cid) == before + 1

    r = unenroll(base_url, student, cid)
    assert r.status_code == 204, r.text
    assert count_of(pg, cid) == before
    # idempotent: not enrolled any more is still 204
    assert unenroll(base_url, student, cid).status_code == 204
    assert count_of(pg, cid) == before


def test_enroll_missing_or_unpublished_course_is_404(base_url, pg, stack,
                                                      student):
    with pg.cursor() as c:
        c.execute("SELECT max(course_id) FROM courses")
        top = c.fetchone()[0]
        c.execute("SELECT course_id FROM courses WHERE NOT published "
                  "LIMIT 1")
        row = c.fetchone()
    assert enroll(base_url, student, top + 1000).status_code == 404
    if row is None:
        with pg.cursor() as c:
            c.execute("INSERT INTO courses (instructor_id, title, category, "
                      "level) SELECT user_id, 'Draft enroll test', 'test', "
                      "'beginner' FROM users WHERE email = "
                      "'instructor@elearn.dev' RETURNING course_id")
            row = c.fetchone()
    r = enroll(base_url, student, row[0])
    assert r.status_code == 404, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")


def test_instructor_cannot_enroll(base_url, pg, stack):
    h = hdr(stack, "instructor@elearn.dev", "instructor-dev-pass")
    assert enroll(base_url, h, published(pg, 1)[0]).status_code == 403


def walk(base_url, path, h, style):
    seen, pages = [], 0
    params = {"pageSize": 10}
    if style == "offset":
        params["page"] = 1
    while True:
        r = requests.get(base_url + path, params=params, headers=h,
                         timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        # a last cursor page has no next page: no Link at all
        assert ("Link" in r.headers) == (
            style == "offset" or body["pagination"]["nextCursor"] is not None)
        seen += body["enrollments"]
        pages += 1
        assert pages < 20
        if style == "offset":
            if params["page"] >= body["pagination"]["totalPages"]:
                return seen, body
            params["page"] += 1
        else:
            nxt = body["pagination"]["nextCursor"]
            if nxt is None:
                return seen, body
            params = {"pageSize": 10, "cursor": nxt}


def test_my_enrollments_both_pagination_styles(base_url, pg, student):
    ids = published(pg, 25, 100)
    for cid in ids:
        assert enroll(base_url, student, cid).status_code == 201
    for style in ("offset", "cursor"):
        rows, last = walk(base_url, "/api/v1/me/enrollments", student, style)
        got = [e["course"]["courseId"] for e in rows]
        assert sorted(got) == sorted(ids), style
        assert len(got) == len(set(got))
        if style == "offset":
            assert last["pagination"]["totalResults"] == 25
            assert last["pagination"]["totalPages"] == 3
    e = rows[0]
    assert set(e) == {"course", "enrolledAt", "progressPercent",
                      "completedAt"}
    assert set(e["course"]) == {"courseId", "title", "summary", "category",
                                "level", "language", "instructor",
                                "enrollmentCount", "publishedAt"}
    assert e["progressPercent"] == 0 and e["completedAt"] is None
    # newest first
    stamps = [x["enrolledAt"] for x in rows]
    assert stamps == sorted(stamps, reverse=True)


def test_pagination_bounds_and_tampered_cursor(base_url, pg, student):
    url = base_url + "/api/v1/me/enrollments"
    for cid in published(pg, 3, 200):
        assert enroll(base_url, student, cid).status_code == 201
    r = requests.get(url, params={"pageSize": 101}, headers=student)
    assert r.status_code == 422, r.text
    r = requests.get(url, params={"page": 501, "pageSize": 20},
                     headers=student)
    assert r.status_code == 422, r.text
    r = requests.get(url, params={"pageSize": 2}, headers=student)
    nxt = r.json()["pagination"]["nextCursor"]
    assert nxt
    assert requests.get(url, params={"cursor": nxt, "pageSize": 2},
                        headers=student).status_code == 200
    bad = nxt[:-2] + ("AA" if nxt[-2:] != "AA" else "BB")
    r = requests.get(url, params={"cursor": bad}, headers=student)
    assert r.status_code == 400, r.text
    # a cursor of my list does not open a course's list
    r = requests.get(url, params={"cursor": "garbage!"}, headers=student)
    assert r.status_code == 400


def test_course_enrollments_owner_only(base_url, pg, stack):
    owner = hdr(stack, "instructor@elearn.dev", "instructor-dev-pass")
    with pg.cursor() as c:
        c.execute("SELECT c.course_id FROM courses c JOIN users u "
                  "ON u.user_id = c.instructor_id WHERE u.email = "
                  "'instructor@elearn.dev' AND c.published "
                  "ORDER BY c.course_id LIMIT 1")
        cid = c.fetchone()[0]
    students = []
    for _ in range(3):
        email, password = register(base_url)
        h = hdr(stack, email, password)
        assert enroll(base_url, h, cid).status_code in (200, 201)
        students.append(h)
    path = "/api/v1/courses/%d/enrollments" % cid
    r = requests.get(base_url + path, params={"pageSize": 2}, headers=owner)
    assert r.status_code == 200, r.text
    body = r.json()
    e = body["enrollments"][0]
    assert set(e) == {"user", "enrolledAt", "progressPercent", "completedAt"}
    assert set(e["user"]) == {"userId", "displayName"}
    assert body["pagination"]["totalResults"] == count_of(pg, cid)
    nxt = body["pagination"]["nextCursor"]
    r = requests.get(base_url + path, params={"cursor": nxt, "pageSize": 2},
                     headers=owner)
    assert r.status_code == 200, r.text
    ids = [x["user"]["userId"] for x in body["enrollments"]] + \
        [x["user"]["userId"] for x in r.json()["enrollments"]]
    assert len(ids) == len(set(ids))
    # a cursor of another list is refused
    mine = requests.get(base_url + "/api/v1/me/enrollments",
                        params={"pageSize": 1}, headers=students[0]).json()
    if mine["pagination"]["nextCursor"]:
        r = requests.get(base_url + path, headers=owner,
                         params={"cursor": mine["pagination"]["nextCursor"]})
        assert r.status_code == 400

    assert requests.get(base_url + path,
                        headers=students[0]).status_code == 403
    admin = hdr(stack, "admin@elearn.dev", "admin-dev-pass")
    email = "i%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    r = requests.post(base_url + "/api/v1/admin/users", headers=admin,
                      json={"email": email, "password": "other instr 1",
                            "displayName": "Other", "role": "instructor"})
    assert r.status_code == 201, r.text
    other = hdr(stack, email, "other instr 1")
    assert requests.get(base_url + path, headers=other).status_code == 403
    assert requests.get(base_url + path, headers=admin).status_code == 200


def test_enrollment_events(base_url, pg, stack, kafka_brokers):
    import confluent_kafka as ck
    consumer = ck.Consumer({"bootstrap.servers": kafka_brokers,
                            "group.id": "test-enr-" + uuid.uuid4().hex,
                            "auto.offset.reset": "latest",
                            "enable.auto.commit": False})
    assigned = []
    consumer.subscribe(["elearn.enrollments"],
                       on_assign=lambda c, p: assigned.extend(p))
    deadline = time.time() + 30
    while not assigned and time.time() < deadline:
        consumer.poll(0.5)
    assert assigned, "no partition assigned"
    # make "latest" concrete before producing
    for p in consumer.assignment():
        consumer.position([p])
    time.sleep(1)

    email, password = register(base_url)
    h = hdr(stack, email, password)
    with pg.cursor() as c:
        c.execute("SELECT user_id FROM users WHERE email = %s", (email,))
        uid = c.fetchone()[0]
    cid = published(pg, 1, 300)[0]
    created = enroll(base_url, h, cid)
    assert created.status_code == 201
    assert enroll(base_url, h, cid).status_code == 200
    assert unenroll(base_url, h, cid).status_code == 204

    mine = []
    deadline = time.time() + 30
    while len(mine) < 2 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        ev = json.loads(m.value())
        if ev.get("data", {}).get("userId") == uid:
            mine.append((m.key(), ev))
    time.sleep(2)
    while True:
        m = consumer.poll(0.5)
        if m is None:
            break
        if not m.error() and json.loads(m.value()).get(
                "data", {}).get("userId") == uid:
            mine.append((m.key(), json.loads(m.value())))
    consumer.close()

    types = [ev["type"] for _, ev in mine]
    assert types == ["enrollment.created", "enrollment.deleted"], mine
    key, ev = mine[0]
    assert key == str(cid).encode()
    assert set(ev) == {"eventId", "type", "occurredAt", "schemaVersion",
                       "data"}
    assert ev["schemaVersion"] == 1
    u = uuid.UUID(ev["eventId"])
    assert u.version == 4 and str(u) == ev["eventId"]
    assert ev["occurredAt"].endswith("Z")
    assert ev["data"] == {"userId": uid, "courseId": cid,
                          "enrolledAt": created.json()["enrolledAt"]}
    assert mine[1][0] == str(cid).encode()
    assert mine[1][1]["eventId"] != ev["eventId"]
