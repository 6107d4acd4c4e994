"""RFC 6455 conformance of the module's WebSocket layer, against the echo
location /ws-echo (elearn_ws_echo on).

The Autobahn TestSuite needs Python 2, which these machines lack, so this
file covers the behaviours of its sections 1-7, 9 and 10 with a raw socket:
malformed and edge frames in, exact close codes out.  Section numbers in
the test names follow Autobahn's case list.  Interop with two strict,
independent clients (Python's websockets, Node's ws) follows, then the
slow reader (1008), the ping timeout and large messages under directives
set for them."""

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

DEFAULTS = {"ELEARN_WS_ECHO": "on", "ELEARN_WS_MAX_MESSAGE": None,
            "ELEARN_WS_MAX_QUEUE": None, "ELEARN_WS_PING_INTERVAL": None,
            "ELEARN_WS_CLOSE_TIMEOUT": None, "ELEARN_NGINX_WORKERS": None}


class Echo:
    """The stack with /ws-echo on; configure() restarts nginx only when a
    setting changes."""

    def __init__(self, stack):
        self.stack = stack
        self.current = None
        self.port = int(stack.env["ELEARN_HTTP_PORT"])

    def configure(self, **kw):
        want = dict(DEFAULTS)
        want.update(kw)
        if want != self.current:
            self.stack.reconfigure(**want)
            self.current = want

    @property
    def url(self):
        return "ws://127.0.0.1:%d/ws-echo" % self.port


@pytest.fixture(scope="module")
def echo(stack):
    e = Echo(stack)
    e.configure()
    yield e
    stack.reconfigure(**{k: None for k in DEFAULTS})


@pytest.fixture
def ws(echo):
    echo.configure()
    c = Conn(echo.port)
    yield c
    c.sock.close()


class Conn:
    """A raw WebSocket client: it writes any frame, valid or not."""

    def __init__(self, port, headers=None, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        hdrs = {"Host": "127.0.0.1", "Upgrade": "websocket",
                "Connection": "Upgrade", "Sec-WebSocket-Key": key.decode(),
                "Sec-WebSocket-Version": "13"}
        if headers:
            hdrs.update(headers)
        req = "GET /ws-echo HTTP/1.1\r\n" + "".join(
            "%s: %s\r\n" % (k, v) for k, v in hdrs.items()
            if v is not None) + "\r\n"
        self.sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status == 101:
            want = base64.b64encode(
                hashlib.sha1(key + GUID).digest()).decode()
            assert self.headers["sec-websocket-accept"] == want
            assert self.headers["upgrade"].lower() == "websocket"
            assert self.headers["connection"].lower() == "upgrade"

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    @staticmethod
    def frame(opcode, payload=b"", fin=True, rsv=0, mask=True,
              length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        m = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, m | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, m | 126, n)
        else:
            head = struct.pack("!BBQ", b0, m | 127, n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) \
            if len(payload) < 4096 else _mask(payload, key)
        return head + key + masked

    def send(self, opcode, payload=b"", **kw):
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def send_raw(self, data, chop=None, delay=0.0):
        if chop is None:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), chop):
            self.sock.sendall(data[i:i + chop])
            if delay:
                time.sleep(delay)

    def recv(self):
        """One frame: (fin, rsv, opcode, payload); the server never
        masks."""
        b0, b1 = self._take(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n, = struct.unpack("!H", self._take(2))
        elif n == 127:
            n, = struct.unpack("!Q", self._take(8))
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, self._take(n)

    def recv_data(self):
        fin, rsv, op, data = self.recv()
        assert fin and rsv == 0
        return op, data

    def expect_close(self, code, reply=True):
        """Reads up to the server's close frame (skipping data frames the
        server sent before it), checks its code, answers it and checks
        that the server then closes TCP."""
        while True:
            fin, rsv, op, data = self.recv()
            if op == CLOSE:
                break
            assert op in (TEXT, BINARY, PING, CONT), op
        if code is None:
            assert data == b"", data
        else:
            assert len(data) >= 2, data
            got, = struct.unpack("!H", data[:2])
            assert got == code, "close code %d, wanted %d (%r)" % (
                got, code, data[2:])
            data[2:].decode("utf-8")    # the reason is valid UTF-8
        if reply:
            try:
                self.send(CLOSE, data[:2])
            except OSError:
                pass
        self.expect_eof()
        return data

    def expect_eof(self, timeout=5):
        self.sock.settimeout(timeout)
        self.buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return
        except ConnectionResetError:
            return
        except socket.timeout:
            raise AssertionError("the server did not close the connection")

    def expect_nothing(self, wait=0.3):
        """No frame arrives within wait seconds."""
        self.sock.settimeout(wait)
        try:
            d = self.sock.recv(1)
        except socket.timeout:
            return
        finally:
            self.sock.settimeout(10)
        raise AssertionError("unexpected data %r" % d)

    def echo(self, opcode, payload):
        self.send(opcode, payload)
        op, data = self.recv_data()
        assert op == opcode
        assert data == (payload.encode() if isinstance(payload, str)
                        else payload)


def _mask(payload, key):
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")) \
        .to_bytes(n, "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


# the handshake: refused before any upgrade, as RFC 9457 problems


@pytest.mark.parametrize("headers,status", [
    ({"Upgrade": None}, 426),
    ({"Connection": "keep-alive"}, 426),
    ({"Sec-WebSocket-Version": "8"}, 426),
    ({"Sec-WebSocket-Version": None}, 426),
    ({"Sec-WebSocket-Key": None}, 400),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400),
    ({"Sec-WebSocket-Key": "!" * 24}, 400),
])
def test_bad_handshake_is_a_problem(echo, headers, status):
    echo.configure()
    c = Conn(echo.port, headers)
    assert c.status == status
    assert c.headers["content-type"] == "application/problem+json"
    body = c.buf
    n = int(c.headers["content-length"])
    while len(body) < n:
        body += c.sock.recv(4096)
    problem = json.loads(body)
    assert problem["status"] == status
    if status == 426:
        assert c.headers["sec-websocket-version"] == "13"
        assert c.headers["upgrade"] == "websocket"
    c.sock.close()


