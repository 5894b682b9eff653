"""The resources: IPPool, Node, BGPConfiguration, BGPPeer, BGPFilter, PolicyFilter.

Each resource is `metadata` (name, labels) + `spec`, spelled as Calico's projectcalico.org/v3 API
(camelCase on the wire through the one codec, snake_case here). Values are frozen attrs classes;
every field normalises and validates itself where it is declared, so a resource that exists is
valid, whether it came from YAML, from etcd or from Python. Errors name the field path and value.

Fields Calico has and calico-bgp does not implement are listed per class (`calico_only`) so
input using them is reported as "not supported", never silently dropped.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, ClassVar, Mapping, TypeVar, Union

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError, IterableValidationNote

from calico_bgp.resources import codec
from calico_bgp.resources.fields import (
    AS_MAX,
    ASNumber,
    Integer,
    InvalidField,
    InvalidResource,
    Port,
    Seconds,
    UnknownKind,
    as_number,
    bad,
    boolean,
    checked,
    cidr,
    community,
    community_parser,
    int_range,
    interface,
    ip_address,
    join_path,
    label_map,
    name,
    one_of,
    optional,
    optional_as_number,
    optional_name,
    optional_seconds,
    optional_selector,
    peer_ip,
    port,
    seconds,
    selector,
    split_peer_ip,
    tuple_of,
)
from calico_bgp.resources.selector import ALL, Selector

T = TypeVar("T")

# ------------------------------------------------------------------------------------------------
# Common parts

@attrs.frozen
class Metadata:
    name: str = attrs.field(converter=checked(name))
    labels: dict[str, str] = attrs.field(factory=dict, converter=checked(label_map), hash=False)
    annotations: dict[str, str] = attrs.field(factory=dict, hash=False)

    # Written by Kubernetes/calicoctl, meaningless here; accepted on input and not stored.
    ignored: ClassVar[frozenset[str]] = frozenset(
        {"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"})


# ------------------------------------------------------------------------------------------------
# IPPool

def _never(value: Any) -> str:
    if value in (None, "", "Never"):
        return "Never"
    raise ValueError("only Never is supported: calico-bgp routes natively over BGP, without IPIP/VXLAN")


def _no_nat(value: Any) -> bool:
    if boolean(value):
        raise ValueError("natOutgoing is not supported by calico-bgp (no NAT on the nodes)")
    return False


def default_block_size(pool_cidr: str) -> int:
    return 122 if ":" in pool_cidr else 26


@attrs.frozen
class IPPoolSpec:
    cidr: str = attrs.field(converter=checked(cidr))
    # 26 for IPv4 and 122 for IPv6 (Calico's defaults); v4 20..32, v6 116..128, not shorter than the pool.
    block_size: Integer = attrs.field(default=attrs.Factory(lambda s: default_block_size(s.cidr), takes_self=True),
                                  converter=checked(int_range(0, 128)))
    disabled: bool = attrs.field(default=False, converter=checked(boolean))
    node_selector: Selector = attrs.field(default=ALL, converter=checked(selector))
    disable_bgp_export: bool = attrs.field(default=False, converter=checked(boolean))
    ipip_mode: str = attrs.field(default="Never", converter=checked(_never))
    vxlan_mode: str = attrs.field(default="Never", converter=checked(_never))
    nat_outgoing: bool = attrs.field(default=False, converter=checked(_no_nat))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"namespaceSelector", "allowedUses", "assignmentMode", "ipip", "nat-outgoing"})

    def __attrs_post_init__(self) -> None:
        net = self.network
        lo, hi = (116, 128) if net.version == 6 else (20, 32)
        if not lo <= self.block_size <= hi:
            raise bad("blockSize", self.block_size, f"IPv{net.version} block sizes are {lo}..{hi}")
        if self.block_size < net.prefixlen:
            raise bad("blockSize", self.block_size,
                       f"blocks cannot be larger than the pool (/{net.prefixlen})")

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    @property
    def version(self) -> int:
        return self.network.version


@attrs.frozen
class IPPool:
    kind: ClassVar[str] = "IPPool"
    metadata: Metadata
    spec: IPPoolSpec

    @property
    def name(self) -> str:
        return self.metadata.name


# ------------------------------------------------------------------------------------------------
# Node

def _cluster_id(value: Any) -> str:
    if value in (None, ""):
        return ""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise ValueError("expected an IPv4 dotted quad like 198.18.0.1") from None


@attrs.frozen
class NodeBGPSpec:
    ipv4_address: str = attrs.field(default="", converter=checked(interface(4)))
    ipv6_address: str = attrs.field(default="", converter=checked(interface(6)))
    as_number: ASNumber | None = attrs.field(default=None, converter=checked(optional_as_number))
    # Set: this node is a route reflector for that cluster ID (RFC 4456).
    route_reflector_cluster_id: str = attrs.field(default="", converter=checked(_cluster_id))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"ipv4IPIPTunnelAddr", "ipv4VXLANTunnelAddr", "ipv6VXLANTunnelAddr"})

    def __attrs_post_init__(self) -> None:
        if not self.ipv4_address and not self.ipv6_address:
            raise bad("ipv4Address", "", "a node's bgp needs ipv4Address and/or ipv6Address")

    @property
    def ipv4(self) -> ipaddress.IPv4Interface | None:
        return ipaddress.IPv4Interface(self.ipv4_address) if self.ipv4_address else None

    @property
    def ipv6(self) -> ipaddress.IPv6Interface | None:
        return ipaddress.IPv6Interface(self.ipv6_address) if self.ipv6_address else None


@attrs.frozen
class NodeAddress:
    address: str = attrs.field(converter=checked(lambda v: str(ipaddress.ip_interface(v))))
    type: str = ""


@attrs.frozen
class NodeSpec:
    bgp: NodeBGPSpec | None = None
    addresses: tuple[NodeAddress, ...] = ()

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"orchRefs", "wireguard", "ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr",
         "vxlanTunnelMACAddrV6", "interfaceIPv4Address", "interfaceIPv6Address"})


@attrs.frozen
class Node:
    kind: ClassVar[str] = "Node"
    metadata: Metadata
    spec: NodeSpec = attrs.field(factory=NodeSpec)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels


# ------------------------------------------------------------------------------------------------
# BGPConfiguration

@attrs.frozen
class Community:
    name: str = attrs.field(converter=checked(name))
    value: str = attrs.field(converter=checked(community))


@attrs.frozen
class PrefixAdvertisement:
    cidr: str = attrs.field(converter=checked(cidr))
    communities: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(str)))


@attrs.frozen
class Damping:
    """RFC 2439 route flap damping. Defaults are the usual vendor ones (Cisco/Juniper/FRR)."""

    enabled: bool = attrs.field(default=False, converter=checked(boolean))
    half_life: Seconds = attrs.field(default=900, converter=checked(seconds))      # 15 min
    suppress: Integer = attrs.field(default=2000, converter=checked(int_range(1, 1_000_000)))
    reuse: Integer = attrs.field(default=750, converter=checked(int_range(1, 1_000_000)))
    max_suppress: Seconds = attrs.field(default=3600, converter=checked(seconds))  # 60 min

    def __attrs_post_init__(self) -> None:
        if self.reuse >= self.suppress:
            raise bad("reuse", self.reuse, f"must be below suppress ({self.suppress})")
        if self.half_life <= 0:
            raise bad("halfLife", self.half_life, "must be positive")
        if self.max_suppress < self.half_life:
            raise bad("maxSuppress", self.max_suppress, f"must be at least halfLife ({self.half_life}s)")
        # the penalty is capped where it decays to reuse in maxSuppress: a cap at or below suppress
        # would never suppress anything (halfLife 1h, maxSuppress 1h: the cap is 1500 < 2000)
        ceiling = self.reuse * 2 ** (self.max_suppress / self.half_life)
        if ceiling <= self.suppress:
            raise bad("maxSuppress", self.max_suppress,
                      f"with halfLife {self.half_life}s and reuse {self.reuse} the penalty is capped at "
                      f"{ceiling:.0f}, never above suppress ({self.suppress}): nothing would be damped")


def _hold_time(value: Any) -> int:
    s = seconds(value)
    if s != 0 and not 3 <= s <= 65535:
        raise ValueError("hold time is 0 or 3..65535 seconds (RFC 4271)")
    return s


def _optional_hold_time(value: Any) -> int | None:
    return None if value is None else _hold_time(value)


def _optional_restart_time(value: Any) -> int | None:
    if value is None:
        return None
    t = seconds(value)
    if t > 4095:
        raise ValueError("at most 4095s (the graceful-restart capability has 12 bits for it)")
    return t


def _check_timers(hold: int | None, keepalive: int | None) -> None:
    """ExaBGP sends keepalives every third of the negotiated hold time and has no knob for it: a
    keepaliveTime is taken only when it says exactly that (never one that would not be honoured)."""
    if keepalive is None:
        return
    if hold is None:
        raise bad("keepaliveTime", keepalive, "keepalives follow holdTime (a third of it): set holdTime instead")
    if hold == 0 and keepalive:
        raise bad("keepaliveTime", keepalive, "must be 0 when holdTime is 0")
    if hold > 0 and keepalive != hold // 3:
        raise bad("keepaliveTime", keepalive, f"keepalives are sent every third of holdTime ({hold // 3}s here): "
                                               "set holdTime, or leave keepaliveTime out")


@attrs.frozen
class SecretKeyRef:
    name: str = attrs.field(converter=checked(name))
    key: str = attrs.field(converter=checked(lambda v: v if isinstance(v, str) and v else _raise("a key is required")))


def _raise(msg: str) -> Any:
    raise ValueError(msg)


@attrs.frozen(repr=False)
class BGPPassword:
    """Where a session password comes from: a secret in etcd (keys.secret(name), field key) or a file
    on the node. The password itself is never part of a resource, so it is never printed."""

    secret_key_ref: SecretKeyRef | None = None
    file: str = attrs.field(default="", converter=checked(
        lambda v: v if v in ("", None) or (isinstance(v, str) and v.startswith("/"))
        else _raise("expected an absolute path")))

    def __attrs_post_init__(self) -> None:
        if (self.secret_key_ref is None) == (not self.file):
            raise bad("", {"secretKeyRef": bool(self.secret_key_ref), "file": self.file},
                       "set exactly one of secretKeyRef or file")

    def __repr__(self) -> str:
        where = f"secret {self.secret_key_ref.name}/{self.secret_key_ref.key}" if self.secret_key_ref else self.file
        return f"BGPPassword(<from {where}>)"


_origin_mode = one_of("Reject", "Deprefer", "Disabled", case_insensitive=True)  # not "Off": YAML reads that as false


def _origin_validation(value: Any) -> str:
    if value is False or value == "False":  # a str field gets YAML's false as 'False'
        raise ValueError("expected one of Reject, Deprefer, Disabled (an unquoted Off or No is YAML's false)")
    return _origin_mode(value)
_as_numbers = tuple_of(as_number)  # named apart: inside the class `as_number` is the field


@attrs.frozen
class BGPConfigurationSpec:
    log_severity_screen: str = attrs.field(
        default="Info", converter=checked(one_of("Debug", "Info", "Warning", "Error", "Fatal")))
    node_to_node_mesh_enabled: bool = attrs.field(default=True, converter=checked(boolean))
    as_number: ASNumber = attrs.field(default=64512, converter=checked(as_number))
    listen_port: Integer = attrs.field(default=179, converter=checked(int_range(1, 65535)))
    hold_time: Seconds = attrs.field(default=90, converter=checked(_hold_time))
    keepalive_time: Seconds | None = attrs.field(default=None, converter=checked(optional_seconds))  # holdTime / 3
    communities: tuple[Community, ...] = ()
    prefix_advertisements: tuple[PrefixAdvertisement, ...] = ()
    damping: Damping = attrs.field(factory=Damping)
    # the sessions the agents make among themselves (the mesh, and route reflectors with each other):
    # their TCP MD5 password and the graceful-restart time they advertise (None: 120 s; 0: none)
    node_mesh_password: BGPPassword | None = None
    node_mesh_max_restart_time: Seconds | None = attrs.field(default=None, converter=checked(_optional_restart_time))
    # origin validation from IPAM (calico_bgp/routing/origin.py): what an origin-invalid path for a prefix in a
    # pool gets, and the fabric's ASes that may stand in as origin for a node's (ToRs with as-override)
    origin_validation: str = attrs.field(default="Reject", converter=checked(_origin_validation))
    fabric_as_numbers: tuple[ASNumber, ...] = attrs.field(default=(), converter=checked(_as_numbers))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"serviceLoadBalancerIPs", "serviceExternalIPs", "serviceClusterIPs", "bindMode", "ignoredInterfaces", "localWorkloadPeeringIPV4",
         "localWorkloadPeeringIPV6", "programClusterRoutes"})

    def __attrs_post_init__(self) -> None:
        _check_timers(self.hold_time, self.keepalive_time)
        names = {c.name for c in self.communities}
        for i, adv in enumerate(self.prefix_advertisements):
            for j, c in enumerate(adv.communities):
                if c not in names:
                    try:
                        community(c)
                    except ValueError:
                        raise bad(f"prefixAdvertisements[{i}].communities[{j}]", c,
                                   "neither a community value nor a name defined in communities") from None

    def community_value(self, name_or_value: str) -> str:
        for c in self.communities:
            if c.name == name_or_value:
                return c.value
        return community(name_or_value)


@attrs.frozen
class BGPConfiguration:
    kind: ClassVar[str] = "BGPConfiguration"
    metadata: Metadata = attrs.field(factory=lambda: Metadata("default"))
    spec: BGPConfigurationSpec = attrs.field(factory=BGPConfigurationSpec)

    def __attrs_post_init__(self) -> None:
        if self.metadata.name != "default":
            raise bad("metadata.name", self.metadata.name,
                       "only the cluster-wide BGPConfiguration 'default' is supported (per-node 'node.<name>' is not)")

    @property
    def name(self) -> str:
        return self.metadata.name


# ------------------------------------------------------------------------------------------------
# BGPPeer

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
    hold_time: Seconds | None = attrs.field(default=None, converter=checked(_optional_hold_time))
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
    max_restart_time: Seconds | None = attrs.field(default=None, converter=checked(_optional_restart_time))
    # this peer's origin-invalid paths: Reject, Deprefer or Disabled; None: the BGPConfiguration's originValidation
    origin_validation: str | None = attrs.field(default=None, converter=checked(optional(_origin_validation)))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"ttlSecurity", "localWorkloadSelector", "nextHopMode", "reversePeering"})

    def __attrs_post_init__(self) -> None:
        if self.node and self.node_selector is not None:
            raise bad("nodeSelector", str(self.node_selector), "node and nodeSelector are mutually exclusive")
        if self.peer_selector is not None:
            if self.peer_ip:
                raise bad("peerIP", self.peer_ip, "peerIP and peerSelector are mutually exclusive")
            if self.as_number is not None:
                raise bad("asNumber", self.as_number,
                           "a peerSelector peer takes each remote node's AS; asNumber must be empty")
        else:
            if not self.peer_ip:
                raise bad("peerIP", "", "one of peerIP or peerSelector is required")
            if self.as_number is None:
                raise bad("asNumber", None, "asNumber is required with peerIP")
        if self.reachable_by and self.peer_ip:
            if ipaddress.ip_address(self.reachable_by).version != ipaddress.ip_address(self.peer_address).version:
                raise bad("reachableBy", self.reachable_by, "must be the same IP version as peerIP")
        if self.max_prefix_action != "warn" and self.max_prefixes is None:
            raise bad("maxPrefixAction", self.max_prefix_action, "needs maxPrefixes")
        _check_timers(self.hold_time, self.keepalive_time)

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


# ------------------------------------------------------------------------------------------------
# BGPFilter

@attrs.frozen
class PrefixLength:
    min: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(0, 128))))
    max: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(0, 128))))

    def __attrs_post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise bad("min", self.min, f"must not exceed max ({self.max})")


@attrs.frozen
class BGPFilterRule:
    action: str = attrs.field(converter=checked(one_of("Accept", "Reject")))
    cidr: str = attrs.field(default="", converter=checked(lambda v: "" if v in (None, "") else cidr(v)))
    match_operator: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("Equal", "NotEqual", "In", "NotIn")(v)))
    prefix_length: PrefixLength | None = None
    # Export actions (Accept only). Calico's rule `communities` is a *match*; ours are named add* to stay distinct.
    add_communities: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(community_parser(False))))
    add_large_communities: tuple[str, ...] = attrs.field(
        default=(), converter=checked(tuple_of(community_parser(True, standard_ok=False))))
    local_pref: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(0, AS_MAX))))
    as_path_prepend: tuple[ASNumber, ...] = attrs.field(default=(), converter=checked(_as_numbers))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"source", "interface", "peerType", "communities", "asPathPrefix", "priority", "operations"})

    def __attrs_post_init__(self) -> None:
        if bool(self.cidr) != bool(self.match_operator):
            field = "matchOperator" if self.cidr else "cidr"
            raise bad(field, "", "cidr and matchOperator must both be set or both be empty")
        if self.prefix_length is not None and not self.cidr:
            raise bad("prefixLength", attrs.asdict(self.prefix_length), "cidr is required with prefixLength")
        if self.action == "Reject":
            for f in ("add_communities", "add_large_communities", "local_pref", "as_path_prepend"):
                if getattr(self, f) not in ((), None):
                    raise bad(codec.json_name(f), getattr(self, f), "actions are only allowed with action Accept")

    @property
    def has_actions(self) -> bool:
        return bool(self.add_communities or self.add_large_communities or self.as_path_prepend) \
            or self.local_pref is not None

    @property
    def prefix_range(self) -> tuple[int, int]:
        """(min, max) prefix length this rule's CIDR match allows: the CIDR's length .. 32/128, narrowed
        by prefixLength and clamped to that, as Calico's BIRD filters do (a min below the CIDR's own
        length is the CIDR's length; max below it matches nothing)."""
        net = ipaddress.ip_network(self.cidr)
        pl = self.prefix_length or PrefixLength()
        return (max(net.prefixlen, pl.min if pl.min is not None else 0),
                min(net.max_prefixlen, pl.max if pl.max is not None else net.max_prefixlen))

    def matches(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """Does the rule's CIDR condition match `prefix`? (No CIDR: matches everything.)"""
        if not self.cidr:
            return True
        net = ipaddress.ip_network(self.cidr)
        if net.version != prefix.version:
            return False
        lo, hi = self.prefix_range
        in_len = lo <= prefix.prefixlen <= hi
        if self.match_operator in ("Equal", "NotEqual"):
            hit = prefix == net
        else:
            hit = prefix.subnet_of(net) and in_len  # type: ignore[arg-type]
        return hit if self.match_operator in ("Equal", "In") else not hit


@attrs.frozen
class BGPFilterSpec:
    export_v4: tuple[BGPFilterRule, ...] = ()
    import_v4: tuple[BGPFilterRule, ...] = ()
    export_v6: tuple[BGPFilterRule, ...] = ()
    import_v6: tuple[BGPFilterRule, ...] = ()

    def __attrs_post_init__(self) -> None:
        for attr, version in (("export_v4", 4), ("import_v4", 4), ("export_v6", 6), ("import_v6", 6)):
            field = codec.json_name(attr)
            for i, rule in enumerate(getattr(self, attr)):
                where = f"{field}[{i}]"
                if rule.cidr and ipaddress.ip_network(rule.cidr).version != version:
                    raise bad(f"{where}.cidr", rule.cidr, f"{field} rules take IPv{version} CIDRs")
                if rule.cidr:
                    top = 32 if version == 4 else 128
                    pl = rule.prefix_length or PrefixLength()
                    for bound in ("min", "max"):
                        v = getattr(pl, bound)
                        if v is not None and not 0 <= v <= top:
                            raise bad(f"{where}.prefixLength.{bound}", v, f"must be within 0..{top} for an IPv{version} rule")
                if attr.startswith("import") and rule.has_actions:
                    raise bad(where, "actions", "community/localPref/asPathPrepend actions apply to export rules only")


@attrs.frozen
class BGPFilter:
    kind: ClassVar[str] = "BGPFilter"
    metadata: Metadata
    spec: BGPFilterSpec = attrs.field(factory=BGPFilterSpec)

    @property
    def name(self) -> str:
        return self.metadata.name


# ------------------------------------------------------------------------------------------------
# PolicyFilter (ours, not Calico's: host protection at XDP)

_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "icmp": "ICMP", "icmpv6": "ICMPv6", "udplite": "UDPLite"}


