"""Resources in etcd: a typed store with cross-resource checks, and the YAML documents users apply.

Pure parts first (YAML documents <-> resources, consistency checks over a snapshot), then the
`ResourceStore`, which only reads a snapshot, asks the pure checks, and writes in one transaction
guarded by compare-and-swap on every key it read to decide.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Iterable, Mapping, Sequence

import attrs
import yaml

from calico_bgp.datastore.keys import Keys
from calico_bgp.datastore.types import Compare, Delete, Get, KeyValue, Put
from calico_bgp.resources import model
from calico_bgp.resources.model import InvalidResource, Resource, UnknownKind

log = logging.getLogger("calico_bgp.resources.store")

API_VERSION = "calico-bgp/v1"
CALICO_API_VERSION = "projectcalico.org/v3"
API_VERSIONS = (API_VERSION, CALICO_API_VERSION)
# Top-level document keys written by calicoctl/kubectl that carry nothing we store.
_IGNORED_TOP = frozenset({"status"})

MAX_TXN_KEYS = 100        # below etcd's default --max-txn-ops (128)
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


class ResourceInUse(InvalidResource):
    """A delete would leave another resource pointing at nothing."""


# ------------------------------------------------------------------------------------------------
# YAML documents (pure)

def kind_of(kind: str | type) -> type:
    return kind if isinstance(kind, type) else model.resolve_kind(kind)


def _document_resource(index: int, doc: Any) -> Resource | list[Resource]:
    where = f"document {index}"
    if not isinstance(doc, Mapping):
        raise InvalidResource(f"{where}: expected a mapping with apiVersion, kind, metadata and spec")
    kind = doc.get("kind")
    api = doc.get("apiVersion")
    if api not in API_VERSIONS:
        raise InvalidResource(f"{where}: apiVersion {api!r} is not supported (use {API_VERSION} or {CALICO_API_VERSION})")
    if not isinstance(kind, str) or not kind:
        raise InvalidResource(f"{where}: kind is required")
    if kind == "List" or (kind.endswith("List") and kind[:-4] in model.KINDS):
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise InvalidResource(f"{where}: items: expected a list")
        return [_item(f"{where} item {i}", item) for i, item in enumerate(items)]
    return _item(where, doc)


def _item(where: str, doc: Any) -> Resource:
    if not isinstance(doc, Mapping):
        raise InvalidResource(f"{where}: expected a mapping")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if api not in API_VERSIONS:
        raise InvalidResource(f"{where}: apiVersion {api!r} is not supported (use {API_VERSION} or {CALICO_API_VERSION})")
    cls = model.KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownKind(f"{where}: unknown kind {kind!r} (known: {', '.join(model.KINDS)})")
    if api == CALICO_API_VERSION and kind not in model.CALICO_KINDS:
        raise UnknownKind(f"{where}: {kind} is not a {CALICO_API_VERSION} kind; use apiVersion {API_VERSION}")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    label = f"{where} ({kind} {name!r})" if name else f"{where} ({kind})"
    extra = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec"} - _IGNORED_TOP)
    if extra:
        raise InvalidResource(f"{label}: {', '.join(extra)}: unknown top-level field")
    body = {k: doc[k] for k in ("metadata", "spec") if k in doc}
    return model.from_dict(cls, body, where=label)


def load_documents(text: str) -> list[Resource]:
    """Every resource in a multi-document YAML text, all validated; InvalidResource names each bad document.

    Documents are numbered from 1. Nothing is returned unless every document is valid."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidResource(f"YAML{where}: {problem}") from None
    if not docs:
        raise InvalidResource("no documents found")
    out: list[Resource] = []
    errors: list[str] = []
    unknown_kind = False
    for i, doc in enumerate(docs, 1):
        try:
            got = _document_resource(i, doc)
        except InvalidResource as exc:
            errors.append(str(exc))
            unknown_kind = unknown_kind or isinstance(exc, UnknownKind)
            continue
        out.extend(got if isinstance(got, list) else [got])
    seen: set[tuple[str, str]] = set()
    for r in out:
        ident = (r.kind, r.metadata.name)
        if ident in seen:
            errors.append(f"{model.describe(r)} appears more than once")
        seen.add(ident)
    if errors:
        raise (UnknownKind if unknown_kind else InvalidResource)("; ".join(errors))
    return out