def test_handshake_wrong_method_is_405(echo):
    import requests
    r = requests.post("http://127.0.0.1:%d/ws-echo" % echo.port,
                      headers={"Upgrade": "websocket",
                               "Connection": "Upgrade"})
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET"
    assert r.headers["Content-Type"] == "application/problem+json"


def test_handshake_tokens_are_case_insensitive(echo):
    echo.configure()
    c = Conn(echo.port, {"Upgrade": "WebSocket",
                         "Connection": "keep-alive, UPGRADE"})
    assert c.status == 101
    c.echo(TEXT, "ok")


@pytest.mark.parametrize("offer,chosen", [
    ("bearer.abc.def, elearn.v1", "elearn.v1"),
    ("elearn.v1", "elearn.v1"),
    ("elearn.v10, xelearn.v1", None),
    (None, None),
])
def test_handshake_subprotocol(echo, offer, chosen):
    echo.configure()
    c = Conn(echo.port, {"Sec-WebSocket-Protocol": offer})
    assert c.status == 101
    assert c.headers.get("sec-websocket-protocol") == chosen
    c.echo(TEXT, "ok")
    c.sock.close()


# 1: framing


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
@pytest.mark.parametrize("n", [0, 125, 126, 127, 128, 65535, 65536])
def test_1_framing_lengths(ws, opcode, n):
    payload = (b"*" * n) if opcode == TEXT else os.urandom(n)
    ws.echo(opcode, payload)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_1_framing_payload_in_chops(ws, opcode):
    payload = b"x" * 65535
    ws.send_raw(ws.frame(opcode, payload), chop=997, delay=0.0005)
    op, data = ws.recv_data()
    assert op == opcode and data == payload


def test_1_framing_header_byte_by_byte(ws):
    ws.send_raw(ws.frame(TEXT, "split header"), chop=1, delay=0.002)
    assert ws.recv_data() == (TEXT, b"split header")


def test_1_many_frames_in_one_write(ws):
    ws.send_raw(b"".join(ws.frame(TEXT, "m%d" % i) for i in range(50)))
    for i in range(50):
        assert ws.recv_data() == (TEXT, b"m%d" % i)


def test_1_unmasked_client_frame_is_1002(ws):
    ws.send(TEXT, "no mask", mask=False)
    ws.expect_close(1002)


