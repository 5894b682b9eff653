"""Leases: grant, refresh, revoke, and a task that keeps one alive (keys bound to it vanish when it lapses)."""
from __future__ import annotations

import logging
from typing import Any

import trio

from calico_bgp.datastore.errors import DatastoreError, EtcdError, LeaseExpired
from calico_bgp.datastore.transport import Transport
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.datastore")


async def grant(transport: Transport, ttl: int) -> int:
    resp = await transport.call("/v3/lease/grant", {"TTL": int(ttl)})
    return int(resp["ID"])


async def keepalive(transport: Transport, lease_id: int) -> int:
    # the gateway serves the keep-alive stream as one JSON line per request sent: {"result": {...}}
    resp = await transport.call("/v3/lease/keepalive", {"ID": lease_id})
    if "error" in resp:
        err = resp["error"]
        raise transport.error_from(transport.endpoint, int(err.get("grpc_code", err.get("code", -1))),
                                   str(err.get("message")))
    return int(resp.get("result", resp).get("TTL", 0))


async def revoke(transport: Transport, lease_id: int) -> None:
    try:
        await transport.call("/v3/lease/revoke", {"ID": lease_id})
    except EtcdError as exc:
        if "lease not found" not in exc.message:
            raise
        event(log, "lease_revoke_absent", logging.DEBUG, lease=f"{lease_id:x}")  # already gone: revoking is idempotent


async def keep_alive(transport: Transport, lease_id: int, ttl: int, *,
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Refresh every ttl/3 until cancelled. Rides out etcd outages as long as the lease can still be alive;
    raises LeaseExpired once etcd says it is gone or the TTL ran out without a successful refresh."""
    interval = max(ttl / 3, 0.1)
    deadline = trio.current_time() + ttl  # assume the caller just granted or refreshed it
    started = False
    while True:
        try:
            left = await keepalive(transport, lease_id)
        except DatastoreError as exc:
            if trio.current_time() >= deadline:
                raise LeaseExpired(f"lease {lease_id:x} could not be refreshed within its TTL: {exc}") from exc
            event(log, "lease_refresh_failed", logging.WARNING, lease=f"{lease_id:x}", reason=str(exc))
            await trio.sleep(min(interval, max(deadline - trio.current_time(), 0.05), 1.0))
            continue
        if left <= 0:
            raise LeaseExpired(f"lease {lease_id:x} has expired")
        deadline = trio.current_time() + left
        if not started:
            task_status.started()
            started = True
        await trio.sleep(interval)
