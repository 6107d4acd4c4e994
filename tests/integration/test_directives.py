"""Every elearn_* directive: a bad value fails `nginx -t` and the error
names the directive; the example configurations pass."""

import os
import subprocess

import pytest

from conftest import nginx_env

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

BAD = [
    ("elearn_pg_conninfo", "a b"),
    ("elearn_pg_pool_size", "0"),
    ("elearn_pg_pool_size", "many"),
    ("elearn_pg_pool_size", "5000"),
    ("elearn_pg_queue_size", "-1"),
    ("elearn_pg_queue_size", "100000"),
    ("elearn_pg_connect_timeout", "soon"),
    ("elearn_pg_connect_timeout", "0"),
    ("elearn_pg_query_timeout", "0"),
    ("elearn_pg_query_timeout", "1x"),
    ("elearn_pg_queue_timeout", "later"),
    ("elearn_pg_idle_timeout", "-5s"),
    ("elearn_pg_reconnect_max", "x"),
    ("elearn_pg_prepare", "yes"),
    ("elearn_redis_addr", "localhost:6379"),
    ("elearn_redis_addr", "127.0.0.1"),
    ("elearn_redis_addr", "127.0.0.1:99999"),
    ("elearn_redis_timeout", "0"),
    ("elearn_redis_timeout", "fast"),
    ("elearn_redis_reconnect_max", "x"),
    ("elearn_kafka_brokers", "127.0.0.1"),
    ("elearn_kafka_brokers", "127.0.0.1:x"),
    ("elearn_kafka_brokers", "127.0.0.1:9092,"),
    ("elearn_kafka_queue_max", "0"),
    ("elearn_kafka_queue_max", "lots"),
    ("elearn_kafka_flush_timeout", "x"),
    ("elearn_kafka_linger", "x"),
    ("elearn_kafka_durable_linger", "x"),
    ("elearn_metrics_zone", "1k"),
    ("elearn_metrics_zone", "big"),
    ("elearn_course_cache_ttl", "0"),
    ("elearn_course_cache_ttl", "forever"),
    ("elearn_search_cache_ttl", "0"),
    ("elearn_search_cache_ttl", "later"),
    ("elearn_search_local_cache", "0"),
    ("elearn_search_local_cache", "65537"),
    ("elearn_search_local_cache", "on"),
    ("elearn_cache_lock_timeout", "0"),
    ("elearn_cache_lock_timeout", "long"),
    ("elearn_cache_warm", "-1"),
    ("elearn_cache_warm", "10001"),
    ("elearn_cache_warm", "many"),
    ("elearn_body_max_size", "0"),
    ("elearn_body_max_size", "huge"),
    ("elearn_retry_after", "0"),
    ("elearn_retry_after", "soon"),
    ("elearn_jwt_alg", "none"),
    ("elearn_jwt_alg", "HS512"),
    ("elearn_jwt_key_file", "/nonexistent/jwt.key"),
    ("elearn_jwt_public_key_file", "/nonexistent/jwt.pub"),
    ("elearn_jwt_issuer", "x" * 300),
    ("elearn_jwt_ttl", "0"),
    ("elearn_jwt_ttl", "soon"),
    ("elearn_jwt_leeway", "x"),
    ("elearn_jwt_cache_size", "-1"),
    ("elearn_jwt_cache_size", "lots"),
    ("elearn_refresh_ttl", "60"),
    ("elearn_refresh_ttl", "x"),
    ("elearn_session_max", "0"),
    ("elearn_session_max", "101"),
    ("elearn_revocation_fail_open", "maybe"),
    ("elearn_login_max_failures", "0"),
    ("elearn_login_failure_window", "0"),
    ("elearn_login_failure_window", "x"),
    ("elearn_thread_pool", "nosuchpool"),
    ("elearn_cursor_key_file", "/nonexistent/cursor.key"),
    ("elearn_live", "on"),
    ("elearn_live_capacity", "0"),
    ("elearn_live_capacity", "2000"),
    ("elearn_live_capacity_max", "0"),
    ("elearn_live_capacity_max", "lots"),
    ("elearn_live_chat_max_size", "0"),
    ("elearn_live_chat_max_size", "1m"),
    ("elearn_live_chat_rate", "-1"),
    ("elearn_live_chat_rate", "fast"),
    ("elearn_live_replay_max", "0"),
    ("elearn_live_replay_max", "1000000"),
    ("elearn_live_replay_ttl", "0"),
    ("elearn_live_replay_ttl", "x"),
    ("elearn_live_lease", "1s"),
    ("elearn_live_token_warning", "x"),
    ("elearn_live_presence_interval", "5ms"),
    ("elearn_live_presence_interval", "2m"),
    ("elearn_live_revocation_check", "10ms"),
    ("elearn_live_revocation_check", "x"),
    ("elearn_ws_max_message", "0"),
    ("elearn_ws_max_message", "100"),
    ("elearn_ws_max_message", "65m"),
    ("elearn_ws_max_message", "big"),
    ("elearn_ws_max_queue", "512"),
    ("elearn_ws_max_queue", "lots"),
    ("elearn_ws_ping_interval", "0"),
    ("elearn_ws_ping_interval", "often"),
    ("elearn_ws_close_timeout", "0"),
    ("elearn_ws_close_timeout", "x"),
    ("elearn_ws_echo", "maybe"),
    ("elearn_video_cache_ttl", "0"),
    ("elearn_video_cache_ttl", "x"),
    ("elearn_enrollment_cache_ttl", "0"),
    ("elearn_enrollment_cache_ttl", "later"),
    ("elearn_enrollment_negative_ttl", "0"),
    ("elearn_enrollment_negative_ttl", "1h"),
    ("elearn_progress_ttl", "0"),
    ("elearn_progress_ttl", "long"),
    ("elearn_progress_slack", "2h"),
    ("elearn_progress_slack", "some"),
    ("elearn_progress_completion", "0"),
    ("elearn_progress_completion", "1.5"),
    ("elearn_progress_completion", "90%"),
    ("elearn_progress_completion", ".9"),
    ("elearn_progress_ack", "maybe"),
    ("elearn_progress_ack", "sync"),
    ("elearn_progress_ack_timeout", "0"),
    ("elearn_progress_ack_timeout", "soon"),
    ("elearn_progress_naive", "yes"),
]