# 2: ping and pong


@pytest.mark.parametrize("payload", [b"", b"ping", bytes(range(125)),
                                     b"\xff\xfe\x00binary"])
def test_2_ping_gets_pong_with_its_payload(ws, payload):
    ws.send(PING, payload)
    assert ws.recv_data() == (PONG, payload)


def test_2_ping_of_126_bytes_is_1002(ws):
    ws.send(PING, b"p" * 126)
    ws.expect_close(1002)


def test_2_ping_in_chops(ws):
    ws.send_raw(ws.frame(PING, b"q" * 125), chop=1, delay=0.001)
    assert ws.recv_data() == (PONG, b"q" * 125)


def test_2_unsolicited_pong_is_ignored(ws):
    ws.send(PONG, b"unsolicited")
    ws.echo(TEXT, "still here")


def test_2_ten_pings_ten_pongs(ws):
    ws.send_raw(b"".join(ws.frame(PING, b"%d" % i) for i in range(10)))
    for i in range(10):
        assert ws.recv_data() == (PONG, b"%d" % i)


def test_2_no_pong_after_close(ws):
    ws.send(CLOSE, close_payload(1000))
    ws.send(PING, b"late")
    data = ws.expect_close(1000, reply=False)
    assert data[:2] == close_payload(1000)


# 3: reserved bits


@pytest.mark.parametrize("rsv", range(1, 8))
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING])
def test_3_reserved_bits_are_1002(ws, rsv, opcode):
    ws.send(opcode, b"rsv", rsv=rsv)
    ws.expect_close(1002)


def test_3_reserved_bits_after_a_valid_message(ws):
    ws.send_raw(ws.frame(TEXT, "first") + ws.frame(TEXT, "bad", rsv=2)
                + ws.frame(PING, b"never"))
    assert ws.recv_data() == (TEXT, b"first")
    ws.expect_close(1002)


# 4: opcodes


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_4_reserved_opcodes_are_1002(ws, opcode):
    ws.send_raw(ws.frame(TEXT, "before") + ws.frame(opcode, b"x")
                + ws.frame(PING))
    assert ws.recv_data() == (TEXT, b"before")
    ws.expect_close(1002)


# 5: fragmentation


@pytest.mark.parametrize("opcode", [PING, PONG])
def test_5_fragmented_control_frame_is_1002(ws, opcode):
    ws.send(opcode, b"frag", fin=False)
    ws.send(CONT, b"ment")
    ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_5_message_in_fragments(ws, opcode):
    ws.send(opcode, b"frag", fin=False)
    ws.send(CONT, b"men", fin=False)
    ws.send(CONT, b"ted")
    assert ws.recv_data() == (opcode, b"fragmented")


def test_5_fragments_of_one_byte_and_empty(ws):
    ws.send(TEXT, b"", fin=False)
    for c in b"abc":
        ws.send(CONT, bytes([c]), fin=False)
    ws.send(CONT, b"")
    assert ws.recv_data() == (TEXT, b"abc")


def test_5_control_frames_between_fragments(ws):
    ws.send(TEXT, b"one ", fin=False)
    ws.send(PING, b"in between")
    assert ws.recv_data() == (PONG, b"in between")
    ws.send(CONT, b"two ", fin=False)
    ws.send(PONG, b"unsolicited")
    ws.send(CONT, b"three")
    assert ws.recv_data() == (TEXT, b"one two three")


def test_5_fragments_and_pings_in_chops(ws):
    data = (ws.frame(TEXT, b"a" * 300, fin=False) + ws.frame(PING, b"p")
            + ws.frame(CONT, b"b" * 300))
    ws.send_raw(data, chop=7, delay=0.0002)
    assert ws.recv_data() == (PONG, b"p")
    assert ws.recv_data() == (TEXT, b"a" * 300 + b"b" * 300)


@pytest.mark.parametrize("fin", [True, False])
def test_5_continuation_without_a_message_is_1002(ws, fin):
    ws.send(CONT, b"orphan", fin=fin)
    ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_5_new_message_inside_a_fragmented_one_is_1002(ws, opcode):
    ws.send(TEXT, b"start", fin=False)
    ws.send(opcode, b"again")
    ws.expect_close(1002)


