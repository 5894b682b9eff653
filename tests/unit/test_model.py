import ipaddress

import attrs
import pytest

from calico_bgp.resources import fields, model
from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.bgpfilter import BGPFilter
from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
from calico_bgp.resources.fields import InvalidField, InvalidResource, UnknownKind
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.resources.kinds import resolve_kind
from calico_bgp.resources.node import Node, NodeSpec
from calico_bgp.resources.policyfilter import PolicyFilter
from calico_bgp.resources.selector import Selector
from calico_bgp.resources.consistency import ResourceInUse, check_apply, check_delete
from calico_bgp.resources.documents import dump_documents, load_documents


def pool(name="p", **spec):
    return model.from_dict(IPPool, {"metadata": {"name": name}, "spec": {"cidr": "198.18.0.0/16", **spec}},
                           where="t")


def bad(cls, spec, name="x", **top):
    with pytest.raises(InvalidResource) as err:
        model.from_dict(cls, {"metadata": {"name": name}, "spec": spec, **top}, where="t")
    return str(err.value)


# --- IPPool ---------------------------------------------------------------------------------------

def test_ippool_defaults_and_stable_shape_for_ipam():
    p = pool()
    assert p.spec.cidr == "198.18.0.0/16" and p.spec.block_size == 26
    assert p.spec.disabled is False and isinstance(p.spec.node_selector, Selector) and p.spec.node_selector.is_all
    assert p.spec.network == ipaddress.ip_network("198.18.0.0/16")
    v6 = pool(cidr="2001:DB8:0:0::/48")
    assert v6.spec.cidr == "2001:db8::/48" and v6.spec.block_size == 122
    # as calicoctl prints a pool: its modes, selector and block size even at their defaults
    assert model.to_dict(p) == {"metadata": {"name": "p"}, "spec": {
        "cidr": "198.18.0.0/16", "blockSize": 26, "disabled": False, "nodeSelector": "all()",
        "disableBGPExport": False, "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": False}}


@pytest.mark.parametrize("spec, fragment", [
    ({"cidr": "198.18.0.1/16"}, "spec.cidr: host bits set; the network is 198.18.0.0/16 (got '198.18.0.1/16')"),
    ({"cidr": "198.18.0.0/33"}, "spec.cidr: not a valid CIDR (got '198.18.0.0/33')"),
    ({"cidr": "198.18.0.0"}, "spec.cidr: expected a CIDR"),
    ({"cidr": "198.18.0.0/16", "blockSize": 33}, "spec.blockSize: IPv4 block sizes are 20..32 (got 33)"),
    ({"cidr": "198.18.0.0/16", "blockSize": 19}, "spec.blockSize: IPv4 block sizes are 20..32 (got 19)"),
    ({"cidr": "2001:db8::/48", "blockSize": 115}, "spec.blockSize: IPv6 block sizes are 116..128 (got 115)"),
    ({"cidr": "198.18.0.0/26", "blockSize": 24}, "spec.blockSize: blocks cannot be larger than the pool (/26)"),
    ({"cidr": "198.18.0.0/16", "ipipMode": "Sometimes"}, "spec.ipipMode: expected one of Never, Always, CrossSubnet"),
    ({"cidr": "2001:db8::/48", "ipipMode": "Always"}, "spec.ipipMode: IPIP is not supported on an IPv6 pool"),
    ({"cidr": "198.18.0.0/16", "ipipMode": "Always", "vxlanMode": "CrossSubnet"},
     "spec.vxlanMode: cannot enable both VXLAN and IPIP on the same pool"),
    ({"cidr": "198.18.0.0/16", "natOutgoing": "yes"}, "spec.natOutgoing: expected true or false"),
    ({"cidr": "198.18.0.0/16", "disabled": "false"}, "spec.disabled: expected true or false"),
    ({"cidr": "198.18.0.0/16", "nodeSelector": "rack =="}, "spec.nodeSelector: expected a quoted string at position 8"),
    ({"cidr": "198.18.0.0/16", "allowedUses": ["Workloads"]}, "spec.allowedUses[0]: expected one of Workload"),
    ({"cidr": "198.18.0.0/16", "ipip": {"enabled": True}}, "spec.ipip: field not supported by calico-bgp"),
    ({"cidr": "198.18.0.0/16", "blockSiz": 26}, "spec.blockSiz: unknown field"),
])
def test_ippool_errors_name_field_and_value(spec, fragment):
    assert fragment in bad(IPPool, spec)


