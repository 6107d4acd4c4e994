"""Live sessions (contract section 7, issue 6): the REST calls, joining
the WebSocket /live/{id} (auth, enrollment, capacity before the upgrade),
broadcast and chat with sequence numbers, limits, replay with lastSeq,
token expiry on an open socket, closing a session, a Redis restart
during a session, and the token kept out of the logs.

WebSocket clients are Python's websocket-client (Debian's
python3-websocket): synchronous, which keeps each step's expectation
explicit.  Refusals before the upgrade are read as plain HTTP."""

import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid

import pytest
import requests
import websocket

from conftest import nginx_env

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# --- helpers ----------------------------------------------------------------

def register(base_url, stack, name=None, session=False):
    """A new student's access token; with session, the login's answer
    (access and refresh tokens)."""
    email = "live%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": email, "password": "live pass 1234",
                            "displayName": name or "Live " + email[4:10]})
    assert r.status_code == 201, r.text
    if session:
        return stack.login(email, "live pass 1234").json()
    return stack.token(email, "live pass 1234")


def bearer(token):
    return {"Authorization": "Bearer " + token}


@pytest.fixture(scope="module")
def instructor(stack):
    return stack.token("instructor@elearn.dev", "instructor-dev-pass")


@pytest.fixture(scope="module")
def course(pg_dsn):
    """A published course of the demo instructor (user 2)."""
    import psycopg2
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as c:
        c.execute("SELECT course_id FROM courses WHERE instructor_id = 2 "
                  "AND published ORDER BY course_id LIMIT 1")
        cid = c.fetchone()[0]
    conn.close()
    return cid


def enrolled_student(base_url, stack, course, name=None, session=False):
    """As register(), enrolled in course."""
    got = register(base_url, stack, name, session)
    token = got["accessToken"] if session else got
    r = requests.post(base_url + "/api/v1/courses/%d/enrollments" % course,
                      headers=bearer(token), timeout=30)
    assert r.status_code in (200, 201), r.text
    return got


def create(base_url, token, course, **body):
    body.setdefault("title", "Office hours")
    return requests.post(
        base_url + "/api/v1/courses/%d/live-sessions" % course,
        headers=bearer(token), json=body, timeout=30)


def new_session(base_url, instructor, course, capacity=None):
    body = {} if capacity is None else {"capacity": capacity}
    r = create(base_url, instructor, course, **body)
    assert r.status_code == 201, r.text
    return r.json()["sessionId"]


def ws_url(stack, sid, token=None, last_seq=None):
    url = "ws://127.0.0.1:%s/live/%d" % (stack.env["ELEARN_HTTP_PORT"], sid)
    q = []
    if token is not None:
        q.append("access_token=" + token)
    if last_seq is not None:
        q.append("lastSeq=%d" % last_seq)
    return url + ("?" + "&".join(q) if q else "")


def join(stack, sid, token, last_seq=None, protocol=False):
    """Connects and returns (ws, welcome)."""
    if protocol:
        ws = websocket.create_connection(
            ws_url(stack, sid, last_seq=last_seq), timeout=10,
            subprotocols=["elearn.v1", "bearer." + token])
    else:
        ws = websocket.create_connection(ws_url(stack, sid, token, last_seq),
                                         timeout=10)
    welcome = json.loads(ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


def recv(ws, skip=("presence",), timeout=10):
    """The next frame that is not of a skipped type: a dict, or
    ("close", code) for a close frame."""
    ws.settimeout(timeout)
    while True:
        op, data = ws.recv_data(control_frame=True)
        if op == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            return ("close", code)
        if op != websocket.ABNF.OPCODE_TEXT:
            continue
        msg = json.loads(data.decode())
        if msg.get("type") not in skip:
            return msg


def send(ws, type_, body):
    ws.send(json.dumps({"type": type_, "body": body}))


def raw_join(stack, path, headers=None):
    """A WebSocket opening handshake as plain HTTP: the status, headers and
    body of a refusal (or of the 101)."""
    h = {"Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": WS_KEY}
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1",
                                   int(stack.env["ELEARN_HTTP_PORT"]),
                                   timeout=10)
    c.request("GET", path, headers=h)
    r = c.getresponse()
    body = r.read() if r.status != 101 else b""
    c.close()
    return r.status, r.headers, body


def wait_joinable(stack, sid, token, timeout=20):
    """Until joins succeed (after a Redis restart: both workers back, so
    several in a row, whichever worker takes them)."""
    deadline = time.time() + timeout
    ok = 0
    while ok < 6:
        if raw_join(stack, "/live/%d?access_token=%s" % (sid, token))[0] \
                == 101:
            ok += 1
            continue
        ok = 0
        assert time.time() < deadline
        time.sleep(0.2)


def get_session(base_url, token, sid):
    return requests.get(base_url + "/api/v1/live-sessions/%d" % sid,
                        headers=bearer(token), timeout=30)


def close_session(base_url, token, sid):
    return requests.post(base_url + "/api/v1/live-sessions/%d/close" % sid,
                         headers=bearer(token), timeout=30)


# --- REST -------------------------------------------------------------------

