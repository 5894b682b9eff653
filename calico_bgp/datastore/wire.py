"""Pure translation between our values and etcd's v3 JSON gateway (grpc-gateway's proto3 JSON).

Keys and values travel base64-encoded; int64 fields come back as JSON strings; fields holding
their proto3 default (0, false, empty, the first enum value) are simply absent.
"""
from __future__ import annotations

import base64
from typing import Any

from calico_bgp.datastore.errors import Compacted
from calico_bgp.datastore.types import Compare, Delete, Get, KeyValue, Op, Put, TxnResult, WatchBatch, WatchEvent

_TARGETS = {"mod": "MOD", "create": "CREATE", "version": "VERSION", "value": "VALUE"}
_TARGET_FIELDS = {"mod": "mod_revision", "create": "create_revision", "version": "version"}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


def key_bytes(key: str) -> bytes:
    # surrogateescape: a non-UTF-8 key read from etcd round-trips back to the same bytes
    return key.encode("utf-8", "surrogateescape")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, end) every key starting with prefix (etcd's GetPrefixRangeEnd)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


def key_range(key: str, prefix: bool = False, end: str | None = None) -> dict[str, str]:
    """One key; with `prefix`, every key starting with it; with `end`, the keys from `key` up to (not
    including) `end`."""
    raw = key_bytes(key)
    if end is not None:
        return {"key": b64(raw), "range_end": b64(key_bytes(end))}
    if not prefix:
        return {"key": b64(raw)}
    if not raw:
        return {"key": b64(b"\x00"), "range_end": b64(b"\x00")}
    return {"key": b64(raw), "range_end": b64(prefix_end(raw))}


def header_revision(resp: dict[str, Any]) -> int:
    return int(resp.get("header", {}).get("revision", 0))


def decode_kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(d.get("key")).decode("utf-8", "surrogateescape"),
        value=unb64(d.get("value")),
        create_revision=int(d.get("create_revision", 0)),
        mod_revision=int(d.get("mod_revision", 0)),
        version=int(d.get("version", 0)),
        lease=int(d.get("lease", 0)),
    )


def decode_kvs(resp: dict[str, Any]) -> list[KeyValue]:
    return [decode_kv(d) for d in resp.get("kvs", ())]


def encode_range(key: str, *, prefix: bool = False, end: str | None = None, revision: int = 0,
                 keys_only: bool = False, limit: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = key_range(key, prefix, end)
    if revision:
        body["revision"] = revision
    if keys_only:
        body["keys_only"] = True
    if limit:
        body["limit"] = limit
    return body


def range_step(body: dict[str, Any], resp: dict[str, Any]) -> tuple[list[KeyValue], int, dict[str, Any] | None]:
    """One page of a paged range: its keys, the snapshot's revision (the one asked for, else the first
    page's, so every page reads one snapshot) and the request for the next page (from just after the
    last key, at that revision), or None when this was the last."""
    page = decode_kvs(resp)
    revision = int(body.get("revision") or header_revision(resp))
    if not resp.get("more") or not page:
        return page, revision, None
    return page, revision, {**body, "revision": revision, "key": b64(key_bytes(page[-1].key) + b"\x00")}


def encode_put(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key_bytes(key)), "value": b64(value)}
    if lease:
        body["lease"] = lease
    return body


def encode_compare(c: Compare) -> dict[str, Any]:
    d: dict[str, Any] = {"key": b64(key_bytes(c.key)), "target": _TARGETS[c.target], "result": _RESULTS[c.result]}
    if c.prefix:
        d.update(key_range(c.key, prefix=True))
    if c.target == "value":
        d["value"] = b64(c.value)  # type: ignore[arg-type]
    else:
        d[_TARGET_FIELDS[c.target]] = c.value
    return d


def encode_op(op: Op) -> dict[str, Any]:
    if isinstance(op, Put):
        return {"request_put": encode_put(op.key, op.value, op.lease)}
    if isinstance(op, Delete):
        return {"request_delete_range": key_range(op.key, op.prefix)}
    if isinstance(op, Get):
        return {"request_range": encode_range(op.key, prefix=op.prefix, keys_only=op.keys_only)}
    raise TypeError(f"not a transaction operation: {op!r}")


def encode_txn(compares: list[Compare], success: list[Op], failure: list[Op]) -> dict[str, Any]:
    return {"compare": [encode_compare(c) for c in compares],
            "success": [encode_op(o) for o in success],
            "failure": [encode_op(o) for o in failure]}


def decode_txn(resp: dict[str, Any]) -> TxnResult:
    revision = header_revision(resp)
    out: list[Any] = []
    for r in resp.get("responses", ()):
        if "response_range" in r:
            out.append(decode_kvs(r["response_range"]))
        elif "response_delete_range" in r:
            out.append(int(r["response_delete_range"].get("deleted", 0)))
        elif "response_put" in r:
            out.append(header_revision(r["response_put"]) or revision)
        else:
            out.append(None)  # a nested txn: not something this client sends
    return TxnResult(succeeded=bool(resp.get("succeeded", False)), revision=revision, responses=out)


def decode_event(d: dict[str, Any]) -> WatchEvent:
    prev = d.get("prev_kv")
    return WatchEvent(type="delete" if d.get("type") == "DELETE" else "put", kv=decode_kv(d["kv"]),
                      prev=decode_kv(prev) if prev else None)


def decode_watch_result(result: dict[str, Any]) -> WatchBatch | None:
    """One `result` of the watch stream: a batch of events, None for control messages (created,
    progress), Compacted raised when etcd cancelled the watch because its start was compacted."""
    compact = int(result.get("compact_revision", 0))
    if compact:
        raise Compacted(compact)
    events = [decode_event(e) for e in result.get("events", ())]
    if not events:
        return None
    # not the header revision: etcd splits a long catch-up into several responses that all carry the newest one
    return WatchBatch(events=events, revision=events[-1].kv.mod_revision)
