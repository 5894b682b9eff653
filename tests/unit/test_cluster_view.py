"""ClusterView's bookkeeping without etcd: what a full read (first sync or resync) keeps."""
from __future__ import annotations

from calico_bgp.datastore import Keys
from calico_bgp.datastore.types import KeyValue
from calico_bgp.resources import codec, model
from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.resources.view import ClusterView
from ipam.block import Block


def kv(key: str, value: bytes, rev: int = 1) -> KeyValue:
    return KeyValue(key, value, rev, rev, 1)


def test_a_resync_keeps_the_last_good_value_of_a_key_that_no_longer_decodes():
    keys = Keys("/t/calico-bgp/v1")
    view = ClusterView(None, keys)
    pool = IPPool(model.Metadata("pods"), IPPoolSpec(cidr="198.19.0.0/16"))
    config = BGPConfiguration(spec=BGPConfigurationSpec(as_number=65000))
    block = Block.new("198.19.0.0/26", "n1", sequence_number=1)
    pool_key, config_key = view.store.key(IPPool, "pods"), view.store.key(BGPConfiguration, "default")
    block_key = keys.block("198.19.0.0/26")
    view._load([kv(pool_key, model.encode(pool)), kv(config_key, model.encode(config)),
                kv(block_key, codec.encode(block))], 1)
    assert view.snapshot().pools == {"pods": pool} and view.snapshot().config.spec.as_number == 65000
    # compaction, then a full read: all three values went bad meanwhile, and a new pool arrived
    other = IPPool(model.Metadata("more"), IPPoolSpec(cidr="198.18.128.0/20"))
    view._load([kv(pool_key, b"{not json", 2), kv(config_key, b'{"spec": {"asNumber": 0}}', 2),
                kv(block_key, b'{"cidr": "198.19.0.0/26"}', 2), kv(view.store.key(IPPool, "more"),
                                                                   model.encode(other), 2)], 2)
    snap = view.snapshot()
    assert snap.pools == {"pods": pool, "more": other}
    assert snap.config.spec.as_number == 65000
    assert snap.blocks == {"198.19.0.0/26": block}
    assert set(snap.corrupt) == {pool_key, config_key, block_key}
    # a key that is gone from the read is gone, corrupt or not
    view._load([kv(view.store.key(IPPool, "more"), model.encode(other), 3)], 3)
    assert view.snapshot().pools == {"more": other} and not view.snapshot().blocks


def test_the_agent_sees_peers_that_can_make_sessions_and_a_nodes_bgp_configuration_apart():
    keys = Keys("/t/calico-bgp/v1")
    view = ClusterView(None, keys)
    peers = {name: model.from_dict(BGPPeer, {"metadata": {"name": name}, "spec": spec}, where="t") for name, spec in (
        ("tor", {"peerIP": "198.18.0.254", "asNumber": 65000}),
        ("rr", {"peerSelector": "has(rr)"}),
        ("bare", {"node": "later"}),                      # neither peerIP nor peerSelector: stored only
        ("calico-node", {"peerIP": "198.18.0.9"}))}       # no asNumber: a Calico node's AS (topology)
    node_config = BGPConfiguration(model.Metadata("node.n1"), BGPConfigurationSpec(as_number=65009))
    view._load([kv(view.store.key(BGPPeer, n), model.encode(p)) for n, p in peers.items()]
               + [kv(view.store.key(BGPConfiguration, "node.n1"), model.encode(node_config))], 1)
    snap = view.snapshot()
    assert set(snap.peers) == {"tor", "rr", "calico-node"}
    # a node's own configuration never stands in for the cluster's: it is that node's, by node name
    assert snap.config == BGPConfiguration() and not snap.corrupt
    assert snap.node_configs == {"n1": node_config}


def test_a_watch_event_for_a_nodes_bgp_configuration_changes_that_node_only():
    keys = Keys("/t/calico-bgp/v1")
    view = ClusterView(None, keys)
    key = view.store.key(BGPConfiguration, "node.n1")
    own = BGPConfiguration(model.Metadata("node.n1"), BGPConfigurationSpec(listen_port=1790))
    assert view._apply(kv(key, model.encode(own)), key) is True
    assert view.snapshot().node_configs == {"n1": own} and view.snapshot().config == BGPConfiguration()
    assert view._apply(kv(key, b"{not json"), key) is False  # corrupt: the last good value stays
    assert view.snapshot().node_configs == {"n1": own} and key in view.snapshot().corrupt
    assert view._apply(None, key) is True
    assert view.snapshot().node_configs == {} and not view.snapshot().corrupt


def test_every_key_the_view_reads_sorts_before_the_status_documents_it_does_not_watch():
    """The view reads and watches [prefix, prefix/status/): each node's status document stays out of
    every agent's watch, and no key the view reads may sort at or after it."""
    from calico_bgp.resources.bfdconfig import BFDConfiguration
    from calico_bgp.resources.bgpfilter import BGPFilter
    from calico_bgp.resources.node import Node
    from calico_bgp.resources.policyfilter import PolicyFilter
    keys = Keys("/t/calico-bgp/v1")
    view = ClusterView(None, keys)
    end = keys.statuses()
    read = [view.store.key(cls, "zzzz") for cls in (IPPool, BGPConfiguration, BGPPeer, Node, BGPFilter,
                                                     PolicyFilter, BFDConfiguration)]
    read += [keys.block("255.255.255.192/26"), keys.secret("zzzz"), keys.affinity("zzzz", "198.19.0.0/26")]
    assert all(keys.prefix < k < end for k in read), [k for k in read if not k < end]
    assert keys.status("n1") >= end and keys.status("a") >= end


def test_a_range_with_an_end_names_it():
    from calico_bgp.datastore import wire
    body = wire.encode_range("/t/", prefix=True, end="/t/status/")
    assert body["key"] == wire.b64(b"/t/") and body["range_end"] == wire.b64(b"/t/status/")
