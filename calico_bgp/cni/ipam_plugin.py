"""calico-bgp-ipam: a CNI IPAM plugin that allocates from this project's block IPAM for its node.

Follows Calico's calico-ipam (projectcalico/calico cni-plugin/pkg/ipamplugin/ipam_plugin.go):
the handle is `<network name>.<CNI_CONTAINERID>`; the allocation's attributes are the node, a
timestamp and, from CNI_ARGS, the pod and namespace; IPv4 unless `assign_ipv4: "false"`, IPv6
when `assign_ipv6: "true"`, from `ipv4_pools` / `ipv6_pools` when given; DEL releases by handle,
then by the workload ID older plugins used (`<namespace>.<pod>`, else the container ID), and is
idempotent; a host-wide lock (`ipam_lock_file`) serialises this host's plugins so they do
not fight over the node's block. Beyond calico-ipam: a repeated ADD for one container returns
the addresses its handle holds; CHECK compares them with prevResult; GC releases this node's
handles of this network whose container `cni.dev/valid-attachments` does not list; STATUS is 50
while etcd cannot be reached or no pool can serve the node.

Each address is given with its block's prefix length and the link-local gateway Calico's
containers route through (169.254.1.1, fe80::1), so point-to-point plugins (ptp) can route it;
calico-bgp-cni uses the address alone, as a /32 or /128. The ipam section's `routes` are passed
through, as host-local does. The work runs on a blocking etcd client without an event loop:
a plugin is exec'd once per container and trio and httpx cost more to import than it runs.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from calico_bgp.cni import pools as pool_choice
from calico_bgp.cni import skel
from calico_bgp.cni.error import (
    ALLOCATION_MISMATCH,
    INTERNAL,
    INVALID_CONFIG,
    IO_FAILURE,
    NOT_AVAILABLE,
    POOL_EXHAUSTED,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CNIError,
)
from calico_bgp.cni.netconf import NetConf, node_name
from calico_bgp.cni.result import IPConfig, Result, Route, from_json
from dataplane.logfmt import event

PLUGIN = "calico-bgp-ipam"
GATEWAYS = {4: "169.254.1.1", 6: "fe80::1"}
DEFAULT_LOCK = "/var/run/calico-bgp/ipam.lock"
log = logging.getLogger("cni.ipam")
# Beyond Calico's attributes (node, pod, namespace, timestamp): the network and container an address
# is for, so GC matches them exactly; the handle alone is ambiguous when either holds a dot.
NETWORK_ATTR, CONTAINER_ATTR = "network", "container"


def abandoned() -> bool:
    """Whether the executable that asked for this invocation gave up on it (the warm process,
    cni/service.py, sets its own for each invocation it runs); looked at once the host lock is
    held, before anything is written: an ADD its executable redid in process, and the runtime then
    DELeted, must not allocate after that DEL (flock is not FIFO). In its own process: never."""
    return False


def handle_id(network: str, container_id: str) -> str:
    """Calico's handle: `<network name>.<container id>` (utils.GetHandleID)."""
    return f"{network}.{container_id}"


# --- the handlers ---------------------------------------------------------------------------------
def add(req: skel.Request) -> Result:
    conf, inv = req.conf, req.invocation
    families = [v for v, on in ((4, conf.ipam.assign_ipv4), (6, conf.ipam.assign_ipv6)) if on]
    if not families:
        raise CNIError(INVALID_CONFIG, "ipam: assign_ipv4 and assign_ipv6 are both false: nothing to allocate")
    node = node_name(conf)
    handle = handle_id(conf.name, inv.container_id)
    attrs = {"node": node, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             NETWORK_ATTR: conf.name, CONTAINER_ATTR: inv.container_id}
    pod = inv.pod()
    if pod:
        attrs["namespace"], attrs["pod"] = pod
    with Session(conf, node) as s:
        held = s.run(s.held(handle))
        missing = [v for v in families if not any(ip.version == v for ip in held)]
        got = s.run(s.allocate(handle, missing, attrs)) if missing else []
    ips = tuple(ip for ip in (*held, *got) if ip.version in families)
    event(log, "cni_ipam_add", node=node, handle=handle, addresses=",".join(ip.address for ip in ips),
          reused=len(ips) - len(got))
    routes = tuple(Route(r["dst"], r.get("gw")) for r in conf.ipam.routes)
    return Result(ips=tuple(sorted(ips, key=lambda ip: ip.version)), routes=routes)


