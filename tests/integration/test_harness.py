"""The harness itself: the stack the tests start is theirs, whatever the
shell that runs them exported."""

import os
import subprocess

import conftest


def test_a_shell_of_the_run_stack_does_not_leak_into_the_tests(monkeypatch):
    """`. config/elearn.env` (for `make run`) exports the run stack's var/,
    ports and connection strings; the tests take none of them."""
    run_var = os.path.join(conftest.TOP, "var", "run-stack")
    for k, v in {"ELEARN_VAR": run_var, "ELEARN_HTTP_PORT": "8080",
                 "ELEARN_PG_PORT": "55432", "ELEARN_REDIS_PORT": "56379",
                 "ELEARN_KAFKA_PORT": "59092",
                 "ELEARN_KAFKA_BROKERS": "127.0.0.1:59092",
                 "ELEARN_PG_CONNINFO": "host=127.0.0.1 port=55432",
                 "ELEARN_PROGRESS_ACK": "durable",
                 "PGPORT": "55432"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ELEARN_TEST_VAR", raising=False)
    env = conftest._env()
    assert env["ELEARN_VAR"] == os.path.join(conftest.TOP, "var", "test")
    for k, v in conftest.TEST_PORTS.items():
        assert env[k] == v
    assert "port=15432" in env["ELEARN_PG_CONNINFO"]
    assert env["PGPORT"] == "15432"
    assert env["ELEARN_KAFKA_BROKERS"].endswith(":19092")
    assert env["ELEARN_PROGRESS_ACK"] == "queued"


def test_make_asan_chooses_the_tests_own_var(monkeypatch):
    monkeypatch.setenv("ELEARN_TEST_VAR", "/tmp/elearn-asan-var")
    monkeypatch.setenv("ELEARN_NGINX_PRELOAD", "/lib/libasan.so")
    env = conftest._env()
    assert env["ELEARN_VAR"] == "/tmp/elearn-asan-var"
    assert env["ELEARN_NGINX_PRELOAD"] == "/lib/libasan.so"


def test_sourcing_the_env_file_without_elearn_top_finds_the_checkout():
    """A bash that sources config/elearn.env from anywhere gets this
    checkout's var/ (once it got /var/run-stack)."""
    out = subprocess.run(
        ["bash", "-c", '. "$1"; echo "$ELEARN_TOP|$ELEARN_VAR"', "-",
         os.path.join(conftest.TOP, "config", "elearn.env")],
        env={"PATH": os.environ["PATH"]}, cwd="/", check=True,
        capture_output=True, text=True).stdout.strip()
    assert out == "%s|%s" % (conftest.TOP,
                             os.path.join(conftest.TOP, "var", "run-stack"))
