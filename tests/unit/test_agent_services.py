"""The control loop announces the service CIDRs of BGPConfiguration (routing/advertise_services.py) to
every peer, through its filters and with prefixAdvertisements communities, and withdraws them when the
node is excluded from load balancers or the CIDR goes; none is ever programmed into the kernel."""
from __future__ import annotations

import attrs

from calico_bgp.resources import model
from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.routing import desired
from calico_bgp.routing.advertise_services import EXCLUDE_LABEL
from calico_bgp.routing.prefix import Prefix
from tests.unit.test_agent_wiring import TOR, agent, cluster, tor

SERVICES = {"asNumber": 64512, "serviceClusterIPs": [{"cidr": "198.18.200.0/24"}],
            "serviceLoadBalancerIPs": [{"cidr": "2001:db8:202::/120"}],
            "prefixAdvertisements": [{"cidr": "198.18.200.0/24", "communities": ["65000:100"]}]}


def with_config(state, spec: dict, labels: dict | None = None):
    config = model.from_dict(BGPConfiguration, {"metadata": {"name": "default"}, "spec": spec}, where="c")
    nodes = dict(state.nodes)
    if labels is not None:
        me = nodes["n1"]
        nodes["n1"] = attrs.evolve(me, metadata=attrs.evolve(me.metadata, labels=labels))
    return attrs.evolve(state, config=config, nodes=nodes)


async def test_service_cidrs_announced_to_every_peer_withdrawn_when_excluded(tmp_path):
    a, speaker = agent(tmp_path)
    announced: dict[str, dict[str, object]] = {}

    async def announce(neighbors, prefixes, attributes=None, **kw):
        for n in neighbors:
            for p in prefixes:
                announced.setdefault(n, {})[p] = attributes

    async def withdraw(neighbors, prefixes, **kw):
        for n in neighbors:
            for p in prefixes:
                announced.get(n, {}).pop(p, None)

    a.speaker.announce, a.speaker.withdraw = announce, withdraw
    base = cluster(tor())
    await a.control.sync(with_config(base, SERVICES))
    assert {Prefix.of("198.18.200.0/24"), Prefix.of("2001:db8:202::/120")} <= a.state.own
    for peer in (TOR, "198.18.0.2"):                       # the ToR and the mesh peer
        assert announced[peer]["198.18.200.0/24"].communities == ((65000, 100),)
        assert "2001:db8:202::/120" in announced[peer]
    inputs = a._kernel_inputs()
    assert inputs is not None
    _rib, name, blocks, own, static = inputs   # what the kernel writer gets: a learned copy never goes in
    assert {Prefix.of("198.18.200.0/24"), Prefix.of("2001:db8:202::/120")} <= desired.not_learned(name, blocks, own, static)

    await a.control.sync(with_config(base, SERVICES, labels={EXCLUDE_LABEL: "true"}))
    assert "198.18.200.0/24" not in announced[TOR] and "2001:db8:202::/120" not in announced[TOR]
    await a.control.sync(with_config(base, SERVICES))
    assert "198.18.200.0/24" in announced[TOR]
    await a.control.sync(with_config(base, {"asNumber": 64512}))
    assert announced[TOR] == {}


async def test_the_control_loop_keeps_learned_routes_inside_service_cidrs_out_of_the_kernel(tmp_path):
    """Calico's /rejectcidrs (client.go updateGlobalRoutes): on an excluded node too, which announces
    none of them."""
    a, _ = agent(tmp_path)
    base = cluster(tor())
    await a.control.sync(with_config(base, SERVICES, labels={EXCLUDE_LABEL: "true"}))
    assert a.kernel.keep_out == (Prefix.of("198.18.200.0/24"), Prefix.of("2001:db8:202::/120"))
    await a.control.sync(with_config(base, {"asNumber": 64512}))
    assert a.kernel.keep_out == ()