def workload_id(inv: Any) -> str:
    """The handle older Calico plugins (v2.x) allocated under: `<namespace>.<pod>` for a Kubernetes pod,
    else the container ID (ipam_plugin.go cmdDel's workloadID)."""
    pod = inv.pod()
    return f"{pod[0]}.{pod[1]}" if pod else inv.container_id


def delete(req: skel.Request) -> None:
    """Release by handle, then by the workload ID, as Calico's cmdDel does (cni-plugin/pkg/ipamplugin/
    ipam_plugin.go): an address an older plugin allocated for this workload goes too."""
    handle = handle_id(req.conf.name, req.invocation.container_id)
    older = workload_id(req.invocation)
    with Session(req.conf, node_name(req.conf)) as s:
        n = s.run(s.allocator.release_handle(handle))
        by_workload = s.run(s.allocator.release_handle(older)) if older != handle else 0
    event(log, "cni_ipam_del", handle=handle, released=n, workload_id=older if by_workload else None,
          released_by_workload_id=by_workload or None)


def check(req: skel.Request) -> None:
    conf = req.conf
    if conf.prev_result is None:
        raise CNIError(INVALID_CONFIG, "CHECK: prevResult missing (the runtime passes the result of the ADD)")
    expected = {ip.ip for ip in from_json(conf.prev_result).ips}
    handle = handle_id(conf.name, req.invocation.container_id)
    with Session(conf, node_name(conf), lock=False) as s:  # a read: no need to queue behind ADDs
        held = {ip.ip for ip in s.run(s.held(handle))}
    if not held:
        raise CNIError(UNKNOWN_CONTAINER, f"container {req.invocation.container_id}: IPAM holds no address for "
                                          f"handle {handle}")
    if not expected <= held:
        raise CNIError(ALLOCATION_MISMATCH, f"handle {handle}: prevResult has {', '.join(sorted(expected - held))}, "
                                            f"which IPAM does not hold for it (it holds {', '.join(sorted(held))})")


def gc(req: skel.Request) -> None:
    conf = req.conf
    if conf.valid_attachments is None:
        raise CNIError(INVALID_CONFIG, "GC: cni.dev/valid-attachments missing (without it every attachment "
                                       "would look stale)")
    valid = {cid for cid, _ in conf.valid_attachments}
    node = node_name(conf)
    with Session(conf, node) as s:
        stale = s.run(s.stale_handles(conf.name, valid))
        for handle in stale:
            s.run(s.allocator.release_handle(handle))
    event(log, "cni_ipam_gc", node=node, network=conf.name, kept=len(valid), released_handles=len(stale))


def status(req: skel.Request) -> None:
    conf = req.conf
    node = node_name(conf)
    try:
        with Session(conf, node, lock=False) as s:
            s.run(s.client.status())
            for version, on, wanted in ((4, conf.ipam.assign_ipv4, conf.ipam.ipv4_pools),
                                        (6, conf.ipam.assign_ipv6, conf.ipam.ipv6_pools)):
                if on and not s.run(s.pools(version, wanted)):
                    raise CNIError(NOT_AVAILABLE, f"no enabled IPv{version} IPPool can serve node {node}")
    except CNIError as exc:
        if exc.code == TRY_AGAIN_LATER:
            raise CNIError(NOT_AVAILABLE, exc.msg, exc.details) from None
        raise


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


def main() -> None:
    """The `calico-bgp-ipam` console script."""
    skel.main(PLUGIN, HANDLERS)


