"""Which BGP sessions this node must have. Pure: resources in, `Session` values out.

Calico's rules, as confd computes them (confd/pkg/backends/calico/client.go updatePeersV1 and
nodeAsBGPPeers, bgp_processor.go processMeshPeers and buildPeerFromData), made explicit:
- Node-to-node mesh (BGPConfiguration.nodeToNodeMeshEnabled): every pair of nodes that are not
  route reflectors, one session per address family both have, dialled on the remote node's
  listenPort (its own BGPConfiguration `node.<name>`, else the cluster's). The side whose address
  is the lower *as a string* is passive (Calico compares the text, not the number), so exactly one
  side dials.
- BGPPeer with peerIP: a session from every node the peer selects (global, `node`, or
  `nodeSelector`) to that address, at the port given in peerIP; without one, a peerIP that is a
  Calico node's address is dialled on that node's listenPort and, without asNumber, takes that
  node's AS. A global peer whose address is a Calico node's is passive when that address is the
  higher as a string (as the mesh); any other BGPPeer session dials.
- BGPPeer with peerSelector: sessions from the nodes the peer selects to the nodes its
  peerSelector picks, each at its own AS and listenPort; never passive.
- Reverse peering: a node that a BGPPeer's peerSelector picks (or whose address and AS are its
  peerIP and asNumber) peers back with the nodes the BGPPeer selects, unless the BGPPeer says
  `reversePeering: Manual`.
- Sessions are keyed by (address, port): one address on two ports is two sessions. Global
  BGPPeers go first, then node-specific ones, then reverse peerings; a global one wins over a
  node-specific one for a key, within one of those passes the later BGPPeer by name wins (Calico
  leaves that order to Go's map iteration), a reverse peering never replaces a BGPPeer's own
  session, and an explicit BGPPeer wins over the mesh for the same address.
- localASNumber is the session's local AS. An iBGP peer (at the session's local AS) of a route
  reflector is its client unless it is a reflector of the same cluster.
- Our addition (not Calico's): route reflectors (Node bgp.routeReflectorClusterID set) peer with
  each other on their own, as non-clients; both dial, as every route-reflection session.
"""
from __future__ import annotations

import hashlib
import ipaddress
from typing import Iterable, Literal, Mapping, Sequence

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
    scope: str = "mesh"          # Calico's protocol kind: mesh, global or node-specific (a BGPPeer's reach)
    source_address: str = ""     # the source address Calico's BIRD would set ("": none, sourceAddress None)
    reason: str = ""             # why the session exists: the mesh rule or which BGPPeer, for `node sessions`

    @property
    def key(self) -> tuple[str, int]:
        """Sessions are told apart by peer address and port (Calico: one address, two ports, two sessions)."""
        return (self.peer_address, self.peer_port)

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
    if bgp is not None:  # stored normalised ("198.18.0.1/24", resources/fields.py interface): no parse needed
        if bgp.ipv4_address:
            out["ipv4"] = bgp.ipv4_address.partition("/")[0]
        if bgp.ipv6_address:
            out["ipv6"] = bgp.ipv6_address.partition("/")[0]
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


def listen_port(node_name: str, config: BGPConfiguration, node_configs: Mapping[str, BGPConfiguration]) -> int:
    """The port a node listens on: its own BGPConfiguration `node.<name>` when that sets listenPort
    (179 included, over a cluster default of another port), else the cluster's (confd
    getNodeOrGlobalValue "listen_port": libcalico-go's bgpsyncer writes /host/<node>/listen_port
    whenever the node's resource sets it; bird.cfg.template's `listen bgp port` takes it first)."""
    own = node_configs.get(node_name)
    if own is not None and own.spec.listen_port_given is not None:
        return own.spec.listen_port_given
    return config.spec.listen_port


def advertising_spec(node_name: str, config: BGPConfiguration,
                     node_configs: Mapping[str, BGPConfiguration]) -> BGPConfigurationSpec:
    """The configuration a node's prefixAdvertisements come from: its own BGPConfiguration
    `node.<name>` when that lists any (they replace the cluster's, names resolved against its own
    communities), else the cluster's (confd client.go getPrefixAdvertisementsKVPair per node key,
    bgp_processor.go processCommunityRules: node-specific first, then global)."""
    own = node_configs.get(node_name)
    return own.spec if own is not None and own.spec.prefix_advertisements else config.spec


def passive_toward(local: str, remote: str) -> bool:
    """Calico's tie-break between two Calico nodes: the side whose peer's address is the higher *as a
    string* waits (bgp_processor.go: `if peerIP > currentNodeIP { peer.Passive = true }`)."""
    return remote > local


@attrs.frozen
class Skipped:
    """A session Calico would make that this node's speaker does not run, and why."""
    session: Session
    why: str


