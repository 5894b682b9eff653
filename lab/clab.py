"""containerlab topology files as values: parsing, inheritance, and what the lab can realise. Pure.

    topo = load(Path("containerlab/rack.clab.yml"))     # reads the file, then parse()
    topo.nodes["tor1"].role                               # "frr"

Inheritance follows containerlab: a node's settings come from `topology.defaults`, then
`topology.kinds[<kind>]`, then `topology.groups[<group>]`, then the node itself. Maps (`env`,
`labels`, `sysctls`) merge key by key and `binds` merge by their target path, the most specific
level winning; every other field (`exec` included) is taken whole from the most specific level
that sets it. Bind sources are resolved relative to the topology file, as containerlab does.

Everything the lab cannot realise is collected first and raised as one `UnsupportedTopology`
naming each problem, before anything is created. The values are lab/clab_model.py's.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from lab.clab_model import (  # the values, importable from here as well
    DEFAULT_MGMT_V4,
    Bind,
    Endpoint,
    LinkDef,
    Mgmt,
    NodeDef,
    Topology,
    TopologyError,
    UnsupportedTopology,
)

# The only address space the lab (and the files it ships) may use.
ALLOWED_V4 = ipaddress.ip_network("198.18.0.0/15")
ALLOWED_V6 = ipaddress.ip_network("2001:db8::/32")

# Fields the lab realises, fields that only matter to a container runtime (reported, then ignored),
# and everything else (refused).
SUPPORTED = frozenset({"kind", "image", "group", "binds", "exec", "env", "labels", "mgmt-ipv4", "mgmt-ipv6",
                       "sysctls"})
IGNORED = frozenset({"image-pull-policy", "restart-policy", "ports", "cpu", "memory", "cpu-set", "cap-add",
                     "privileged", "user", "hostname", "entrypoint", "cmd", "runtime", "shm-size", "dns",
                     "healthcheck", "auto-remove", "tmpfs", "security-opts", "cgroupns-mode", "cgroup-parent",
                     "devices", "aliases", "env-files", "pid-mode", "volumes"})
KINDS = frozenset({"linux", "bridge", "ovs-bridge"})
MAP_FIELDS = ("env", "labels", "sysctls")
# sysctls that belong to a network namespace; anything else (kernel.*, vm.*, net.core.rmem_max, ...)
# would change the host from inside a node's namespace
NAMESPACED_SYSCTLS = ("net.ipv4.", "net.ipv6.", "net.mpls.", "net.netfilter.", "net.unix.")

# ------------------------------------------------------------------------------------------ parsing

def load(path: Path | str) -> Topology:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TopologyError(f"cannot read topology {p}: {exc.strerror}") from None
    return parse(text, p.resolve())


def parse(text: str, path: Path) -> Topology:
    """Parse, apply inheritance, and check that the lab can realise it (UnsupportedTopology otherwise)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("topology"), dict):
        raise TopologyError(f"{path}: not a containerlab topology (no `topology:` mapping)")
    name = doc.get("name")
    if not isinstance(name, str) or not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9-._]*$", name):
        raise TopologyError(f"{path}: `name` must be a containerlab lab name, got {name!r}")
    problems: list[str] = []
    for key in doc:
        if key not in ("name", "prefix", "mgmt", "topology", "settings"):
            problems.append(f"top-level `{key}` is not supported")
    topo = doc["topology"]
    for key in topo:
        if key not in ("nodes", "links", "defaults", "kinds", "groups"):
            problems.append(f"topology.{key} is not supported")
    base = path.parent
    defaults = _mapping(topo.get("defaults"), "topology.defaults")
    kinds = _mapping(topo.get("kinds"), "topology.kinds")
    groups = _mapping(topo.get("groups"), "topology.groups")
    raw_nodes = _mapping(topo.get("nodes"), "topology.nodes")
    if not raw_nodes:
        raise TopologyError(f"{path}: topology.nodes is empty")

    nodes: dict[str, NodeDef] = {}
    for node_name, raw in raw_nodes.items():
        try:
            nodes[node_name] = _node(str(node_name), raw or {}, defaults, kinds, groups, base, problems)
        except TopologyError as exc:
            problems.append(str(exc))
    links = tuple(_links(topo.get("links") or [], nodes, problems))
    mgmt = _mgmt(doc.get("mgmt") or {}, problems)
    prefix = doc.get("prefix", "clab")
    topology = Topology(name=name, path=str(path), nodes=nodes, links=links, mgmt=mgmt,
                        prefix="" if prefix == "" else ("" if prefix == "__lab-name" else str(prefix)))
    problems += _check(topology)
    if problems:
        raise UnsupportedTopology(str(path), problems)
    return topology


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TopologyError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _node(name: str, raw: dict, defaults: dict, kinds: dict, groups: dict, base: Path,
          problems: list[str]) -> NodeDef:
    if not isinstance(raw, dict):
        raise TopologyError(f"node {name}: must be a mapping")
    group_name = raw.get("group") or defaults.get("group") or ""
    if group_name and group_name not in groups:
        problems.append(f"node {name}: group {group_name!r} is not defined in topology.groups")
    kind = raw.get("kind") or (groups.get(group_name) or {}).get("kind") or defaults.get("kind")
    if not kind:
        raise TopologyError(f"node {name}: no kind (set it on the node, its group or topology.defaults)")
    layers = [defaults, kinds.get(kind) or {}, groups.get(group_name) or {}, raw]
    merged: dict[str, Any] = {}
    maps: dict[str, dict[str, str]] = {f: {} for f in MAP_FIELDS}
    binds: dict[str, Bind] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in MAP_FIELDS:
                maps[key].update({str(k): str(v) for k, v in _mapping(value, f"node {name}: {key}").items()})
            elif key == "binds":
                for text in value or []:
                    b = Bind.parse(str(text), base)
                    binds[b.target] = b
            else:
                merged[key] = value
    ignored = []
    for key in merged:
        if key in SUPPORTED:
            continue
        if key in IGNORED:
            ignored.append(key)
        else:
            problems.append(f"node {name}: `{key}` is not supported by the lab")
    if kind not in KINDS:
        problems.append(f"node {name}: kind {kind!r} is not supported (the lab realises linux, bridge, ovs-bridge)")
    for key in maps["sysctls"]:
        if not str(key).startswith(NAMESPACED_SYSCTLS):
            problems.append(f"node {name}: sysctl {key} is not per network namespace (the lab never changes the host); "
                            f"allowed: {', '.join(p + '*' for p in NAMESPACED_SYSCTLS)}")
    execs = merged.get("exec") or []
    if not isinstance(execs, list) or not all(isinstance(e, str) for e in execs):
        problems.append(f"node {name}: exec must be a list of command strings")
        execs = []
    return NodeDef(name=name, kind=kind, image=str(merged.get("image") or ""), group=group_name,
                   binds=tuple(binds.values()), exec=tuple(execs), env=maps["env"], labels=maps["labels"],
                   sysctls=maps["sysctls"], mgmt_ipv4=str(merged.get("mgmt-ipv4") or ""),
                   mgmt_ipv6=str(merged.get("mgmt-ipv6") or ""), ignored=tuple(sorted(ignored)))