# where nginx itself names the fault differently
EXPECT = {"elearn_thread_pool": 'unknown thread pool "nosuchpool"'}

LOCATION_LEVEL = {"elearn_body_max_size", "elearn_retry_after",
                  "elearn_ws_echo", "elearn_progress_ack",
                  "elearn_progress_ack_timeout", "elearn_progress_naive"}


def run_nginx(stack_env, *args):
    return subprocess.run(["/usr/sbin/nginx", *args],
                          env=nginx_env(stack_env), capture_output=True,
                          text=True)


def nginx_t(stack_env, tmp_path, http_lines, location_lines=()):
    conf = tmp_path / "nginx.conf"
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    names = [l.split()[0] for l in http_lines]
    if "elearn_jwt_key_file" not in names and \
            "elearn_jwt_public_key_file" not in names:
        http_lines = list(http_lines) + ["elearn_jwt_key_file %s;" % key]
    if "elearn_cursor_key_file" not in names:
        ckey = tmp_path / "cursor.key"
        ckey.write_bytes(b"c" * 32)
        http_lines = list(http_lines) + ["elearn_cursor_key_file %s;" % ckey]
    conf.write_text("""
load_module %s;
pid %s/nginx.pid;
error_log stderr;
events {}
http {
    %s
    server {
        listen 127.0.0.1:1;
        location / {
            %s
            elearn_api;
        }
    }
}
""" % (stack_env["ELEARN_MODULE"], tmp_path, "\n    ".join(http_lines),
       "\n            ".join(location_lines)))
    return run_nginx(stack_env, "-t", "-p", str(tmp_path), "-c", str(conf))


def test_minimal_config_passes(stack_env, tmp_path):
    r = nginx_t(stack_env, tmp_path, [])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name,value", BAD)
def test_bad_value_fails_nginx_t_naming_the_directive(stack_env, tmp_path,
                                                       name, value):
    line = '%s "%s";' % (name, value)
    if name in LOCATION_LEVEL:
        r = nginx_t(stack_env, tmp_path, [], [line])
    else:
        r = nginx_t(stack_env, tmp_path, [line])
    assert r.returncode != 0, "%s %s was accepted" % (name, value)
    assert EXPECT.get(name, name) in r.stderr, r.stderr


def test_short_hs256_secret_is_refused(stack_env, tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"s" * 31)
    r = nginx_t(stack_env, tmp_path, ["elearn_jwt_key_file %s;" % short])
    assert r.returncode != 0
    assert "elearn_jwt_key_file" in r.stderr and "32" in r.stderr, r.stderr