def test_metadata_errors():
    assert "metadata.name: names are lower-case" in bad(IPPool, {"cidr": "198.18.0.0/16"}, name="Pool_1")
    msg = str(pytest.raises(InvalidResource, model.from_dict, Node,
                            {"metadata": {"name": "n", "labels": {"bad key": "x"}}}, where="t").value)
    assert "metadata.labels[bad key]" in msg


def test_python_construction_validates_too():
    with pytest.raises(InvalidField) as err:
        IPPoolSpec(cidr="198.18.0.0/16", block_size=40)
    assert str(err.value) == "blockSize: IPv4 block sizes are 20..32 (got 40)"
    assert IPPoolSpec(cidr="198.18.0.0/16", node_selector="has(rack)").node_selector.matches({"rack": "a"})
    assert attrs.evolve(pool().spec, disabled=True).disabled


# --- AS numbers, peers --------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(1, 1), (4294967295, 4294967295), ("64512", 64512),
                                             ("64512.10", 64512 * 65536 + 10), ("1.0", 65536)])
def test_as_numbers(value, expected):
    assert fields.as_number(value) == expected


@pytest.mark.parametrize("value", [0, 4294967296, -1, "x", "65536.1", True, 1.5])
def test_bad_as_numbers(value):
    msg = bad(BGPPeer, {"peerIP": "198.18.0.1", "asNumber": value})
    assert msg.startswith("t: spec.asNumber: ") and "(got " in msg


def peer(**spec):
    return model.from_dict(BGPPeer, {"metadata": {"name": "tor"}, "spec": spec}, where="t")


def test_peer_ip_forms():
    assert peer(peerIP="198.18.0.1", asNumber=65001).spec.peer_port is None
    p = peer(peerIP="198.18.0.1:1790", asNumber=65001)
    assert (p.spec.peer_address, p.spec.peer_port) == ("198.18.0.1", 1790)
    p = peer(peerIP="[2001:DB8::1]:1790", asNumber=65001)
    assert p.spec.peer_ip == "[2001:db8::1]:1790" and p.spec.peer_address == "2001:db8::1"
    assert peer(peerIP="2001:db8::1", asNumber=65001).spec.peer_port is None