def _protocol(value: Any) -> str | int:
    if value in (None, ""):
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 255:
        return value
    if isinstance(value, str) and value.lower() in _PROTOCOLS:
        return _PROTOCOLS[value.lower()]
    raise ValueError(f"expected one of {', '.join(_PROTOCOLS.values())} or a number 1..255")


@attrs.frozen
class ProtoPort:
    protocol: str = attrs.field(converter=checked(lambda v: one_of("tcp", "udp", case_insensitive=True)(v)))
    port: Integer = attrs.field(converter=checked(int_range(1, 65535)))

    def __str__(self) -> str:
        return f"{self.protocol}:{self.port}"


# Calico's failsafe defaults: ssh, DHCP, BGP, etcd client and peer.
DEFAULT_FAILSAFE_INBOUND = (ProtoPort("tcp", 22), ProtoPort("udp", 68), ProtoPort("tcp", 179),
                            ProtoPort("tcp", 2379), ProtoPort("tcp", 2380))


@attrs.frozen
class RuleSource:
    nets: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(cidr)))


@attrs.frozen
class RuleDestination:
    ports: tuple[Port, ...] = attrs.field(default=(), converter=checked(tuple_of(port)))


@attrs.frozen
class PolicyRule:
    action: str = attrs.field(converter=checked(one_of("Deny", "Allow")))
    source: RuleSource = attrs.field(factory=RuleSource)
    protocol: str | int = attrs.field(default="", converter=checked(_protocol))
    destination: RuleDestination = attrs.field(factory=RuleDestination)

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"notProtocol", "icmp", "notICMP", "ipVersion", "http", "metadata"})

    def __attrs_post_init__(self) -> None:
        if not self.source.nets:
            raise bad("source.nets", [], "at least one source CIDR is required (0.0.0.0/0 or ::/0 for all)")
        if self.destination.ports and self.protocol not in ("TCP", "UDP", "SCTP", 6, 17, 132):
            raise bad("destination.ports", list(self.destination.ports), "ports need protocol TCP, UDP or SCTP")
        if self.action == "Deny" and (self.protocol or self.destination.ports):
            raise bad("protocol", self.protocol or "",
                       "Deny rules match on source nets only; use an Allow rule for protocol/port exceptions")