# 6: UTF-8

VALID = [
    "Hello-µ@ßöäüàá-UTF-8!!".encode(),
    "κόσμε".encode(),
    b"\xf4\x8f\xbf\xbf",                  # U+10FFFF
    b"\xef\xbf\xbf",                      # U+FFFF
    b"\xed\x9f\xbf",                      # U+D7FF, just below surrogates
    b"\xee\x80\x80",                      # U+E000, just above them
    b"\xf0\x90\x80\x80",                  # U+10000
    b"\xc2\x80\xdf\xbf\xe0\xa0\x80",      # smallest of 2 and 3 bytes
]

INVALID = [
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    b"\xc0\x80",                          # overlong NUL
    b"\xc1\xbf",                          # overlong
    b"\xe0\x80\xaf",                      # overlong /
    b"\xf0\x80\x80\xaf",                  # overlong /
    b"\xed\xa0\x80",                      # surrogate U+D800
    b"\xed\xbf\xbf",                      # surrogate U+DFFF
    b"\xf4\x90\x80\x80",                  # past U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",              # old 5-byte form
    b"\xfc\x84\x80\x80\x80\x80",          # old 6-byte form
    b"\xed\xa0\x80\xed\xb0\x80",          # a paired surrogate
    b"\xfe", b"\xff",
    b"\x80",                              # lone continuation
    b"\xce\xba\xe1\xbd",                  # truncated at the end
    b"\xe1\x80",                          # truncated
    b"a\xc2",                             # truncated
]


@pytest.mark.parametrize("payload", VALID)
def test_6_valid_utf8_is_echoed(ws, payload):
    ws.echo(TEXT, payload)


def test_6_valid_utf8_split_at_every_byte(ws):
    payload = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞".encode()
    for cut in range(1, len(payload)):
        ws.send(TEXT, payload[:cut], fin=False)
        ws.send(CONT, payload[cut:])
        assert ws.recv_data() == (TEXT, payload)


def test_6_valid_utf8_one_byte_per_fragment(ws):
    payload = "κόσμε 𝄞".encode()
    ws.send(TEXT, payload[:1], fin=False)
    for b in payload[1:-1]:
        ws.send(CONT, bytes([b]), fin=False)
    ws.send(CONT, payload[-1:])
    assert ws.recv_data() == (TEXT, payload)


@pytest.mark.parametrize("payload", INVALID)
def test_6_invalid_utf8_is_1007(ws, payload):
    ws.send(TEXT, payload)
    ws.expect_close(1007)


@pytest.mark.parametrize("payload", INVALID[:9])
def test_6_invalid_utf8_split_across_fragments_is_1007(ws, payload):
    cut = max(1, len(payload) - 2)
    ws.send(TEXT, payload[:cut], fin=False)
    ws.send(CONT, payload[cut:])
    ws.expect_close(1007)


def test_6_invalid_utf8_fails_fast_before_the_last_fragment(ws):
    # the first fragment is already invalid: no need to wait for the rest
    ws.send(TEXT, b"\xce\xba\xed\xa0\x80", fin=False)
    ws.expect_close(1007)


def test_6_binary_is_not_checked(ws):
    ws.echo(BINARY, b"\xed\xa0\x80\xff\xfe")


# 7: closing


def test_7_1_close_after_a_message(ws):
    ws.echo(TEXT, "hello")
    ws.send(CLOSE, close_payload(1000))
    ws.expect_close(1000, reply=False)


def test_7_1_second_close_and_later_frames_are_ignored(ws):
    ws.send_raw(ws.frame(CLOSE, close_payload(1000))
                + ws.frame(CLOSE, close_payload(1001))
                + ws.frame(TEXT, "after close")
                + ws.frame(PING, b"after close"))
    fin, rsv, op, data = ws.recv()
    assert op == CLOSE and data[:2] == close_payload(1000)
    ws.expect_eof()


def test_7_1_close_inside_a_fragmented_message(ws):
    ws.send(TEXT, b"part", fin=False)
    ws.send(CLOSE, close_payload(1000))
    ws.expect_close(1000, reply=False)


