"""Authentication against the real stack: the access phase's refusals (one
test per kind of bad token), login, refresh rotation and reuse detection,
the session cap, logout and session deletion taking effect on the next
request, expiry, the per-account backoff, Redis outages under both
revocation settings, and password hashing off the event loop."""

import base64
import concurrent.futures as cf
import hashlib
import hmac
import json
import os
import statistics
import time
import uuid

import pytest
import requests

PROBLEM = "application/problem+json"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**over):
    now = int(time.time())
    c = {"iss": "elearn", "sub": "1", "role": "student",
         "sid": "test-session-" + uuid.uuid4().hex[:8],
         "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def hs256(secret, payload, header=None, raw_payload=None):
    h = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(raw_payload if raw_payload is not None
            else json.dumps(payload).encode())
    sig = hmac.new(secret, ("%s.%s" % (h, p)).encode(),
                   hashlib.sha256).digest()
    return "%s.%s.%s" % (h, p, b64(sig))


def me(base_url, token=None, header=None):
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = "Bearer " + token
    return requests.get(base_url + "/api/v1/me", headers=headers)


def assert_invalid_token(r):
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert r.headers["Content-Type"].startswith(PROBLEM)
    assert r.json()["status"] == 401


def register(base_url, role=None, password="correct horse battery"):
    email = "u%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": email, "password": password,
                            "displayName": "Test " + email[:6]})
    assert r.status_code == 201, r.text
    return email, password, r.json()


# --- the access phase refuses every kind of bad token ---------------------


def test_valid_crafted_token_is_accepted(stack, base_url):
    r = me(base_url, hs256(stack.secret(), claims()))
    assert r.status_code == 200, r.text
    assert r.json()["userId"] == 1


def test_missing_header(base_url):
    assert_invalid_token(me(base_url))


def test_not_a_bearer_header(stack, base_url):
    token = hs256(stack.secret(), claims())
    assert_invalid_token(me(base_url, header="Basic " + token))
    assert_invalid_token(me(base_url, header="Bearer"))
    assert_invalid_token(me(base_url, header="Bearer "))


def test_alg_none(base_url):
    h = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    p = b64(json.dumps(claims()).encode())
    assert_invalid_token(me(base_url, "%s.%s." % (h, p)))


def test_other_hmac_alg(stack, base_url):
    h = b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    p = b64(json.dumps(claims()).encode())
    sig = hmac.new(stack.secret(), ("%s.%s" % (h, p)).encode(),
                   hashlib.sha512).digest()
    assert_invalid_token(me(base_url, "%s.%s.%s" % (h, p, b64(sig))))


def test_bad_signature(stack, base_url):
    assert_invalid_token(me(base_url, hs256(b"x" * 48, claims())))
    token = hs256(stack.secret(), claims())
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert_invalid_token(me(base_url, flipped))


def test_wrong_issuer(stack, base_url):
    assert_invalid_token(me(base_url, hs256(stack.secret(),
                                            claims(iss="evil"))))
    assert_invalid_token(me(base_url, hs256(stack.secret(),
                                            claims(iss=None))))


def test_expired(stack, base_url):
    now = int(time.time())
    assert_invalid_token(me(base_url, hs256(
        stack.secret(), claims(iat=now - 1000, exp=now - 100))))
    # within the 30 s leeway it still passes
    r = me(base_url, hs256(stack.secret(), claims(exp=now - 5)))
    assert r.status_code == 200


def test_future_nbf(stack, base_url):
    now = int(time.time())
    assert_invalid_token(me(base_url, hs256(stack.secret(),
                                            claims(nbf=now + 300))))


@pytest.mark.parametrize("claim", ["exp", "sub", "jti", "sid"])
def test_missing_claim(stack, base_url, claim):
    assert_invalid_token(me(base_url, hs256(stack.secret(),
                                            claims(**{claim: None}))))


def test_malformed_base64(stack, base_url):
    token = hs256(stack.secret(), claims())
    h, p, s = token.split(".")
    assert_invalid_token(me(base_url, "%s.%s*.%s" % (h, p, s)))
    assert_invalid_token(me(base_url, "%s.%s==.%s" % (h, p, s)))
    assert_invalid_token(me(base_url, "%s.%s" % (h, p)))


def test_malformed_json(stack, base_url):
    assert_invalid_token(me(base_url, hs256(stack.secret(), None,
                                            raw_payload=b'{"sub": "1",')))
    assert_invalid_token(me(base_url, hs256(stack.secret(), None,
                                            raw_payload=b'["sub"]')))
    h = b64(b'{"alg": "HS256"')
    p = b64(json.dumps(claims()).encode())
    sig = hmac.new(stack.secret(), ("%s.%s" % (h, p)).encode(),
                   hashlib.sha256).digest()
    assert_invalid_token(me(base_url, "%s.%s.%s" % (h, p, b64(sig))))