def _endpoint(text: Any, nodes: Mapping[str, NodeDef], problems: list[str]) -> Endpoint | None:
    if not isinstance(text, str) or text.count(":") != 1:
        problems.append(f"link endpoint {text!r} is not NODE:INTERFACE")
        return None
    node, ifname = text.split(":")
    if node in ("host", "macvlan", "mgmt-net", "ovs-bridge") and node not in nodes:
        problems.append(f"link endpoint {text}: `{node}:` endpoints are not supported (the lab never touches the host)")
        return None
    if node not in nodes:
        problems.append(f"link endpoint {text}: no node named {node!r}")
        return None
    if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$", ifname):
        problems.append(f"link endpoint {text}: interface name {ifname!r} is not a valid Linux name (max 15 chars)")
        return None
    return Endpoint(node, ifname)


def _links(raw: Any, nodes: Mapping[str, NodeDef], problems: list[str]) -> list[LinkDef]:
    if not isinstance(raw, list):
        problems.append("topology.links must be a list")
        return []
    out = []
    for i, link in enumerate(raw):
        if not isinstance(link, dict):
            problems.append(f"links[{i}] must be a mapping")
            continue
        if "type" in link and link["type"] != "veth":
            problems.append(f"links[{i}]: link type {link['type']!r} is not supported (only veth)")
            continue
        eps = link.get("endpoints")
        if "type" in link:  # the extended form: endpoints are {node, interface}
            eps = [f"{e.get('node')}:{e.get('interface')}" if isinstance(e, dict) else e for e in eps or []]
        if not isinstance(eps, list) or len(eps) != 2:
            problems.append(f"links[{i}]: endpoints must list exactly two NODE:INTERFACE")
            continue
        a, b = (_endpoint(e, nodes, problems) for e in eps)
        extra = set(link) - {"endpoints", "type", "ipv4", "ipv6", "mtu", "labels", "vars"}
        for key in sorted(extra):
            problems.append(f"links[{i}]: `{key}` is not supported")
        if a and b:
            out.append(LinkDef(a, b, tuple(str(x) for x in link.get("ipv4") or ()),
                               tuple(str(x) for x in link.get("ipv6") or ()), link.get("mtu")))
    return out


