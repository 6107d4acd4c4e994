"""Test harness: starts elearn's own stack (PostgreSQL, Redis, Kafka and
nginx with the module) on loopback ports of its own under var/test, applies
the migrations, loads the full demo data set, and stops it all at the end.

Fixtures other tests use: stack_env (env of the test stack), pg_dsn,
kafka_brokers, build_dir, base_url, stack (the Stack object below)."""

import os
import subprocess
import time

import psycopg2
import pytest
import requests

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

TEST_PORTS = {
    "ELEARN_HTTP_PORT": "18080",
    "ELEARN_PG_PORT": "15432",
    "ELEARN_REDIS_PORT": "16379",
    "ELEARN_KAFKA_PORT": "19092",
    "ELEARN_KAFKA_CONTROLLER_PORT": "19093",
    "ELEARN_OUTBOX_METRICS_PORT": "19483",
}


# What a caller may choose: the build under test and, for `make asan`, a
# var/ of its own.  Every other ELEARN_* and PG* variable is dropped: a
# shell that sourced config/elearn.env for `make run` exports the run
# stack's var/, ports and connection strings, and tests that took them
# would load their data into that stack and stop it at the end.
INHERITED = ("ELEARN_BUILD", "ELEARN_MODULE", "ELEARN_TEST_VAR",
             "ELEARN_TEST_KEEP", "ELEARN_NGINX_PRELOAD")


def _env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ELEARN_", "PG")) or k in INHERITED}
    env["ELEARN_VAR"] = env.get("ELEARN_TEST_VAR",
                                os.path.join(TOP, "var", "test"))
    env.update(TEST_PORTS)
    # the tests log in far more often than a person would
    env.setdefault("ELEARN_LOGIN_RATE", "100000r/s")
    # info: the auth refusals are logged (their reasons, never a token)
    env.setdefault("ELEARN_NGINX_LOG_LEVEL", "info")
    build = env.get("ELEARN_BUILD", os.path.join(TOP, "build"))
    env["ELEARN_BUILD"] = build
    env.setdefault("ELEARN_MODULE",
                   os.path.join(build, "nginx", "objs",
                                "ngx_http_elearn_module.so"))
    # what config/elearn.env derives, resolved once for the tests
    out = subprocess.run(
        ["bash", "-c", 'ELEARN_TOP="$1"; . "$1/config/elearn.env"; env',
         "-", TOP], env=env, check=True, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        k, _, v = line.partition("=")
        if k.startswith(("ELEARN_", "PG")):
            env[k] = v
    return env


def nginx_env(stack_env):
    """The environment for the stock nginx binary run by hand: under `make
    asan` it preloads the sanitizer runtimes that the module needs."""
    env = dict(os.environ)
    if stack_env.get("ELEARN_NGINX_PRELOAD"):
        env["LD_PRELOAD"] = stack_env["ELEARN_NGINX_PRELOAD"]
    return env


class Stack:
    def __init__(self):
        self.env = _env()
        self.base_url = "http://127.0.0.1:%s" % self.env["ELEARN_HTTP_PORT"]
        self.var = self.env["ELEARN_VAR"]

    def sh(self, *args, check=True, timeout=300):
        return subprocess.run(list(args), env=self.env, cwd=TOP, check=check,
                              capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *components):
        r = self.sh(os.path.join(TOP, "tools", "stack.sh"), "start",
                    *components, check=False)
        assert r.returncode == 0, r.stderr
        return r

    def stop(self, *components):
        r = self.sh(os.path.join(TOP, "tools", "stack.sh"), "stop",
                    *components, check=False)
        assert r.returncode == 0, r.stderr
        return r

    def reload(self):
        r = self.sh(os.path.join(TOP, "tools", "stack.sh"), "reload",
                    check=False)
        assert r.returncode == 0, r.stderr

    def reconfigure(self, **overrides):
        """Restarts nginx with some ELEARN_* settings changed (None puts the
        default back); returns the previous values."""
        old = {k: self.env.get(k) for k in overrides}
        for k, v in overrides.items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.stop("nginx")
        self.start("nginx")
        self.wait_ready(30)
        return old

    def secret(self, name="jwt-hs256.key"):
        with open(os.path.join(self.var, "secrets", name), "rb") as f:
            return f.read()

    def login(self, email, password, **kw):
        return requests.post(self.base_url + "/api/v1/auth/login",
                             json={"email": email, "password": password},
                             **kw)

    def token(self, email="student@elearn.dev", password="student-dev-pass"):
        r = self.login(email, password)
        assert r.status_code == 200, r.text
        return r.json()["accessToken"]

    def nginx_error_log(self):
        path = os.path.join(self.var, "nginx", "logs", "error.log")
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = requests.get(self.base_url + "/readyz", timeout=5)
                if last.status_code == 200:
                    return last
            except requests.RequestException as e:
                last = e
            time.sleep(0.2)
        raise AssertionError("stack not ready: %r" % (
            last.text if hasattr(last, "text") else last))


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    try:
        s.start("pg", "redis", "kafka")
        r = s.sh(os.path.join(TOP, "sql", "migrate.sh"), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        conn = psycopg2.connect(s.env["ELEARN_PG_CONNINFO"])
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM courses")
            have = cur.fetchone()[0]
        conn.close()
        if have < 100000:
            r = s.sh("/usr/bin/python3", os.path.join(TOP, "tools",
                                                      "demo-data.py"),
                     "--full", check=False, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
        # a kept stack (ELEARN_TEST_KEEP) may run older builds
        s.stop("nginx", "outbox")
        s.start("outbox", "nginx")
        s.wait_ready(60)
    except BaseException:
        # a failed start leaves nothing running behind it
        if not os.environ.get("ELEARN_TEST_KEEP"):
            s.stop()
        raise
    yield s
    if not os.environ.get("ELEARN_TEST_KEEP"):
        s.stop()
    # under `make asan`, a sanitizer report anywhere in the run fails it
    san = os.path.join(s.var, "sanitizer")
    if os.path.isdir(san):
        reports = os.listdir(san)
        text = "".join(open(os.path.join(san, f)).read()[:4000]
                       for f in reports)
        assert not reports, "sanitizer reports:\n" + text


@pytest.fixture(scope="session")
def stack_env(stack):
    return dict(stack.env)


@pytest.fixture(scope="session")
def pg_dsn(stack):
    return stack.env["ELEARN_PG_CONNINFO"]


@pytest.fixture(scope="session")
def kafka_brokers(stack):
    return stack.env["ELEARN_KAFKA_BROKERS"]


@pytest.fixture(scope="session")
def build_dir(stack):
    return stack.env["ELEARN_BUILD"]


@pytest.fixture(scope="session")
def base_url(stack):
    return stack.base_url


@pytest.fixture(scope="session")
def auth(stack):
    """Authorization headers of the demo student."""
    return {"Authorization": "Bearer " + stack.token()}


@pytest.fixture
def pg(pg_dsn):
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    yield conn
    conn.close()