def test_create_get_close(base_url, stack, instructor, course):
    r = create(base_url, instructor, course, title="Q&A \"live\"",
               capacity=50)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["title"] == "Q&A \"live\"" and s["capacity"] == 50
    assert s["status"] == "open"
    assert s["wsUrl"] == "/live/%d" % s["sessionId"]
    sid = s["sessionId"]

    student = enrolled_student(base_url, stack, course)
    for token in (instructor, student):
        r = get_session(base_url, token, sid)
        assert r.status_code == 200, r.text
        assert r.json() == {"sessionId": sid, "courseId": course,
                            "title": "Q&A \"live\"", "capacity": 50,
                            "participants": 0, "status": "open"}

    assert close_session(base_url, student, sid).status_code == 403
    r = close_session(base_url, instructor, sid)
    assert r.status_code == 204, r.text
    assert get_session(base_url, student, sid).json()["status"] == "closed"
    # idempotent
    assert close_session(base_url, instructor, sid).status_code == 204


def test_capacity_defaults_to_the_directive(base_url, instructor, course):
    r = create(base_url, instructor, course)
    assert r.status_code == 201, r.text
    assert r.json()["capacity"] == 1000


@pytest.mark.parametrize("body,field", [
    ({"title": "x", "capacity": 1001}, "capacity"),
    ({"title": "x", "capacity": 0}, "capacity"),
    ({"title": "x", "capacity": "10"}, "capacity"),
    ({"capacity": 10}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"title": "x", "room": 1}, "room"),
])
def test_create_validation(base_url, instructor, course, body, field):
    r = requests.post(
        base_url + "/api/v1/courses/%d/live-sessions" % course,
        headers=bearer(instructor), json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]]


def test_create_needs_the_owner(base_url, stack, pg, instructor, course):
    student = enrolled_student(base_url, stack, course)
    assert create(base_url, student, course).status_code == 403
    with pg.cursor() as c:
        c.execute("SELECT course_id FROM courses WHERE instructor_id <> 2 "
                  "LIMIT 1")
        other = c.fetchone()[0]
    assert create(base_url, instructor, other).status_code == 403
    assert create(base_url, instructor, 999999999).status_code == 404
    r = requests.post(base_url + "/api/v1/courses/%d/live-sessions" % course,
                      json={"title": "x"}, timeout=30)
    assert r.status_code == 401
    admin = stack.token("admin@elearn.dev", "admin-dev-pass")
    assert create(base_url, admin, course).status_code == 201


