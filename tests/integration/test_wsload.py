"""The WebSocket load generator (build/bin/elearn-wsload) is trustworthy:
against nchan on loopback (Debian's module on the stock nginx, the bench's
own config tools/bench/nchan.conf.in, started here) it holds idle
connections from spread source addresses and counts a fan-out exactly;
against a small WebSocket server written here it answers pings, reassembles
fragments, speaks the elearn target's frames (contract s7) and refuses a
wrong handshake; a refused port or a bad option is a clear error with a
non-zero exit.  Small and bounded (200 connections at most); no figure is
asserted, only counts and sanity."""

import base64
import hashlib
import json
import os
import re
import resource
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time

import pytest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ELEARN_BUILD", os.path.join(TOP, "build"))
TOOL = os.path.join(BUILD, "bin", "elearn-wsload")
VAR = os.path.join(TOP, "var", "test-wsload")
# beside the test stack's HTTP port, in the caller's own range
PORT = int(os.environ.get("ELEARN_HTTP_PORT", "18080")) + 1001
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def run_tool(*args, timeout=60, preexec_fn=None):
    assert os.access(TOOL, os.X_OK), TOOL + " missing: make all"
    r = subprocess.run([TOOL, "-q"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout,
                       preexec_fn=preexec_fn)
    lines = r.stdout.strip().splitlines()
    out = json.loads(lines[-1]) if lines else None
    return r.returncode, out, r.stderr


def pids_alive(pids):
    alive = []
    for p in pids:
        try:
            os.kill(p, 0)
            alive.append(p)
        except ProcessLookupError:
            pass
    return alive


@pytest.fixture(scope="module")
def nchan():
    """nchan's nginx with 2 workers on PORT, stopped with its workers."""
    os.makedirs(os.path.join(VAR, "tmp"), exist_ok=True)
    user = os.environ.get("ELEARN_NGINX_USER", "www-data")
    if os.getuid() == 0:
        subprocess.run(["chown", user, os.path.join(VAR, "tmp")], check=True)
    conf = open(os.path.join(TOP, "tools", "bench", "nchan.conf.in")).read()
    for k, v in (("PREFIX", VAR), ("PORT", str(PORT)), ("WORKERS", "2"),
                 ("SHM", "32m"), ("USER", user)):
        conf = conf.replace("@%s@" % k, v)
    path = os.path.join(VAR, "nginx.conf")
    open(path, "w").write(conf)
    r = subprocess.run(["/usr/sbin/nginx", "-p", VAR, "-c", path, "-e",
                        os.path.join(VAR, "error.log")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    master = int(open(os.path.join(VAR, "nginx.pid")).read())
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", PORT), 1).close()
            break
        except OSError:
            assert time.time() < deadline, "nchan's nginx did not listen"
            time.sleep(0.1)
    workers = [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True,
        text=True).stdout.split()]
    yield PORT
    os.kill(master, signal.SIGTERM)
    deadline = time.time() + 30
    while pids_alive([master] + workers) and time.time() < deadline:
        time.sleep(0.1)
    for p in pids_alive([master] + workers):
        os.kill(p, signal.SIGKILL)


def test_idle_connections_from_spread_sources(nchan):
    ready = os.path.join(VAR, "ready.idle")
    if os.path.exists(ready):
        os.unlink(ready)
    p = subprocess.Popen(
        [TOOL, "-q", "--mode", "idle", "--port", str(nchan), "--path",
         "/sub/idletest", "-c", "200", "-d", "60", "--sources", "8",
         "--src-base", "127.5.0.1", "--proc-index", "1", "--ready-file",
         ready], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not os.path.exists(ready):
            assert p.poll() is None, p.communicate()
            assert time.time() < deadline, "not ready in 30 s"
            time.sleep(0.1)
        assert open(ready).read().split() == ["200", "0"]
        # the client ends of the connections, as the kernel sees them
        ss = subprocess.run(["ss", "-Htn", "state", "established",
                             "dport = :%d" % nchan],
                            capture_output=True, text=True).stdout
        sources = re.findall(r"(127\.\d+\.\d+\.\d+):\d+\s+127\.0\.0\.1:%d"
                             % nchan, ss)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    # --proc-index 1 takes the second block of 8: 127.5.0.9-127.5.0.16
    want = {"127.5.0.%d" % i for i in range(9, 17)}
    assert len(sources) == 200, ss
    assert set(sources) == want
    assert all(sources.count(a) == 25 for a in want)
    assert p.returncode == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["mode"] == "idle" and r["stopped"] == "signal"
    assert r["established"] == 200 and r["failed"] == 0
    assert r["dropped"] == 0 and r["ok"] is True
    assert (r["source_first"], r["source_last"]) == ("127.5.0.9",
                                                     "127.5.0.16")
    # the close handshake at the end: nchan answered every close frame
    assert r["closed_clean"] == 200


def test_idle_http_keepalive(nchan):
    rc, r, err = run_tool("--mode", "idle", "--target", "http", "--port",
                          nchan, "--path", "/204", "-c", 50, "-d", 2)
    assert rc == 0, err
    assert r["established"] == 50 and r["dropped"] == 0
    assert r["stopped"] == "duration" and 2 <= r["elapsed_s"] < 10


def test_fanout_counts_every_delivery(nchan):
    rc, r, err = run_tool("--mode", "fanout", "--target", "nchan", "--port",
                          nchan, "--path", "/sub/fantest", "--pub-path",
                          "/pub/fantest", "-c", 100, "-m", 10, "-i", 50,
                          "-d", 60)
    assert rc == 0, err
    assert r["established"] == 100 and r["failed"] == 0
    assert r["published"] == 10 and r["publish_acks"] == 10
    assert r["expected"] == 1000 and r["delivered"] == 1000
    assert r["lost"] == 0 and r["duplicates"] == 0
    assert r["missing_by_seq"] == {} and r["subscribers_short"] == 0
    assert r["stopped"] == "all delivered"
    lat = r["latency_ms"]
    assert lat["samples"] == 1000
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] \
        <= lat["max"] < 10000
    assert "1000/1000 delivered" in err


def test_fanout_with_unreachable_publisher_fails(nchan):
    rc, r, err = run_tool("--mode", "fanout", "--target", "nchan", "--port",
                          nchan, "--path", "/sub/x", "--pub-path", "/nope",
                          "-c", 10, "-m", 3, "-d", 30, "--drain-ms", 500)
    assert rc == 1
    assert r["publish_errors"] == 3 and r["ok"] is False
    assert "POST answered 404" in err


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_refused_port_is_a_clear_error():
    port = free_port()
    t = time.time()
    rc, r, err = run_tool("--mode", "idle", "--port", port, "-c", 1000,
                          "-d", 60)
    assert rc == 1
    assert time.time() - t < 10          # it gives up, not waits 60 s
    assert "error: connect 127.0.0.1:%d: Connection refused" % port in err
    assert r["established"] == 0 and r["fail_reasons"]["refused"] > 0
    assert r["ok"] is False and r["stopped"] == "no connection"
    rc, r, err = run_tool("--mode", "fanout", "--port", port, "-c", 10)
    assert rc == 1 and r["publisher_failed"] is True
    assert "publisher 127.0.0.1:%d: Connection refused" % port in err


def test_upgrade_refused_by_the_server(nchan):
    rc, r, err = run_tool("--port", nchan, "--path", "/nope", "-c", 10)
    assert rc == 1
    assert r["fail_reasons"]["http_status"] == 10
    assert "upgrade of a subscriber answered 404" in err


@pytest.mark.parametrize("args, msg", [
    (["--port", "1", "-c", "0"], "--connections must be 1..100000"),
    (["--port", "1", "-c", "100001"], "--connections must be 1..100000"),
    (["--port", "1", "-d", "3601"], "--duration must be 1..3600"),
    (["--port", "1", "-m", "100001"], "--messages must be 1..100000"),
    (["--port", "1", "--mode", "storm"], "--mode idle|fanout"),
    (["--port", "1", "--src-base", "10.0.0.1"], "127.0.0.0/8"),
    (["--port", "1", "--mode", "fanout", "--target", "http"],
     "--target http is for --mode idle"),
    (["--port", "1", "--mode", "fanout", "--target", "elearn"],
     "needs --pub-path"),
    (["-c", "5"], "--port is required"),
])
def test_bad_options(args, msg):
    rc, r, err = run_tool(*args)
    assert rc == 2 and r is None
    assert msg in err


def test_more_connections_than_files():
    """Asked for more connections than its open-file limit allows, the
    tool refuses and says how to split the load (the limit is lowered for
    the tool alone, so the check runs whatever the machine's limit)."""
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    rc, r, err = run_tool("--port", "1", "-c", "5000", preexec_fn=low_limit)
    assert rc == 2 and r is None
    assert "run more processes (--proc-index)" in err


# --- a small WebSocket server: the elearn target's frames, pings,
# fragments, and a handshake gone wrong --------------------------------


def frame(op, payload, fin=True):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op])
    if n < 126:
        head += bytes([n])
    else:
        head += bytes([126]) + struct.pack("!H", n)
    return head + payload


