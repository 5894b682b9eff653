"""Calico's YAML reads as calicoctl reads it (projectcalico/go-yaml-wrapper over gopkg.in/yaml.v2, then
UnmarshalStrict: calicoctl/calicoctl/resourcemgr/resourcemgr.go createResourcesFromBytes), Calico's
fields are stored with a warning, and bad or hostile input is refused fast, naming the field."""
from __future__ import annotations

import ipaddress
import time

import pytest

from calico_bgp.resources import model
from calico_bgp.resources.bgpfilter import BGPFilterRule
from calico_bgp.resources.documents import MAX_LIST_ITEMS, dump_documents, load_documents, to_document
from calico_bgp.resources.durations import format_seconds
from calico_bgp.resources.fields import InvalidResource
from calico_bgp.resources.pending import warning
from calico_bgp.resources.selector import parse
from calico_bgp.resources.store import MAX_TXN_BYTES, chunks
from calico_bgp.resources.yamlread import MAX_INPUT_BYTES, read_documents

V3 = "apiVersion: projectcalico.org/v3\n"


def refused(text: str) -> str:
    started = time.monotonic()
    with pytest.raises(InvalidResource) as err:
        load_documents(text)
    assert time.monotonic() - started < 1
    message = str(err.value)
    assert "\n" not in message and len(message) < 600
    return message


def node(labels: str = "{}", extra: str = "") -> str:
    return (f"{V3}kind: Node\nmetadata:\n  name: n1\n  labels: {labels}\n{extra}"
            "spec:\n  bgp: {ipv4Address: 198.18.0.1/24}\n")


def test_an_unquoted_yes_label_is_true_as_calico_reads_it_and_selects():
    (n,) = load_documents(node("{route-reflector: yes, rack: 7, on-call: off}"))
    assert n.labels == {"route-reflector": "true", "rack": "7", "on-call": "false"}
    assert parse("route-reflector == 'true'").matches(n.labels)


def test_yaml_v2_scalars_no_base_60_and_go_integer_prefixes():
    (doc,) = read_documents("a: 5663:12\nb: 0x1F\nc: 017\nd: y\ne: 2026-12-07\nf: 1_000\ng: '5663:12'\n")
    assert doc == {"a": "5663:12", "b": 31, "c": 15, "d": True, "e": "2026-12-07", "f": 1000, "g": "5663:12"}
    # a Go prefix with no digits after it is no number to yaml.v2's ParseInt: the scalar stays text
    (doc,) = read_documents("a: 0x_\nb: 0b_\nc: -0o_\n")
    assert doc == {"a": "0x_", "b": "0b_", "c": "-0o_"}
    (n,) = load_documents(node("{a: 0x_}"))
    assert n.labels == {"a": "0x_"}
    text = (f"{V3}kind: BGPConfiguration\nmetadata: {{name: default}}\nspec:\n"
            "  communities: [{name: c1, value: 5663:12}]\n"
            "  prefixAdvertisements: [{cidr: 198.18.0.0/16, communities: [5663:12, c1]}]\n")
    (c,) = load_documents(text)
    assert c.spec.communities[0].value == "5663:12"
    assert c.spec.prefix_advertisements[0].communities == ("5663:12", "c1")


def test_a_name_yaml_v2_reads_as_a_boolean_comes_out_as_calico_names_it_and_prints_back_quoted():
    (n,) = load_documents(node(extra="").replace("name: n1", "name: n"))
    assert n.name == "false"  # yaml.v2 reads n as false; ghodss gives the string field "false"
    (pool,) = load_documents(f"{V3}kind: IPPool\nmetadata: {{name: p, labels: {{a: 'y'}}}}\nspec: {{cidr: 198.18.0.0/16}}\n")
    assert "a: 'y'" in dump_documents([pool])
    assert load_documents(dump_documents([pool])) == [pool]


def test_a_top_level_yaml_list_and_a_kind_list_are_taken():
    pools = "\n".join(f"- {{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {{name: p{i}}}, "
                      f"spec: {{cidr: '198.18.{i}.0/24'}}}}" for i in range(3))
    assert [p.name for p in load_documents(pools)] == ["p0", "p1", "p2"]
    listed = f"{V3}kind: IPPoolList\nitems:\n" + "\n".join("  " + line for line in pools.splitlines())
    assert [p.name for p in load_documents(listed)] == ["p0", "p1", "p2"]