def to_document(resource: Resource) -> dict[str, Any]:
    """The resource as a document `apply` takes back: apiVersion, kind, metadata, spec."""
    body = model.to_dict(resource)
    return {"apiVersion": API_VERSION, "kind": resource.kind, **body}


def dump_documents(resources: Iterable[Resource]) -> str:
    return yaml.safe_dump_all([to_document(r) for r in resources], sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------------------------------------
# Consistency across resources (pure, over a snapshot)

State = Mapping[str, Mapping[str, Any]]   # kind -> name -> resource


def _pools_overlap(a: model.IPPool, b: model.IPPool) -> bool:
    na, nb = a.spec.network, b.spec.network
    return na.version == nb.version and na.overlaps(nb)  # type: ignore[arg-type]


def check_apply(current: State, batch: Sequence[Resource]) -> None:
    """Raise InvalidResource naming every problem `batch` would create on top of `current`."""
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in current.items()}
    for r in batch:
        merged.setdefault(r.kind, {})[r.metadata.name] = r
    errors: list[str] = []
    pools = merged.get("IPPool", {})
    reported: set[frozenset[str]] = set()
    for r in batch:
        if isinstance(r, model.IPPool):
            old = current.get("IPPool", {}).get(r.name)
            if old is not None and old.spec.cidr != r.spec.cidr:
                errors.append(f"IPPool {r.name!r}: spec.cidr cannot change ({old.spec.cidr} -> {r.spec.cidr}); "
                              "create a new pool and delete this one")
            elif old is not None and old.spec.block_size != r.spec.block_size:
                errors.append(f"IPPool {r.name!r}: spec.blockSize cannot change ({old.spec.block_size} -> "
                              f"{r.spec.block_size}); create a new pool and delete this one")
            for other in pools.values():
                pair = frozenset((r.name, other.name))
                if other.name != r.name and pair not in reported and _pools_overlap(r, other):
                    reported.add(pair)
                    errors.append(f"IPPool {r.name!r} ({r.spec.cidr}) overlaps IPPool {other.name!r} "
                                  f"({other.spec.cidr})")
        elif isinstance(r, model.BGPPeer):
            for f in r.spec.filters:
                if f not in merged.get("BGPFilter", {}):
                    errors.append(f"BGPPeer {r.name!r}: spec.filters: BGPFilter {f!r} does not exist")
            if r.spec.node and r.spec.node not in merged.get("Node", {}):
                errors.append(f"BGPPeer {r.name!r}: spec.node: Node {r.spec.node!r} does not exist")
    if errors:
        raise InvalidResource("; ".join(errors))


def check_delete(current: State, kind: str, name: str) -> None:
    if kind == "BGPFilter":
        users = sorted(p.name for p in current.get("BGPPeer", {}).values() if name in p.spec.filters)
        if users:
            raise ResourceInUse(f"BGPFilter {name!r} is used by BGPPeer {', '.join(repr(u) for u in users)}; "
                                "remove it from their spec.filters first")
    if kind == "Node":
        users = sorted(p.name for p in current.get("BGPPeer", {}).values() if p.spec.node == name)
        if users:
            raise ResourceInUse(f"Node {name!r} is the spec.node of BGPPeer {', '.join(repr(u) for u in users)}; "
                                "delete those peers (or point them elsewhere) first")


def dependencies(current: State, batch: Sequence[Resource]) -> list[tuple[str, str]]:
    """(kind, name) of the stored resources a decision about `batch` was based on."""
    deps: set[tuple[str, str]] = set()
    for r in batch:
        if isinstance(r, model.IPPool):
            deps.update(("IPPool", p.name) for p in current.get("IPPool", {}).values() if p.name != r.name
                        and p.spec.version == r.spec.version)
        elif isinstance(r, model.BGPPeer):
            deps.update(("BGPFilter", f) for f in r.spec.filters if f in current.get("BGPFilter", {}))
            if r.spec.node and r.spec.node in current.get("Node", {}):
                deps.add(("Node", r.spec.node))
    return sorted(deps)


# ------------------------------------------------------------------------------------------------
# The store (I/O)

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


