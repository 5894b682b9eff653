"""The lab's network config per node is `calico-bgp cni install`'s conflist entry as libcni hands it to
the plugin, and it reads back through the protocol module as the node's, with the lab's etcd."""
from __future__ import annotations

import json
from pathlib import Path

from calico_bgp.cni import netconf
from lab.workload import CniNetwork


def test_a_nodes_config_is_the_install_conflists_plugin_entry():
    net = CniNetwork("unix:///tmp/e/etcd.sock:2379", "/lab1/calico-bgp/v1", Path("/tmp/bin"), log_file="/tmp/cni.log")
    conf = netconf.parse(json.dumps(net.config("n1")).encode())
    assert (conf.name, conf.type, conf.cni_version) == ("calico-bgp", "calico-bgp-cni", "1.1.0")
    assert conf.nodename == "n1" and conf.etcd_endpoints == ("unix:///tmp/e/etcd.sock:2379",)
    assert conf.etcd_prefix == "/lab1/calico-bgp/v1" and conf.log_file_path == "/tmp/cni.log"
    assert (conf.ipam.type, conf.ipam.assign_ipv4, conf.ipam.assign_ipv6) == ("calico-bgp-ipam", True, False)


def test_a_dual_stack_lab_asks_for_both_families_and_the_default_prefix_is_left_out():
    conf = CniNetwork("unix:///s:2379", None, Path("/tmp/bin"), ipv6=True).config("n2")
    assert conf["ipam"]["assign_ipv6"] == "true" and "etcd_prefix" not in conf
    assert netconf.parse(json.dumps(conf).encode()).ipam.assign_ipv6 is True