def test_7_3_empty_close_is_answered(ws):
    ws.send(CLOSE, b"")
    fin, rsv, op, data = ws.recv()
    assert op == CLOSE
    assert data in (b"", close_payload(1000)), data
    ws.expect_eof()


def test_7_3_close_of_one_byte_is_1002(ws):
    ws.send(CLOSE, b"\x03")
    ws.expect_close(1002)


def test_7_3_close_with_reason(ws):
    ws.send(CLOSE, close_payload(1000, b"bye"))
    ws.expect_close(1000, reply=False)


def test_7_3_close_with_123_byte_reason(ws):
    ws.send(CLOSE, close_payload(1000, b"r" * 123))
    ws.expect_close(1000, reply=False)


def test_7_3_close_of_126_bytes_is_1002(ws):
    ws.send(CLOSE, close_payload(1000, b"r" * 124))
    ws.expect_close(1002)


def test_7_5_invalid_utf8_in_close_reason_is_1007(ws):
    ws.send(CLOSE, close_payload(1000, b"\xce\xba\xed\xa0\x80"))
    ws.expect_close(1007)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                  1010, 1011, 3000, 3999, 4000, 4999])
def test_7_7_valid_close_codes_are_echoed(ws, code):
    ws.send(CLOSE, close_payload(code))
    ws.expect_close(code, reply=False)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016,
                                  1100, 2000, 2999, 5000, 65535])
def test_7_9_invalid_close_codes_are_1002(ws, code):
    ws.send(CLOSE, close_payload(code))
    ws.expect_close(1002)


def test_7_server_closes_tcp_after_the_handshake(ws):
    ws.send(CLOSE, close_payload(1000))
    fin, rsv, op, data = ws.recv()
    assert op == CLOSE
    t = time.time()
    ws.expect_eof(timeout=3)
    assert time.time() - t < 1.0


# 9 and 10: limits and large messages (default elearn_ws_max_message 64k)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_9_frame_over_the_limit_is_1009(ws, opcode):
    # only the header: the server refuses before reading the payload
    ws.send_raw(ws.frame(opcode, b"", length=65537)[:14])
    ws.expect_close(1009)


def test_9_message_over_the_limit_in_fragments_is_1009(ws):
    for _ in range(4):
        ws.send(BINARY if _ == 0 else CONT, b"f" * 16384, fin=False)
    ws.send(CONT, b"f")
    ws.expect_close(1009)


def test_9_huge_64_bit_length_is_1009(ws):
    ws.send_raw(struct.pack("!BBQ", 0x82, 0xFF, 1 << 40) + b"mask")
    ws.expect_close(1009)


def test_9_length_with_top_bit_is_1002(ws):
    ws.send_raw(struct.pack("!BBQ", 0x82, 0xFF, 1 << 63) + b"mask")
    ws.expect_close(1002)


@pytest.mark.parametrize("size", [0, 16, 64, 256, 1024, 4096])
def test_9_many_messages_in_order(ws, size, opcode=BINARY):
    n = 1000
    data = b"".join(ws.frame(opcode, b"%06d" % i + b"m" * size)
                    for i in range(n))
    # written while this thread reads, as a client that keeps up does
    t = threading.Thread(target=ws.send_raw, args=(data,))
    t.start()
    for i in range(n):
        assert ws.recv_data() == (opcode, b"%06d" % i + b"m" * size)
    t.join()


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_10_auto_fragmented_65536(ws, opcode):
    payload = (b"a" * 65536) if opcode == TEXT else os.urandom(65536)
    parts = [payload[i:i + 1300] for i in range(0, len(payload), 1300)]
    ws.send_raw(b"".join(
        ws.frame(opcode if i == 0 else CONT, p, fin=i == len(parts) - 1)
        for i, p in enumerate(parts)))
    assert ws.recv_data() == (opcode, payload)


def test_10_server_survives_a_dropped_connection(echo):
    echo.configure()
    c = Conn(echo.port)
    c.send_raw(c.frame(TEXT, b"x" * 1000)[:500])
    c.sock.close()
    c = Conn(echo.port)
    c.echo(TEXT, "next")
    c.sock.close()


def test_10_reload_closes_with_1001(echo, stack):
    echo.configure()
    c = Conn(echo.port)
    c.echo(TEXT, "before the reload")
    stack.reload()
    data = c.expect_close(1001)
    assert b"shutting down" in data
    c = Conn(echo.port)
    c.echo(TEXT, "after the reload")
    c.sock.close()


