"""Which BGP sessions this node must have. Pure: resources in, `Session` values out.

Calico's rules, made explicit:
- Node-to-node mesh (BGPConfiguration.nodeToNodeMeshEnabled): every pair of nodes that are not
  route reflectors, one session per address family both have. In a pair, the node with the lower
  address is passive, so exactly one side dials (no connection collisions).
- Route reflectors (Node bgp.routeReflectorClusterID set) leave the mesh and peer with each other:
  RRs with the same cluster ID are non-clients of each other, RRs of different clusters too.
- BGPPeer with peerIP: a fabric session from every node the peer selects (global, `node`, or
  `nodeSelector`) to that address.
- BGPPeer with peerSelector: node-to-node sessions between the nodes its nodeSelector picks and the
  nodes its peerSelector picks, in both directions (the remote side computes the mirror session).
  When exactly one end is a route reflector, the other end is its client.
- One session per peer address: an explicit BGPPeer wins over the mesh.
"""
from __future__ import annotations

import hashlib
import ipaddress
from typing import Iterable, Literal, Sequence

import attrs

from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.bgpsession import BGPPassword
from calico_bgp.resources.node import Node

SessionKind = Literal["mesh", "rr-client", "to-rr", "rr-peer", "node-peer", "fabric"]


class TopologyError(ValueError):
    """This node cannot take part in BGP as configured (the message says why)."""


@attrs.frozen(slots=True)
class Session:
    peer_address: str
    peer_as: int
    local_as: int
    local_address: str
    kind: SessionKind
    passive: bool = False
    peer_port: int = 179
    peer_node: str = ""          # the remote node's name for node-to-node sessions
    peer_name: str = ""          # the BGPPeer resource that asked for it, if any
    rr_client: bool = False      # we reflect routes to this peer (we are its route reflector)
    hold_time: int = 90
    password: BGPPassword | None = None
    max_prefixes: int | None = None
    max_prefix_action: str = "warn"
    filters: tuple[str, ...] = ()
    allow_own_as: int = 0
    restart_time: int = 120      # graceful restart advertised (Calico's maxRestartTime); 0: none
    reachable_by: str = ""       # a gateway that reaches a peer on no link of ours (Calico's reachableBy)
    origin_validation: str = ""  # the BGPPeer's originValidation; "": the BGPConfiguration's
    failure_detection_mode: str = "None"  # the BGPPeer's: BFDIfDirectlyConnected asks for BFD (routing/bfd.py)
    ttl_security: int = 0        # the BGPPeer's ttlSecurity: GTSM, the peer is at most this many hops away (0: off)
    next_hop_mode: str = "Auto"  # the BGPPeer's nextHopMode (Auto, Self, Keep; keepOriginalNextHop is Keep)

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.peer_address else "ipv4"

    @property
    def ibgp(self) -> bool:
        return self.peer_as == self.local_as


def node_as(node: Node, config: BGPConfiguration) -> int:
    bgp = node.spec.bgp
    return bgp.as_number if bgp and bgp.as_number is not None else config.spec.as_number


def node_addresses(node: Node) -> dict[str, str]:
    """{"ipv4": "198.18.0.1", "ipv6": "2001:db8::1"} for the families the node has (no prefix length)."""
    bgp = node.spec.bgp
    out: dict[str, str] = {}
    if bgp is not None:
        if bgp.ipv4 is not None:
            out["ipv4"] = str(bgp.ipv4.ip)
        if bgp.ipv6 is not None:
            out["ipv6"] = str(bgp.ipv6.ip)
    return out


def router_id(node: Node) -> str:
    """The node's IPv4 BGP address, or for an IPv6-only node a stable id hashed from its name over
    all 32 bits (as Calico's CALICO_ROUTER_ID=hash): two nodes with one id cannot peer (a BGP
    identifier collision) and drop each other's reflected routes. An identifier, never an address."""
    addrs = node_addresses(node)
    if "ipv4" in addrs:
        return addrs["ipv4"]
    value = int.from_bytes(hashlib.sha256(node.name.encode()).digest()[:4], "big")
    return str(ipaddress.IPv4Address(value or 1))


def on_link_address(node: Node, peer: str) -> str | None:
    """The node's address on the subnet `peer` is on (a dual-homed node reaches each ToR from the
    address on that ToR's link), from its BGP addresses and spec.addresses; None when none is."""
    ip = ipaddress.ip_address(peer)
    bgp = node.spec.bgp
    candidates = [a for a in ((bgp.ipv4, bgp.ipv6) if bgp else ()) if a is not None]
    candidates += [ipaddress.ip_interface(a.address) for a in node.spec.addresses]
    for iface in candidates:
        if iface.version == ip.version and ip in iface.network and iface.ip != ip:
            return str(iface.ip)
    return None