def test_short_cursor_key_is_refused(stack_env, tmp_path):
    short = tmp_path / "short-cursor.key"
    short.write_bytes(b"s" * 31)
    r = nginx_t(stack_env, tmp_path, ["elearn_cursor_key_file %s;" % short])
    assert r.returncode != 0
    assert "elearn_cursor_key_file" in r.stderr and "32" in r.stderr, \
        r.stderr


def test_api_without_a_cursor_key_is_refused(stack_env, tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    conf = tmp_path / "nocursor.conf"
    conf.write_text("""
load_module %s;
pid %s/nginx.pid;
error_log stderr;
events {}
http { elearn_jwt_key_file %s;
       server { listen 127.0.0.1:1; location / { elearn_api; } } }
""" % (stack_env["ELEARN_MODULE"], tmp_path, key))
    r = run_nginx(stack_env, "-t", "-p", str(tmp_path), "-c", str(conf))
    assert r.returncode != 0
    assert "elearn_cursor_key_file" in r.stderr, r.stderr


def test_api_without_a_key_is_refused(stack_env, tmp_path):
    conf = tmp_path / "nokey.conf"
    conf.write_text("""
load_module %s;
pid %s/nginx.pid;
error_log stderr;
events {}
http { server { listen 127.0.0.1:1; location / { elearn_api; } } }
""" % (stack_env["ELEARN_MODULE"], tmp_path))
    r = run_nginx(stack_env, "-t", "-p", str(tmp_path), "-c", str(conf))
    assert r.returncode != 0
    assert "elearn_jwt_key_file" in r.stderr, r.stderr


def test_every_directive_is_tested_and_documented():
    src = open(os.path.join(TOP, "ngx_elearn_module", "src",
                            "ngx_http_elearn_module.c")).read()
    import re
    names = set(re.findall(r'ngx_string\("(elearn_[a-z_]+)"\)', src))
    docs = open(os.path.join(TOP, "docs", "directives.md")).read()
    flags = {"elearn_api", "elearn_healthz", "elearn_readyz",
             "elearn_metrics", "elearn_json_echo"}
    tested = {n for n, _ in BAD}
    assert names - flags - tested == set()
    for n in names:
        assert "### %s" % n in docs, n + " is not in docs/directives.md"
        section = docs.split("### %s" % n, 1)[1].split("\n### ", 1)[0]
        for field in ("Syntax:", "Default:", "Context:"):
            assert field in section, "%s lacks %s" % (n, field)


def test_example_configs_pass(stack_env, tmp_path):
    conf = os.path.join(stack_env["ELEARN_VAR"], "nginx", "nginx.conf")
    r = run_nginx(stack_env, "-t", "-p", os.path.dirname(conf), "-c", conf)
    assert r.returncode == 0, r.stderr


def test_live_without_redis_is_refused(stack_env, tmp_path):
    conf = tmp_path / "noredis.conf"
    conf.write_text("""
load_module %s;
pid %s/nginx.pid;
error_log stderr;
events {}
http { server { listen 127.0.0.1:1; location /live/ { elearn_live; } } }
""" % (stack_env["ELEARN_MODULE"], tmp_path))
    r = run_nginx(stack_env, "-t", "-p", str(tmp_path), "-c", str(conf))
    assert r.returncode != 0
    assert "elearn_live" in r.stderr and "elearn_redis_addr" in r.stderr, \
        r.stderr
    conf.write_text("""
load_module %s;
pid %s/nginx.pid;
error_log stderr;
events {}
http { elearn_redis_addr 127.0.0.1:6379;
       server { listen 127.0.0.1:1; location /live/ { elearn_live; } } }
""" % (stack_env["ELEARN_MODULE"], tmp_path))
    r = run_nginx(stack_env, "-t", "-p", str(tmp_path), "-c", str(conf))
def test_progress_directives_accept_good_values(stack_env, tmp_path):
    r = nginx_t(stack_env, tmp_path,
                ["elearn_progress_completion 0.95;",
                 "elearn_progress_slack 0;",
                 "elearn_progress_ttl 7d;",
                 "elearn_enrollment_negative_ttl 5m;"],
                ["elearn_progress_ack durable;",
                 "elearn_progress_ack_timeout 250ms;",
                 "elearn_progress_naive on;"])
    assert r.returncode == 0, r.stderr
    r = nginx_t(stack_env, tmp_path, ["elearn_progress_completion 1;"])
    assert r.returncode == 0, r.stderr