def _mgmt(raw: Any, problems: list[str]) -> Mgmt:
    if not isinstance(raw, dict):
        problems.append("mgmt must be a mapping")
        return Mgmt()
    for key in raw:
        if key not in ("network", "bridge", "ipv4-subnet", "ipv6-subnet", "ipv4-gw", "ipv6-gw", "mtu"):
            problems.append(f"mgmt.{key} is not supported")
    v4 = str(raw.get("ipv4-subnet") or DEFAULT_MGMT_V4)
    if v4 == "auto":
        v4 = DEFAULT_MGMT_V4
    return Mgmt(network=str(raw.get("network") or "clab"), bridge=str(raw.get("bridge") or ""),
                ipv4_subnet=v4, ipv6_subnet=str(raw.get("ipv6-subnet") or ""))


# ------------------------------------------------------------------------------------------ checks

_ADDR_RE = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?|[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}(?:/\d{1,3})?)(?![\w.:])")


def allowed(addr: str) -> bool:
    """Is this address or prefix inside 198.18.0.0/15 or 2001:db8::/32?"""
    net = ipaddress.ip_network(addr, strict=False)
    space = ALLOWED_V4 if net.version == 4 else ALLOWED_V6
    return net.subnet_of(space)  # type: ignore[arg-type]


def addresses_in(text: str) -> list[str]:
    """Every IP address or prefix written in `text` (commands, configs)."""
    out = []
    for m in _ADDR_RE.finditer(text):
        try:
            ipaddress.ip_network(m.group(1), strict=False)
        except ValueError:
            continue
        out.append(m.group(1))
    return out


def _check(topo: Topology) -> list[str]:
    problems = []
    seen: set[tuple[str, str]] = set()
    for link in topo.links:
        for ep in (link.a, link.b):
            key = (ep.node, ep.interface)
            if key in seen:
                problems.append(f"link endpoint {ep} is used by more than one link")
            seen.add(key)
        for fam, addrs in (("ipv4", link.ipv4), ("ipv6", link.ipv6)):
            for a in addrs:
                if a and not _allowed_text(a):
                    problems.append(f"link {link.a}-{link.b}: {fam} {a} is outside 198.18.0.0/15 and 2001:db8::/32")
    for subnet, what in ((topo.mgmt.ipv4_subnet, "mgmt.ipv4-subnet"), (topo.mgmt.ipv6_subnet, "mgmt.ipv6-subnet")):
        if subnet and not _allowed_text(subnet):
            problems.append(f"{what} {subnet} is outside 198.18.0.0/15 and 2001:db8::/32 (the only space the lab uses)")
    for node in topo.nodes.values():
        for addr in (node.mgmt_ipv4, node.mgmt_ipv6):
            if addr and not _allowed_text(addr):
                problems.append(f"node {node.name}: mgmt address {addr} is outside 198.18.0.0/15 and 2001:db8::/32")
        for cmd in node.exec:
            for addr in addresses_in(cmd):
                if not _allowed_text(addr) and not _harmless(addr):
                    problems.append(f"node {node.name}: exec {cmd!r} uses {addr}, outside 198.18.0.0/15 and 2001:db8::/32")
        role = node.role
        if role == "frr" and node.bind_for("/frr.conf", "/bgpd.conf") is None:
            problems.append(f"node {node.name}: an FRR node needs a bind of frr.conf or bgpd.conf under /etc/frr/ "
                            "(e.g. frr.conf:/etc/frr/frr.conf)")
        if role == "bird" and node.bind_for("bird.conf") is None:
            problems.append(f"node {node.name}: a BIRD node needs a bind of its bird.conf")
        if role == "gobgp" and node.bind_for(".toml", ".yaml", ".yml", ".json") is None:
            problems.append(f"node {node.name}: a GoBGP node needs a bind of its gobgpd config (.toml/.yaml/.json)")
        for b in node.binds:
            if not Path(b.source).exists():
                problems.append(f"node {node.name}: bind source {b.source} does not exist")
    if len(topo.by_role("etcd")) > 1:
        problems.append("more than one etcd node: the lab runs one etcd")
    return problems


def _allowed_text(addr: str) -> bool:
    try:
        return allowed(addr)
    except ValueError:
        return False


def _harmless(addr: str) -> bool:
    """Addresses a command may name without using them on the wire: wildcards, loopback, defaults."""
    try:
        net = ipaddress.ip_network(addr, strict=False)
    except ValueError:
        return True
    return net.is_loopback or net.network_address.is_unspecified
