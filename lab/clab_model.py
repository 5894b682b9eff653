"""A containerlab topology as values: nodes, links, management network, and what the lab runs for
each node (its role). Pure; lab/clab.py reads a file into these.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import attrs

DEFAULT_MGMT_V4 = "198.18.255.0/24"   # used when a topology names no mgmt subnet (containerlab's default is not allowed here)

Role = str  # "node" | "frr" | "bird" | "gobgp" | "etcd" | "bridge" | "host"


class TopologyError(ValueError):
    """The file is not a containerlab topology the lab can read (YAML, structure)."""


class UnsupportedTopology(TopologyError):
    """The file is valid containerlab, but uses features the lab cannot realise (all listed)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: the lab cannot realise {len(problems)} thing(s) in this topology:\n{lines}")


@attrs.frozen
class Bind:
    source: str      # absolute path on this machine
    target: str      # path inside the container
    mode: str = ""   # "ro", "rw" or ""

    @classmethod
    def parse(cls, text: str, base: Path) -> "Bind":
        parts = text.split(":")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise TopologyError(f"bind {text!r} is not SOURCE:TARGET[:MODE]")
        src = Path(parts[0]).expanduser()
        source = src if src.is_absolute() else (base / src)
        return cls(str(Path(source).resolve()), parts[1], parts[2] if len(parts) > 2 else "")


@attrs.frozen
class NodeDef:
    name: str
    kind: str
    image: str = ""
    group: str = ""
    binds: tuple[Bind, ...] = ()
    exec: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    labels: Mapping[str, str] = attrs.field(factory=dict)
    sysctls: Mapping[str, str] = attrs.field(factory=dict)
    mgmt_ipv4: str = ""
    mgmt_ipv6: str = ""
    ignored: tuple[str, ...] = ()    # container-only fields the lab skipped

    @property
    def role(self) -> Role:
        return node_role(self)

    def file_binds(self) -> list[Bind]:
        """The binds file by file: a bound directory (`frr:/etc/frr`) stands for each file in it."""
        out = []
        for b in self.binds:
            src = Path(b.source)
            if src.is_dir():
                for f in sorted(p for p in src.rglob("*") if p.is_file()):
                    out.append(Bind(str(f), b.target.rstrip("/") + "/" + str(f.relative_to(src)), b.mode))
            else:
                out.append(b)
        return out

    def bind_for(self, *suffixes: str) -> Bind | None:
        """The first bound file whose target ends with one of `suffixes`."""
        for b in self.file_binds():
            if b.target.rstrip("/").endswith(suffixes):
                return b
        return None


@attrs.frozen
class Endpoint:
    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.interface}"


@attrs.frozen
class LinkDef:
    a: Endpoint
    b: Endpoint
    ipv4: tuple[str, ...] = ()   # per endpoint, as containerlab's brief-link `ipv4`
    ipv6: tuple[str, ...] = ()
    mtu: int | None = None


@attrs.frozen
class Mgmt:
    network: str = "clab"
    bridge: str = ""
    ipv4_subnet: str = DEFAULT_MGMT_V4
    ipv6_subnet: str = ""


@attrs.frozen
class Topology:
    name: str
    path: str
    nodes: Mapping[str, NodeDef]
    links: tuple[LinkDef, ...]
    mgmt: Mgmt
    prefix: str = "clab"

    @property
    def directory(self) -> Path:
        return Path(self.path).parent

    def by_role(self, *roles: Role) -> list[NodeDef]:
        return [n for n in self.nodes.values() if n.role in roles]

    def container_name(self, node: str) -> str:
        """The name containerlab gives the node's container (clab-<lab>-<node>)."""
        return f"{self.prefix}-{self.name}-{node}" if self.prefix else node

    def resources_path(self) -> Path:
        """`<name>.resources.yaml` beside the topology file (`rack.clab.yml` -> `rack.resources.yaml`)."""
        p = Path(self.path)
        stem = p.name[: -len(".clab.yml")] if p.name.endswith(".clab.yml") else p.stem
        return p.parent / f"{stem}.resources.yaml"

    def links_of(self, node: str) -> list[tuple[Endpoint, Endpoint]]:
        """(this end, far end) for each link of `node`."""
        out = []
        for link in self.links:
            if link.a.node == node:
                out.append((link.a, link.b))
            if link.b.node == node:
                out.append((link.b, link.a))
        return out


_IMAGE_ROLES = (("frr", "frr"), ("bird", "bird"), ("gobgp", "gobgp"), ("etcd", "etcd"), ("calico-bgp", "node"))
_BIND_ROLES = (("/etc/frr/", "frr"), ("bird.conf", "bird"), ("gobgpd.", "gobgp"), ("/etc/gobgp/", "gobgp"))


def node_role(node: NodeDef) -> Role:
    """What the lab runs for a node: chosen by kind, then by image name, then by what it binds."""
    if node.kind in ("bridge", "ovs-bridge"):
        return "bridge"
    image = node.image.lower().rsplit("/", 2)
    image_name = "/".join(image[-2:])
    for needle, role in _IMAGE_ROLES:
        if needle in image_name:
            return role
    for b in node.binds:
        for needle, role in _BIND_ROLES:
            if needle in b.target:
                return role
    return "host"