@pytest.mark.parametrize("spec, fragment", [
    ({"peerIP": "198.18.0.256", "asNumber": 1}, "spec.peerIP: not a valid IP address (got '198.18.0.256')"),
    ({"peerIP": "198.18.0.1:70000", "asNumber": 1}, "spec.peerIP: port out of range"),
    ({"peerIP": "198.18.0.300"}, "spec.peerIP: not a valid IP address"),
    ({"peerIP": "198.18.0.1:70000", "asNumber": 1}, "spec.peerIP: port out of range 1..65535"),
    ({"peerIP": "198.18.0.1", "asNumber": 4294967296}, "spec.asNumber: AS number out of range"),
    ({"peerIP": "198.18.0.1", "localASNumber": 4294967296}, "spec.localASNumber: AS number out of range"),
    ({"peerIP": "198.18.0.1", "nextHopMode": "Next"}, "spec.nextHopMode: expected one of Auto, Self, Keep"),
    ({"peerIP": "198.18.0.1", "reversePeering": "auto"}, "spec.reversePeering: expected one of Auto, Manual"),
    ({"peerIP": "198.18.0.1", "ttlSecurity": 256}, "spec.ttlSecurity: out of range 0..255"),
    ({"peerSelector": "has(rr"}, "spec.peerSelector: expected"),
    # projectcalico/api's BGPPeer validation
    ({"peerIP": "198.18.0.1", "keepOriginalNextHop": True, "nextHopMode": "Self"},
     "spec.nextHopMode: keepOriginalNextHop and nextHopMode cannot both be set"),
    ({"localWorkloadSelector": "all()", "peerIP": "198.18.0.1", "asNumber": 1},
     "spec.peerIP: peerIP must be empty when localWorkloadSelector is set"),
    ({"localWorkloadSelector": "all()", "peerSelector": "all()"},
     "spec.peerSelector: peerSelector must be empty when localWorkloadSelector is set"),
    ({"localWorkloadSelector": "all()"}, "spec.asNumber: missing (required when localWorkloadSelector is set)"),
    ({"peerSelector": "all()", "reachableBy": "198.18.0.254"},
     "spec.reachableBy: reachableBy must be empty when peerIP is empty"),
    ({"peerSelector": "has(rr)", "peerIP": "198.18.0.1"}, "mutually exclusive"),
    ({"peerSelector": "has(rr)", "node": "n1", "nodeSelector": "all()"}, "spec.nodeSelector: node and nodeSelector"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "holdTime": 2}, "spec.holdTime: hold time is 0 or 3..65535"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "holdTime": "9s", "keepaliveTime": "10s"}, "spec.keepaliveTime: keepalives are sent every third of holdTime (3s here)"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "keepaliveTime": "10s"}, "spec.keepaliveTime: keepalives follow holdTime"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "maxPrefixes": 0}, "spec.maxPrefixes: out of range"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "maxPrefixes": 5, "maxPrefixAction": "drop"}, "spec.maxPrefixAction"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "password": {"file": "/a", "secretKeyRef": {"name": "s", "key": "k"}}},
     "spec.password: set exactly one"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "sourceAddress": "eth0"}, "spec.sourceAddress"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "reachableBy": "2001:db8::1"}, "spec.reachableBy: must be the same IP"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "maxRestartTime": "2h"}, "spec.maxRestartTime: at most 4095s"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "restartMode": "LongLivedGracefulRestart"},
     "spec.restartMode: field not supported"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "originValidation": "Drop"},
     "spec.originValidation: expected one of Reject, Deprefer, Disabled (got 'Drop')"),
    ({"peerIP": "198.18.0.1", "asNumber": 1, "originValidation": False},  # YAML's Off
     "spec.originValidation: expected one of Reject, Deprefer, Disabled (an unquoted Off or No is YAML's false)"),
])
def test_peer_errors(spec, fragment):
    assert fragment in bad(BGPPeer, spec)


def test_peer_selection_and_password_never_printed():
    p = peer(peerIP="198.18.0.1", asNumber="65001", holdTime="1m30s", keepaliveTime=30, maxPrefixes=100,
             maxPrefixAction="Teardown", password={"secretKeyRef": {"name": "bgp-secrets", "key": "tor1"}})
    assert p.spec.hold_time == 90 and p.spec.max_prefix_action == "teardown"
    assert repr(p.spec.password) == "BGPPassword(<from secret bgp-secrets/tor1>)"
    n = Node(model.Metadata("n1", {"rack": "a"}), NodeSpec())
    assert p.spec.selects_node(n)
    assert peer(peerIP="198.18.0.1", asNumber=1, nodeSelector="rack == 'b'").spec.selects_node(n) is False
    assert peer(peerIP="198.18.0.1", asNumber=1, node="n1").spec.selects_node(n)
    assert peer(peerSelector="has(rr)", nodeSelector="").spec.node_selector is None  # Calico: empty = unset


# --- Node, BGPConfiguration ----------------------------------------------------------------------

def test_node_and_errors():
    n = model.from_dict(Node, {"metadata": {"name": "n1", "labels": {"rack": "a"}}, "spec": {"bgp": {
        "ipv4Address": "198.18.0.1/24", "ipv6Address": "2001:db8::1", "asNumber": "64512.1",
        "routeReflectorClusterID": "198.18.255.1"}}}, where="t")
    assert n.spec.bgp.ipv4.ip == ipaddress.ip_address("198.18.0.1") and n.spec.bgp.ipv6_address == "2001:db8::1/128"
    assert n.labels == {"rack": "a"}
    assert "spec.bgp.ipv4Address: expected an IPv4 address" in bad(Node, {"bgp": {"ipv4Address": "2001:db8::1/64"}})
    assert "spec.bgp.routeReflectorClusterID: expected an IPv4 dotted quad" in bad(
        Node, {"bgp": {"ipv4Address": "198.18.0.1/24", "routeReflectorClusterID": "1.2.3"}})
    assert "spec.bgp.ipv4IPIPTunnelAddr: expected an IPv4 address" in bad(
        Node, {"bgp": {"ipv4Address": "198.18.0.1/24", "ipv4IPIPTunnelAddr": "2001:db8::1"}})
    assert "spec.vxlanTunnelMACAddr: expected a MAC address" in bad(
        Node, {"bgp": {"ipv4Address": "198.18.0.1/24"}, "vxlanTunnelMACAddr": "66:3e"})
    assert "spec.wireguard: field not supported" in bad(Node, {"wireguard": {}})


