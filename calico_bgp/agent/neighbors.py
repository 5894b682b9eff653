"""The sessions this node must have -> the speaker's neighbours, passwords resolved.

Pure but for `read_password_files`, which the control loop calls first (the only I/O): a session
whose password cannot be had is not configured at all (never an unauthenticated session), and
`status` says why.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Collection, Iterable, Mapping

from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.bgpsession import BGPPassword
from calico_bgp.resources.node import Node
from calico_bgp.resources.view import ClusterState
from calico_bgp.routing import topology
from calico_bgp.routing.nexthop import SessionLink
from calico_bgp.routing.path import Peer
from calico_bgp.routing.topology import Session
from calico_bgp.speaker.neighbor import IPV4_UNICAST, IPV6_UNICAST, Neighbor


class PasswordUnavailable(ValueError):
    """A session's password is set and cannot be read: the file or the secret named."""


def bgp_family(s: Session) -> str:
    """The one address family a session carries, as ExaBGP names it."""
    return IPV6_UNICAST if s.family == "ipv6" else IPV4_UNICAST


def read_password_files(sessions: Iterable[Session]) -> dict[str, str | OSError]:
    """The password files the sessions name: path -> content (stripped), or the error reading it."""
    out: dict[str, str | OSError] = {}
    for s in sessions:
        path = s.password.file if s.password is not None else ""
        if path and path not in out:
            try:
                out[path] = Path(path).read_text().strip()
            except OSError as exc:
                out[path] = exc
    return out


def password_for(password: BGPPassword | None, secrets: Mapping[str, Mapping[str, str]],
                 files: Mapping[str, str | OSError]) -> str | None:
    """The session's TCP MD5 password, None when it has none. Raises PasswordUnavailable."""
    if password is None:
        return None
    if password.file:
        got = files.get(password.file)
        if isinstance(got, str):
            return got
        why = got.strerror if isinstance(got, OSError) else "not read"
        raise PasswordUnavailable(f"password file {password.file} unreadable: {why}")
    ref = password.secret_key_ref
    assert ref is not None
    value = secrets.get(ref.name, {}).get(ref.key)
    if value is None:
        raise PasswordUnavailable(f"password secret {ref.name}/{ref.key} not found")
    return value


def listen_addresses(config: BGPConfiguration, node: Node) -> frozenset[str] | None:
    """Where the speaker accepts connections: with bindMode NodeIP only on the node's BGP addresses
    (Calico renders `listen bgp address <node IP>` into bird.cfg / bird6.cfg then; confd
    bgp_processor.go populateNodeConfig); None (bindMode None): on each session's own local address."""
    if config.spec.bind_mode != "NodeIP":
        return None
    return frozenset(str(ipaddress.ip_address(a)) for a in topology.node_addresses(node).values())


def next_hop_self(s: Session) -> bool:
    """Whether routes passed on to this peer carry our address as next hop (BIRD's `next hop self`).
    As Calico renders nextHopMode (confd bgp_processor.go buildPeerFromData -> bird templates):
    Self always; Keep never (`next hop keep`); Auto as BIRD's default, which keeps the next hop on
    iBGP (a route reflector's reflected routes) and sets ours on eBGP. The agent passes routes on
    only by reflection, to iBGP peers, and its own routes always carry its own address."""
    if s.next_hop_mode == "Self":
        return True
    if s.next_hop_mode == "Keep":
        return False
    return not s.ibgp


def neighbor_for(s: Session, router_id: str, listen_port: int, secrets: Mapping[str, Mapping[str, str]],
                 files: Mapping[str, str | OSError], listen_on: Collection[str] | None = None) -> Neighbor:
    """The neighbour the speaker is told about for session `s`; it accepts the peer's connection on
    its local address unless `listen_on` (listen_addresses) leaves that address out, and then only
    dials. Raises ValueError (an unusable password, a passive session nobody could reach, or a field
    ExaBGP cannot take) naming what is wrong."""
    listen: int | None = listen_port
    if listen_on is not None and str(ipaddress.ip_address(s.local_address)) not in listen_on:
        if s.passive:
            raise ValueError(f"passive session from {s.local_address}, and bindMode NodeIP listens only on "
                             f"{', '.join(sorted(listen_on)) or 'no address'}: the peer could never connect")
        listen = None
    return Neighbor(peer_address=s.peer_address, peer_as=s.peer_as, local_as=s.local_as,
                    local_address=s.local_address, router_id=router_id, peer_port=s.peer_port,
                    listen_port=listen, passive=s.passive, hold_time=s.hold_time,
                    md5_password=password_for(s.password, secrets, files), families=(bgp_family(s),),
                    description=s.peer_name or s.peer_node or None, graceful_restart=s.restart_time or None,
                    ttl_security=s.ttl_security, next_hop_self=next_hop_self(s))


def rib_peer(s: Session, cluster: ClusterState, link: SessionLink | None) -> Peer:
    """What the RIB knows of the session's peer: its router id is the peer node's when it is one of
    ours (else its address), `link` the one a link-local next hop from it is scoped to."""
    rid = s.peer_address
    if s.peer_node and s.peer_node in cluster.nodes:
        rid = topology.router_id(cluster.nodes[s.peer_node])
    return Peer(s.peer_address, s.peer_as, rid, ibgp=s.ibgp, rr_client=s.rr_client, allow_own_as=s.allow_own_as,
                link=link, origin_validation=s.origin_validation or cluster.config.spec.origin_validation)
