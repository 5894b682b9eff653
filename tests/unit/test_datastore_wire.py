"""Decoding etcd's JSON gateway replies (proto3 JSON: base64, int64 as strings, defaults omitted)."""
from __future__ import annotations

import base64

import pytest

from calico_bgp.datastore import Compare, Delete, Get, KeyValue, Put, TLSConfig, WatchBatch, WatchEvent, wire
from calico_bgp.datastore.errors import Compacted, EtcdUnavailable


def b(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


HEADER = {"cluster_id": "1", "member_id": "2", "revision": "9", "raft_term": "2"}


@pytest.mark.parametrize("prefix, end", [(b"/a/", b"/a0"), (b"a\xff", b"b"), (b"\xff\xff", b"\x00"),
                                         (b"a\x00", b"a\x01")])
def test_prefix_end(prefix, end):
    assert wire.prefix_end(prefix) == end


def test_key_range_for_the_whole_keyspace():
    assert wire.key_range("", prefix=True) == {"key": b(b"\x00"), "range_end": b(b"\x00")}
    assert wire.key_range("/x") == {"key": b("/x")}


def test_kv_with_defaults_omitted():
    assert wire.decode_kv({"key": b("/k"), "create_revision": "2", "mod_revision": "5", "version": "3"}) == \
        KeyValue("/k", b"", 2, 5, 3, 0)
    big = 7587870000000000000  # int64 lease ids arrive as JSON strings
    assert wire.decode_kv({"key": b("/k"), "value": b("v"), "lease": str(big)}).lease == big


def test_non_utf8_key_round_trips():
    kv = wire.decode_kv({"key": b(b"/k\xff")})
    assert wire.key_bytes(kv.key) == b"/k\xff"


def test_failed_txn_has_no_succeeded_field():
    res = wire.decode_txn({"header": HEADER, "responses": [{"response_range": {"header": {"revision": "9"}}}]})
    assert not res.succeeded and res.revision == 9 and res.responses == [[]]


def test_successful_txn_responses_by_operation():
    res = wire.decode_txn({"header": HEADER, "succeeded": True, "responses": [
        {"response_put": {"header": {"revision": "9"}}},
        {"response_delete_range": {"header": {}, "deleted": "3"}},
        {"response_delete_range": {"header": {}}},
        {"response_range": {"kvs": [{"key": b("/a"), "value": b("1"), "mod_revision": "9"}], "count": "1"}},
    ]})
    assert res.succeeded and res.responses == [9, 3, 0, [KeyValue("/a", b"1", 0, 9, 0)]]


def test_encode_txn():
    body = wire.encode_txn([Compare.mod("/a", 4), Compare.created("/b", 0), Compare.value("/c", b"x"),
                            Compare("/d", "version", ">", 2)],
                           [Put("/a", "v", lease=5), Delete("/p/", prefix=True)], [Get("/a", keys_only=True)])
    assert body["compare"] == [
        {"key": b("/a"), "target": "MOD", "result": "EQUAL", "mod_revision": 4},
        {"key": b("/b"), "target": "CREATE", "result": "EQUAL", "create_revision": 0},
        {"key": b("/c"), "target": "VALUE", "result": "EQUAL", "value": b("x")},
        {"key": b("/d"), "target": "VERSION", "result": "GREATER", "version": 2}]
    assert body["success"] == [{"request_put": {"key": b("/a"), "value": b("v"), "lease": 5}},
                               {"request_delete_range": {"key": b("/p/"), "range_end": b("/p0")}}]
    assert body["failure"] == [{"request_range": {"key": b("/a"), "keys_only": True}}]


def test_compare_checks_its_value_type():
    with pytest.raises(ValueError, match="needs an int"):
        Compare("/a", "mod", "==", b"1")
    with pytest.raises(ValueError):
        Compare("/a", "mod", "~", 1)
    assert Compare.value("/a", b"x").value == b"x"


def test_watch_put_event_has_no_type_and_delete_has_prev():
    batch = wire.decode_watch_result({"header": HEADER, "events": [
        {"kv": {"key": b("/a"), "value": b("1"), "create_revision": "3", "mod_revision": "3", "version": "1"}},
        {"type": "DELETE", "kv": {"key": b("/a"), "mod_revision": "4"},
         "prev_kv": {"key": b("/a"), "value": b("1"), "create_revision": "3", "mod_revision": "3", "version": "1"}}]})
    put = KeyValue("/a", b"1", 3, 3, 1)
    deleted = KeyValue("/a", b"", 0, 4, 0)
    assert batch == WatchBatch([WatchEvent("put", put, None), WatchEvent("delete", deleted, put)], 4)


def test_watch_control_messages_and_compaction():
    assert wire.decode_watch_result({"header": HEADER, "created": True}) is None
    with pytest.raises(Compacted) as err:
        wire.decode_watch_result({"header": {"raft_term": "2"}, "canceled": True, "compact_revision": "7"})
    assert err.value.compact_revision == 7


def test_unavailable_names_every_endpoint():
    err = EtcdUnavailable([("http://127.0.0.1:1", "connection refused"), ("http://127.0.0.1:2", "connect timed out")])
    assert str(err) == ("etcd unreachable at http://127.0.0.1:1: connection refused; "
                        "http://127.0.0.1:2: connect timed out")


def test_tls_config_is_a_frozen_value():
    tls = TLSConfig(ca_cert="/ca.pem")
    assert tls == TLSConfig("/ca.pem") and tls.cert is None
    with pytest.raises(AttributeError):
        tls.cert = "x"  # type: ignore[misc]


def test_transport_failure_reasons():
    import ssl

    import httpx

    from calico_bgp.datastore.transport import describe

    def chained(outer: BaseException, inner: BaseException) -> BaseException:
        outer.__cause__ = inner
        return outer

    # trio reports a refused connect as an OSError caused by a group of per-address errors
    refused = chained(httpx.ConnectError(""), chained(OSError("all attempts to connect to 127.0.0.1:1 failed"),
                                                      ExceptionGroup("x", [ConnectionRefusedError(111, "refused")])))
    assert describe(refused) == "connection refused"
    bad_cert = ssl.SSLCertVerificationError(1, "x")
    bad_cert.verify_message = "unable to get local issuer certificate"
    assert describe(chained(httpx.ConnectError(""), bad_cert)) == \
        "TLS certificate verify failed: unable to get local issuer certificate"
    assert describe(httpx.ConnectTimeout("")) == "connect timed out"
    assert describe(httpx.ReadTimeout("")) == "timed out waiting for a response"
    assert describe(httpx.ReadError("")) == "connection dropped before a response"


def test_etcd_error_replies_become_typed_errors():
    from calico_bgp.datastore.errors import AuthFailed, EtcdError
    from calico_bgp.datastore.transport import Transport

    t = Transport(["http://127.0.0.1:1"], tls=None, username=None, password=None, timeout=1)
    err = t._error("http://e", 400, b'{"error":"etcdserver: mvcc: required revision has been compacted",'
                                    b'"message":"etcdserver: mvcc: required revision has been compacted","code":11}')
    assert isinstance(err, Compacted)
    err = t._error("http://e", 400, b'{"message":"etcdserver: user name is empty","code":3}')
    assert isinstance(err, AuthFailed) and "requires authentication" in str(err)
    err = t._error("http://e", 400, b'{"message":"etcdserver: request is too large","code":3}')
    assert isinstance(err, EtcdError) and str(err) == "etcd at http://e: etcdserver: request is too large (code 3)"
    err = t._error("http://e", 404, b"Not Found\n")
    assert isinstance(err, EtcdError) and err.message == "HTTP 404: Not Found"


def test_a_paged_range_reads_one_snapshot_from_just_after_each_pages_last_key():
    """range_step, the paging both etcd clients (client.py under trio, blocking.py for the plugins) run."""
    first = wire.encode_range("/p/", prefix=True, limit=2)
    page1 = {"header": HEADER, "more": True, "kvs": [{"key": b("/p/a"), "value": b("1")}, {"key": b("/p/b")}]}
    kvs, rev, second = wire.range_step(first, page1)
    assert [kv.key for kv in kvs] == ["/p/a", "/p/b"] and rev == 9
    assert second == {**first, "revision": 9, "key": b("/p/b\x00")} and "revision" not in first  # not changed
    later = {"header": {**HEADER, "revision": "12"}, "kvs": [{"key": b("/p/c")}]}  # written to since: still 9
    kvs, rev, third = wire.range_step(second, later)
    assert [kv.key for kv in kvs] == ["/p/c"] and rev == 9 and third is None
    pinned = wire.encode_range("/p/", prefix=True, revision=5)
    assert wire.range_step(pinned, {"header": HEADER, "more": True})[1:] == (5, None)  # an empty page ends it
