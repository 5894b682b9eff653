"""The typed resource store in etcd: reads that decode (a corrupt value names its key and spoils
nothing else), and writes that are checked first (consistency.py) and then made in one transaction,
guarded by compare-and-swap on every key read to decide.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import attrs

from calico_bgp.datastore.keys import Keys
from calico_bgp.datastore.types import Compare, Delete, Get, KeyValue, Put
from calico_bgp.resources import model
from calico_bgp.resources.bfdconfig import BFDConfiguration
from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.bgpfilter import BGPFilter
from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.consistency import check_apply, check_delete, dependencies
from calico_bgp.resources.fields import InvalidResource
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.kinds import KINDS, Resource, kind_of
from calico_bgp.resources.node import Node
from calico_bgp.resources.policyfilter import PolicyFilter
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.resources.store")

MAX_TXN_KEYS = 100        # below etcd's default --max-txn-ops (128)
MAX_TXN_BYTES = 1024 * 1024  # values in one transaction, below etcd's default --max-request-bytes (1.5 MiB)
CAS_ATTEMPTS = 8


class NotFound(LookupError):
    """No resource of that kind and name."""


class ConflictError(Exception):
    """The resources changed underneath us on every attempt; nothing was written by the last one."""


class CorruptValue(Exception):
    """A stored value does not decode; names the key. Other keys keep working."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(problem if problem.startswith(key) else f"{key}: {problem}")


@attrs.frozen
class Listing:
    """What `list` found: the resources that decode, and one CorruptValue per key that does not."""
    items: list[Any]
    errors: list[CorruptValue]
    revision: int

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@attrs.frozen
class Applied:
    kind: str
    name: str
    action: str      # created | updated | unchanged
    revision: int


@attrs.frozen
class _Snapshot:
    state: dict[str, dict[str, Any]]          # kind -> name -> resource (only valid ones)
    kvs: dict[str, KeyValue]                   # key -> stored kv (valid or not)
    errors: list[CorruptValue]
    revision: int


