"""The running server answers as docs/openapi.yaml says: each documented
response is fetched for real and validated against its schema."""

import os

import jsonschema
import pytest
import requests
import yaml

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def spec():
    with open(os.path.join(TOP, "docs", "openapi.yaml")) as f:
        return yaml.safe_load(f)


def check(spec, path, method, response, ctype=None):
    op = spec["paths"][path][method]
    doc = op["responses"][str(response.status_code)]
    if "$ref" in doc:
        doc = spec["components"]["responses"][doc["$ref"].split("/")[-1]]
    for h in doc.get("headers", {}):
        assert h in response.headers, h
    if "content" not in doc:
        assert response.content == b"", response.text
        return
    got = response.headers["Content-Type"].split(";")[0]
    assert got in doc["content"], (got, list(doc["content"]))
    schema = doc["content"][got].get("schema")
    if schema is not None:
        resolver_schema = dict(schema)
        resolver_schema["components"] = spec["components"]
        jsonschema.validate(response.json(), resolver_schema,
                            cls=jsonschema.Draft202012Validator)


def test_spec_is_openapi_31(spec):
    assert spec["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator.check_schema(
        spec["components"]["schemas"]["Course"])


def test_course_answers_match(spec, base_url, pg, auth):
    with pg.cursor() as cur:
        cur.execute("SELECT course_id FROM courses WHERE published "
                    "ORDER BY course_id LIMIT 25")
        ids = [r[0] for r in cur.fetchall()]
    for cid in ids:
        r = requests.get(base_url + "/api/v1/courses/%d" % cid, headers=auth)
        assert r.status_code == 200
        check(spec, "/api/v1/courses/{courseId}", "get", r)
    check(spec, "/api/v1/courses/{courseId}", "get",
          requests.get(base_url + "/api/v1/courses/999999999",
                       headers=auth))
    check(spec, "/api/v1/courses/{courseId}", "get",
          requests.post(base_url + "/api/v1/courses/1", headers=auth))


def test_health_answers_match(spec, base_url):
    check(spec, "/healthz", "get", requests.get(base_url + "/healthz"))
    check(spec, "/readyz", "get", requests.get(base_url + "/readyz"))


def test_auth_answers_match(spec, stack, base_url):
    import uuid
    email = "oa%s@test.elearn.dev" % uuid.uuid4().hex[:10]
    reg = {"email": email, "password": "open api pass",
           "displayName": "OpenAPI"}
    r = requests.post(base_url + "/api/v1/auth/register", json=reg)
    check(spec, "/api/v1/auth/register", "post", r)
    check(spec, "/api/v1/auth/register", "post",
          requests.post(base_url + "/api/v1/auth/register", json=reg))
    check(spec, "/api/v1/auth/register", "post",
          requests.post(base_url + "/api/v1/auth/register",
                        json={"email": "x"}))
    check(spec, "/api/v1/auth/register", "post",
          requests.post(base_url + "/api/v1/auth/register", data="{",
                        headers={"Content-Type": "application/json"}))
    login = stack.login(email, "open api pass")
    check(spec, "/api/v1/auth/login", "post", login)
    check(spec, "/api/v1/auth/login", "post",
          stack.login(email, "wrong password"))
    tokens = login.json()
    hdr = {"Authorization": "Bearer " + tokens["accessToken"]}
    check(spec, "/api/v1/me", "get",
          requests.get(base_url + "/api/v1/me", headers=hdr))
    check(spec, "/api/v1/me", "get", requests.get(base_url + "/api/v1/me"))
    check(spec, "/api/v1/me/sessions", "get",
          requests.get(base_url + "/api/v1/me/sessions", headers=hdr))
    check(spec, "/api/v1/me/sessions/{sessionId}", "delete",
          requests.delete(base_url + "/api/v1/me/sessions/nosuch",
                          headers=hdr))
    check(spec, "/api/v1/admin/users", "post",
          requests.post(base_url + "/api/v1/admin/users", headers=hdr,
                        json={"email": "a@b.cd", "password": "12345678",
                              "displayName": "A", "role": "admin"}))
    r = requests.post(base_url + "/api/v1/auth/refresh",
                      json={"refreshToken": tokens["refreshToken"]})
    check(spec, "/api/v1/auth/refresh", "post", r)
    check(spec, "/api/v1/auth/refresh", "post",
          requests.post(base_url + "/api/v1/auth/refresh",
                        json={"refreshToken": tokens["refreshToken"]}))
    hdr = {"Authorization": "Bearer " + stack.login(
        email, "open api pass").json()["accessToken"]}
    check(spec, "/api/v1/auth/logout", "post",
          requests.post(base_url + "/api/v1/auth/logout", headers=hdr))


def test_search_answers_match(spec, base_url, auth):
    path = "/api/v1/courses/search"
    for params in ({"q": "python"}, {"category": "music", "pageSize": 3},
                   {"q": "kubernetes", "sort": "popular", "page": 2},
                   {"q": "zzzqqqxxx"}):
        r = requests.get(base_url + path, params=params, headers=auth)
        assert r.status_code == 200, r.text
        check(spec, path, "get", r)
    cursor = r.json()["pagination"]["nextCursor"] or \
        requests.get(base_url + path, params={"q": "python"},
                     headers=auth).json()["pagination"]["nextCursor"]
    r = requests.get(base_url + path, params={"q": "python",
                                              "cursor": cursor},
                     headers=auth)
    assert r.status_code == 200, r.text
    check(spec, path, "get", r)
    for params in ({"pageSize": 101}, {"page": "x"}, {"q": "python",
                                                      "cursor": "bad"}):
        check(spec, path, "get",
              requests.get(base_url + path, params=params, headers=auth))
    check(spec, path, "get", requests.get(base_url + path))