# --- the session: etcd, the allocator, the host lock -----------------------------------------------
class Session:
    """One invocation's connection to etcd and its allocator; IPAM and datastore errors leave it as
    the spec's codes (ipam/errors.py and datastore/errors.py -> CNIError)."""

    def __init__(self, conf: NetConf, node: str, lock: bool = True) -> None:
        from calico_bgp.datastore.blocking import BlockingClient
        from calico_bgp.datastore.keys import DEFAULT_PREFIX, Keys
        from calico_bgp.datastore.types import TLSConfig
        from ipam.allocator import BlockAllocator

        self.conf, self.node = conf, node
        tls = None
        if any(e.startswith("https:") for e in conf.etcd_endpoints):
            for field, path in (("etcd_ca_cert_file", conf.etcd_ca_cert_file), ("etcd_cert_file", conf.etcd_cert_file),
                                ("etcd_key_file", conf.etcd_key_file)):
                if path and not _readable(path):
                    raise CNIError(INVALID_CONFIG, f"{field}: {path} cannot be read")
            tls = TLSConfig(conf.etcd_ca_cert_file, conf.etcd_cert_file, conf.etcd_key_file)
        self.client = BlockingClient(conf.etcd_endpoints, tls=tls)
        self.keys = Keys(conf.etcd_prefix or DEFAULT_PREFIX)
        self.allocator = BlockAllocator(self.client, self.keys, pause=_pause)
        self._lock_path = (conf.ipam_lock_file or DEFAULT_LOCK) if lock else None
        self._lock_fd: int | None = None
        self._cluster: tuple[list[Any], dict[str, str]] | None = None

    def __enter__(self) -> "Session":
        if self._lock_path:
            self._lock_fd = _host_lock(self._lock_path)
        if abandoned():
            self.__exit__()
            raise CNIError(TRY_AGAIN_LATER, "its executable gave up waiting: not run here (it runs it itself)")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self._lock_fd is not None:
            import os

            os.close(self._lock_fd)  # closing the descriptor drops the flock

    def run(self, coro: Any) -> Any:
        """Run one IPAM coroutine on the blocking client; its typed errors become CNIErrors."""
        from calico_bgp.datastore.blocking import drive

        try:
            return drive(coro)
        except CNIError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped by type below, the rest re-raised
            mapped = _cni_error(exc)
            if mapped is None:
                raise
            raise mapped from None

    async def held(self, handle: str) -> list[IPConfig]:
        """The addresses `handle` holds now (a repeated ADD returns them)."""
        from ipam.store import decode_handle

        kv = await self.client.get(self.keys.handle(handle))
        if kv is None:
            return []
        h = decode_handle(kv.key, kv.value)
        blocks = await self.allocator.store.get_blocks(sorted(h.blocks), self.allocator.corrupt)
        return [_ip_config(u.ip, cidr) for cidr, stored in blocks.items() if stored is not None
                for u in stored.value.in_use() if u.handle == handle]

    async def pools(self, version: int, wanted: tuple[str, ...] = ()) -> list[Any]:
        """The ipam Pools this node may allocate from (IPPools and the Node's labels, read once)."""
        from ipam.pool import Pool

        if self._cluster is None:
            self._cluster = await self._read_cluster()
        ippools, labels = self._cluster
        field = "ipv4_pools" if version == 4 else "ipv6_pools"
        chosen = pool_choice.choose(ippools, labels, wanted, version, field)
        return [Pool(p.name, p.cidr, p.block_size, p.disabled) for p in chosen]

    async def _read_cluster(self) -> tuple[list[pool_choice.PoolRow], dict[str, str]]:
        """Every IPPool and this node's labels, in one round trip, as stored (pools.py reads the fields
        it needs); a value that does not read is logged and left out (it spoils nothing else)."""
        from calico_bgp.datastore.types import Get

        res = await self.client.txn([], [Get(self.keys.pools(), prefix=True), Get(self.keys.node(self.node))], [])
        pool_kvs, node_kvs = res.responses
        ippools = []
        for kv in pool_kvs:
            try:
                ippools.append(pool_choice.stored_pool(kv.value))
            except ValueError as exc:  # one corrupt pool spoils nothing else (JSON and selector errors included)
                event(log, "cni_pool_unreadable", logging.WARNING, key=kv.key, error=str(exc))
        labels: dict[str, str] = {}
        for kv in node_kvs:
            try:
                labels = pool_choice.stored_labels(kv.value)
            except ValueError as exc:
                event(log, "cni_node_unreadable", logging.WARNING, key=kv.key, error=str(exc))
        return ippools, labels

    async def allocate(self, handle: str, families: list[int], attrs: dict[str, str]) -> list[IPConfig]:
        """One address per family, all or nothing: a family that fails gives back the ones before it."""
        got: list[Any] = []
        try:
            for version in families:
                wanted = self.conf.ipam.ipv4_pools if version == 4 else self.conf.ipam.ipv6_pools
                eligible = await self.pools(version, wanted)
                if not eligible:
                    raise CNIError(POOL_EXHAUSTED, f"no enabled IPv{version} IPPool can serve node {self.node}")
                got += await self.allocator.allocate(self.node, handle, 1, eligible, attrs, ipv6=version == 6)
        except BaseException:
            if got:  # the error the caller sees stays the first one, whatever the roll-back meets
                try:
                    await self.allocator.release([(a.ip, a.seq) for a in got], blocks=[a.block for a in got])
                    event(log, "cni_ipam_rolled_back", handle=handle, released=",".join(a.ip for a in got))
                except Exception as exc:  # noqa: BLE001 - `calico-bgp ipam check` finds what is left
                    event(log, "cni_ipam_rollback_failed", logging.ERROR, handle=handle,
                          addresses=",".join(a.ip for a in got), error=str(exc))
            raise
        return [_ip_config(a.ip, a.block) for a in got]

    async def stale_handles(self, network: str, valid: set[str]) -> list[str]:
        """This node's handles of `network` whose container is not in `valid`. The network and
        container are read from the allocation's attributes; an allocation stored without them (an
        older plugin's) is judged by its handle only when that is unambiguous (no dot after
        `<network>.`), else left alone: a handle `net.a.c1` may be network `net.a`'s."""
        prefix = f"{network}."
        handles = await self.allocator.store.handles(self.allocator.corrupt)
        mine = {h: stored.value for h, stored in handles.items()
                if h.startswith(prefix) and stored.value.node == self.node}
        blocks = await self.allocator.store.get_blocks(sorted({b for h in mine.values() for b in h.blocks}),
                                                       self.allocator.corrupt)
        owners: dict[str, dict[str, str]] = {}
        for stored in blocks.values():
            for u in (stored.value.in_use() if stored is not None else ()):
                if u.handle in mine:
                    owners.setdefault(u.handle, dict(u.owner_attrs))
        stale = []
        for h in sorted(mine):
            attrs = owners.get(h, {})
            if NETWORK_ATTR in attrs and CONTAINER_ATTR in attrs:
                if attrs[NETWORK_ATTR] == network and attrs[CONTAINER_ATTR] not in valid:
                    stale.append(h)
            elif "." not in h[len(prefix):] and h[len(prefix):] not in valid:
                stale.append(h)
        return stale