def test_bgp_configuration_defaults_and_damping():
    c = BGPConfiguration()
    assert (c.spec.as_number, c.spec.node_to_node_mesh_enabled, c.spec.listen_port) == (64512, True, 179)
    assert (c.spec.hold_time, c.spec.keepalive_time) == (90, None)  # keepalives: a third of the hold time
    # a short hold time alone is fine (a default keepalive of 30 s made 9 s unusable)
    assert model.from_dict(BGPConfiguration, {"metadata": {"name": "default"}, "spec": {"holdTime": "9s"}},
                           where="t").spec.hold_time == 9
    assert "spec.keepaliveTime: keepalives are sent every third" in bad(
        BGPConfiguration, {"keepaliveTime": "20s"}, name="default")
    d = c.spec.damping
    assert (d.enabled, d.half_life, d.suppress, d.reuse, d.max_suppress) == (False, 900, 2000, 750, 3600)
    assert "spec.damping.reuse: must be below suppress" in bad(BGPConfiguration, {"damping": {"reuse": 2500}},
                                                                name="default")
    assert "a BGPConfiguration is 'default' (the cluster's) or 'node.<node name>'" in bad(
        BGPConfiguration, {}, name="rack1")
    assert model.from_dict(BGPConfiguration, {"metadata": {"name": "node.n1"}, "spec": {}}, where="t").node == "n1"
    assert "spec.bindMode: expected one of None, NodeIP" in bad(BGPConfiguration, {"bindMode": "All"}, name="default")
    assert "spec.serviceClusterIPs[0].cidr: not a valid CIDR" in bad(
        BGPConfiguration, {"serviceClusterIPs": [{"cidr": "198.18.0.0/33"}]}, name="default")
    assert "spec.ignoredInterfaces[0]: expected an interface name" in bad(
        BGPConfiguration, {"ignoredInterfaces": ["eth 0"]}, name="default")
    assert "nothing would be damped" in bad(BGPConfiguration, {"damping": {"halfLife": "1h", "maxSuppress": "1h"}},
                                            name="default")


def test_bgp_configuration_mesh_password_and_restart_time():
    c = model.from_dict(BGPConfiguration, {"metadata": {"name": "default"}, "spec": {
        "nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": "mesh"}}, "nodeMeshMaxRestartTime": "5m"}},
        where="t")
    assert repr(c.spec.node_mesh_password) == "BGPPassword(<from secret bgp/mesh>)"
    assert c.spec.node_mesh_max_restart_time == 300
    assert BGPConfiguration().spec.node_mesh_max_restart_time is None  # the session default: 120 s
    assert "spec.nodeMeshMaxRestartTime: at most 4095s" in bad(
        BGPConfiguration, {"nodeMeshMaxRestartTime": "2h"}, name="default")
    assert "spec.nodeMeshPassword.secretKeyRef.key: missing" in bad(
        BGPConfiguration, {"nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": ""}}}, name="default")


# --- BGPFilter, PolicyFilter ------------------------------------------------------------------

def test_bgp_filter_rules_match_like_calico():
    f = model.from_dict(BGPFilter, {"metadata": {"name": "f"}, "spec": {"exportV4": [
        {"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In", "prefixLength": {"min": 24, "max": 26},
         "addCommunities": ["65000:100"], "localPref": 200, "asPathPrepend": [65000, "65000"]},
        {"action": "Reject", "cidr": "198.19.0.0/16", "matchOperator": "NotIn"}]}}, where="t")
    accept, reject = f.spec.export_v4
    net = ipaddress.ip_network
    assert accept.matches(net("198.18.4.0/24")) and accept.matches(net("198.18.4.0/26"))
    assert not accept.matches(net("198.18.4.0/27")) and not accept.matches(net("198.18.0.0/16"))
    assert reject.matches(net("198.18.0.0/24")) and not reject.matches(net("198.19.1.0/24"))
    assert accept.as_path_prepend == (65000, 65000)