def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines():
    message = refused(f"{V3}kind: IPPool\nmetadata: {{name: p}}\nspec:\n  cidr: 198.18.0.0/16\n  cidr: 198.19.0.0/16\n")
    assert message == "YAML at line 6: key 'cidr' given twice in one mapping (first at line 5)"
    # 1 and true would be one key of the mapping built (True == 1): refused, not merged silently
    with pytest.raises(ValueError, match="given twice"):
        read_documents("1: a\ntrue: b\n")


def test_an_annotation_or_label_that_is_not_a_string_is_refused_and_a_number_coerced():
    assert "metadata.annotations[note]: expected a string, got list" in refused(
        node(extra="  annotations: {note: [a, b]}\n"))
    assert "metadata.labels[rack]: expected a string, got dict" in refused(node("{rack: {a: 1}}"))
    (n,) = load_documents(node(extra="  annotations: {replicas: 3, ready: yes}\n"))
    assert n.metadata.annotations == {"replicas": "3", "ready": "true"}


def test_input_over_the_size_limit_is_refused_unread():
    message = refused("a: '" + "x" * MAX_INPUT_BYTES + "'\n")
    assert message == f"input is {MAX_INPUT_BYTES + 6:,} bytes; at most {MAX_INPUT_BYTES:,} are read"


def test_a_huge_value_is_not_echoed_whole():
    message = refused(node("{rack: '" + "r" * 3_000_000 + "'}"))
    assert "metadata.labels[rack]: label values are strings (max 253" in message
    assert "(3,000,002 characters)" in message and len(message) < 400


def test_a_filter_of_69k_rules_is_refused_up_front_naming_the_limit():
    rules = "\n".join(f"  - {{action: Reject, cidr: 198.18.{i % 256}.0/24}}" for i in range(69_000))
    message = refused(f"{V3}kind: BGPFilter\nmetadata: {{name: big}}\nspec:\n  exportV4:\n{rules}\n")
    assert message == f"document 1: spec.exportV4: more than {MAX_LIST_ITEMS:,} items in one list"


@pytest.mark.parametrize("spec, fragment", [
    ("{peerSelector: 'has(rr'}", "spec.peerSelector: expected"),
    ("{peerIP: 198.18.0.256, asNumber: 1}", "spec.peerIP: not a valid IP address"),
    ("{peerIP: '198.18.0.1:65536', asNumber: 1}", "spec.peerIP: port out of range"),
    ("{peerIP: 198.18.0.1, asNumber: 4294967296}", "spec.asNumber: AS number out of range 1..4294967295"),
])
def test_bad_peer_fields_are_named(spec, fragment):
    assert fragment in refused(f"{V3}kind: BGPPeer\nmetadata: {{name: p}}\nspec: {spec}\n")


def test_a_peer_calicoctl_takes_is_taken_and_told_what_is_not_done():
    bare, no_as = load_documents(f"{V3}kind: BGPPeer\nmetadata: {{name: a}}\nspec: {{node: later}}\n---\n"
                                 f"{V3}kind: BGPPeer\nmetadata: {{name: b}}\nspec: {{peerIP: 198.18.0.9, "
                                 "ttlSecurity: 1, nextHopMode: Self, localASNumber: 65001, reversePeering: Manual}\n")
    # a peerIP without asNumber makes a session when it is a Calico node's address (routing/topology.py)
    assert not bare.spec.makes_sessions and no_as.spec.makes_sessions
    assert warning(bare) == "BGPPeer 'a': stored, not acted on yet: neither peerIP nor peerSelector (no session is made)"
    assert warning(no_as) is None  # ttlSecurity and nextHopMode reach the wire (speaker/), the others the sessions
    (defaults,) = load_documents(f"{V3}kind: BGPPeer\nmetadata: {{name: c}}\nspec: {{peerIP: 198.18.0.9, "
                                 "asNumber: 65001, ttlSecurity: 0, nextHopMode: Auto, reversePeering: Auto}\n")
    assert warning(defaults) is None  # Calico's defaults ask for nothing not done