# the server's side of the API: close from the server, shared frames


def test_server_initiated_close_handshake(ws):
    ws.send(TEXT, "close:4001")
    fin, rsv, op, data = ws.recv()
    assert op == CLOSE and data == close_payload(4001, b"requested")
    # data after the server's close frame is not answered any more
    ws.send(TEXT, "ignored")
    ws.send(PING, b"ignored")
    ws.expect_nothing(0.3)
    ws.send(CLOSE, close_payload(4001))
    t = time.time()
    ws.expect_eof(timeout=3)
    assert time.time() - t < 0.5


def test_server_initiated_close_times_out(echo):
    echo.configure(ELEARN_WS_CLOSE_TIMEOUT="1s")
    c = Conn(echo.port)
    c.send(TEXT, "close:1000")
    fin, rsv, op, data = c.recv()
    assert op == CLOSE and data[:2] == close_payload(1000)
    t = time.time()
    c.expect_eof(timeout=5)
    assert 0.8 < time.time() - t < 3
    c.sock.close()


def test_broadcast_shares_one_frame_with_every_connection(echo):
    # one worker, so that every connection is in the same list
    echo.configure(ELEARN_NGINX_WORKERS="1")
    conns = [Conn(echo.port) for _ in range(50)]
    conns[0].send(TEXT, "broadcast:one")
    for c in conns:
        assert c.recv_data() == (TEXT, b"broadcast:one")
    conns[0].send(TEXT, "stats")
    assert json.loads(conns[0].recv_data()[1])["lastBroadcast"][
        "receivers"] == 50
    # closed connections leave the list (on_close), the rest still get it
    for c in conns[:10]:
        c.send(CLOSE, close_payload(1000))
        c.expect_close(1000, reply=False)
    conns[-1].send(TEXT, "broadcast:two")
    for c in conns[10:]:
        assert c.recv_data() == (TEXT, b"broadcast:two")
    for c in conns[10:20]:
        c.sock.close()          # dropped without a close handshake
    time.sleep(0.2)
    conns[-1].send(TEXT, "broadcast:three")
    for c in conns[20:]:
        assert c.recv_data() == (TEXT, b"broadcast:three")
    conns[-1].send(TEXT, "stats")
    assert json.loads(conns[-1].recv_data()[1])["sharedFrames"] == 0
    for c in conns[20:]:
        c.sock.close()


def test_broadcast_closes_only_the_slow_reader(echo):
    echo.configure(ELEARN_NGINX_WORKERS="1", ELEARN_WS_MAX_QUEUE="64k")
    slow = Conn(echo.port, rcvbuf=4096)
    fast = Conn(echo.port)
    sender = Conn(echo.port)
    body = "broadcast:" + "b" * 30000
    for i in range(200):
        sender.send(TEXT, body + str(i))
        assert sender.recv_data() == (TEXT, (body + str(i)).encode())
        assert fast.recv_data() == (TEXT, (body + str(i)).encode())
    # the slow reader got what fitted, then 1008 instead of more memory
    data = slow.expect_close(1008, reply=False)
    assert b"slow reader" in data
    sender.echo(TEXT, "still served")
    fast.echo(TEXT, "still served")
    sender.send(TEXT, "stats")
    stats = json.loads(sender.recv_data()[1])
    assert stats["slowReaders"] >= 1
    # every queue has let go of every broadcast frame: none is left alive
    assert stats["sharedFrames"] == 0


def test_worker_figures_account_for_every_connection(echo):
    echo.configure(ELEARN_NGINX_WORKERS="1")
    q = Conn(echo.port)

    def stats():
        q.send(TEXT, "stats")
        op, data = q.recv_data()
        return json.loads(data)

    s0 = stats()
    conns = [Conn(echo.port) for _ in range(5)]
    for c in conns:
        c.echo(TEXT, "x" * 1000)
    s1 = stats()
    assert s1["open"] == s0["open"] + 5
    assert s1["upgrades"] == s0["upgrades"] + 5
    for c in conns[:3]:
        c.send(CLOSE, close_payload(1000))
        c.expect_close(1000, reply=False)
    for c in conns[3:]:
        c.sock.close()
    bad = Conn(echo.port)
    bad.send(TEXT, b"\xff")
    bad.expect_close(1007)
    bad.sock.close()    # the server waits for this after failing it
    time.sleep(0.3)
    s2 = stats()
    assert s2["open"] == s0["open"]
    assert s2["upgrades"] == s0["upgrades"] + 6
    assert s2["failed"] == s0["failed"] + 1
    assert s2["queued"] == 0
    q.sock.close()


