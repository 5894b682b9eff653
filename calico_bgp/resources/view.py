"""The agent's view of the cluster: every resource and IPAM block, kept current by one etcd watch.

One range of the whole prefix but the status documents (`status/` sorts after every key read here),
then one watch of the same range from the revision after it. Values that do not
decode are logged with their key and left out (the last good value of that key is kept), so one
bad resource never stops the agent. Consumers wait on `changed()` and read `snapshot()`.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import trio

from calico_bgp.datastore import Keys, KeyValue, Resync, WatchBatch
from calico_bgp.datastore.keys import cidr_from_key
from calico_bgp.resources.bfdconfig import BFDConfiguration
from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.bgpfilter import BGPFilter
from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.node import Node
from calico_bgp.resources.policyfilter import PolicyFilter
from calico_bgp.resources.store import CorruptValue, ResourceStore
from dataplane.logfmt import event
from ipam.block import Block
from ipam.errors import CorruptBlock
from ipam.store import decode_block

log = logging.getLogger("calico_bgp.resources.view")


@attrs.frozen
class ClusterState:
    """A consistent-enough picture: everything as of `revision`."""

    revision: int
    config: BGPConfiguration
    nodes: dict[str, Node]
    pools: dict[str, IPPool]
    peers: dict[str, BGPPeer]
    filters: dict[str, BGPFilter]
    policies: dict[str, PolicyFilter]
    blocks: dict[str, Block]              # cidr -> block
    corrupt: dict[str, str]               # key -> why it was left out
    secrets: dict[str, dict[str, str]] = attrs.field(factory=dict, repr=False)  # never logged
    bfd_configs: dict[str, BFDConfiguration] = attrs.field(factory=dict)
    node_configs: dict[str, BGPConfiguration] = attrs.field(factory=dict)  # 'node.<name>' by node name


_COLLECTIONS = {Node: "nodes", IPPool: "pools", BGPPeer: "peers",
                BGPFilter: "filters", PolicyFilter: "policies", BFDConfiguration: "bfd_configs"}


class ClusterView:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.store = ResourceStore(client, keys)
        self.revision = 0
        self._values: dict[str, dict[str, Any]] = {
            name: {} for name in (*_COLLECTIONS.values(), "blocks", "secrets", "node_configs")}
        self._config: BGPConfiguration = BGPConfiguration()
        self._corrupt: dict[str, str] = {}
        self._changed = trio.Event()
        self._blocks_prefix = keys.blocks()
        self._secrets_prefix = keys.secrets()

    # --- reading ---------------------------------------------------------------------------------
    def snapshot(self) -> ClusterState:
        """Everything as of `revision`; BGPPeers that make no session here yet (no peerIP nor peerSelector,
        or a peerIP without asNumber: stored, see pending.py) are left out of `peers`."""
        v = self._values
        peers = {n: p for n, p in v["peers"].items() if p.spec.makes_sessions}
        return ClusterState(self.revision, self._config, dict(v["nodes"]), dict(v["pools"]), peers,
                            dict(v["filters"]), dict(v["policies"]), dict(v["blocks"]), dict(self._corrupt),
                            dict(v["secrets"]), dict(v["bfd_configs"]), dict(v["node_configs"]))

    async def read_once(self) -> ClusterState:
        """Everything as it is now, from one range of the prefix (no watch): what `node sessions` reads."""
        snap = await self.client.range(self.keys.prefix.rstrip("/") + "/")
        self._load(snap.kvs, snap.revision)
        return self.snapshot()

    async def changed(self) -> None:
        """Return once something changed since the last call returned."""
        await self._changed.wait()
        self._changed = trio.Event()

    # --- syncing ---------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        prefix = self.keys.prefix.rstrip("/") + "/"
        # every key up to the status documents, which sort last and which nothing here reads: each
        # node's, up to a few hundred kB, came back through every agent's watch at every publish
        end = self.keys.statuses()
        snap = await self.client.range(prefix, end=end)
        self._load(snap.kvs, snap.revision)
        task_status.started()
        async with self.client.watch(prefix, snap.revision + 1, end=end) as watch:
            async for item in watch:
                if isinstance(item, Resync):
                    self._load(item.kvs, item.revision)
                    continue
                assert isinstance(item, WatchBatch)
                touched = False
                for ev in item.events:
                    touched |= self._apply(ev.kv if ev.type == "put" else None, ev.kv.key)
                self.revision = item.revision
                if touched:
                    self._changed.set()

    def _load(self, kvs: list[KeyValue], revision: int) -> None:
        """Everything from a full read (the first, or a resync after compaction). A key whose value
        no longer decodes keeps the value it had before, as a watch event would have left it."""
        previous = {name: dict(bucket) for name, bucket in self._values.items()}
        previous_config = self._config
        for bucket in self._values.values():
            bucket.clear()
        self._config = BGPConfiguration()
        self._corrupt.clear()
        for kv in kvs:
            self._apply(kv, kv.key)
        for key in self._corrupt:
            where = self._location(key)
            if where == ("config", ""):
                self._config = previous_config
            elif where is not None and where[1] in previous[where[0]]:
                self._values[where[0]].setdefault(where[1], previous[where[0]][where[1]])
        self.revision = revision
        self._changed.set()

    def _location(self, key: str) -> tuple[str, str] | None:
        """(bucket, name) a key's value lives under; ("config", "") for the BGPConfiguration."""
        if key.startswith(self._blocks_prefix):
            return "blocks", cidr_from_key(key)
        if key.startswith(self._secrets_prefix):
            return "secrets", key[len(self._secrets_prefix):]
        found = self.store.kind_for_key(key)
        if found is None:
            return None
        cls, name = found
        if cls is BGPConfiguration:
            return ("config", "") if name == "default" else ("node_configs", name.removeprefix("node."))
        return (_COLLECTIONS[cls], name)

    def _apply(self, kv: KeyValue | None, key: str) -> bool:
        """Apply one put (kv) or delete (kv None); True when it matters to the agent."""
        if key.startswith(self._blocks_prefix):
            cidr = cidr_from_key(key)
            if kv is None:
                self._corrupt.pop(key, None)
                return self._values["blocks"].pop(cidr, None) is not None
            try:
                self._values["blocks"][cidr] = decode_block(key, kv.value)
                self._corrupt.pop(key, None)
            except CorruptBlock as exc:
                self._reject(key, str(exc))
            return True
        if key.startswith(self._secrets_prefix):
            return self._apply_secret(kv, key)
        found = self.store.kind_for_key(key)
        if found is None:
            return False  # status keys, affinities, handles: not the agent's input
        cls, name = found
        if cls is BGPConfiguration and name != "default":  # a node's own ('node.<name>')
            cls, bucket, name = None, "node_configs", name.removeprefix("node.")
        else:
            bucket = "" if cls is BGPConfiguration else _COLLECTIONS[cls]
        if kv is None:
            self._corrupt.pop(key, None)
            if cls is BGPConfiguration:
                self._config = BGPConfiguration()
                return True
            return self._values[bucket].pop(name, None) is not None
        try:
            resource = self.store.decode(kv)
        except CorruptValue as exc:
            self._reject(key, str(exc))
            return False
        self._corrupt.pop(key, None)
        if cls is BGPConfiguration:
            self._config = resource
        else:
            self._values[bucket][name] = resource
        return True

    def _apply_secret(self, kv: KeyValue | None, key: str) -> bool:
        name = key[len(self._secrets_prefix):]
        if kv is None:
            return self._values["secrets"].pop(name, None) is not None
        try:
            data = json.loads(kv.value)
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ValueError("expected a JSON object of strings")
        except ValueError as exc:
            self._reject(key, f"secret is not a JSON object of strings ({type(exc).__name__})")  # never the value
            return False
        self._values["secrets"][name] = data
        self._corrupt.pop(key, None)
        return True

    def _reject(self, key: str, why: str) -> None:
        if self._corrupt.get(key) != why:
            event(log, "corrupt_value", logging.ERROR, key=key, action="keep_last_good", problem=why)
        self._corrupt[key] = why