async def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _ip_config(ip: str, block: str) -> IPConfig:
    version = 6 if ":" in ip else 4
    return IPConfig(f"{ip}/{block.rsplit('/', 1)[1]}", GATEWAYS[version])


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _host_lock(path: str) -> int | None:
    """Calico's best-effort host-wide IPAM lock: wait for it; if it cannot be had, go on without."""
    import fcntl
    import os

    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)  # root's, as the service's
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        event(log, "cni_ipam_lock_unavailable", logging.WARNING, path=path, error=exc.strerror or str(exc))
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _cni_error(exc: Exception) -> CNIError | None:
    """IPAM's and the datastore's typed errors as the spec's codes; None for what is not theirs."""
    from calico_bgp.datastore.errors import AuthFailed, DatastoreError, EtcdUnavailable
    from ipam import errors as e

    if isinstance(exc, EtcdUnavailable):
        return CNIError(TRY_AGAIN_LATER, str(exc))
    if isinstance(exc, AuthFailed):
        return CNIError(INVALID_CONFIG, str(exc))
    if isinstance(exc, DatastoreError):
        return CNIError(IO_FAILURE, str(exc))
    if isinstance(exc, (e.PoolExhausted, e.NoEligiblePool)):
        return CNIError(POOL_EXHAUSTED, str(exc))
    if isinstance(exc, e.BlockConflict):
        return CNIError(TRY_AGAIN_LATER, str(exc))
    if isinstance(exc, e.CorruptBlock):
        return CNIError(IO_FAILURE, str(exc))
    if isinstance(exc, e.IPAMError):
        return CNIError(INTERNAL, str(exc))
    return None


if __name__ == "__main__":
    main()