def test_get_needs_enrollment(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    outsider = register(base_url, stack)
    r = get_session(base_url, outsider, sid)
    assert r.status_code == 403, r.text
    assert get_session(base_url, outsider, 999999999).status_code == 404
    assert get_session(base_url, instructor, 999999999).status_code == 404
    assert close_session(base_url, instructor, 999999999).status_code == 404


# --- joining ----------------------------------------------------------------

def test_join_refusals_before_the_upgrade(base_url, stack, instructor,
                                          course):
    sid = new_session(base_url, instructor, course)

    status, headers, body = raw_join(stack, "/live/%d" % sid)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(body)["type"] == "/problems/invalid-token"

    status, _, _ = raw_join(stack, "/live/%d?access_token=not.a.jwt" % sid)
    assert status == 401

    outsider = register(base_url, stack)
    status, _, body = raw_join(stack,
                               "/live/%d?access_token=%s" % (sid, outsider))
    assert status == 403, body

    status, _, _ = raw_join(stack, "/live/999999999?access_token=%s"
                            % instructor)
    assert status == 404

    status, _, _ = raw_join(stack, "/live/%d?access_token=%s&lastSeq=-4"
                            % (sid, instructor))
    assert status == 400

    # not a WebSocket handshake
    r = requests.get(base_url + "/live/%d?access_token=%s" % (sid, instructor),
                     timeout=10)
    assert r.status_code in (400, 426)

    assert close_session(base_url, instructor, sid).status_code == 204
    status, _, body = raw_join(stack, "/live/%d?access_token=%s"
                               % (sid, instructor))
    assert status == 410, body


def test_join_refuses_a_revoked_token(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    body = enrolled_student(base_url, stack, course, name="Leaving",
                            session=True)
    token = body["accessToken"]
    join(stack, sid, token)[0].close()
    r = requests.post(base_url + "/api/v1/auth/logout", headers=bearer(token),
                      json={"refreshToken": body["refreshToken"]})
    assert r.status_code == 204
    # every worker, on the next join (as for the API)
    for _ in range(6):
        status, _, body = raw_join(stack, "/live/%d?access_token=%s"
                                   % (sid, token))
        assert status == 401, body
        assert b"revoked" in body


def test_revocation_closes_an_open_socket(base_url, stack, instructor,
                                          course):
    """A logout revokes the login session: its open socket is closed with
    4001 within elearn_live_revocation_check (1 s), the other
    participants stay, and /metrics counts it."""
    sid = new_session(base_url, instructor, course)
    body = enrolled_student(base_url, stack, course, name="Revoked",
                            session=True)
    token = body["accessToken"]
    owner, _ = join(stack, sid, instructor)
    ws, _ = join(stack, sid, token)
    try:
        time.sleep(1.5)
        before = live_metrics(base_url).get(
            "elearn_live_revoked_closes_total", 0)
        r = requests.post(base_url + "/api/v1/auth/logout",
                          headers=bearer(token),
                          json={"refreshToken": body["refreshToken"]})
        assert r.status_code == 204
        t0 = time.time()
        assert recv(ws, timeout=10) == ("close", 4001)
        assert time.time() - t0 < 5
        send(owner, "broadcast", "still here")
        assert recv(owner)["body"] == "still here"
        time.sleep(1.5)
        assert live_metrics(base_url)["elearn_live_revoked_closes_total"] \
            - before == 1
    finally:
        ws.close()
        owner.close()


def test_an_admin_joins_and_broadcasts(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    admin = stack.token("admin@elearn.dev", "admin-dev-pass")
    ws, _ = join(stack, sid, admin, protocol=True)
    try:
        send(ws, "broadcast", "from the admin")
        m = recv(ws)
        assert m["type"] == "broadcast" and m["from"]["role"] == "admin"
    finally:
        ws.close()


def test_join_with_the_bearer_subprotocol(base_url, stack, instructor,
                                          course):
    sid = new_session(base_url, instructor, course)
    student = enrolled_student(base_url, stack, course)
    ws, welcome = join(stack, sid, student, protocol=True)
    try:
        assert ws.getsubprotocol() == "elearn.v1"
        assert welcome["sessionId"] == sid
        assert welcome["participants"] == 1
        assert welcome["lastSeq"] == 0
    finally:
        ws.close()


def test_presence_follows_joins_and_leaves(base_url, stack, instructor,
                                           course):
    sid = new_session(base_url, instructor, course)
    first, welcome = join(stack, sid, instructor)
    try:
        assert welcome["participants"] == 1
        second, welcome = join(stack, sid,
                               enrolled_student(base_url, stack, course))
        assert welcome["participants"] == 2
        m = recv(first, skip=())
        while m["participants"] != 2:
            m = recv(first, skip=())
        assert m == {"type": "presence", "participants": 2}
        second.close()
        m = recv(first, skip=())
        while m["participants"] != 1:
            m = recv(first, skip=())
        assert m == {"type": "presence", "participants": 1}
    finally:
        first.close()


def redis_cli(stack, *args):
    return subprocess.run(["redis-cli", "-p", stack.env["ELEARN_REDIS_PORT"]]
                          + [str(a) for a in args], capture_output=True,
                          text=True, check=True).stdout.strip()


def user_id(base_url, token):
    return requests.get(base_url + "/api/v1/me", headers=bearer(token),
                        timeout=30).json()["userId"]


def test_presence_is_bounded_in_frames_and_publishes(base_url, stack,
                                                     instructor, course):
    """A burst of joins costs no PUBLISH each: every worker publishes the
    count at most once per elearn_live_presence_interval (1 s), and a
    participant gets at most one presence frame per interval; the count
    it ends with is right, after the joins and after the leaves."""
    sid = new_session(base_url, instructor, course)
    student = enrolled_student(base_url, stack, course)
    first, _ = join(stack, sid, instructor)
    socks = []
    try:
        time.sleep(2.5)
        before = redis_publishes(stack)
        t0 = time.time()
        socks = [join(stack, sid, student)[0] for _ in range(20)]
        frames = []
        while not frames or frames[-1]["participants"] != 21:
            frames.append(recv(first, skip=()))
            assert frames[-1]["type"] == "presence", frames[-1]
        elapsed = time.time() - t0
        time.sleep(2.5)         # the last interval's publishes
        publishes = redis_publishes(stack) - before
        # 2 workers, one publish each per interval at most, never per join
        assert publishes <= 2 * (int(elapsed) + 2), (publishes, elapsed)
        assert publishes < 20
        assert len(frames) <= int(elapsed) + 2, (frames, elapsed)
        assert participants(base_url, instructor, sid) == 21
        for ws in socks[:15]:
            ws.close()
        m = recv(first, skip=())
        while m["participants"] != 6:
            m = recv(first, skip=())
        assert m == {"type": "presence", "participants": 6}
        assert participants(base_url, instructor, sid) == 6
    finally:
        for ws in socks + [first]:
            ws.close()


def test_cached_session_row_still_refuses_a_closed_session(
        base_url, stack, instructor, course):
    """The workers keep a session's row while it has participants; the
    closed mark in Redis (set by close) refuses the join all the same,
    whether the joining worker has the row or reads PostgreSQL."""
    sid = new_session(base_url, instructor, course)
    student = enrolled_student(base_url, stack, course)
    held = [join(stack, sid, instructor)[0] for _ in range(4)]
    try:
        # the row is now cached where these landed; mark closed in Redis
        # only (PostgreSQL still says open): no join may pass
        redis_cli(stack, "SET", "elearn:live:%d:closed" % sid, "1")
        for _ in range(6):
            status, _, body = raw_join(stack, "/live/%d?access_token=%s"
                                       % (sid, student))
            assert status == 410, body
    finally:
        for ws in held:
            ws.close()
    sid = new_session(base_url, instructor, course)
    held = [join(stack, sid, instructor)[0] for _ in range(4)]
    try:
        assert close_session(base_url, instructor, sid).status_code == 204
        for _ in range(6):
            status, _, body = raw_join(stack, "/live/%d?access_token=%s"
                                       % (sid, student))
            assert status == 410, body
    finally:
        for ws in held:
            ws.close()


def test_join_reads_enrollment_and_name_from_the_cache(base_url, stack,
                                                        instructor, course):
    """With the row cached, a join costs no PostgreSQL: the enrollment
    status (enroll:{user}:{course}) and the display name come from Redis
    (a name planted there shows in the student's messages); unenrolling
    drops the status and the next join is refused."""
    sid = new_session(base_url, instructor, course)
    student = enrolled_student(base_url, stack, course)
    uid = user_id(base_url, student)
    owner = [join(stack, sid, instructor)[0] for _ in range(6)]
    socks = []
    try:
        names = []
        for _ in range(6):
            # a worker without the row reads PostgreSQL (and stores the
            # real name); one with it takes the planted one
            redis_cli(stack, "SET", "elearn:live:name:%d" % uid, "Planted")
            ws, _ = join(stack, sid, student)
            socks.append(ws)
            send(ws, "chat", "hi")
            m = recv(ws)
            assert m.get("type") == "chat", (m, names)
            names.append(m["from"]["displayName"])
            if names[-1] == "Planted":
                break
        assert names[-1] == "Planted", names
        assert redis_cli(stack, "GET", "enroll:%d:%d" % (uid, course)) == "1"
        r = requests.delete(base_url + "/api/v1/courses/%d/enrollments/me"
                            % course, headers=bearer(student), timeout=30)
        assert r.status_code == 204
        for _ in range(6):
            status, _, body = raw_join(stack, "/live/%d?access_token=%s"
                                       % (sid, student))
            assert status == 403, body
    finally:
        for ws in socks + owner:
            ws.close()


def live_metrics(base_url):
    """The live and WebSocket series of /metrics, summed over workers."""
    out = {}
    for line in requests.get(base_url + "/metrics", timeout=30).text \
            .splitlines():
        if not line.startswith(("elearn_live_", "elearn_ws_")):
            continue
        name, value = line.rsplit(" ", 1)
        labels = ""
        if "{" in name:
            name, rest = name.split("{", 1)
            labels = ",".join(p for p in rest.rstrip("}").split(",")
                              if not p.startswith("worker="))
        key = name + ("{%s}" % labels if labels else "")
        out[key] = out.get(key, 0) + float(value)
    return out


def test_live_figures_in_metrics(base_url, stack, instructor, course):
    """/metrics counts open participants, joins accepted and refused by
    reason, frames delivered and presence publishes."""
    time.sleep(1.5)
    before = live_metrics(base_url)
    sid = new_session(base_url, instructor, course, capacity=1)
    owner, _ = join(stack, sid, instructor)
    try:
        path = "/live/%d?access_token=%s" % (sid, instructor)
        assert raw_join(stack, path)[0] == 503
        assert raw_join(stack, "/live/%d?access_token=nope" % sid)[0] == 401
        assert raw_join(stack, "/live/%d?access_token=%s"
                        % (sid, register(base_url, stack)))[0] == 403
        assert raw_join(stack, "/live/999999999?access_token=%s"
                        % instructor)[0] == 404
        send(owner, "broadcast", "counted")
        assert recv(owner)["body"] == "counted"
        time.sleep(2.5)         # the presence count, the metrics update
        after = live_metrics(base_url)
        diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        assert after["elearn_live_participants"] >= 1
        assert diff['elearn_live_joins_total{result="accepted"}'] == 1
        assert diff['elearn_live_joins_total{result="full"}'] == 1
        assert diff['elearn_live_joins_total{result="token"}'] == 1
        assert diff['elearn_live_joins_total{result="forbidden"}'] == 1
        assert diff['elearn_live_joins_total{result="not-found"}'] == 1
        # the broadcast at least (the welcome is not a delivery)
        assert diff["elearn_live_delivered_total"] >= 1
        assert diff["elearn_live_presence_publishes_total"] >= 1
        assert diff["elearn_ws_upgrades_total"] >= 1
    finally:
        owner.close()
    assert close_session(base_url, instructor, sid).status_code == 204
    assert raw_join(stack, "/live/%d?access_token=%s"
                    % (sid, instructor))[0] == 410
    time.sleep(1.5)
    diff = live_metrics(base_url)['elearn_live_joins_total{result="closed"}'] \
        - before.get('elearn_live_joins_total{result="closed"}', 0)
    assert diff == 1


def participants(base_url, token, sid):
    return get_session(base_url, token, sid).json()["participants"]


def test_capacity_is_held_before_the_upgrade(base_url, stack, instructor,
                                             course):
    sid = new_session(base_url, instructor, course, capacity=3)
    students = [enrolled_student(base_url, stack, course) for _ in range(4)]
    held = []
    try:
        # several connections: nginx's two workers both take some, and the
        # count is shared through Redis
        for s in students[:3]:
            held.append(join(stack, sid, s)[0])
        assert participants(base_url, instructor, sid) == 3

        status, headers, body = raw_join(
            stack, "/live/%d?access_token=%s" % (sid, students[3]))
        assert status == 503, body
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(body)["type"] == "/problems/session-full"

        # a place freed is a place taken
        held.pop().close()
        deadline = time.time() + 5
        while participants(base_url, instructor, sid) != 2:
            assert time.time() < deadline
            time.sleep(0.1)
        held.append(join(stack, sid, students[3])[0])
    finally:
        for ws in held:
            ws.close()


def test_capacity_across_workers(base_url, stack, instructor, course):
    """Many joins over fresh connections: the kernel spreads them over the
    worker processes; the cap still holds exactly."""
    sid = new_session(base_url, instructor, course, capacity=5)
    student = enrolled_student(base_url, stack, course)
    held, refused = [], 0
    try:
        for _ in range(12):
            status, _, _ = raw_join(stack, "/live/%d?access_token=%s"
                                    % (sid, student))
            if status == 503:
                refused += 1
        # raw_join closed its sockets: the places come back
        deadline = time.time() + 5
        while participants(base_url, instructor, sid) != 0:
            assert time.time() < deadline
            time.sleep(0.1)
        for _ in range(5):
            held.append(join(stack, sid, student)[0])
        status, _, _ = raw_join(stack, "/live/%d?access_token=%s"
                                % (sid, student))
        assert status == 503
        assert participants(base_url, instructor, sid) == 5
    finally:
        for ws in held:
            ws.close()


# --- messages ---------------------------------------------------------------

def test_broadcast_reaches_everyone_in_order(base_url, stack, instructor,
                                             course):
    sid = new_session(base_url, instructor, course)
    owner, _ = join(stack, sid, instructor)
    students = [join(stack, sid, enrolled_student(base_url, stack,
                                                  course))[0]
                for _ in range(3)]
    try:
        for i in range(5):
            send(owner, "broadcast", "slide %d" % i)
        for ws in students + [owner]:
            got = [recv(ws) for _ in range(5)]
            assert [m["type"] for m in got] == ["broadcast"] * 5
            assert [m["body"] for m in got] == ["slide %d" % i
                                                for i in range(5)]
            seqs = [m["seq"] for m in got]
            assert seqs == list(range(seqs[0], seqs[0] + 5))
            assert got[0]["from"]["userId"] == 2
            assert got[0]["from"]["role"] == "instructor"
            assert got[0]["from"]["displayName"] == "Dev Instructor"
            assert got[0]["ts"].endswith("Z")

        # a student may chat but not broadcast
        send(students[0], "broadcast", "me too")
        err = recv(students[0])
        assert err["type"] == "error" and err["code"] == "forbidden"
        send(students[0], "chat", "hello")
        for ws in students + [owner]:
            m = recv(ws)
            assert m["type"] == "chat" and m["body"] == "hello"
            assert m["seq"] == seqs[-1] + 1
            assert m["from"]["role"] == "student"
    finally:
        for ws in students + [owner]:
            ws.close()


def test_chat_size_and_rate_limits(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    ws, _ = join(stack, sid, enrolled_student(base_url, stack, course))
    try:
        send(ws, "chat", "x" * 2049)
        m = recv(ws)
        assert m["type"] == "error" and m["code"] == "too-large"
        send(ws, "chat", "y" * 2048)
        m = recv(ws)
        assert m["type"] == "chat" and len(m["body"]) == 2048

        time.sleep(1.1)
        for i in range(8):
            send(ws, "chat", "burst %d" % i)
        got = [recv(ws) for _ in range(8)]
        chats = [m for m in got if m["type"] == "chat"]
        errors = [m for m in got if m["type"] == "error"]
        assert 1 <= len(chats) <= 5
        assert errors and all(e["code"] == "rate-limited" for e in errors)

        # an error frame, not a close: the socket still works
        time.sleep(1.1)
        send(ws, "chat", "after")
        m = recv(ws)
        assert m["type"] == "chat" and m["body"] == "after"

        ws.send("not json")
        assert recv(ws)["code"] == "bad-message"
    finally:
        ws.close()


def test_replay_with_last_seq(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    owner, _ = join(stack, sid, instructor)
    try:
        for i in range(6):
            send(owner, "broadcast", "m%d" % i)
        got = [recv(owner) for _ in range(6)]
        seqs = [m["seq"] for m in got]

        student = enrolled_student(base_url, stack, course)
        ws, welcome = join(stack, sid, student, last_seq=seqs[2])
        try:
            assert welcome["lastSeq"] == seqs[-1]
            missed = [recv(ws) for _ in range(3)]
            assert [m["seq"] for m in missed] == seqs[3:]
            assert [m["body"] for m in missed] == ["m3", "m4", "m5"]
            # then live, with no duplicate
            send(owner, "broadcast", "live")
            assert recv(owner)["body"] == "live"
            m = recv(ws)
            assert m["body"] == "live" and m["seq"] == seqs[-1] + 1
        finally:
            ws.close()

        # without lastSeq, or with one the session never reached (its
        # numbers were reset): nothing old, everything that follows
        for last in (None, 10 ** 12):
            ws, welcome = join(stack, sid, student, last_seq=last)
            try:
                send(owner, "broadcast", "next")
                assert recv(owner)["body"] == "next"
                m = recv(ws)
                assert m["body"] == "next"
                assert m["seq"] == welcome["lastSeq"] + 1
            finally:
                ws.close()
    finally:
        owner.close()


def redis_publishes(stack):
    out = subprocess.run(["redis-cli", "-p", stack.env["ELEARN_REDIS_PORT"],
                          "info", "commandstats"], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("cmdstat_publish:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_one_redis_publish_per_message(base_url, stack, instructor, course):
    """Numbering, buffering and publishing are one script: one PUBLISH per
    message, however many workers and participants."""
    sid = new_session(base_url, instructor, course)
    owner, _ = join(stack, sid, instructor)
    socks = [join(stack, sid, enrolled_student(base_url, stack, course))[0]
             for _ in range(4)]
    try:
        # the joins' presence count is out (once per interval, 1 s)
        time.sleep(2.5)
        before = redis_publishes(stack)
        for i in range(20):
            send(owner, "broadcast", "p%d" % i)
        for ws in socks + [owner]:
            assert [recv(ws)["body"] for _ in range(20)] == \
                ["p%d" % i for i in range(20)]
        assert redis_publishes(stack) - before == 20
    finally:
        for ws in socks + [owner]:
            ws.close()


def test_display_name_is_escaped_whole(base_url, stack, instructor, course):
    name = "Zoë \"quotes\" \u00e9\u4e2d\u6587" * 6
    token = enrolled_student(base_url, stack, course, name=name[:100])
    sid = new_session(base_url, instructor, course)
    ws, _ = join(stack, sid, token)
    try:
        send(ws, "chat", "\u00e9t\u00e9 \U0001F600 <b>\\n</b>")
        m = recv(ws)
        assert m["from"]["displayName"] == name[:100]
        assert m["body"] == "\u00e9t\u00e9 \U0001F600 <b>\\n</b>"
    finally:
        ws.close()


def test_slow_reader_is_closed_others_get_everything(base_url, stack,
                                                     course):
    old = stack.reconfigure(ELEARN_WS_MAX_QUEUE="16k")
    try:
        instructor = stack.token("instructor@elearn.dev",
                                 "instructor-dev-pass")
        sid = new_session(base_url, instructor, course)
        owner, _ = join(stack, sid, instructor)
        fast, _ = join(stack, sid, enrolled_student(base_url, stack, course))
        slow = websocket.create_connection(
            ws_url(stack, sid, enrolled_student(base_url, stack, course)),
            timeout=10,
            sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        # more than the kernel's socket buffers can hide (up to 4 MB of
        # send buffer here) on top of the 16k queue
        n, body = 3000, "z" * 2000
        got = []
        log_at = len(stack.nginx_error_log())
        for i in range(0, n, 50):
            for j in range(i, i + 50):
                send(owner, "broadcast", "%d %s" % (j, body))
            for _ in range(50):
                assert recv(owner)["type"] == "broadcast"
                got.append(int(recv(fast)["body"].split()[0]))
        assert got == list(range(n))
        # the slow one read nothing: it was cut off, not grown.  It gets
        # the close code 1008 if the close frame found room in its socket
        # before elearn_ws_close_timeout, else the connection is dropped
        slow.settimeout(10)
        code, frames = None, 0
        try:
            while True:
                op, data = slow.recv_data(control_frame=True)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", data[:2])[0]
                    break
                frames += 1
        except (websocket.WebSocketConnectionClosedException, OSError):
            pass
        assert frames < n
        assert code == 1008 or (
            code is None and "closing a slow reader"
            in stack.nginx_error_log()[log_at:])
        for ws in (owner, fast, slow):
            ws.close()
    finally:
        stack.reconfigure(**old)


def test_close_tells_every_participant(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    socks = [join(stack, sid, enrolled_student(base_url, stack, course))[0]
             for _ in range(3)]
    try:
        assert close_session(base_url, instructor, sid).status_code == 204
        for ws in socks:
            m = recv(ws)
            assert m == {"type": "system", "event": "closing"}
            assert recv(ws) == ("close", 1000)
    finally:
        for ws in socks:
            ws.close()


def test_token_expiring_then_4001(base_url, stack, course):
    old = stack.reconfigure(ELEARN_JWT_TTL="4s",
                            ELEARN_LIVE_TOKEN_WARNING="2s")
    try:
        instructor = stack.token("instructor@elearn.dev",
                                 "instructor-dev-pass")
        sid = new_session(base_url, instructor, course)
        ws, _ = join(stack, sid, instructor)
        try:
            start = time.time()
            m = recv(ws)
            assert m == {"type": "system", "event": "token-expiring"}
            assert recv(ws) == ("close", 4001)
            assert time.time() - start < 8
        finally:
            ws.close()
    finally:
        stack.reconfigure(**old)


def test_redis_restart_during_a_session(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    owner, _ = join(stack, sid, instructor)
    students = [join(stack, sid, enrolled_student(base_url, stack,
                                                  course))[0]
                for _ in range(3)]
    try:
        send(owner, "broadcast", "before")
        before = [recv(ws)["seq"] for ws in students]
        assert recv(owner)["body"] == "before"

        stack.stop("redis")
        stack.start("redis")

        # the workers reconnect and resubscribe; until then a broadcast is
        # answered with an "unavailable" error frame
        deadline = time.time() + 20
        while True:
            assert time.time() < deadline, "no message after the restart"
            send(owner, "broadcast", "after")
            m = recv(owner)
            if m["type"] == "broadcast":
                assert m["body"] == "after"
                break
            assert m["type"] == "error" and m["code"] == "unavailable"
            time.sleep(0.5)
        # subscriptions restored everywhere: every student gets it, and
        # numbers go on from where they were
        for ws, b in zip(students, before):
            m = recv(ws)
            while m["body"] != "after":
                m = recv(ws)
            assert m["seq"] > b
    finally:
        for ws in students + [owner]:
            ws.close()
        # both workers back (revocations reloaded) before the next test
        wait_joinable(stack, sid, instructor)


def test_redis_down_answers_503_not_a_hang(base_url, stack, instructor,
                                           course):
    sid = new_session(base_url, instructor, course)
    ws, _ = join(stack, sid, instructor)
    stack.stop("redis")
    try:
        send(ws, "broadcast", "into the void")
        m = recv(ws)
        assert m["type"] == "error" and m["code"] == "unavailable"
        status, headers, body = raw_join(stack, "/live/%d?access_token=%s"
                                         % (sid, instructor))
        assert status == 503, body
        assert int(headers["Retry-After"]) >= 1
        assert get_session(base_url, instructor, sid).status_code == 503
    finally:
        stack.start("redis")
        ws.close()
        wait_joinable(stack, sid, instructor)


def test_token_stays_out_of_the_logs(base_url, stack, instructor, course):
    sid = new_session(base_url, instructor, course)
    ws, _ = join(stack, sid, instructor)
    ws.close()
    time.sleep(1.5)    # the access log is buffered for 1 s
    logs = os.path.join(stack.var, "nginx", "logs")
    text = ""
    for name in os.listdir(logs):
        with open(os.path.join(logs, name), errors="replace") as f:
            text += f.read()
    assert instructor not in text
    assert instructor.split(".")[2] not in text
    with open(os.path.join(logs, "live.log")) as f:
        lines = [l for l in f if "/live/%d " % sid in l]
    assert lines and lines[-1].split()[1] == str(sid)


# --- gateway and three nodes ------------------------------------------------

class Cluster:
    """Three extra nginx nodes (the stack's configuration on ports
    HTTP+1..3, each with its own prefix) behind nginx-conf/gateway.conf.in
    on HTTP+4; all share the stack's PostgreSQL and Redis."""

    def __init__(self, stack):
        self.stack = stack
        self.base = int(stack.env["ELEARN_HTTP_PORT"])
        self.ports = [self.base + i for i in (1, 2, 3)]
        self.gw_port = self.base + 4
        self.prefixes = []
        self.gw_prefix = os.path.join(stack.var, "gateway")

    def _nginx(self, prefix, *args):
        # these ports are inside the kernel's ephemeral range: an outgoing
        # connection may hold one for a moment
        for _ in range(20):
            r = subprocess.run(["/usr/sbin/nginx", "-p", prefix, "-c",
                                os.path.join(prefix, "nginx.conf"),
                                "-e", os.path.join(prefix, "logs",
                                                   "error.log"),
                                *args], capture_output=True, text=True,
                               env=nginx_env(self.stack.env))
            if r.returncode == 0 or "Address already in use" not in r.stderr:
                break
            time.sleep(0.5)
        assert r.returncode == 0, r.stderr

    def _prepare(self, prefix):
        for d in ("logs", "tmp"):
            os.makedirs(os.path.join(prefix, d), exist_ok=True)
        shutil.chown(os.path.join(prefix, "tmp"),
                     self.stack.env.get("ELEARN_NGINX_USER", "www-data"))

    def start(self):
        main = os.path.join(self.stack.var, "nginx")
        with open(os.path.join(main, "nginx.conf")) as f:
            conf = f.read()
        for i, port in enumerate(self.ports, 1):
            prefix = os.path.join(self.stack.var, "node%d" % i)
            self._prepare(prefix)
            # a short lease: a dead node's participants stop counting soon
            c = conf.replace(main + "/", prefix + "/").replace(
                "listen 127.0.0.1:%d;" % self.base,
                "listen 127.0.0.1:%d;" % port).replace(
                "elearn_live_lease %s;" % stack_lease(self.stack),
                "elearn_live_lease 3s;")
            with open(os.path.join(prefix, "nginx.conf"), "w") as f:
                f.write(c)
            self._nginx(prefix)
            self.prefixes.append(prefix)
        self._prepare(self.gw_prefix)
        env = dict(self.stack.env)
        env.update(ELEARN_GATEWAY_PREFIX=self.gw_prefix,
                   ELEARN_GATEWAY_PORT=str(self.gw_port),
                   ELEARN_GATEWAY_SERVERS="\n        ".join(
                       "server 127.0.0.1:%d max_fails=1 fail_timeout=30s;"
                       % p for p in self.ports))
        with open(os.path.join(TOP, "nginx-conf", "gateway.conf.in")) as f:
            r = subprocess.run(["envsubst", "$ELEARN_MODULE "
                                "$ELEARN_GATEWAY_PREFIX $ELEARN_GATEWAY_PORT "
                                "$ELEARN_GATEWAY_SERVERS"],
                               stdin=f, capture_output=True, text=True,
                               env=env, check=True)
        with open(os.path.join(self.gw_prefix, "nginx.conf"), "w") as f:
            f.write(r.stdout)
        self._nginx(self.gw_prefix)
        deadline = time.time() + 20
        for port in self.ports + [self.gw_port]:
            while True:
                try:
                    if requests.get("http://127.0.0.1:%d/readyz" % port,
                                    timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.time() < deadline, "node %d not ready" % port
                time.sleep(0.2)

    def pids(self, prefix):
        try:
            with open(os.path.join(prefix, "nginx.pid")) as f:
                master = int(f.read())
        except (OSError, ValueError):
            return []
        kids = subprocess.run(["pgrep", "-P", str(master)],
                              capture_output=True, text=True).stdout.split()
        return [master] + [int(k) for k in kids]

    def kill(self, port):
        """kill -9 of a node, master and workers: no goodbye to anyone."""
        prefix = self.prefixes[self.ports.index(port)]
        for pid in self.pids(prefix):
            os.kill(pid, signal.SIGKILL)
        os.unlink(os.path.join(prefix, "nginx.pid"))

    def stop(self):
        for prefix in self.prefixes + [self.gw_prefix]:
            pids = self.pids(prefix)
            if pids:
                os.kill(pids[0], signal.SIGTERM)
        deadline = time.time() + 10
        for prefix in self.prefixes + [self.gw_prefix]:
            while os.path.exists(os.path.join(prefix, "nginx.pid")) \
                    and time.time() < deadline:
                time.sleep(0.1)


def stack_lease(stack):
    return stack.env.get("ELEARN_LIVE_LEASE", "30s")


@pytest.fixture
def cluster(stack):
    c = Cluster(stack)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def gw_join(cluster, sid, token, last_seq=None):
    url = "ws://127.0.0.1:%d/live/%d?access_token=%s" % (cluster.gw_port,
                                                          sid, token)
    if last_seq is not None:
        url += "&lastSeq=%d" % last_seq
    ws = websocket.create_connection(url, timeout=10)
    welcome = json.loads(ws.recv())
    assert welcome["type"] == "welcome", welcome
    # $upstream_addr lists every node tried: the last one took it
    node = ws.getheaders().get("x-elearn-node").split(", ")[-1]
    return ws, node, welcome


def drain_until_closed(ws, got):
    """Frames until the connection drops; broadcasts go into got."""
    ws.settimeout(10)
    try:
        while True:
            m = recv(ws)
            if isinstance(m, tuple):
                return
            if m["type"] == "broadcast":
                got.append(m)
    except (websocket.WebSocketConnectionClosedException, OSError):
        return


def test_gateway_node_failure_loses_nothing(base_url, stack, instructor,
                                            course, cluster):
    gw = "http://127.0.0.1:%d" % cluster.gw_port
    sid = new_session(gw, instructor, course)
    tokens = [enrolled_student(base_url, stack, course) for _ in range(3)]

    owner, node, _ = gw_join(cluster, sid, instructor)
    students = [gw_join(cluster, sid, t) for t in tokens]
    # one session, one node
    assert {s[1] for s in students} == {node}, (node, students)

    got = {t: [] for t in tokens}
    for i in range(3):
        send(owner, "broadcast", "m%d" % i)
    for t, (ws, _, _) in zip(tokens, students):
        got[t] += [recv(ws) for _ in range(3)]

    cluster.kill(int(node.rsplit(":", 1)[1]))
    for t, (ws, _, _) in zip(tokens, students):
        drain_until_closed(ws, got[t])
    drain_until_closed(owner, [])

    # the owner is back first (another node) and goes on broadcasting
    # while the students are still away
    deadline = time.time() + 20
    while True:
        try:
            owner, node2, _ = gw_join(cluster, sid, instructor)
            break
        except (websocket.WebSocketException, OSError):
            assert time.time() < deadline
            time.sleep(0.2)
    assert node2 != node
    for i in range(3, 6):
        send(owner, "broadcast", "m%d" % i)
    for i in range(3, 6):
        assert recv(owner)["body"] == "m%d" % i

    # the students reconnect with what they had: they land on the owner's
    # new node and the buffer gives them what they missed
    back = []
    for t in tokens:
        last = got[t][-1]["seq"]
        ws, n, welcome = gw_join(cluster, sid, t, last_seq=last)
        assert n == node2
        back.append(ws)
        got[t] += [recv(ws) for _ in range(3)]
    send(owner, "broadcast", "m6")
    try:
        # the dead node's four places expire with its lease (3 s here)
        deadline = time.time() + 15
        while participants(gw, instructor, sid) != 4:
            assert time.time() < deadline, participants(gw, instructor, sid)
            time.sleep(0.5)
        for t, ws in zip(tokens, back):
            got[t].append(recv(ws))
            bodies = [m["body"] for m in got[t]]
            assert bodies == ["m%d" % i for i in range(7)], bodies
            seqs = [m["seq"] for m in got[t]]
            assert seqs == list(range(seqs[0], seqs[0] + 7)), seqs
    finally:
        for ws in back + [owner]:
            ws.close()
