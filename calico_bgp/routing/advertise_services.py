"""BGPConfiguration serviceClusterIPs / serviceExternalIPs / serviceLoadBalancerIPs -> the service
prefixes this node announces (pure).

What Calico does (confd/pkg/backends/calico/client.go updateGlobalRoutes, called for each of the three
lists; bird_aggr.cfg.template puts each CIDR under /staticroutes as a blackhole in BIRD's table;
bird_ipam.cfg.template's calico_export_to_bgp_peers accepts it towards every peer, after
reject_disabled_pools and apply_communities, and calico_kernel_programming keeps it, via
/rejectcidrs, out of the kernel):
- every CIDR of the three lists is announced whole, from every node, to every BGP peer, with the
  communities prefixAdvertisements give it and through the peer's BGPFilters, like a block;
- not from a node labelled `node.kubernetes.io/exclude-from-external-load-balancers: "true"`;
- not when it lies inside an IPPool with disableBGPExport (reject_disabled_pools runs first);
- never programmed into the node's own kernel (here: an announced prefix never gets a kernel route).

Not done, for want of Kubernetes: Calico's route generator (confd/pkg/backends/calico/routes.go) also
announces one /32 or /128 per Service address (cluster IPs, external IPs, LoadBalancer ingress IPs;
from every node, or with externalTrafficPolicy Local only from nodes with a local endpoint) read from
Kubernetes Services and Endpoints, which a bare-metal node does not have.

Routes other speakers send inside these CIDRs are kept out of the kernel on every node, excluded or
not (client.go updateGlobalRoutes puts each CIDR under /rejectcidrs whether the node announces it or
not, and bird_ipam.cfg.template's calico_kernel_programming has `if ( net ~ <cidr> ) then { reject; }`
for each, which takes the CIDR and every prefix inside it): they stay in the RIB, are reflected and
shown by `routes`, and never get a kernel route (kept_out_of_kernel, routing/desired.py).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

from calico_bgp.resources.bgpconfig import BGPConfigurationSpec
from calico_bgp.resources.ippool import IPPool
from calico_bgp.routing.prefix import Prefix

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def service_cidrs(spec: BGPConfigurationSpec) -> list[str]:
    """The three lists' CIDRs, in order, each once; libcalico-go takes an empty entry (`{}`): skipped."""
    cidrs = [c.cidr for c in (*spec.service_cluster_ips, *spec.service_external_ips, *spec.service_load_balancer_ips)]
    return list(dict.fromkeys(c for c in cidrs if c))


def kept_out_of_kernel(spec: BGPConfigurationSpec) -> tuple[Prefix, ...]:
    """The prefixes no learned route inside of goes into this node's kernel: every service CIDR."""
    return tuple(Prefix.of(ipaddress.ip_network(c, strict=False)) for c in service_cidrs(spec))


def service_prefixes(spec: BGPConfigurationSpec, node_labels: Mapping[str, str],
                     pools: Iterable[IPPool] = ()) -> set[Prefix]:
    """The service CIDRs this node announces."""
    if node_labels.get(EXCLUDE_LABEL) == "true":
        return set()
    quiet = [p.spec.network for p in pools if p.spec.disable_bgp_export]
    out: set[Prefix] = set()
    for cidr in service_cidrs(spec):
        net = ipaddress.ip_network(cidr, strict=False)
        if not any(net.version == q.version and net.subnet_of(q) for q in quiet):  # type: ignore[arg-type]
            out.add(Prefix.of(net))
    return out