def cluster_id(node: Node) -> str:
    return node.spec.bgp.route_reflector_cluster_id if node.spec.bgp else ""


def _addr_key(text: str) -> tuple[int, int]:
    a = ipaddress.ip_address(text)
    return (a.version, int(a))


def sessions_for(me: Node, nodes: Sequence[Node], config: BGPConfiguration, peers: Iterable[BGPPeer]) -> list[Session]:
    """The sessions `me` must have, sorted by peer address."""
    my_addrs = node_addresses(me)
    if not my_addrs:
        raise TopologyError(f"node {me.name} has no bgp.ipv4Address or bgp.ipv6Address")
    my_as = node_as(me, config)
    my_cluster = cluster_id(me)
    spec = config.spec
    others = [n for n in nodes if n.name != me.name and node_addresses(n)]
    out: dict[str, Session] = {}

    def node_session(remote: Node, kind: SessionKind, peer: BGPPeer | None) -> None:
        remote_cluster = cluster_id(remote)
        rr_client = bool(my_cluster) and not remote_cluster
        if kind == "node-peer":
            if my_cluster and remote_cluster:
                kind = "rr-peer"
            elif my_cluster:
                kind = "rr-client"
            elif remote_cluster:
                kind = "to-rr"
        for family, remote_addr in node_addresses(remote).items():
            local = my_addrs.get(family)
            if local is None or remote_addr == local:
                continue
            session = Session(
                peer_address=remote_addr, peer_as=node_as(remote, config), local_as=my_as,
                local_address=local, kind=kind, passive=_addr_key(local) < _addr_key(remote_addr),
                peer_port=spec.listen_port, peer_node=remote.name, rr_client=rr_client,
                hold_time=spec.hold_time)
            out[remote_addr] = _with_mesh_options(session, spec) if peer is None else _with_peer_options(session, peer)

    # 1. the mesh, and RRs among themselves
    if my_cluster:
        for remote in others:
            if cluster_id(remote):
                node_session(remote, "rr-peer", None)
    elif spec.node_to_node_mesh_enabled:
        for remote in others:
            if not cluster_id(remote):
                node_session(remote, "mesh", None)

    # 2. explicit peers (win over the mesh for the same address)
    for peer in sorted(peers, key=lambda p: p.name):
        ps = peer.spec
        if ps.peer_selector is not None:
            for remote in others:
                forward = ps.selects_node(me) and ps.peer_selector.matches(remote.labels)
                mirror = ps.peer_selector.matches(me.labels) and ps.selects_node(remote)
                if forward or mirror:
                    node_session(remote, "node-peer", peer)
            continue
        if not ps.selects_node(me):
            continue
        family = "ipv6" if ":" in ps.peer_address else "ipv4"
        local = on_link_address(me, ps.peer_address) or my_addrs.get(family)
        if ps.source_address not in ("UseNodeIP", "None"):
            local = ps.source_address
        if local is None or ps.peer_address == local:
            continue
        out[ps.peer_address] = _with_peer_options(Session(
            peer_address=ps.peer_address, peer_as=ps.as_number or my_as, local_as=my_as, local_address=local,
            kind="fabric", peer_port=ps.peer_port or 179,
            # as in Calico: an iBGP peer of a route reflector is its client
            rr_client=bool(my_cluster) and (ps.as_number or my_as) == my_as,
            hold_time=spec.hold_time), peer)
    return [out[a] for a in sorted(out, key=_addr_key)]


def _with_mesh_options(session: Session, spec: BGPConfigurationSpec) -> Session:
    """A session the agents make on their own (mesh, reflector to reflector): the mesh's password and
    restart time from the BGPConfiguration, as Calico's nodeMeshPassword and nodeMeshMaxRestartTime."""
    restart = spec.node_mesh_max_restart_time
    return attrs.evolve(session, password=spec.node_mesh_password,
                        restart_time=session.restart_time if restart is None else restart)


def _with_peer_options(session: Session, peer: BGPPeer) -> Session:
    ps = peer.spec
    return attrs.evolve(
        session, peer_name=peer.name, password=ps.password, max_prefixes=ps.max_prefixes, reachable_by=ps.reachable_by,
        max_prefix_action=ps.max_prefix_action, filters=ps.filters, allow_own_as=ps.num_allowed_local_as_numbers,
        origin_validation=ps.origin_validation or "", failure_detection_mode=ps.failure_detection_mode,
        ttl_security=ps.ttl_security or 0,
        next_hop_mode="Keep" if ps.keep_original_next_hop else (ps.next_hop_mode or "Auto"),
        hold_time=ps.hold_time if ps.hold_time is not None else session.hold_time,
        restart_time=ps.max_restart_time if ps.max_restart_time is not None else session.restart_time)