def test_calico_fields_of_each_kind_are_stored_round_trip_and_warned_once():
    text = (f"{V3}kind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: 198.18.0.0/16, ipipMode: CrossSubnet, "
            "natOutgoing: true}\n---\n"
            f"{V3}kind: BGPConfiguration\nmetadata: {{name: node.n1}}\nspec: {{bindMode: NodeIP, "
            "ignoredInterfaces: ['cali*']}\n---\n"
            f"{V3}kind: BGPFilter\nmetadata: {{name: f}}\nspec:\n  exportV4:\n  - {{action: Accept, source: RemotePeers, "
            "operations: [{addCommunity: {value: '65000:1'}}]}\n  - {action: Reject}\n")
    pool, config, filt = load_documents(text)
    assert warning(pool) == ("IPPool 'p': stored, not acted on yet: ipipMode CrossSubnet (no tunnels: this project "
                             "routes natively)")  # natOutgoing is done: dataplane/nat
    assert warning(config) == ("BGPConfiguration 'node.n1': stored, not acted on yet: bindMode NodeIP (only the "
                               "default BGPConfiguration's bindMode applies, as in Calico); ignoredInterfaces (no "
                               "interface's routes are read into BGP here: nothing to leave out)")
    (default,) = load_documents(f"{V3}kind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{bindMode: NodeIP}}\n")
    assert warning(default) is None  # the speaker listens on the node's BGP addresses only (agent/neighbors.py)
    assert warning(filt) is None  # every BGPFilter field is acted on (routing/bgpfilter.py)
    assert to_document(filt)["spec"]["exportV4"][0] == {
        "action": "Accept", "source": "RemotePeers", "operations": [{"addCommunity": {"value": "65000:1"}}]}
    for r in (pool, config, filt):
        assert load_documents(dump_documents([r])) == [r]
        assert model.decode(type(r), model.encode(r), where="k") == r
    (plain,) = load_documents(f"{V3}kind: IPPool\nmetadata: {{name: q}}\nspec: {{cidr: 198.19.0.0/16, ipipMode: Never}}\n")
    assert warning(plain) is None


def test_a_rules_cidr_match_leaves_its_other_conditions_to_routing():
    net = ipaddress.ip_network("198.18.1.0/24")
    assert BGPFilterRule(action="Reject").matches(net)
    assert BGPFilterRule(action="Reject", interface="eth*").matches(net)  # routing/bgpfilter.py: conditions_hold
    assert not BGPFilterRule(action="Reject", cidr="198.19.0.0/16", match_operator="In", peer_type="eBGP").matches(net)


def test_durations_print_as_go_does_and_read_back():
    assert [format_seconds(s) for s in (0, 5, 90, 120, 3600, 3725)] == ["0s", "5s", "1m30s", "2m0s", "1h0m0s", "1h2m5s"]
    (c,) = load_documents(f"{V3}kind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{nodeMeshMaxRestartTime: 120s}}\n")
    assert to_document(c) == {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
                              "metadata": {"name": "default"},
                              "spec": {"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": True, "asNumber": 64512,
                                       "nodeMeshMaxRestartTime": "2m0s"}}
    assert load_documents(dump_documents([c])) == [c]


@pytest.mark.parametrize("field", ["nodeToNodeMeshEnabled: true", "asNumber: 64512",
                                   "serviceClusterIPs: [{cidr: 198.19.0.0/16}]",
                                   "serviceExternalIPs: [{cidr: 198.19.0.0/16}]"])
def test_a_node_configuration_may_not_set_what_only_the_clusters_sets(field):
    # libcalico-go lib/clientv3/bgpconfig.go ValidateDefaultOnlyFields; a field at its default counts as set
    message = refused(f"{V3}kind: BGPConfiguration\nmetadata: {{name: node.n1}}\nspec: {{{field}}}\n")
    assert message.startswith(f"document 1 (BGPConfiguration 'node.n1'): spec.{field.split(':')[0]}: only the "
                              "cluster's BGPConfiguration 'default' sets it")


def test_transactions_stay_under_etcds_request_limit_and_a_resource_over_it_is_refused_up_front():
    pools = load_documents("\n---\n".join(
        f"{V3}kind: IPPool\nmetadata: {{name: p{i}}}\nspec: {{cidr: '198.18.{i}.0/24'}}" for i in range(120)))
    assert chunks([100] * 120, pools) == [(0, 50), (50, 50), (100, 20)]
    third = MAX_TXN_BYTES // 3
    assert chunks([third, third, third, third + 10, 5], pools[:5]) == [(0, 3), (3, 2)]
    with pytest.raises(InvalidResource, match=r"IPPool 'p1' is 1,048,577 bytes stored \(at most 1,048,576\)"):
        chunks([10, MAX_TXN_BYTES + 1], pools[:2])
