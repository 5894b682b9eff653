"""BGPConfiguration: the cluster's BGP settings ('default'): AS, the node-to-node mesh, timers, communities
and the prefixes that carry them, flap damping, origin validation, the service CIDRs every node
announces (routing/advertise_services.py). A node's own ('node.<name>') sets that node's listenPort
(what it listens on, and what every other node dials it on) and its prefixAdvertisements (in place of
the cluster's), as confd applies them; its other fields are stored. bindMode, ignoredInterfaces and
programClusterRoutes are validated and stored (pending.py names what is not acted on at apply)."""
from __future__ import annotations

import re
from typing import Any, ClassVar

import attrs

from calico_bgp.resources import bgpsession
from calico_bgp.resources.bgpsession import BGPPassword
from calico_bgp.resources.fields import (
    ASNumber,
    Integer,
    Seconds,
    as_number,
    bad,
    boolean,
    checked,
    cidr,
    community,
    int_range,
    ip_address,
    name,
    one_of,
    optional_seconds,
    seconds,
    tuple_of,
)
from calico_bgp.resources.model import Metadata


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


@attrs.frozen
class ServiceCIDR:
    """One entry of serviceClusterIPs / serviceExternalIPs / serviceLoadBalancerIPs; libcalico-go takes
    an empty one (`{}`: its cidr is `omitempty,net`)."""
    cidr: str = attrs.field(default="", converter=checked(lambda v: "" if v in (None, "") else cidr(v)))