def read_frame(f):
    b0, b1 = f.read(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", f.read(8))[0]
    assert b1 & 0x80, "a client frame must be masked"
    key = f.read(4)
    data = bytes(c ^ key[i % 4] for i, c in enumerate(f.read(n)))
    return b0 & 0x0F, data


class FakeLive(socketserver.ThreadingTCPServer):
    """/live/{id}?access_token=owner publishes, anything else subscribes;
    broadcasts go out as two fragments after a ping."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, bad_accept=False, refuse_first=0):
        super().__init__(("127.0.0.1", 0), LiveHandler)
        self.bad_accept = bad_accept
        self.refuse = refuse_first       # full: 503 to the first ones
        self.lock = threading.Lock()
        self.subs = []
        self.pongs = []
        self.closes = []
        self.seq = 0


class LiveHandler(socketserver.StreamRequestHandler):
    def send(self, data):
        with self.server.lock:
            self.wfile.write(data)

    def handle(self):
        srv = self.server
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline()
            if not line:
                return
            head += line
        text = head.decode()
        with srv.lock:
            full = srv.refuse > 0
            srv.refuse -= 1
        if full:
            self.wfile.write(b"HTTP/1.1 503 Service Unavailable\r\n"
                             b"Retry-After: 1\r\nContent-Length: 0\r\n\r\n")
            return
        key = re.search(r"Sec-WebSocket-Key: (\S+)", text).group(1)
        accept = base64.b64encode(hashlib.sha1(
            (key + GUID).encode()).digest()).decode()
        if srv.bad_accept:
            accept = accept[::-1]
        self.wfile.write((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
            % accept).encode())
        owner = "access_token=owner" in text.split("\r\n")[0]
        self.send(frame(1, json.dumps({"type": "welcome", "lastSeq": 0})
                        .encode()))
        if not owner:
            with srv.lock:
                srv.subs.append(self)
        while True:
            try:
                op, data = read_frame(self.rfile)
            except (ValueError, OSError):
                return
            if op == 0x8:
                with srv.lock:
                    srv.closes.append(data)
                self.send(frame(8, data))
                return
            if op == 0xA:
                with srv.lock:
                    srv.pongs.append(data)
            elif op == 0x1 and owner:
                msg = json.loads(data)
                assert msg["type"] == "broadcast"
                with srv.lock:
                    srv.seq += 1
                    subs = list(srv.subs)
                out = json.dumps({
                    "type": "broadcast", "seq": srv.seq,
                    "from": {"userId": 2, "displayName": "Owner",
                             "role": "instructor"},
                    "body": msg["body"], "ts": int(time.time() * 1000)})
                half = len(out) // 2
                for s in subs:
                    s.send(frame(9, b"ping-%d" % srv.seq)
                           + frame(1, out[:half].encode(), fin=False)
                           + frame(0, out[half:].encode()))


@pytest.fixture
def fake_live():
    servers = []

    def start(**kw):
        srv = FakeLive(**kw)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_elearn_frames_pings_and_fragments(fake_live):
    srv = fake_live()
    port = srv.server_address[1]
    rc, r, err = run_tool("--mode", "fanout", "--target", "elearn", "--port",
                          port, "--path", "/live/7?access_token=student",
                          "--pub-path", "/live/7?access_token=owner",
                          "-c", 5, "-m", 3, "-i", 20, "--size", 200,
                          "-d", 30)
    assert rc == 0, err
    assert r["established"] == 5 and r["delivered"] == r["expected"] == 15
    assert r["lost"] == 0 and r["pings"] == 15
    # each subscriber's welcome frame is seen and set aside
    assert r["other_frames"] == 5
    assert sorted(srv.pongs) == sorted([b"ping-%d" % i for i in (1, 2, 3)]
                                       * 5)
    # every socket closed with 1000: 5 subscribers and the owner
    assert srv.closes == [struct.pack("!H", 1000)] * 6
    assert r["closed_clean"] == 6


def test_wrong_accept_is_refused(fake_live):
    srv = fake_live(bad_accept=True)
    rc, r, err = run_tool("--mode", "idle", "--target", "elearn", "--port",
                          srv.server_address[1], "--path", "/live/7", "-c",
                          3, "-d", 5)
    assert rc == 1
    assert r["fail_reasons"]["bad_accept"] == 3 and r["established"] == 0
    assert "wrong Sec-WebSocket-Accept" in err


def test_full_session_retried(fake_live):
    srv = fake_live(refuse_first=4)
    args = ["--mode", "idle", "--target", "elearn", "--port",
            srv.server_address[1], "--path", "/live/7", "-c", 10, "-d", 4]
    rc, r, err = run_tool(*args, "--retries", 2)
    assert rc == 0, err
    assert r["established"] == 10 and r["failed"] == 0
    assert r["retried"] == 4
    # without retries a 503 is a failure, with its reason
    srv.refuse = 3
    rc, r, err = run_tool(*args)
    assert rc == 1
    assert r["established"] == 7 and r["fail_reasons"]["http_status"] == 3
    assert "answered 503" in err


def test_sessions_each_with_its_publisher(nchan, tmp_path):
    """--pub-paths: three channels, each with its publisher; a subscriber
    of one channel gets only that channel's messages, all of them."""
    subs, pubs = tmp_path / "subs", tmp_path / "pubs"
    subs.write_text("".join("/sub/sess%d\n" % i for i in range(3)))
    pubs.write_text("".join("/pub/sess%d\n" % i for i in range(3)))
    out = tmp_path / "samples"
    rc, r, err = run_tool("--mode", "fanout", "--port", nchan, "--paths",
                          subs, "--pub-paths", pubs, "-c", 60, "-m", 4,
                          "-i", 90, "-d", 60, "--samples-out", out)
    assert rc == 0, err
    assert r["sessions"] == 3 and r["published"] == 12
    assert r["publish_acks"] == 12
    # 20 subscribers a channel, 4 messages each: a cross-delivery would
    # show as duplicates (the sequence numbers repeat across channels)
    assert r["expected"] == 240 and r["delivered"] == 240
    assert r["duplicates"] == 0 and r["lost"] == 0
    lines = out.read_text().split()
    assert len(lines) == 240 and all(int(v) > 0 for v in lines)
    assert [int(v) for v in lines] == sorted(int(v) for v in lines)
