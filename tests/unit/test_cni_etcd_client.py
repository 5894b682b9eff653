"""The blocking etcd client a plugin uses (calico_bgp/datastore/blocking.py): its HTTP/1.1 exchange
(Content-Length, chunked, a kept-alive connection the server closed), failover, the rule that a
write whose outcome is unknown is not retried elsewhere, and `drive()` (against a fake gateway on
loopback; the real etcd is the integration tests')."""
from __future__ import annotations

import base64
import json
import socket
import threading

import pytest

from calico_bgp.datastore.blocking import BlockingClient, drive
from calico_bgp.datastore.errors import EtcdError, EtcdUnavailable


class Gateway:
    """A loopback server answering each request with the next scripted reply (raw bytes, or None: hang up)."""

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.hung_up = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                buf = b""
                while self.replies:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" not in buf:
                        break
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    self.requests.append((head.split(b" ")[1].decode(), json.loads(buf[:length])))
                    buf = buf[length:]
                    reply = self.replies.pop(0)
                    if reply is None:
                        break  # hang up without answering
                    if isinstance(reply, tuple):  # (raw, "close"): answer, then close while the client idles
                        conn.sendall(reply[0])
                        break
                    conn.sendall(reply)
            self.hung_up.set()

    def close(self):
        self.sock.close()


def ok(body: dict, chunked: bool = False, close: bool = False) -> bytes:
    raw = json.dumps(body).encode()
    extra = b"Connection: close\r\n" if close else b""
    if chunked:
        mid = len(raw) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (raw[:mid], raw[mid:])) + b"0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n" + chunks
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(raw) + extra + b"\r\n" + raw


KV = {"header": {"revision": "7"}, "kvs": [{"key": base64.b64encode(b"/k").decode(), "value":
      base64.b64encode(b"v").decode(), "create_revision": "3", "mod_revision": "7", "version": "2"}]}


@pytest.fixture
def gateways():
    made = []
    yield lambda replies: made.append(Gateway(replies)) or made[-1]
    for g in made:
        g.close()


def test_replies_by_length_and_chunked_on_one_kept_alive_connection(gateways):
    g = gateways([ok(KV), ok(KV, chunked=True), ok({"header": {"revision": "8"}})])
    with BlockingClient([g.url]) as c:
        assert drive(c.get("/k")).value == b"v"
        assert drive(c.get("/k")).mod_revision == 7
        assert drive(c.put("/k", b"w")) == 8
    assert g.connections == 1 and [p for p, _ in g.requests] == ["/v3/kv/range", "/v3/kv/range", "/v3/kv/put"]


def test_a_connection_the_server_closed_is_opened_again(gateways):
    g = gateways([ok(KV, close=True), ok(KV)])
    with BlockingClient([g.url]) as c:
        drive(c.get("/k"))
        drive(c.get("/k"))
    assert g.connections == 2


def test_a_read_fails_over_to_the_next_endpoint(gateways):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connection refused
    g = gateways([ok(KV)])
    with BlockingClient([f"http://127.0.0.1:{port}", g.url]) as c:
        assert drive(c.get("/k")).value == b"v"
        assert c.endpoints[c._current] == g.url


def test_every_endpoint_down_is_etcd_unavailable_naming_each():
    with BlockingClient(["http://127.0.0.1:9", "unix:///nonexistent/etcd.sock"]) as c:
        with pytest.raises(EtcdUnavailable) as info:
            drive(c.get("/k"))
    assert "127.0.0.1:9: connection refused" in str(info.value) and "no such socket" in str(info.value)


def test_a_write_whose_reply_was_lost_is_not_sent_again(gateways):
    g1, g2 = gateways([None]), gateways([ok({"header": {"revision": "9"}})])
    with BlockingClient([g1.url, g2.url]) as c:
        with pytest.raises(EtcdUnavailable) as info:
            drive(c.put("/k", b"w"))
    assert "outcome unknown" in str(info.value) and g2.requests == []


def test_a_write_on_a_kept_alive_connection_whose_reply_was_lost_is_not_resent(gateways):
    """A CAS txn applied whose reply was lost, sent again, would fail its compare and the allocator
    would take a second address: the write's outcome is unknown, EtcdUnavailable, sent once."""
    txn = {"header": {"revision": "9"}, "succeeded": True, "responses": []}
    g = gateways([ok(KV), None, ok(txn)])
    with BlockingClient([g.url]) as c:
        drive(c.get("/k"))
        with pytest.raises(EtcdUnavailable) as info:
            drive(c.put("/k", b"w"))
    assert "outcome unknown" in str(info.value)
    assert [p for p, _ in g.requests] == ["/v3/kv/range", "/v3/kv/put"]


def test_a_read_on_a_kept_alive_connection_whose_reply_was_lost_is_resent(gateways):
    g = gateways([ok(KV), None, ok(KV)])
    with BlockingClient([g.url]) as c:
        drive(c.get("/k"))
        assert drive(c.get("/k")).value == b"v"
    assert [p for p, _ in g.requests] == ["/v3/kv/range"] * 3 and g.connections == 2


def test_a_write_after_the_server_closed_the_idle_connection_goes_on_a_fresh_one(gateways):
    g = gateways([(ok(KV), "close"), ok({"header": {"revision": "8"}})])
    with BlockingClient([g.url]) as c:
        drive(c.get("/k"))
        assert g.hung_up.wait(5)
        assert drive(c.put("/k", b"w")) == 8
    assert g.connections == 2


def test_an_etcd_error_reply_is_typed(gateways):
    body = json.dumps({"code": 3, "message": "etcdserver: key is not provided"}).encode()
    g = gateways([b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body) + body])
    with BlockingClient([g.url]) as c, pytest.raises(EtcdError) as info:
        drive(c.get(""))
    assert info.value.code == 3 and "key is not provided" in info.value.message


def test_drive_refuses_a_coroutine_that_suspends():
    import types

    @types.coroutine
    def suspend():
        yield "trap"

    async def waits():
        await suspend()

    with pytest.raises(RuntimeError, match="suspended"):
        drive(waits())