_NODE_CONFIG = re.compile(r"^node\.[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Calico's BIRD template matches these against interface names (a glob): no spaces or quotes
_INTERFACE_GLOB = re.compile(r"^[a-zA-Z0-9_.*?\[\]@:+-]{1,64}$")


def _interface_glob(value: Any) -> str:
    if not isinstance(value, str) or not _INTERFACE_GLOB.match(value):
        raise ValueError("expected an interface name or glob like 'eth*' (1..64 of [a-zA-Z0-9_.*?[]@:+-])")
    return value


def _optional_ip(version: int) -> Any:
    def parse(value: Any) -> str:
        if value in (None, ""):
            return ""
        text = ip_address(value)
        if (":" in text) != (version == 6):
            raise ValueError(f"expected an IPv{version} address")
        return text
    return parse


_as_numbers = tuple_of(as_number)  # named apart: inside the class `as_number` is the field


@attrs.frozen
class BGPConfigurationSpec:
    log_severity_screen: str = attrs.field(
        default="Info", converter=checked(one_of("Debug", "Info", "Warning", "Error", "Fatal")))
    node_to_node_mesh_enabled: bool = attrs.field(default=True, converter=checked(boolean))
    as_number: ASNumber = attrs.field(default=64512, converter=checked(as_number))
    # None: not given (179 for the cluster's; a node's then listens on the cluster's). Kept apart from
    # 179 so that a node's explicit 179 overrides a cluster default of another port, as confd's
    # getNodeOrGlobalValue("listen_port") finds the node's key whenever the node's resource sets it
    _listen_port: Integer | None = attrs.field(default=None, alias="listen_port", converter=checked(
        lambda v: None if v is None else int_range(1, 65535)(v)))
    hold_time: Seconds = attrs.field(default=90, converter=checked(bgpsession.hold_time))
    keepalive_time: Seconds | None = attrs.field(default=None, converter=checked(optional_seconds))  # holdTime / 3
    communities: tuple[Community, ...] = ()
    prefix_advertisements: tuple[PrefixAdvertisement, ...] = ()
    damping: Damping = attrs.field(factory=Damping)
    # the sessions the agents make among themselves (the mesh, and route reflectors with each other):
    # their TCP MD5 password and the graceful-restart time they advertise (None: 120 s; 0: none)
    node_mesh_password: BGPPassword | None = None
    node_mesh_max_restart_time: Seconds | None = attrs.field(default=None, converter=checked(bgpsession.optional_restart_time))
    # origin validation from IPAM (calico_bgp/routing/origin.py): what an origin-invalid path for a prefix in a
    # pool gets, and the fabric's ASes that may stand in as origin for a node's (ToRs with as-override)
    origin_validation: str = attrs.field(default="Reject", converter=checked(bgpsession.origin_validation))
    fabric_as_numbers: tuple[ASNumber, ...] = attrs.field(default=(), converter=checked(_as_numbers))
    # announced whole from every node (routing/advertise_services.py); the rest is stored, not acted on
    service_cluster_ips: tuple[ServiceCIDR, ...] = ()
    service_external_ips: tuple[ServiceCIDR, ...] = ()
    service_load_balancer_ips: tuple[ServiceCIDR, ...] = ()
    bind_mode: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("None", "NodeIP")(v)))
    ignored_interfaces: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(_interface_glob)))
    program_cluster_routes: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly")(v)))
    local_workload_peering_ipv4: str = attrs.field(default="", converter=checked(_optional_ip(4)))
    local_workload_peering_ipv6: str = attrs.field(default="", converter=checked(_optional_ip(6)))
    # Felix's normal workload route priority, which Calico's mesh sessions carry as LOCAL_PREF
    # 2147483647 - priority and program as the kernel metric (libcalico-go api v3 bgpconfig.go
    # IPv4/IPv6NormalRoutePriority, 1..2147483646, default 1024); stored, not acted on (pending.py)
    ipv4_normal_route_priority: Integer | None = attrs.field(default=None, converter=checked(
        lambda v: None if v is None else int_range(1, 2147483646)(v)))
    ipv6_normal_route_priority: Integer | None = attrs.field(default=None, converter=checked(
        lambda v: None if v is None else int_range(1, 2147483646)(v)))

    calico_only: ClassVar[frozenset[str]] = frozenset()

    def __attrs_post_init__(self) -> None:
        bgpsession.check_timers(self.hold_time, self.keepalive_time)
        names = {c.name for c in self.communities}
        for i, adv in enumerate(self.prefix_advertisements):
            for j, c in enumerate(adv.communities):
                if c not in names:
                    try:
                        community(c)
                    except ValueError:
                        raise bad(f"prefixAdvertisements[{i}].communities[{j}]", c,
                                   "neither a community value nor a name defined in communities") from None

    @property
    def listen_port(self) -> int:
        """The port this configuration listens on: as given, else BGP's 179."""
        return 179 if self._listen_port is None else self._listen_port

    @property
    def listen_port_given(self) -> int | None:
        """listenPort as the resource gives it; None when it does not."""
        return self._listen_port

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
        if self.metadata.name != "default" and not _NODE_CONFIG.match(self.metadata.name):
            raise bad("metadata.name", self.metadata.name,
                       "a BGPConfiguration is 'default' (the cluster's) or 'node.<node name>' (one node's)")

    # libcalico-go lib/clientv3/bgpconfig.go ValidateDefaultOnlyFields: only the cluster's sets these
    DEFAULT_ONLY: ClassVar[tuple[str, ...]] = ("nodeToNodeMeshEnabled", "asNumber", "serviceExternalIPs",
                                               "serviceClusterIPs")

    @classmethod
    def check_given(cls, name: Any, spec: Any) -> None:
        """Refuse, as libcalico-go does, a per-node configuration that sets a field only the cluster's may
        (`spec` as given: a field at its default still counts as set)."""
        if name == "default" or not isinstance(spec, dict):
            return
        for field in cls.DEFAULT_ONLY:
            if spec.get(field) not in (None, [], ""):
                raise bad(f"spec.{field}", spec[field], "only the cluster's BGPConfiguration 'default' sets it")

    @property
    def node(self) -> str:
        """The node a per-node configuration ('node.<name>') is for; '' for the cluster's."""
        return self.metadata.name[len("node."):] if self.metadata.name.startswith("node.") else ""

    @property
    def name(self) -> str:
        return self.metadata.name
