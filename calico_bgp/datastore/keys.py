"""The etcd key layout (DESIGN.md, v1), under a configurable prefix."""
from __future__ import annotations

import attrs

DEFAULT_PREFIX = "/calico-bgp/v1"


@attrs.frozen
class Keys:
    prefix: str = DEFAULT_PREFIX

    def _k(self, *parts: str) -> str:
        return "/".join([self.prefix.rstrip("/"), *parts])

    # collections (each ends with "/" so a range over it never matches a sibling with a longer name)
    def config(self) -> str: return self._k("config", "bgp")
    def pools(self) -> str: return self._k("pools", "")
    def pool(self, name: str) -> str: return self._k("pools", name)
    def nodes(self) -> str: return self._k("nodes", "")
    def node(self, name: str) -> str: return self._k("nodes", name)
    def peers(self) -> str: return self._k("peers", "")
    def peer(self, name: str) -> str: return self._k("peers", name)
    def filters(self) -> str: return self._k("filters", "")
    def filter(self, name: str) -> str: return self._k("filters", name)
    def policies(self) -> str: return self._k("policies", "")
    def policy(self, name: str) -> str: return self._k("policies", name)
    def bfd_configs(self) -> str: return self._k("bfdconfigs", "")
    def bfd_config(self, name: str) -> str: return self._k("bfdconfigs", name)
    def blocks(self) -> str: return self._k("ipam", "blocks", "")
    def block(self, cidr: str) -> str: return self._k("ipam", "blocks", cidr.replace("/", "-"))
    def affinities(self, node: str | None = None) -> str:
        return self._k("ipam", "affinity", node, "") if node else self._k("ipam", "affinity", "")
    def affinity(self, node: str, cidr: str) -> str: return self._k("ipam", "affinity", node, cidr.replace("/", "-"))
    def handles(self) -> str: return self._k("ipam", "handles", "")
    def handle(self, handle: str) -> str: return self._k("ipam", "handles", handle)
    def statuses(self) -> str: return self._k("status", "")
    def status(self, node: str) -> str: return self._k("status", node)
    def events(self, node: str | None = None) -> str:
        return self._k("events", node, "") if node else self._k("events", "")
    def secrets(self) -> str: return self._k("secrets", "")
    def secret(self, name: str) -> str: return self._k("secrets", name)



def cidr_from_key(key: str) -> str:
    """'…/198.18.0.0-26' -> '198.18.0.0/26' (the inverse of how block and affinity keys encode a CIDR)."""
    last = key.rsplit("/", 1)[-1]
    addr, _, plen = last.rpartition("-")
    return f"{addr}/{plen}"