def test_token_over_8k(stack, base_url):
    big = hs256(stack.secret(), claims(pad="x" * 9000))
    assert len(big) > 8192
    assert_invalid_token(me(base_url, big))


def test_hs256_with_public_key_on_es256_setup(stack, base_url):
    """The algorithm-confusion attack: HS256 MACed with the bytes of the
    ES256 public key must fail when the server is pinned to ES256."""
    import subprocess
    old = stack.reconfigure(ELEARN_JWT_ALG="ES256")
    try:
        pem = os.path.join(stack.var, "secrets", "jwt-es256.pem")
        pub = subprocess.run(["openssl", "ec", "-in", pem, "-pubout"],
                             capture_output=True, check=True).stdout
        assert_invalid_token(me(base_url, hs256(pub, claims())))
        # and a real ES256 login works end to end, through the cache
        token = stack.token()
        assert json.loads(base64.urlsafe_b64decode(
            token.split(".")[0] + "=="))["alg"] == "ES256"
        for _ in range(3):
            assert me(base_url, token).status_code == 200
    finally:
        stack.reconfigure(**old)


# --- login, refresh, sessions --------------------------------------------


def test_login_shape_and_me(stack, base_url):
    r = stack.login("student@elearn.dev", "student-dev-pass")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == 900
    assert body["refreshExpiresIn"] == 7 * 86400
    assert len(body["refreshToken"]) >= 43
    assert body["user"]["role"] == "student"
    m = me(base_url, body["accessToken"])
    assert m.status_code == 200
    assert m.json() == {"userId": body["user"]["userId"],
                        "email": "student@elearn.dev",
                        "displayName": body["user"]["displayName"],
                        "role": "student"}
    # the claims the contract lists, and nothing secret
    payload = json.loads(base64.urlsafe_b64decode(
        body["accessToken"].split(".")[1] + "=="))
    assert {"iss", "sub", "role", "sid", "jti", "iat", "exp"} <= set(payload)
    assert payload["exp"] - payload["iat"] == 900


def test_bad_credentials_look_the_same(stack, base_url):
    email, password, _ = register(base_url)
    wrong = stack.login(email, "not the password")
    unknown = stack.login("nobody-%s@test.elearn.dev" % uuid.uuid4().hex,
                          password)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()

    def timed(email, password):
        t = time.perf_counter()
        assert stack.login(email, password).status_code == 401
        return time.perf_counter() - t

    w = statistics.median(timed(email, "not the password") for _ in range(5))
    u = statistics.median(timed("nobody@test.elearn.dev", password)
                          for _ in range(5))
    # an unknown email hashes a dummy: same order of time
    assert 0.4 < u / w < 2.5, (u, w)


def test_register_validation_and_conflict(base_url):
    email, password, body = register(base_url)
    assert body["role"] == "student" and body["email"] == email
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": email.upper(), "password": password,
                            "displayName": "Again"})
    assert r.status_code == 409, r.text
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": "not-an-email", "password": "short",
                            "displayName": ""})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"email", "password", "displayName"} <= fields
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": "long@test.elearn.dev",
                            "password": "p" * 1025, "displayName": "L"})
    assert r.status_code == 422