def test_suggest_answers_match(spec, base_url, auth):
    path = "/api/v1/courses/suggest"
    for params in ({"q": "intro"}, {"q": "zzzqqq"}, {"q": ""},
                   {"q": "x" * 101}):
        check(spec, path, "get",
              requests.get(base_url + path, params=params, headers=auth))


def test_live_answers_match(spec, stack, base_url, pg):
    owner = {"Authorization": "Bearer " + stack.token(
        "instructor@elearn.dev", "instructor-dev-pass")}
    student = {"Authorization": "Bearer " + stack.token()}
    with pg.cursor() as cur:
        cur.execute("SELECT course_id FROM courses WHERE instructor_id = 2 "
                    "AND published ORDER BY course_id LIMIT 1")
        cid = cur.fetchone()[0]
    create = "/api/v1/courses/{courseId}/live-sessions"
    url = base_url + "/api/v1/courses/%d/live-sessions" % cid
    r = requests.post(url, headers=owner, json={"title": "t", "capacity": 1})
    assert r.status_code == 201
    check(spec, create, "post", r)
    sid = r.json()["sessionId"]
    for body in ({"title": "t", "capacity": 5000}, {"title": ""}):
        check(spec, create, "post", requests.post(url, headers=owner,
                                                  json=body))
    check(spec, create, "post", requests.post(url, headers=student,
                                              json={"title": "t"}))
    check(spec, create, "post", requests.post(url, json={"title": "t"}))

    one = "/api/v1/live-sessions/{sessionId}"
    r = requests.get(base_url + "/api/v1/live-sessions/%d" % sid,
                     headers=owner)
    assert r.status_code == 200
    check(spec, one, "get", r)
    check(spec, one, "get", requests.get(
        base_url + "/api/v1/live-sessions/999999999", headers=owner))

    ws = "/live/{sessionId}"
    hs = {"Upgrade": "websocket", "Connection": "Upgrade",
          "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for path in ("/live/%d" % sid, "/live/999999999?access_token=%s"
                 % owner["Authorization"][7:]):
        r = requests.get(base_url + path, headers=hs, timeout=10)
        assert r.status_code in (401, 404)
        check(spec, ws, "get", r)

    close = "/api/v1/live-sessions/{sessionId}/close"
    r = requests.post(base_url + "/api/v1/live-sessions/%d/close" % sid,
                      headers=owner)
    assert r.status_code == 204
    check(spec, close, "post", r)
    r = requests.get(base_url + "/live/%d?access_token=%s"
                     % (sid, owner["Authorization"][7:]), headers=hs,
                     timeout=10)
    assert r.status_code == 410
    check(spec, ws, "get", r)
def test_progress_answers_match(spec, stack, base_url, pg):
    import uuid
    path = "/api/v1/videos/{videoId}/progress"
    email = "oap%s@test.elearn.dev" % uuid.uuid4().hex[:10]
    assert requests.post(base_url + "/api/v1/auth/register",
                         json={"email": email, "password": "open api pass",
                               "displayName": "OpenAPI"}).status_code == 201
    hdr = {"Authorization": "Bearer " + stack.token(email, "open api pass")}
    with pg.cursor() as cur:
        cur.execute("SELECT v.video_id FROM videos v JOIN courses c "
                    "USING (course_id) WHERE c.published "
                    "AND v.duration_seconds > 60 ORDER BY v.video_id "
                    "LIMIT 1")
        vid = cur.fetchone()[0]
        cur.execute("SELECT course_id FROM videos WHERE video_id = %s",
                    (vid,))
        cid = cur.fetchone()[0]
    assert requests.post(base_url + "/api/v1/courses/%d/enrollments" % cid,
                         headers=hdr).status_code in (200, 201)
    url = base_url + "/api/v1/videos/%d/progress"

    def post(v, body, h=hdr, **kw):
        return requests.post(url % v, headers=h, json=body, **kw)

    ok = {"positionSeconds": 10, "watched": [[0, 10]]}
    for r in (post(vid, ok), post(vid, {"positionSeconds": -1}),
              post(vid, ok, h={}), post(999999999, ok),
              post(vid, dict(ok, pad="x" * 5000)),
              requests.post(url % vid, headers=dict(
                  hdr, **{"Content-Type": "application/json"}), data="{")):
        check(spec, path, "post", r)
    r = requests.get(url % vid, headers=hdr)
    assert r.status_code == 200 and r.json()["positionSeconds"] == 10
    check(spec, path, "get", r)
    ihdr = {"Authorization": "Bearer " + stack.token(
        "instructor@elearn.dev", "instructor-dev-pass")}
    check(spec, path, "get", requests.get(url % vid, headers=ihdr))
    check(spec, path, "get", requests.get(url % vid))
    with pg.cursor() as cur:
        cur.execute("SELECT video_id FROM videos WHERE course_id = %s "
                    "AND duration_seconds IS NOT NULL AND video_id <> %s "
                    "LIMIT 1", (cid, vid))
        row = cur.fetchone()
    if row:
        r = requests.get(url % row[0], headers=hdr)
        assert r.json()["updatedAt"] is None
        check(spec, path, "get", r)