def test_random_frames_never_hurt_the_server(echo):
    """A bounded, seeded fuzz: 300 connections send random frames (any
    opcode, reserved bits, mask or not, lengths around the limits, random
    payloads, cut anywhere) or raw garbage.  Each gets echoes or a close
    with a protocol code, never anything else; afterwards the worker is
    well and every connection is accounted for."""
    import random
    echo.configure(ELEARN_NGINX_WORKERS="1")
    rnd = random.Random(6455)
    q = Conn(echo.port)
    q.send(TEXT, "stats")
    before = json.loads(q.recv_data()[1])
    for _ in range(300):
        c = Conn(echo.port)
        out = b""
        for _ in range(rnd.randint(1, 6)):
            kind = rnd.random()
            if kind < 0.15:
                out += os.urandom(rnd.randint(1, 40))
                continue
            op = rnd.choice([0, 1, 2, 3, 8, 9, 10, 11, 15])
            n = rnd.choice([0, 1, 2, 125, 126, 127, 1000, 65536, 65537])
            payload = rnd.choice([os.urandom(n), "é".encode() * (n // 2),
                                  b"a" * n])[:n]
            out += c.frame(op, payload, fin=rnd.random() < 0.7,
                           rsv=rnd.choice([0, 0, 0, 1, 4]),
                           mask=rnd.random() < 0.9)
        cut = rnd.randint(1, len(out))
        try:
            c.sock.sendall(out[:cut])
            c.sock.settimeout(0.05)
            while True:
                fin, rsv, op, data = c.recv()
                assert op in (TEXT, BINARY, PONG, CLOSE), op
                if op == CLOSE:
                    if data:
                        code = struct.unpack("!H", data[:2])[0]
                        # ours (1002, 1007, 1009) or the peer's echoed
                        assert code in (1000, 1001, 1002, 1003, 1007, 1008,
                                        1009, 1010, 1011, 1012, 1013,
                                        1014) or 3000 <= code <= 4999, code
                    break
        except (socket.timeout, EOFError, ConnectionResetError,
                BrokenPipeError):
            pass
        c.sock.close()
    time.sleep(0.5)
    q.echo(TEXT, "alive")
    q.send(TEXT, "stats")
    after = json.loads(q.recv_data()[1])
    assert after["open"] == before["open"]
    assert after["upgrades"] == before["upgrades"] + 300
    assert after["queued"] == 0
    q.sock.close()


# interop with strict independent clients


def test_interop_python_websockets(echo):
    import websockets    # python3-websockets: a failure if missing
    echo.configure()

    async def run():
        async with websockets.connect(echo.url, max_size=2 ** 20,
                                      compression=None) as c:
            for m in ["text", "κόσμε 𝄞", "", b"\x00\xffbin", b"b" * 65536,
                      "t" * 65536]:
                await c.send(m)
                assert await c.recv() == m
            await c.send(iter(["frag", "men", "ted"]))
            assert await c.recv() == "fragmented"
            pong = await c.ping(b"hi")
            await asyncio.wait_for(pong, 5)
            await c.close(1000, "done")
            assert c.close_code == 1000
    asyncio.run(run())


def test_interop_python_websockets_sees_1009(echo):
    import websockets    # python3-websockets: a failure if missing
    echo.configure()

    async def run():
        async with websockets.connect(echo.url, compression=None) as c:
            await c.send(b"z" * 65537)
            with pytest.raises(websockets.ConnectionClosed) as e:
                await c.recv()
            assert e.value.code == 1009
    asyncio.run(run())


def test_interop_node_ws(echo):
    echo.configure()
    mods = os.path.join(TOP, "tools", "node", "node_modules")
    assert os.path.isdir(os.path.join(mods, "ws")), \
        "tools/node/node_modules/ws missing: run tools/deps.sh"
    r = subprocess.run(["node", os.path.join(TOP, "tests", "integration",
                                             "ws_interop.js"), echo.url],
                       env=dict(os.environ, NODE_PATH=mods),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["echoed"] == 5 and res["pong"] and res["closeCode"] == 1000


# directives: backpressure, pings, large messages


def test_slow_reader_is_closed_with_1008(echo):
    echo.configure(ELEARN_WS_MAX_QUEUE="64k")
    c = Conn(echo.port, rcvbuf=4096)
    msg = c.frame(BINARY, b"s" * 60000)
    sent = 0
    c.sock.settimeout(0.5)
    try:
        # the server echoes all of it while this client reads nothing,
        # until its queue passes 64k on top of what the sockets hold
        for _ in range(400):
            c.sock.sendall(msg)
            sent += 1
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass
    c.sock.settimeout(10)
    assert sent > 2
    c.expect_close(1008, reply=False)
    # the server stays well
    c2 = Conn(echo.port)
    c2.echo(TEXT, "fine")
    c2.sock.close()


def test_ping_timeout_closes_after_two_missed_pongs(echo):
    echo.configure(ELEARN_WS_PING_INTERVAL="1s", ELEARN_WS_CLOSE_TIMEOUT="1s")
    c = Conn(echo.port)
    t = time.time()
    pings = 0
    while True:
        fin, rsv, op, data = c.recv()
        if op == PING:
            pings += 1
            assert data == b""
            continue
        assert op == CLOSE
        break
    assert pings == 2
    assert struct.unpack("!H", data[:2])[0] == 1008
    assert 2.5 < time.time() - t < 5
    c.expect_eof()


def test_answered_pings_keep_the_connection(echo):
    echo.configure(ELEARN_WS_PING_INTERVAL="1s", ELEARN_WS_CLOSE_TIMEOUT="1s")
    c = Conn(echo.port)
    t = time.time()
    pings = 0
    while time.time() - t < 4.5:
        op, data = c.recv_data()
        assert op == PING
        pings += 1
        c.send(PONG, data)
    assert pings >= 4
    c.echo(TEXT, "alive")


def test_close_timeout_drops_a_silent_peer(echo):
    echo.configure(ELEARN_WS_CLOSE_TIMEOUT="1s")
    c = Conn(echo.port)
    c.send(TEXT, b"\xff")
    fin, rsv, op, data = c.recv()
    assert op == CLOSE and data[:2] == close_payload(1007)
    # the server half-closes at once and reads on, for the peer's close
    c.expect_eof(timeout=2)
    c.sock.send(c.frame(TEXT, "still reading"))
    time.sleep(0.2)
    assert c.sock.recv(10) == b""
    # no close reply and the socket kept open: dropped after the timeout,
    # so that more input is now refused with a reset
    time.sleep(1.5)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        c.sock.send(c.frame(TEXT, "too late"))
        time.sleep(0.2)
        c.sock.recv(10)
        c.sock.send(c.frame(TEXT, "too late"))


@pytest.mark.parametrize("size", [256 * 1024, 1 << 20, 4 << 20, 16 << 20])
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_9_large_messages_under_a_raised_limit(echo, size, opcode):
    echo.configure(ELEARN_WS_MAX_MESSAGE="16m")
    c = Conn(echo.port)
    payload = b"L" * size
    c.send(opcode, payload)
    op, data = c.recv_data()
    assert op == opcode and len(data) == size and data == payload
    c.sock.close()


@pytest.mark.parametrize("frag", [64, 4096, 65536, 1 << 20])
def test_9_large_message_in_fragments(echo, frag):
    echo.configure(ELEARN_WS_MAX_MESSAGE="16m")
    c = Conn(echo.port)
    payload = os.urandom(4 << 20)
    parts = [payload[i:i + frag] for i in range(0, len(payload), frag)]
    out = [c.frame(BINARY if i == 0 else CONT, p, fin=i == len(parts) - 1)
           for i, p in enumerate(parts)]
    c.send_raw(b"".join(out))
    op, data = c.recv_data()
    assert op == BINARY and data == payload
    c.sock.close()