class ResourceStore:
    """Typed resources over the datastore client (`EtcdClient` or anything with the same methods)."""

    def __init__(self, client: Any, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    # keys ---------------------------------------------------------------------------------------

    def key(self, kind: str | type, name: str) -> str:
        cls = kind_of(kind)
        if cls is model.BGPConfiguration:
            return self.keys.config()
        return {model.IPPool: self.keys.pool, model.Node: self.keys.node, model.BGPPeer: self.keys.peer,
                model.BGPFilter: self.keys.filter, model.PolicyFilter: self.keys.policy}[cls](name)

    def collection(self, kind: str | type) -> str:
        cls = kind_of(kind)
        if cls is model.BGPConfiguration:
            return self.keys.config()
        return {model.IPPool: self.keys.pools, model.Node: self.keys.nodes, model.BGPPeer: self.keys.peers,
                model.BGPFilter: self.keys.filters, model.PolicyFilter: self.keys.policies}[cls]()

    def kind_for_key(self, key: str) -> tuple[type, str] | None:
        """(resource class, name) for a key in one of the resource collections; None for other keys.
        For watchers: a WatchEvent's key tells which resource changed."""
        if key == self.keys.config():
            return model.BGPConfiguration, "default"
        for cls in (model.IPPool, model.Node, model.BGPPeer, model.BGPFilter, model.PolicyFilter):
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
            if cls is model.BGPConfiguration and kv.key != prefix:
                continue
            try:
                items.append(self._decode(cls, kv))
            except CorruptValue as exc:
                log.warning("event=corrupt_value key=%s problem=%r", kv.key, str(exc))
                errors.append(exc)
        items.sort(key=lambda r: r.metadata.name)
        return Listing(items, errors, res.revision)

    async def bgp_configuration(self) -> model.BGPConfiguration:
        """The cluster's BGPConfiguration, or the defaults (AS 64512, mesh on, port 179) when none is stored."""
        try:
            return await self.get(model.BGPConfiguration, "default")
        except NotFound:
            return model.BGPConfiguration()

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
                if cls is model.BGPConfiguration and kv.key != self.keys.config():
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
            kinds.update(model.KINDS[k] for k in self._DEPENDS.get(r.kind, ()))
        out: list[Applied] = []
        for start in range(0, len(resources), MAX_TXN_KEYS // 2):
            out += await self._apply_chunk(list(kinds), resources, start, MAX_TXN_KEYS // 2)
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
                    log.info("event=resource_applied kind=%s name=%s action=%s revision=%d",
                             r.kind, r.metadata.name, a, res.revision)
                return [Applied(r.kind, r.metadata.name, a, res.revision) for r, a in actions]
        raise ConflictError(f"resources kept changing while applying {len(chunk)} of them; try again")

    async def delete(self, kind: str | type, name: str) -> int:
        """Delete one resource; returns the revision. NotFound if it is not there."""
        cls = kind_of(kind)
        key = self.key(cls, name)
        # a BGPFilter or a Node a BGPPeer names must stay while the peer does (check_delete)
        kinds = [cls, model.BGPPeer] if cls in (model.BGPFilter, model.Node) else [cls]
        for _ in range(CAS_ATTEMPTS):
            snap = await self._snapshot(kinds)
            kv = snap.kvs.get(key)
            if kv is None:
                raise NotFound(f"{cls.kind} {name!r} not found")
            check_delete(snap.state, cls.kind, name)
            compares = [Compare.mod(key, kv.mod_revision)]
            if model.BGPPeer in kinds:  # no peer may have started using it since we looked
                compares.append(Compare.unchanged_since(self.collection(model.BGPPeer), snap.revision))
            res = await self.client.txn(compares, [Delete(key)], [])
            if res.succeeded:
                log.info("event=resource_deleted kind=%s name=%s revision=%d", cls.kind, name, res.revision)
                return res.revision
        raise ConflictError(f"{cls.kind} {name!r} kept changing while deleting it; try again")


def overlapping(pools: Iterable[model.IPPool], cidr: str) -> list[model.IPPool]:
    """Pools whose CIDR overlaps `cidr` (for callers outside the store, e.g. diagnostics)."""
    net = ipaddress.ip_network(cidr)
    return [p for p in pools if p.spec.network.version == net.version and p.spec.network.overlaps(net)]  # type: ignore[arg-type]