def sessions_for(me: Node, nodes: Sequence[Node], config: BGPConfiguration, peers: Iterable[BGPPeer],
                 node_configs: Mapping[str, BGPConfiguration] | None = None,
                 declined: list[str] | None = None) -> list[Session]:
    """The sessions `me` must have, sorted by peer address then port. `node_configs`: the per-node
    BGPConfigurations by node name. `declined`, when given, gets one line for each BGPPeer with a
    peerIP that selects `me` and makes no session, saying why."""
    my_addrs = node_addresses(me)
    if not my_addrs:
        raise TopologyError(f"node {me.name} has no bgp.ipv4Address or bgp.ipv6Address")
    per_node = node_configs or {}
    my_as = node_as(me, config)
    my_cluster = cluster_id(me)
    spec = config.spec
    others = [n for n in nodes if n.name != me.name and node_addresses(n)]
    by_address = {a: n for n in others for a in node_addresses(n).values()}
    out: dict[tuple[str, int], Session] = {}
    ports: dict[str, set[int]] = {}  # the ports `out` holds for each address

    def place(address: str, port: int, explicit: bool, replaces: str = "") -> bool:
        """Whether a session to (address, port) is made (the caller then stores it): a BGPPeer's session
        replaces the automatic ones (mesh, reflectors) to that address; of two BGPPeers' for one key the
        first stays, unless both are of scope `replaces` (one pass: the later BGPPeer by name wins)."""
        held = ports.setdefault(address, set())
        if not explicit:
            if held:
                return False
        else:
            taken = out.get((address, port))
            if taken is not None and taken.peer_name and not (replaces and taken.scope == replaces):
                return False
            for p in [p for p in held if not out[(address, p)].peer_name]:
                del out[(address, p)]
                held.discard(p)
        held.add(port)
        return True

    def node_session(remote: Node, kind: SessionKind, peer: BGPPeer | None, scope: str, reason: str,
                     families: tuple[str, ...] = ("ipv4", "ipv6"), replaces: str = "", reverse: bool = False) -> None:
        remote_cluster = cluster_id(remote)
        own_as = peer.spec.local_as_number if peer is not None and peer.spec.local_as_number else None
        # a BGPPeer's localASNumber is the AS of the nodes it selects: on the far side of a reverse
        # peering it is the remote's AS, and ours is our own (else neither OPEN matches the other's
        # configured peer AS)
        local_as = my_as if reverse else (own_as or my_as)
        remote_as = (own_as or node_as(remote, config)) if reverse else node_as(remote, config)
        # bgp_processor.go buildPeerFromData: an iBGP peer of a reflector is its client unless it
        # reflects for the same cluster (the automatic reflector-to-reflector sessions: never)
        rr_client = (bool(my_cluster) and remote_as == local_as and remote_cluster != my_cluster
                     and kind != "rr-peer")
        if kind == "node-peer":
            if my_cluster and remote_cluster and not rr_client:
                kind = "rr-peer"
            elif rr_client:
                kind = "rr-client"
            elif remote_cluster:
                kind = "to-rr"
        port = listen_port(remote.name, config, per_node)
        for family, remote_addr in node_addresses(remote).items():
            local = my_addrs.get(family)
            if family not in families or local is None or remote_addr == local:
                continue
            if not place(remote_addr, port, explicit=peer is not None, replaces=replaces):
                continue
            session = Session(
                peer_address=remote_addr, peer_as=remote_as, local_as=local_as, local_address=local, kind=kind,
                # the mesh: one side dials; route reflection and a BGPPeer's: both (collisions resolved
                # by BGP, RFC 4271 6.8)
                passive=passive_toward(local, remote_addr) if kind == "mesh" else False,
                peer_port=port, peer_node=remote.name, rr_client=rr_client, hold_time=spec.hold_time,
                scope=scope, source_address=local, reason=reason)
            out[(remote_addr, port)] = (_with_mesh_options(session, spec) if peer is None
                                        else _with_peer_options(session, peer))

    # 1. the mesh, and RRs among themselves (ours)
    if my_cluster:
        for remote in others:
            if cluster_id(remote):
                node_session(remote, "rr-peer", None, "node-specific",
                             f"route reflectors peer with each other (cluster {my_cluster} and {cluster_id(remote)})")
    elif spec.node_to_node_mesh_enabled:
        for remote in others:
            if not cluster_id(remote):
                node_session(remote, "mesh", None, "mesh", "node-to-node mesh (BGPConfiguration nodeToNodeMeshEnabled)")

    ordered = sorted(peers, key=lambda p: p.name)

    def decline(peer: BGPPeer, why: str) -> None:
        if declined is not None:
            declined.append(f"BGPPeer {peer.name}: no session: {why}")

    def peer_ip_session(peer: BGPPeer, scope: str) -> None:
        ps = peer.spec
        address, port = ps.peer_address, ps.peer_port
        remote = by_address.get(address)
        family = "ipv6" if ":" in address else "ipv4"
        if address in my_addrs.values():
            return  # ourselves
        peer_as = ps.as_number
        if peer_as is None:
            if remote is None:  # without asNumber, only a Calico node's address makes a session (at its AS)
                decline(peer, f"peerIP {ps.peer_ip} without asNumber is no Calico node's address")
                return
            peer_as = node_as(remote, config)
        if port is None:
            # client.go updatePeersV1: a Calico node's address (and AS) is dialled on its listenPort
            calico = remote is not None and node_as(remote, config) == peer_as
            port = listen_port(remote.name, config, per_node) if calico and remote is not None else 179
        local = on_link_address(me, address) or my_addrs.get(family)
        if ps.source_address not in ("UseNodeIP", "None"):
            local = ps.source_address
        if local is None or address == local:
            decline(peer, f"node {me.name} has no IPv{family[-1]} address for peerIP {ps.peer_ip}" if local is None
                    else f"peerIP {ps.peer_ip} is this node's own sourceAddress")
            return
        local_as = ps.local_as_number or my_as
        # bgp_processor.go buildPeerFromData: only a global peer that is a Calico node is passive
        passive = scope == "global" and remote is not None and passive_toward(my_addrs.get(family, ""), address)
        if not place(address, port, explicit=True, replaces=scope):
            return
        how = f"peerIP {ps.peer_ip}" + (f" (Calico node {remote.name})" if remote is not None else "")
        out[(address, port)] = _with_peer_options(Session(
            peer_address=address, peer_as=peer_as, local_as=local_as, local_address=local,
            kind="fabric", peer_port=port, passive=passive, peer_node=remote.name if remote is not None else "",
            # as in Calico: an iBGP peer of a route reflector is its client
            rr_client=bool(my_cluster) and peer_as == local_as,
            hold_time=spec.hold_time, scope=scope,
            source_address="" if ps.source_address == "None" else my_addrs.get(family, local),
            reason=f"BGPPeer {peer.name}: {how}"), peer)

    def selector_sessions(peer: BGPPeer, scope: str) -> None:
        ps = peer.spec
        assert ps.peer_selector is not None
        for remote in others:
            if ps.peer_selector.matches(remote.labels):
                node_session(remote, "node-peer", peer, scope,
                             f"BGPPeer {peer.name}: peerSelector {ps.peer_selector} picks {remote.name}",
                             replaces=scope)

    # 2. global BGPPeers, then node-specific ones (client.go: a global peering wins over a node-specific
    # one to the same address and port; within a pass Calico's order is Go's map order, here a later
    # BGPPeer by name replaces an earlier one, so a peer for one node can refine a rack's)
    for global_pass in (True, False):
        for peer in ordered:
            ps = peer.spec
            if (not ps.node and ps.node_selector is None) != global_pass or not ps.selects_node(me):
                continue
            scope = "global" if global_pass else "node-specific"
            if ps.peer_selector is not None:
                selector_sessions(peer, scope)
            elif ps.peer_ip:
                peer_ip_session(peer, scope)

    # 3. reverse peerings: a node the BGPPeer's remote side picks peers back with the nodes it selects
    for peer in ordered:
        ps = peer.spec
        if ps.reverse_peering == "Manual":
            continue
        if ps.peer_selector is not None:
            if not ps.peer_selector.matches(me.labels):
                continue
            families = ("ipv4", "ipv6")
        elif ps.peer_ip:
            if ps.peer_address not in my_addrs.values():
                continue
            if ps.as_number is not None and ps.as_number != my_as:
                continue
            if ps.peer_port is not None and ps.peer_port != listen_port(me.name, config, per_node):
                continue
            families = ("ipv6" if ":" in ps.peer_address else "ipv4",)
        else:
            continue
        for remote in others:
            if ps.selects_node(remote):
                node_session(remote, "node-peer", peer, "node-specific",
                             f"BGPPeer {peer.name}: reverse peering (this node is its peer; it selects {remote.name})",
                             families, reverse=True)
    return [out[k] for k in sorted(out, key=lambda k: (_addr_key(k[0]), k[1]))]


