"""EtcdClient: key-value reads and writes, transactions and the compare-and-swap helpers built on them."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import trio

from calico_bgp.datastore import lease as _lease
from calico_bgp.datastore import wire
from calico_bgp.datastore.transport import Transport
from calico_bgp.datastore.types import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Op,
    Put,
    RangeResult,
    TLSConfig,
    TxnResult,
    _to_bytes,
)
from calico_bgp.datastore.watch import Watch

log = logging.getLogger("calico_bgp.datastore")

RANGE_PAGE = 1000  # keys per range request: bounded replies, still few round trips


class EtcdClient:
    """etcd v3 over its JSON gateway, for trio. Use `async with EtcdClient([...]) as client:`."""

    def __init__(self, endpoints: Sequence[str], *, tls: TLSConfig | None = None, username: str | None = None,
                 password: str | None = None, timeout: float = 5.0) -> None:
        self.transport = Transport(endpoints, tls=tls, username=username, password=password, timeout=timeout)

    @property
    def endpoints(self) -> list[str]:
        return self.transport.endpoints

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- key-value -------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        resp = await self.transport.call("/v3/kv/range", wire.key_range(key))
        kvs = resp.get("kvs")
        return wire.decode_kv(kvs[0]) if kvs else None

    async def range(self, prefix: str, *, end: str | None = None, revision: int = 0,
                    keys_only: bool = False) -> RangeResult:
        """Every key starting with `prefix` (with `end`: from `prefix` up to, not including, `end`), as
        one consistent snapshot (pages share one revision).

        Raises Compacted when `revision` is older than etcd's compaction point."""
        body = wire.encode_range(prefix, prefix=True, end=end, revision=revision, keys_only=keys_only,
                                 limit=RANGE_PAGE)
        kvs: list[KeyValue] = []
        next_body: dict | None = body
        while next_body is not None:
            page, revision, next_body = wire.range_step(next_body, await self.transport.call("/v3/kv/range", next_body))
            kvs.extend(page)
        return RangeResult(kvs=kvs, revision=revision)

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        resp = await self.transport.call("/v3/kv/put", wire.encode_put(key, _to_bytes(value), lease))
        return wire.header_revision(resp)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        resp = await self.transport.call("/v3/kv/deleterange", wire.key_range(key, prefix))
        return int(resp.get("deleted", 0))

    async def txn(self, compares: list[Compare], success: list[Op], failure: list[Op]) -> TxnResult:
        # a read-only txn may be retried on another endpoint; one that writes may already have been applied
        read_only = all(isinstance(op, Get) for op in (*success, *failure))
        body = wire.encode_txn(compares, success, failure)
        resp = await self.transport.call("/v3/kv/txn", body, idempotent=read_only)
        return wire.decode_txn(resp)

    # --- compare-and-swap: one transaction each; a loser gets the current value from the same txn ---

    async def create(self, key: str, value: bytes | str, *, lease: int = 0) -> tuple[bool, KeyValue | None]:
        """Create `key` if absent. (True, the new kv) or (False, the kv that is already there)."""
        raw = _to_bytes(value)
        res = await self.txn([Compare.created(key, 0)], [Put(key, raw, lease)], [Get(key)])
        if res.succeeded:
            return True, KeyValue(key, raw, res.revision, res.revision, 1, lease)
        return False, _first(res.responses[0])

    async def cas(self, key: str, value: bytes | str, mod_revision: int) -> tuple[bool, KeyValue | None]:
        """Put iff the key's mod_revision is still `mod_revision` (0: iff absent).

        (True, the new kv) or (False, the current kv, None if the key is gone)."""
        raw = _to_bytes(value)
        # keys_only Get after the Put: the new create_revision/version without echoing the value back
        res = await self.txn([Compare.mod(key, mod_revision)], [Put(key, raw), Get(key, keys_only=True)], [Get(key)])
        if res.succeeded:
            meta = _first(res.responses[1])
            if meta is None:  # cannot happen inside one txn; keep the revision we know
                return True, KeyValue(key, raw, res.revision, res.revision, 1)
            return True, KeyValue(key, raw, meta.create_revision, meta.mod_revision, meta.version, meta.lease)
        return False, _first(res.responses[0])

    async def cas_delete(self, key: str, mod_revision: int) -> tuple[bool, KeyValue | None]:
        """Delete iff the key's mod_revision is still `mod_revision`. (True, None) or (False, the current kv)."""
        res = await self.txn([Compare.mod(key, mod_revision)], [Delete(key)], [Get(key)])
        if res.succeeded:
            return True, None
        return False, _first(res.responses[0])

    # --- leases ----------------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> int:
        return await _lease.grant(self.transport, ttl)

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh once; returns the TTL left (0: the lease has expired or was revoked)."""
        return await _lease.keepalive(self.transport, lease_id)

    async def lease_revoke(self, lease_id: int) -> None:
        await _lease.revoke(self.transport, lease_id)

    async def keep_lease_alive(self, lease_id: int, ttl: int, *,
                               task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh `lease_id` every ttl/3 until cancelled; raises LeaseExpired if it lapsed."""
        await _lease.keep_alive(self.transport, lease_id, ttl, task_status=task_status)

    # --- watch -----------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int, *, end: str | None = None) -> Watch:
        """Async iterator of WatchBatch / Resync for every key under `prefix` (with `end`: from `prefix`
        up to, not including, `end`), from `start_revision`."""
        return Watch(self, prefix, start_revision, end)


def _first(kvs: list[KeyValue] | None) -> KeyValue | None:
    return kvs[0] if kvs else None