def chunks(sizes: Sequence[int], resources: Sequence[Resource]) -> list[tuple[int, int]]:
    """(start, count) of each transaction: at most MAX_TXN_KEYS // 2 resources and MAX_TXN_BYTES of
    values each. A resource larger than MAX_TXN_BYTES alone is refused (InvalidResource) before
    anything is written, rather than sent for etcd to refuse."""
    too_big = [f"{model.describe(r)} is {n:,} bytes stored (at most {MAX_TXN_BYTES:,})"
               for r, n in zip(resources, sizes) if n > MAX_TXN_BYTES]
    if too_big:
        raise InvalidResource("; ".join(too_big))
    out: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, n in enumerate(sizes):
        if i > start and (i - start >= MAX_TXN_KEYS // 2 or used + n > MAX_TXN_BYTES):
            out.append((start, i - start))
            start, used = i, 0
        used += n
    if start < len(sizes):
        out.append((start, len(sizes) - start))
    return out


class ResourceStore:
    """Typed resources over the datastore client (`EtcdClient` or anything with the same methods)."""

    def __init__(self, client: Any, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    # keys ---------------------------------------------------------------------------------------

    def key(self, kind: str | type, name: str) -> str:
        cls = kind_of(kind)
        if cls is BGPConfiguration:  # the cluster's at config(); a node's ('node.<name>') under it
            return self.keys.config() if name == "default" else f"{self.keys.config()}/{name}"
        return {IPPool: self.keys.pool, Node: self.keys.node, BGPPeer: self.keys.peer,
                BGPFilter: self.keys.filter, PolicyFilter: self.keys.policy,
                BFDConfiguration: self.keys.bfd_config}[cls](name)

    def collection(self, kind: str | type) -> str:
        cls = kind_of(kind)
        if cls is BGPConfiguration:
            return self.keys.config()
        return {IPPool: self.keys.pools, Node: self.keys.nodes, BGPPeer: self.keys.peers,
                BGPFilter: self.keys.filters, PolicyFilter: self.keys.policies,
                BFDConfiguration: self.keys.bfd_configs}[cls]()

    def kind_for_key(self, key: str) -> tuple[type, str] | None:
        """(resource class, name) for a key in one of the resource collections; None for other keys.
        For watchers: a WatchEvent's key tells which resource changed."""
        if key == self.keys.config():
            return BGPConfiguration, "default"
        if key.startswith(self.keys.config() + "/node.") and "/" not in key[len(self.keys.config()) + 1:]:
            return BGPConfiguration, key[len(self.keys.config()) + 1:]  # a node's own: 'node.<name>'
        for cls in (IPPool, Node, BGPPeer, BGPFilter, PolicyFilter, BFDConfiguration):
            prefix = self.collection(cls)
            if key.startswith(prefix) and "/" not in key[len(prefix):] and key != prefix:
                return cls, key[len(prefix):]
        return None

    def decode(self, kv: KeyValue) -> Any:
        """The resource stored in `kv` (as read from a range or a watch); CorruptValue names the key."""
        found = self.kind_for_key(kv.key)
        if found is None:
            raise CorruptValue(kv.key, "not a resource key")
        return self._decode(found[0], kv)

    def _decode(self, cls: type, kv: KeyValue) -> Any:
        try:
            return model.decode(cls, kv.value, where=kv.key)
        except InvalidResource as exc:
            raise CorruptValue(kv.key, str(exc)) from None

    # reads --------------------------------------------------------------------------------------

    async def get(self, kind: str | type, name: str) -> Any:
        cls = kind_of(kind)
        kv = await self.client.get(self.key(cls, name))
        if kv is None:
            raise NotFound(f"{cls.kind} {name!r} not found")
        return self._decode(cls, kv)

    async def list(self, kind: str | type) -> Listing:
        cls = kind_of(kind)
        prefix = self.collection(cls)
        res = await self.client.range(prefix)
        items, errors = [], []
        for kv in res.kvs:
            if cls is BGPConfiguration and kv.key != prefix and not kv.key.startswith(prefix + "/node."):
                continue
            try:
                items.append(self._decode(cls, kv))
            except CorruptValue as exc:
                event(log, "corrupt_value", logging.WARNING, key=kv.key, problem=str(exc))
                errors.append(exc)
        items.sort(key=lambda r: r.metadata.name)
        return Listing(items, errors, res.revision)

    async def bgp_configuration(self) -> BGPConfiguration:
        """The cluster's BGPConfiguration, or the defaults (AS 64512, mesh on, port 179) when none is stored."""
        try:
            return await self.get(BGPConfiguration, "default")
        except NotFound:
            return BGPConfiguration()

    async def _snapshot(self, kinds: Iterable[type]) -> _Snapshot:
        """One consistent read of several collections (one transaction of range Gets)."""
        kinds = list(dict.fromkeys(kinds))
        res = await self.client.txn([], [Get(self.collection(c), prefix=True) for c in kinds], [])
        state: dict[str, dict[str, Any]] = {}
        kvs: dict[str, KeyValue] = {}
        errors: list[CorruptValue] = []
        for cls, found in zip(kinds, res.responses):
            bucket = state.setdefault(cls.kind, {})
            for kv in found or []:
                config = self.keys.config()
                if cls is BGPConfiguration and kv.key != config and not kv.key.startswith(config + "/node."):
                    continue
                kvs[kv.key] = kv
                try:
                    r = self._decode(cls, kv)
                except CorruptValue as exc:
                    errors.append(exc)
                    continue
                bucket[r.metadata.name] = r
        return _Snapshot(state, kvs, errors, res.revision)

    # writes -------------------------------------------------------------------------------------

    _DEPENDS = {"IPPool": ("IPPool",), "BGPPeer": ("BGPPeer", "BGPFilter", "Node")}

    async def apply(self, resource: Resource) -> Applied:
        return (await self.apply_all([resource]))[0]

    async def apply_all(self, resources: Sequence[Resource]) -> list[Applied]:
        """Create or update every resource. All are checked against the stored state first; when the
        batch fits one transaction it is written atomically, guarded by CAS on every key read to decide.

        The guard sees keys that changed or vanished, not keys created meanwhile: two concurrent applies of
        two new, overlapping pools can both pass (etcd range compares are not exposed by the client)."""
        if not resources:
            return []
        kinds = {type(r) for r in resources}
        for r in resources:
            kinds.update(KINDS[k] for k in self._DEPENDS.get(r.kind, ()))
        out: list[Applied] = []
        for start, size in chunks([len(model.encode(r)) for r in resources], resources):
            out += await self._apply_chunk(list(kinds), resources, start, size)
        return out

    async def _apply_chunk(self, kinds: list[type], resources: Sequence[Resource], start: int,
                           size: int) -> list[Applied]:
        chunk = resources[start:start + size]
        for _ in range(CAS_ATTEMPTS):
            snap = await self._snapshot(kinds)
            # Later chunks are checked against everything in the batch so cross references resolve.
            check_apply(snap.state, [*chunk, *resources[start + size:], *resources[:start]])
            compares, puts, actions = [], [], []
            for r in chunk:
                key = self.key(r.kind, r.metadata.name)
                kv = snap.kvs.get(key)
                raw = model.encode(r)
                if kv is not None and kv.value == raw:
                    actions.append((r, "unchanged"))
                    compares.append(Compare.mod(key, kv.mod_revision))
                    continue
                compares.append(Compare.mod(key, kv.mod_revision if kv else 0))
                puts.append(Put(key, raw))
                actions.append((r, "updated" if kv else "created"))
            for kind, name in dependencies(snap.state, chunk)[:MAX_TXN_KEYS - len(compares)]:
                key = self.key(kind, name)
                if key in snap.kvs and all(c.key != key for c in compares):
                    compares.append(Compare.mod(key, snap.kvs[key].mod_revision))
            if not puts:
                return [Applied(r.kind, r.metadata.name, a, snap.revision) for r, a in actions]
            res = await self.client.txn(compares, puts, [])
            if res.succeeded:
                for r, a in actions:
                    event(log, "resource_applied", kind=r.kind, name=r.metadata.name, action=a, revision=res.revision)
                return [Applied(r.kind, r.metadata.name, a, res.revision) for r, a in actions]
        raise ConflictError(f"resources kept changing while applying {len(chunk)} of them; try again")

    async def delete(self, kind: str | type, name: str) -> int:
        """Delete one resource; returns the revision. NotFound if it is not there."""
        cls = kind_of(kind)
        key = self.key(cls, name)
        # a BGPFilter or a Node a BGPPeer names must stay while the peer does (check_delete)
        kinds = [cls, BGPPeer] if cls in (BGPFilter, Node) else [cls]
        for _ in range(CAS_ATTEMPTS):
            snap = await self._snapshot(kinds)
            kv = snap.kvs.get(key)
            if kv is None:
                raise NotFound(f"{cls.kind} {name!r} not found")
            check_delete(snap.state, cls.kind, name)
            compares = [Compare.mod(key, kv.mod_revision)]
            if BGPPeer in kinds:  # no peer may have started using it since we looked
                compares.append(Compare.unchanged_since(self.collection(BGPPeer), snap.revision))
            res = await self.client.txn(compares, [Delete(key)], [])
            if res.succeeded:
                event(log, "resource_deleted", kind=cls.kind, name=name, revision=res.revision)
                return res.revision
        raise ConflictError(f"{cls.kind} {name!r} kept changing while deleting it; try again")