@pytest.mark.parametrize("spec, fragment", [
    ({"importV4": [{"action": "Accept", "cidr": "2001:db8::/32", "matchOperator": "In"}]},
     "spec.importV4[0].cidr: importV4 rules take IPv4 CIDRs"),
    ({"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16"}]}, "spec.exportV4[0].matchOperator: missing (cidr and matchOperator go together)"),
    ({"exportV4": [{"action": "Drop"}]}, "spec.exportV4[0].action: expected one of Accept, Reject (got 'Drop')"),
    ({"exportV4": [{"cidr": "198.18.0.0/16", "matchOperator": "In"}]}, "spec.exportV4[0].action: missing"),
    ({"exportV4": [{"action": "Reject", "localPref": 10}]}, "spec.exportV4[0].localPref: actions are only allowed"),
    ({"importV6": [{"action": "Accept", "localPref": 10}]}, "spec.importV6[0]: community/localPref"),
    ({"exportV4": [{"action": "Accept", "cidr": "198.18.0.0/16", "matchOperator": "In",
                    "prefixLength": {"max": 64}}]}, "spec.exportV4[0].prefixLength.max: must be within 0..32"),
    ({"exportV4": [{"action": "Accept", "addCommunities": ["70000:1"]}]}, "spec.exportV4[0].addCommunities[0]"),
    ({"exportV4": [{"action": "Accept", "interface": "a very long name"}]}, "spec.exportV4[0].interface: expected an"),
    ({"exportV4": [{"action": "Accept", "source": "Peers"}]}, "spec.exportV4[0].source: expected one of RemotePeers"),
    ({"exportV4": [{"action": "Accept", "peerType": "ebgp"}]}, "spec.exportV4[0].peerType: expected one of eBGP, iBGP"),
    ({"exportV4": [{"action": "Accept", "communities": {"values": ["70000:1"]}}]},
     "spec.exportV4[0].communities.values[0]: expected a BGP community"),
    ({"exportV4": [{"action": "Accept", "asPathPrefix": [0]}]}, "spec.exportV4[0].asPathPrefix[0]: AS number out"),
    ({"exportV4": [{"action": "Accept", "operations": [{}]}]}, "spec.exportV4[0].operations[0]: an operation is"),
    ({"exportV4": [{"action": "Accept", "operations": [{"setPriority": {"value": -1}}]}]},
     "spec.exportV4[0].operations[0].setPriority.value: out of range"),
])
def test_bgp_filter_errors(spec, fragment):
    assert fragment in bad(BGPFilter, spec)


def test_policy_filter():
    pf = model.from_dict(PolicyFilter, {"metadata": {"name": "pf"}, "spec": {"rules": [
        {"action": "Deny", "source": {"nets": ["198.18.5.0/24", "2001:db8:5::/48"]}},
        {"action": "Allow", "source": {"nets": ["198.18.5.8/29"]}, "protocol": "tcp",
         "destination": {"ports": [443, "8000:8080"]}}]}}, where="t")
    assert [str(p) for p in pf.spec.failsafe_inbound_ports] == ["tcp:22", "udp:68", "tcp:179", "tcp:2379", "tcp:2380"]
    assert pf.spec.rules[1].protocol == "TCP" and pf.spec.rules[1].destination.ports == (443, "8000:8080")
    assert pf.spec.node_selector.is_all and pf.spec.interfaces == ()
    assert "spec.rules[0].source.nets[0]: host bits set" in bad(
        PolicyFilter, {"rules": [{"action": "Deny", "source": {"nets": ["198.18.5.1/24"]}}]})
    assert "spec.rules[0].protocol: Deny rules match on source nets only" in bad(
        PolicyFilter, {"rules": [{"action": "Deny", "source": {"nets": ["198.18.5.0/24"]}, "protocol": "TCP"}]})
    assert "spec.rules[0].destination.ports: ports need protocol" in bad(
        PolicyFilter, {"rules": [{"action": "Allow", "source": {"nets": ["198.18.5.0/24"]},
                                  "destination": {"ports": [22]}}]})
    assert "spec.interfaces[0]: expected an interface name" in bad(PolicyFilter, {"interfaces": ["x" * 16]})