_IFNAME = re.compile(r"^[a-zA-Z0-9_.:@+*-]{1,15}$")


def _ifname(value: Any) -> str:
    if not isinstance(value, str) or not _IFNAME.match(value):
        raise ValueError("expected an interface name or pattern like eth0, ens*, max 15 characters")
    return value


@attrs.frozen
class PolicyFilterSpec:
    node_selector: Selector = attrs.field(default=ALL, converter=checked(selector))
    interfaces: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(_ifname)))  # empty: uplinks
    rules: tuple[PolicyRule, ...] = ()
    failsafe_inbound_ports: tuple[ProtoPort, ...] = DEFAULT_FAILSAFE_INBOUND


@attrs.frozen
class PolicyFilter:
    kind: ClassVar[str] = "PolicyFilter"
    metadata: Metadata
    spec: PolicyFilterSpec = attrs.field(factory=PolicyFilterSpec)

    @property
    def name(self) -> str:
        return self.metadata.name


# ------------------------------------------------------------------------------------------------
# Kinds

Resource = Union[IPPool, Node, BGPConfiguration, BGPPeer, BGPFilter, PolicyFilter]
KINDS: dict[str, type] = {c.kind: c for c in (IPPool, Node, BGPConfiguration, BGPPeer, BGPFilter, PolicyFilter)}
CALICO_KINDS = frozenset({"IPPool", "Node", "BGPConfiguration", "BGPPeer", "BGPFilter"})