def test_refresh_rotates_and_reuse_revokes_the_session(stack, base_url):
    email, password, _ = register(base_url)
    first = stack.login(email, password).json()
    r = requests.post(base_url + "/api/v1/auth/refresh",
                      json={"refreshToken": first["refreshToken"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refreshToken"] != first["refreshToken"]
    assert me(base_url, second["accessToken"]).status_code == 200

    # the rotated token presented again: 401, and the whole session ends
    r = requests.post(base_url + "/api/v1/auth/refresh",
                      json={"refreshToken": first["refreshToken"]})
    assert r.status_code == 401
    for _ in range(4):      # every worker
        assert_invalid_token(me(base_url, second["accessToken"]))
    r = requests.post(base_url + "/api/v1/auth/refresh",
                      json={"refreshToken": second["refreshToken"]})
    assert r.status_code == 401


def test_refresh_rejects_garbage(base_url):
    for bad in ["", "x", "A" * 43, "!" * 43]:
        r = requests.post(base_url + "/api/v1/auth/refresh",
                          json={"refreshToken": bad})
        assert r.status_code in (401, 422), (bad, r.text)


def test_session_cap_ends_the_oldest(stack, base_url):
    email, password, _ = register(base_url)
    tokens = [stack.login(email, password).json()["accessToken"]
              for _ in range(6)]
    for _ in range(4):
        assert_invalid_token(me(base_url, tokens[0]))
    for t in tokens[1:]:
        assert me(base_url, t).status_code == 200
    r = requests.get(base_url + "/api/v1/me/sessions",
                     headers={"Authorization": "Bearer " + tokens[-1]})
    assert r.status_code == 200
    sessions = r.json()["sessions"]
    assert len(sessions) == 5
    assert sum(1 for s in sessions if s["current"]) == 1
    for s in sessions:
        assert {"sessionId", "createdAt", "lastUsedAt", "userAgent",
                "current"} <= set(s)


def test_logout_takes_effect_on_the_next_request(stack, base_url):
    """The logout is answered only once its revocation has reached every
    worker: a fresh connection right after it (the kernel picks the
    worker) is refused every time, not only when it lands on the worker
    that served the logout; the refresh token is dead too."""
    email, password, _ = register(base_url)
    for _ in range(15):
        body = stack.login(email, password).json()
        token = body["accessToken"]
        assert me(base_url, token).status_code == 200
        r = requests.post(base_url + "/api/v1/auth/logout",
                          headers={"Authorization": "Bearer " + token},
                          json={"refreshToken": body["refreshToken"]})
        assert r.status_code == 204
        for _ in range(4):
            assert_invalid_token(me(base_url, token))
        r = requests.post(base_url + "/api/v1/auth/refresh",
                          json={"refreshToken": body["refreshToken"]})
        assert r.status_code == 401


def test_session_delete_takes_effect_on_the_next_request(stack, base_url):
    email, password, _ = register(base_url)
    a = stack.login(email, password).json()["accessToken"]
    b = stack.login(email, password).json()["accessToken"]
    hdr = {"Authorization": "Bearer " + a}
    sessions = requests.get(base_url + "/api/v1/me/sessions",
                            headers=hdr).json()["sessions"]
    other = [s["sessionId"] for s in sessions if not s["current"]]
    assert len(other) == 1
    r = requests.delete(base_url + "/api/v1/me/sessions/" + other[0],
                        headers=hdr)
    assert r.status_code == 204
    for _ in range(6):
        assert_invalid_token(me(base_url, b))
    assert me(base_url, a).status_code == 200
    # someone else's or an unknown session: 404
    r = requests.delete(base_url + "/api/v1/me/sessions/" + other[0],
                        headers=hdr)
    assert r.status_code == 404
    s_email, s_password, _ = register(base_url)
    c = stack.login(s_email, s_password).json()["accessToken"]
    theirs = requests.get(base_url + "/api/v1/me/sessions",
                          headers={"Authorization": "Bearer " + c}
                          ).json()["sessions"][0]["sessionId"]
    r = requests.delete(base_url + "/api/v1/me/sessions/" + theirs,
                        headers=hdr)
    assert r.status_code == 404
    assert me(base_url, c).status_code == 200


def test_admin_creates_users_students_cannot(stack, base_url, auth):
    admin = stack.token("admin@elearn.dev", "admin-dev-pass")
    email = "i%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    body = {"email": email, "password": "instructor pass 1",
            "displayName": "New Instructor", "role": "instructor"}
    r = requests.post(base_url + "/api/v1/admin/users", json=body,
                      headers=auth)
    assert r.status_code == 403
    r = requests.post(base_url + "/api/v1/admin/users", json=body,
                      headers={"Authorization": "Bearer " + admin})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "instructor"
    t = stack.token(email, "instructor pass 1")
    assert me(base_url, t).json()["role"] == "instructor"


def test_expiry_with_a_short_ttl(stack, base_url):
    old = stack.reconfigure(ELEARN_JWT_TTL="2s", ELEARN_JWT_LEEWAY="0s")
    try:
        token = stack.token()
        assert me(base_url, token).status_code == 200
        time.sleep(3.2)
        assert_invalid_token(me(base_url, token))
    finally:
        stack.reconfigure(**old)


def test_brute_force_backoff(stack, base_url):
    email, password, _ = register(base_url)
    for _ in range(10):
        assert stack.login(email, "wrong password!").status_code == 401
    r = stack.login(email, password)
    assert r.status_code == 429, r.text
    assert r.headers["Content-Type"].startswith(PROBLEM)
    retry = int(r.headers["Retry-After"])
    assert 0 < retry <= 900
    # another account is not affected
    other, opw, _ = register(base_url)
    assert stack.login(other, opw).status_code == 200


def test_user_variables_reach_the_log(stack, base_url, auth):
    marker = "/api/v1/courses/%d" % 7
    requests.get(base_url + marker, headers=auth)
    time.sleep(1.5)
    with open(os.path.join(stack.var, "nginx", "logs", "api.log")) as f:
        lines = [l for l in f if ('"GET %s ' % marker) in l]
    assert lines and " 1 student " in lines[-1], lines[-1:]


# --- Redis outages ---------------------------------------------------------


def wait_status(fn, want, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = fn()
        if r.status_code == want:
            return r
        time.sleep(0.2)
    raise AssertionError("never %d: %s %s" % (want, r.status_code, r.text))


def test_redis_down_fail_closed(stack, base_url, auth):
    stack.stop("redis")
    try:
        r = wait_status(lambda: requests.get(base_url + "/api/v1/me",
                                             headers=auth), 503)
        assert r.headers["Content-Type"].startswith(PROBLEM)
        assert int(r.headers["Retry-After"]) > 0
        r = stack.login("student@elearn.dev", "student-dev-pass")
        assert r.status_code == 503, r.text
    finally:
        stack.start("redis")
    wait_status(lambda: requests.get(base_url + "/api/v1/me", headers=auth),
                200)


def test_redis_down_fail_open(stack, base_url, auth):
    old = stack.reconfigure(ELEARN_REVOCATION_FAIL_OPEN="on")
    try:
        stack.stop("redis")
        try:
            time.sleep(1.0)
            r = requests.get(base_url + "/api/v1/me", headers=auth)
            assert r.status_code == 200, r.text
            # Redis is only the course cache: the database answers
            r = requests.get(base_url + "/api/v1/courses/3", headers=auth)
            assert r.status_code == 200, r.text
            r = stack.login("student@elearn.dev", "student-dev-pass")
            assert r.status_code == 503
        finally:
            stack.start("redis")
    finally:
        stack.reconfigure(**old)


# --- hashing stays off the event loop -------------------------------------


def test_logins_do_not_stall_other_requests(stack, base_url):
    email, password, _ = register(base_url)
    # the cost of one hash, measured through the server itself
    t = time.perf_counter()
    for _ in range(5):
        assert stack.login(email, "wrong-but-long-enough").status_code == 401
    one = (time.perf_counter() - t) / 5
    requests.post(base_url + "/api/v1/auth/login",
                  json={"email": email, "password": password})

    worst = 0.0
    stop = time.time() + 60

    def logins():
        def one_login(_):
            return stack.login("nobody-%s@test.elearn.dev" %
                               uuid.uuid4().hex, "whatever-password").status_code
        with cf.ThreadPoolExecutor(50) as ex:
            return list(ex.map(one_login, range(50)))

    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(logins)
        time.sleep(0.05)
        while not fut.done() and time.time() < stop:
            t = time.perf_counter()
            assert requests.get(base_url + "/healthz").status_code == 200
            worst = max(worst, time.perf_counter() - t)
            time.sleep(0.01)
        codes = fut.result()
    assert set(codes) <= {401, 503}, codes
    assert codes.count(401) > 0
    assert worst < 50 * one / 4, (worst, one)


def test_no_secret_reaches_a_log(stack, base_url):
    """Passwords, access tokens and refresh tokens never appear in nginx's
    logs, though the refusals themselves are logged (at info)."""
    email, password, _ = register(base_url, password="log-secret-Pass-42")
    body = stack.login(email, password).json()
    stack.login(email, "log-wrong-Pass-43")
    bad = body["accessToken"][:-3] + "xyz"
    assert_invalid_token(me(base_url, bad))
    r = requests.post(base_url + "/api/v1/auth/refresh",
                      json={"refreshToken": body["refreshToken"]})
    second = r.json()
    requests.post(base_url + "/api/v1/auth/refresh",
                  json={"refreshToken": body["refreshToken"]})  # reuse
    time.sleep(1.5)     # the access log's flush
    logs = ""
    for name in ("error.log", "api.log"):
        with open(os.path.join(stack.var, "nginx", "logs", name)) as f:
            logs += f.read()
    assert "elearn auth: rejected: bad signature" in logs
    for secret in (password, "log-wrong-Pass-43", body["accessToken"], bad,
                   body["refreshToken"], second["accessToken"],
                   second["refreshToken"]):
        assert secret not in logs
        # nor its signature part alone
        assert secret.split(".")[-1] not in logs


def test_invalid_register_writes_nothing_and_keeps_the_connection(base_url,
                                                                 pg):
    """Bug: a 422 from the validation was taken for success, so the
    account was hashed and inserted after the answer had gone."""
    email = "v%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    with requests.Session() as s:
        r = s.post(base_url + "/api/v1/auth/register",
                   json={"email": email, "password": "short",
                         "displayName": "V"})
        assert r.status_code == 422
        time.sleep(0.5)     # longer than a hash and an insert
        with pg.cursor() as cur:
            cur.execute("SELECT count(*) FROM users WHERE email = %s",
                        (email,))
            assert cur.fetchone()[0] == 0
        # the same keep-alive connection still serves
        assert s.get(base_url + "/healthz").status_code == 200