# --- YAML documents: calicoctl examples from Calico's docs apply unchanged --------------------------

CALICO_DOCS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: my.ippool-1
spec:
  cidr: 198.18.0.0/16
  ipipMode: Never
  vxlanMode: Never
  natOutgoing: false
  disabled: false
  nodeSelector: all()
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-v6
spec:
  cidr: 2001:db8:1::/48
  blockSize: 122
  disableBGPExport: true
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: some.name
spec:
  node: rack1-host1
  peerIP: 198.18.1.1
  asNumber: 63400
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: true
  asNumber: 63400
  listenPort: 178
  communities:
    - name: bgp-large-community
      value: 63400:300:100
  prefixAdvertisements:
    - cidr: 198.18.4.0/26
      communities:
        - bgp-large-community
        - 63400:120
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: rack1-host1
  labels:
    route-reflector: "true"
spec:
  bgp:
    asNumber: 64512
    ipv4Address: 198.18.0.1/24
    ipv6Address: 2001:db8:85a3::8a2e:370:7334/120
    routeReflectorClusterID: 224.0.0.1
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: my-filter
spec:
  exportV4:
    - action: Accept
      matchOperator: In
      cidr: 198.18.0.0/16
      prefixLength:
        min: 24
        max: 30
  importV4:
    - action: Reject
      matchOperator: NotIn
      cidr: 198.19.0.0/16
  exportV6:
    - action: Accept
      matchOperator: Equal
      cidr: 2001:db8:1::/64
  importV6:
    - action: Reject
      matchOperator: NotEqual
      cidr: 2001:db8:2::/64
"""


def test_calico_docs_examples_load():
    rs = load_documents(CALICO_DOCS)
    assert [r.kind for r in rs] == ["IPPool", "IPPool", "BGPPeer", "BGPPeer", "BGPConfiguration", "Node", "BGPFilter"]
    config = rs[4]
    assert config.spec.community_value("bgp-large-community") == "63400:300:100"
    assert rs[3].spec.peer_selector.matches({"route-reflector": "true"})
    check_apply({}, rs)  # consistent among themselves
    assert load_documents(dump_documents(rs)) == rs  # what `get -o yaml` prints applies back


def test_calico_list_documents_load():
    text = """
apiVersion: projectcalico.org/v3
kind: IPPoolList
items:
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: a, resourceVersion: "12", uid: x, creationTimestamp: "2024-01-01T00:00:00Z"}
  spec: {cidr: 198.18.0.0/24}