_ALIASES = {
    "IPPool": ["ippool", "ippools", "pool", "pools", "ipp"],
    "Node": ["node", "nodes", "no"],
    "BGPConfiguration": ["bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs", "bgpc"],
    "BGPPeer": ["bgppeer", "bgppeers", "peer", "peers", "bgpp"],
    "BGPFilter": ["bgpfilter", "bgpfilters", "bgpf"],
    "PolicyFilter": ["policyfilter", "policyfilters", "pf", "policy", "policies"],
}
_BY_ALIAS = {alias: kind for kind, aliases in _ALIASES.items() for alias in aliases}


def resolve_kind(text: str) -> type:
    """'ippools', 'BGPConfig', 'bgppeer' ... -> the resource class; UnknownKind otherwise."""
    kind = _BY_ALIAS.get(text.lower())
    if kind is None:
        raise UnknownKind(f"unknown kind {text!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


# ------------------------------------------------------------------------------------------------
# The codec: resources <-> dicts/JSON through calico_bgp.resources.codec, with errors that name paths

def _passthrough(value: Any, _type: Any) -> Any:
    return value  # the attrs converter on the field parses and names the field on error


for _t in (Selector, ASNumber, Seconds, Port, Integer):
    codec.converter.register_structure_hook(_t, _passthrough)
codec.converter.register_unstructure_hook(Selector, str)
codec.converter.register_unstructure_hook(Port, lambda v: v)


def _messages(exc: BaseException, path: str, cls: Any = None) -> list[str]:
    if isinstance(exc, ForbiddenExtraKeysError):
        only = getattr(exc.cl, "calico_only", frozenset())
        ignored = getattr(exc.cl, "ignored", frozenset())
        return [f"{join_path(path, f)}: " + ("field not supported by calico-bgp" if f in only else "unknown field")
                for f in sorted(exc.extra_fields) if f not in ignored]
    if isinstance(exc, cattrs.BaseValidationError):
        with_notes, without = exc.group_exceptions()
        out: list[str] = []
        for inner, note in with_notes:
            if isinstance(note, IterableValidationNote):
                out += _messages(inner, f"{path}[{note.index}]", note.type)
            else:
                out += _messages(inner, join_path(path, codec.json_name(note.name)), note.type)
        for inner in without:
            out += _messages(inner, path, getattr(exc, "cl", None))
        return out
    if isinstance(exc, InvalidField):
        return [exc.message(path)]
    if isinstance(exc, KeyError):
        return [f"{path}: required"]
    if isinstance(cls, type) and attrs.has(cls):
        return [f"{path or 'value'}: expected a mapping"]
    expected = getattr(cls, "__name__", None) or str(cls)
    if str(exc).startswith("expected"):
        return [f"{path or 'value'}: {exc}"]
    return [f"{path or 'value'}: expected {expected} ({exc})"]


def _strip_ignored_metadata(data: Any) -> Any:
    if isinstance(data, Mapping) and isinstance(data.get("metadata"), Mapping):
        meta = {k: v for k, v in data["metadata"].items() if k not in Metadata.ignored}
        data = {**data, "metadata": meta}
    return data


def from_dict(cls: type[T], data: Any, *, where: str) -> T:
    """A resource from its {metadata, spec} dict; InvalidResource('<where>: <path>: <problem>; ...')."""
    if not isinstance(data, Mapping):
        raise InvalidResource(f"{where}: expected a mapping with metadata and spec")
    data = _strip_ignored_metadata(data)
    if data.get("spec") is None and "spec" in data:
        data = {k: v for k, v in data.items() if k != "spec"}
    try:
        return codec.converter.structure(data, cls)
    except (cattrs.BaseValidationError, InvalidField, ValueError, TypeError, KeyError) as exc:
        raise InvalidResource(f"{where}: {'; '.join(_messages(exc, '', cls)) or exc}") from None


def to_dict(resource: Any) -> dict[str, Any]:
    """{metadata, spec} with JSON types only (lists, not tuples); defaults omitted, but never the name."""
    body = json.loads(codec.encode(resource))
    return {"metadata": body.get("metadata", {"name": resource.metadata.name}), "spec": body.get("spec", {})}


def encode(resource: Any) -> bytes:
    return codec.encode(resource)


def decode(cls: type[T], raw: bytes | str, *, where: str) -> T:
    """A stored value back into a resource; errors name `where` (the etcd key)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidResource(f"{where}: not valid JSON ({exc})") from None
    return from_dict(cls, data, where=where)


def describe(resource: Any) -> str:
    return f"{resource.kind} {resource.metadata.name!r}"