def runnable(sessions: Iterable[Session]) -> tuple[dict[str, Session], list[Skipped]]:
    """The sessions the agent configures, by peer address, and those it cannot: of two sessions to one
    address on two ports (Calico: two BIRD protocols, bird.cfg.template's `Global_<ip>_port_<port>`)
    the first (the lower port) runs and the other is skipped, saying why. ExaBGP 5 cannot hold both:
    its neighbour key (bgp/neighbor.py Neighbor.name: address, local address, ASes, router id,
    families; no port) makes the second a "duplicate peer definition" (configuration/neighbor), an
    incoming connection is matched by address alone (reactor/listener.py new_connections), and the
    routes it reports name the neighbour by address and AS (reactor/api/response/json.py), so they
    could not be told apart; the agent's RIB, counters and status key peers by address as well."""
    kept: dict[str, Session] = {}
    skipped: list[Skipped] = []
    for s in sessions:
        first = kept.get(s.peer_address)
        if first is None:
            kept[s.peer_address] = s
        else:
            skipped.append(Skipped(s, f"not run: ExaBGP holds one neighbour per address (a second port is a "
                                      f"duplicate peer definition), and {s.peer_address} port {first.peer_port} runs"))
    return kept, skipped


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
        source_address="" if ps.source_address == "None" else session.source_address,
        next_hop_mode="Keep" if ps.keep_original_next_hop else (ps.next_hop_mode or "Auto"),
        hold_time=ps.hold_time if ps.hold_time is not None else session.hold_time,
        restart_time=ps.max_restart_time if ps.max_restart_time is not None else session.restart_time)