"""
    assert [r.name for r in load_documents(text)] == ["a"]


@pytest.mark.parametrize("text, fragment, cls", [
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 198.18.0.0/16}\n---\n"
     "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: b}\n",
     "document 2: unknown kind 'NetworkPolicy'", UnknownKind),
    ("apiVersion: v1\nkind: IPPool\nmetadata: {name: a}\n", "document 1 (IPPool 'a'): apiVersion 'v1' is not supported", InvalidResource),
    ("apiVersion: projectcalico.org/v3\nkind: PolicyFilter\nmetadata: {name: a}\n",
     "PolicyFilter is not a projectcalico.org/v3 kind", UnknownKind),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 198.18.0.0/16, natOutgoing: 1,"
     " ipipMode: Never}\n", "document 1 (IPPool 'a'): spec.natOutgoing", InvalidResource),
    ("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n"
     "  serviceClusterIPs: [{cidr: 198.18.0.1/24}]\n",
     "document 1 (BGPConfiguration 'default'): spec.serviceClusterIPs[0].cidr: host bits set",
     InvalidResource),
    ("apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 198.18.0.0/16}\n---\n"
     "apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 198.18.0.0/16}\n",
     "IPPool 'a' appears more than once", InvalidResource),
    ("kind: [", "YAML at line 2, column 1: did not find expected node content", InvalidResource),
    ("", "no documents", InvalidResource),
])
def test_document_errors(text, fragment, cls):
    with pytest.raises(cls) as err:
        load_documents(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_errors_of_every_document_are_reported_together():
    text = ("apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 198.18.0.1/16}\n---\n"
            "apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 198.19.0.0/16, blockSize: 12}\n")
    msg = str(pytest.raises(InvalidResource, load_documents, text).value)
    assert "document 1 (IPPool 'a'): spec.cidr" in msg and "document 2 (IPPool 'b'): spec.blockSize" in msg


# --- cross-resource checks (pure) ------------------------------------------------------------------

def test_overlapping_pools_name_both():
    a, b = pool("a", cidr="198.18.0.0/16"), pool("b", cidr="198.18.4.0/24")
    with pytest.raises(InvalidResource) as err:
        check_apply({"IPPool": {"a": a}}, [b])
    assert str(err.value) == "IPPool 'b' (198.18.4.0/24) overlaps IPPool 'a' (198.18.0.0/16)"
    check_apply({"IPPool": {"a": a}}, [pool("c", cidr="198.19.0.0/16"), pool("v6", cidr="2001:db8::/48")])
    check_apply({"IPPool": {"a": a}}, [pool("a", cidr="198.18.0.0/16", disabled=True)])  # update in place
    with pytest.raises(InvalidResource, match="spec.cidr cannot change"):
        check_apply({"IPPool": {"a": a}}, [pool("a", cidr="198.18.0.0/17")])


def test_peer_filters_must_exist_its_node_need_not_and_filter_in_use_cannot_go():
    p = peer(peerIP="198.18.0.1", asNumber=1, filters=["f1"], node="n1")
    with pytest.raises(InvalidResource) as err:
        check_apply({}, [p])
    assert str(err.value) == "BGPPeer 'tor': spec.filters: BGPFilter 'f1' does not exist"
    check_apply({}, [BGPFilter(model.Metadata("f1")), p])  # calicoctl takes a peer of a node not there yet
    f1 = BGPFilter(model.Metadata("f1"))
    n1 = Node(model.Metadata("n1"))
    check_apply({"Node": {"n1": n1}}, [f1, p])
    with pytest.raises(ResourceInUse, match="used by BGPPeer 'tor'"):
        check_delete({"BGPPeer": {"tor": p}}, "BGPFilter", "f1")
    with pytest.raises(ResourceInUse, match="Node 'n1' is the spec.node of BGPPeer 'tor'"):
        check_delete({"BGPPeer": {"tor": p}}, "Node", "n1")
    check_delete({"BGPPeer": {"tor": p}}, "Node", "n2")


def test_kinds_resolve_case_insensitively():
    for text, kind in [("ippool", "IPPool"), ("IPPools", "IPPool"), ("pool", "IPPool"), ("node", "Node"),
                       ("Nodes", "Node"), ("bgppeer", "BGPPeer"), ("BGPPeers", "BGPPeer"),
                       ("bgpconfig", "BGPConfiguration"), ("BGPConfiguration", "BGPConfiguration"),
                       ("bgpconfigurations", "BGPConfiguration"), ("bgpfilter", "BGPFilter"),
                       ("bgpfilters", "BGPFilter"), ("policyfilter", "PolicyFilter"), ("PolicyFilters", "PolicyFilter")]:
        assert resolve_kind(text).kind == kind
    with pytest.raises(UnknownKind, match="unknown kind 'frob'"):
        resolve_kind("frob")


# --- property: every valid resource survives etcd JSON and YAML documents unchanged -------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

names = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True)
selectors = st.sampled_from(["", "all()", "has(rack)", "rack == 'a' && !has(rr)", "zone in {'a','b'}"])


@st.composite
def pools(draw):
    if draw(st.booleans()):
        plen = draw(st.integers(48, 124))
        net = ipaddress.ip_network(f"2001:db8:{draw(st.integers(0, 0xffff)):x}::/{plen}", strict=False)
        block = draw(st.integers(max(116, plen), 128))
    else:
        plen = draw(st.integers(15, 30))
        net = ipaddress.ip_network(f"198.18.{draw(st.integers(0, 255))}.0/{plen}", strict=False)
        block = draw(st.integers(max(20, plen), 32))
    labels = draw(st.dictionaries(st.sampled_from(["rack", "zone"]), st.sampled_from(["a", "b"])))
    return IPPool(model.Metadata(draw(names), labels),
                  IPPoolSpec(cidr=str(net), block_size=block, disabled=draw(st.booleans()),
                             node_selector=draw(selectors), disable_bgp_export=draw(st.booleans())))


@st.composite
def peers(draw):
    by_selector = draw(st.booleans())
    spec: dict = {"peer_selector": draw(selectors.filter(bool))} if by_selector else {
        "peer_ip": draw(st.sampled_from(["198.18.0.1", "198.18.0.1:1790", "2001:db8::1", "[2001:db8::1]:179"])),
        "as_number": draw(st.integers(1, 4294967295))}
    hold = draw(st.sampled_from([None, 0, 9, 90, 240]))
    keepalive = None if hold in (None, 0) else draw(st.sampled_from([None, hold // 3]))
    return BGPPeer(model.Metadata(draw(names)), BGPPeerSpec(
        node_selector=draw(st.sampled_from([None, "has(rack)"])), hold_time=hold, keepalive_time=keepalive,
        max_prefixes=draw(st.sampled_from([None, 1, 1000])), filters=draw(st.lists(names, max_size=2)),
        keep_original_next_hop=draw(st.booleans()),
        origin_validation=draw(st.sampled_from([None, "Reject", "Deprefer", "Disabled"])), **spec))


@st.composite
def configs(draw):
    return BGPConfiguration(spec=BGPConfigurationSpec(
        origin_validation=draw(st.sampled_from(["Reject", "Deprefer", "Disabled"])),
        fabric_as_numbers=tuple(draw(st.lists(st.integers(1, 4294967295), max_size=3)))))


@given(st.one_of(pools(), peers(), configs()))
def test_resources_round_trip_through_json_and_yaml(resource):
    assert model.decode(type(resource), model.encode(resource), where="k") == resource
    assert load_documents(dump_documents([resource])) == [resource]


def test_a_prefix_length_below_the_cidrs_own_is_clamped_as_calico_does():
    f = model.from_dict(BGPFilter, {"metadata": {"name": "f"}, "spec": {"exportV6": [
        {"action": "Accept", "cidr": "2001:db8::/32", "matchOperator": "In", "prefixLength": {"min": 16, "max": 48}}]}},
        where="t")
    r = f.spec.export_v6[0]
    assert r.prefix_range == (32, 48)
    net = ipaddress.ip_network
    assert r.matches(net("2001:db8::/32")) and r.matches(net("2001:db8:1::/48"))
    assert not r.matches(net("2001:db8:1:1::/64")) and not r.matches(net("2001::/16"))


def test_origin_validation_settings_and_their_errors():
    c = model.from_dict(BGPConfiguration, {"metadata": {"name": "default"}, "spec": {
        "originValidation": "deprefer", "fabricASNumbers": [65101, "65102", "1.10"]}}, where="t")
    assert c.spec.origin_validation == "Deprefer" and c.spec.fabric_as_numbers == (65101, 65102, 65546)
    assert model.to_dict(c)["spec"] == {"originValidation": "Deprefer", "fabricASNumbers": [65101, 65102, 65546]}
    assert model.to_dict(BGPConfiguration())["spec"] == {}  # Reject and no fabric ASes: the defaults
    assert load_documents(dump_documents([c])) == [c]
    assert "spec.fabricASNumbers[1]: expected an AS number" in bad(BGPConfiguration, {"fabricASNumbers": [1, "x"]})
    assert "spec.originValidation: expected one of Reject, Deprefer, Disabled" in bad(
        BGPConfiguration, {"originValidation": "Off"})
    assert model.from_dict(BGPPeer, {"metadata": {"name": "p"}, "spec": {
        "peerIP": "198.18.0.1", "asNumber": 1}}, where="t").spec.origin_validation is None  # the cluster's
