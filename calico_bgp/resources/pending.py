"""What a resource asks for that calico-bgp stores and does not act on yet (pure): one warning line per
resource, which `apply` prints. A field is named here only when its value asks for something: an
IPPool with ipipMode Never says nothing, one with Always is told that tunnels are not made."""
from __future__ import annotations

from typing import Any, Callable

from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.node import Node


def _ippool(r: IPPool) -> list[str]:
    s, out = r.spec, []
    if s.ipip_mode != "Never" or s.vxlan_mode != "Never":
        mode = f"ipipMode {s.ipip_mode}" if s.ipip_mode != "Never" else f"vxlanMode {s.vxlan_mode}"
        out.append(f"{mode} (no tunnels: this project routes natively)")
    # allowedUses and assignmentMode are acted on by calico-bgp-ipam (cni/pools.py)
    if s.namespace_selector is not None:
        out.append("namespaceSelector (no Kubernetes namespaces here)")
    return out


def _node(r: Node) -> list[str]:
    s = r.spec
    given = [f for f, v in (("bgp.ipv4IPIPTunnelAddr", s.bgp and s.bgp.ipv4_ipip_tunnel_addr),
                            ("ipv4VXLANTunnelAddr", s.ipv4_vxlan_tunnel_addr),
                            ("ipv6VXLANTunnelAddr", s.ipv6_vxlan_tunnel_addr),
                            ("vxlanTunnelMACAddr", s.vxlan_tunnel_mac_addr),
                            ("vxlanTunnelMACAddrV6", s.vxlan_tunnel_mac_addr_v6)) if v]
    return [f"{', '.join(given)} (no tunnels: this project routes natively)"] if given else []


def _bgpconfig(r: BGPConfiguration) -> list[str]:
    s, out = r.spec, []
    # listenPort and prefixAdvertisements are applied per node (routing/topology.py)
    if r.node and s.log_severity_screen != "Info":
        out.append(f"logSeverityScreen {s.log_severity_screen} (node {r.node!r}: the agent's --log-level sets its logging)")
    services = [f for f, v in (("serviceClusterIPs", s.service_cluster_ips),
                               ("serviceExternalIPs", s.service_external_ips),
                               ("serviceLoadBalancerIPs", s.service_load_balancer_ips)) if v]
    if services:  # the CIDRs are announced (routing/advertise_services.py); what Kubernetes adds is not
        out.append(f"{', '.join(services)}: the routes to single Kubernetes Services (a bare-metal node has "
                   "none; the CIDRs themselves are announced from every node)")
    # which pools' routes the BGP daemon programs into the kernel; the rest is felix's, and there is no
    # felix here: calico-bgp programs every pool's routes whatever it says (IPIP pools are warned about)
    if s.program_cluster_routes in ("Disabled", "EnabledIPIPOnly"):
        out.append(f"programClusterRoutes {s.program_cluster_routes} (no Felix here: calico-bgp programs "
                   "the routes to every pool's blocks itself)")
    if r.node and s.bind_mode == "NodeIP":  # confd reads bindMode from the global BGPConfiguration alone
        out.append("bindMode NodeIP (only the default BGPConfiguration's bindMode applies, as in Calico)")
    if s.ignored_interfaces:
        out.append("ignoredInterfaces (no interface's routes are read into BGP here: nothing to leave out)")
    if s.local_workload_peering_ipv4 or s.local_workload_peering_ipv6:
        out.append("localWorkloadPeeringIPV4/IPV6 (no peering with workloads)")
    if s.ipv4_normal_route_priority is not None or s.ipv6_normal_route_priority is not None:
        out.append("ipv4/ipv6NormalRoutePriority (mesh routes keep LOCAL_PREF as sent and kernel metric 0; "
                   "a BGPFilter setPriority on import sets the metric)")
    return out


def _bgppeer(r: BGPPeer) -> list[str]:
    s, out = r.spec, []
    if s.peer_selector is None and not s.peer_ip:
        out.append("neither peerIP nor peerSelector (no session is made)")
    if s.local_workload_selector is not None:
        out.append("localWorkloadSelector")
    return out


_CHECKS: dict[str, Callable[[Any], list[str]]] = {
    "IPPool": _ippool, "Node": _node, "BGPConfiguration": _bgpconfig, "BGPPeer": _bgppeer,
}


def warning(resource: Any) -> str | None:
    """'BGPPeer 'p': stored, not acted on yet: localWorkloadSelector', or None when all of it is."""
    check = _CHECKS.get(resource.kind)
    parts = check(resource) if check else []
    if not parts:
        return None
    return f"{resource.kind} {resource.metadata.name!r}: stored, not acted on yet: {'; '.join(parts)}"
