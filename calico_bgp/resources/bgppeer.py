"""BGPPeer: a BGP peering of every node, of the nodes a nodeSelector picks, or of one node; the other
side is an address and AS (peerIP, asNumber), or the nodes a peerSelector picks, each at its own AS."""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from calico_bgp.resources import bgpsession
from calico_bgp.resources.bgpsession import BGPPassword
from calico_bgp.resources.fields import (
    ASNumber,
    Integer,
    Seconds,
    bad,
    boolean,
    checked,
    int_range,
    ip_address,
    missing,
    name,
    one_of,
    optional,
    optional_as_number,
    optional_name,
    optional_seconds,
    optional_selector,
    peer_ip,
    split_peer_ip,
    tuple_of,
)
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.selector import Selector

if TYPE_CHECKING:
    from calico_bgp.resources.node import Node

FAILURE_DETECTION_MODES = ("None", "BFDIfDirectlyConnected")


def failure_detection_mode(value: Any) -> str:
    """Calico Enterprise's BGPPeer failureDetectionMode, spelled exactly; empty is the default None."""
    return "None" if value in (None, "") else one_of(*FAILURE_DETECTION_MODES)(value)


def _source_address(value: Any) -> str:
    if value in (None, "", "UseNodeIP"):
        return "UseNodeIP"
    if value == "None":
        return "None"
    try:
        return ip_address(value)
    except ValueError:
        raise ValueError("expected UseNodeIP, None or an IP address") from None


@attrs.frozen
class BGPPeerSpec:
    node: str = attrs.field(default="", converter=checked(optional_name))
    node_selector: Selector | None = attrs.field(default=None, converter=checked(optional_selector))
    peer_ip: str = attrs.field(default="", converter=checked(peer_ip))
    as_number: ASNumber | None = attrs.field(default=None, converter=checked(optional_as_number))
    peer_selector: Selector | None = attrs.field(default=None, converter=checked(optional_selector))
    keep_original_next_hop: bool = attrs.field(default=False, converter=checked(boolean))
    password: BGPPassword | None = None
    source_address: str = attrs.field(default="UseNodeIP", converter=checked(_source_address))
    hold_time: Seconds | None = attrs.field(default=None, converter=checked(bgpsession.optional_hold_time))
    keepalive_time: Seconds | None = attrs.field(default=None, converter=checked(optional_seconds))
    max_prefixes: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(1, 2**32 - 1))))
    max_prefix_action: str = attrs.field(default="warn",
                                         converter=checked(one_of("warn", "teardown", case_insensitive=True)))
    filters: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(name)))
    reachable_by: str = attrs.field(default="", converter=checked(lambda v: "" if v in (None, "") else ip_address(v)))
    # accept routes carrying our own AS this many times (allowas-in): the AS-per-rack model needs 1
    num_allowed_local_as_numbers: int = attrs.field(default=0, converter=checked(int_range(0, 10)))
    # graceful restart: how long the peer keeps our routes when our session drops (0: no graceful
    # restart on this session); the capability carries 12 bits. None: the default, 120 s
    max_restart_time: Seconds | None = attrs.field(default=None, converter=checked(bgpsession.optional_restart_time))
    # this peer's origin-invalid paths: Reject, Deprefer or Disabled; None: the BGPConfiguration's originValidation
    origin_validation: str | None = attrs.field(default=None, converter=checked(optional(bgpsession.origin_validation)))
    # BFD toward this peer (Calico Enterprise): None, or BFDIfDirectlyConnected, when the peer is on a
    # link of the node that a BFDConfiguration selecting the node matches (routing/bfd.py)
    failure_detection_mode: str = attrs.field(default="None", converter=checked(failure_detection_mode))
    # Calico's, validated as libcalico-go does and stored, not acted on yet (pending.py names them at apply)
    ttl_security: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(0, 255))))
    next_hop_mode: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("Auto", "Self", "Keep")(v)))
    local_as_number: ASNumber | None = attrs.field(default=None, converter=checked(optional_as_number))
    reverse_peering: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("Auto", "Manual")(v)))
    local_workload_selector: Selector | None = attrs.field(default=None, converter=checked(optional_selector))

    # Calico Enterprise's dual-ToR BGPPeers also set restartMode and birdGatewayMode (not implemented)
    calico_only: ClassVar[frozenset[str]] = frozenset({"restartMode", "birdGatewayMode"})

    def __attrs_post_init__(self) -> None:
        if self.node and self.node_selector is not None:
            raise bad("nodeSelector", str(self.node_selector), "node and nodeSelector are mutually exclusive")
        if self.peer_selector is not None:
            if self.peer_ip:
                raise bad("peerIP", self.peer_ip, "peerIP and peerSelector are mutually exclusive")
            if self.as_number is not None:
                raise bad("asNumber", self.as_number,
                           "a peerSelector peer takes each remote node's AS; asNumber must be empty")
        # calicoctl takes a peer with neither peerIP nor peerSelector (stored, it makes no session), and a
        # peerIP without asNumber (a Calico node's address: its AS is the node's, routing/topology.py)
        # as projectcalico/api's BGPPeer validation (its validation tests: TestBGPPeer_Validation)
        if self.keep_original_next_hop and self.next_hop_mode:
            raise bad("nextHopMode", self.next_hop_mode, "keepOriginalNextHop and nextHopMode cannot both be set")
        if self.local_workload_selector is not None:
            if self.peer_ip:
                raise bad("peerIP", self.peer_ip, "peerIP must be empty when localWorkloadSelector is set")
            if self.peer_selector is not None:
                raise bad("peerSelector", str(self.peer_selector),
                          "peerSelector must be empty when localWorkloadSelector is set")
            if self.as_number is None:
                raise missing("asNumber", "required when localWorkloadSelector is set")
        if self.reachable_by and not self.peer_ip:
            raise bad("reachableBy", self.reachable_by, "reachableBy must be empty when peerIP is empty")
        if self.reachable_by and self.peer_ip:
            if ipaddress.ip_address(self.reachable_by).version != ipaddress.ip_address(self.peer_address).version:
                raise bad("reachableBy", self.reachable_by, "must be the same IP version as peerIP")
        if self.max_prefix_action != "warn" and self.max_prefixes is None:
            raise missing("maxPrefixes", f"maxPrefixAction {self.max_prefix_action} needs it")
        bgpsession.check_timers(self.hold_time, self.keepalive_time)

    @property
    def makes_sessions(self) -> bool:
        """Whether this peer can make a session: a peerSelector, or a peerIP (without asNumber, only
        when it is a Calico node's address: routing/topology.py decides)."""
        return self.peer_selector is not None or bool(self.peer_ip)

    @property
    def peer_address(self) -> str:
        return split_peer_ip(self.peer_ip)[0] if self.peer_ip else ""

    @property
    def peer_port(self) -> int | None:
        return split_peer_ip(self.peer_ip)[1] if self.peer_ip else None

    def selects_node(self, node: "Node") -> bool:
        """Does this peering apply to `node`? (global when neither node nor nodeSelector is set)."""
        if self.node:
            return node.name == self.node
        return self.node_selector is None or self.node_selector.matches(node.labels)


@attrs.frozen
class BGPPeer:
    kind: ClassVar[str] = "BGPPeer"
    metadata: Metadata
    spec: BGPPeerSpec

    @property
    def name(self) -> str:
        return self.metadata.name
