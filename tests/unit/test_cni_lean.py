"""A CNI plugin is exec'd once per container operation, so what it loads is its start-up cost
(`python -X importtime`): the protocol modules load only the standard library, and an IPAM ADD's
modules (the blocking etcd client, the allocator, the pool and node resources) no event loop, HTTP
library or YAML parser. Each checked in a fresh interpreter, as tests/unit/test_import_rules.py does."""
from __future__ import annotations

import pytest

from tests.unit.test_import_rules import broken, loaded_by

PROTOCOL = ["calico_bgp.cni.spec", "calico_bgp.cni.env", "calico_bgp.cni.netconf", "calico_bgp.cni.result",
            "calico_bgp.cni.error", "calico_bgp.cni.skel", "calico_bgp.cni.delegate", "calico_bgp.cni.pools",
            "calico_bgp.cni.install", "calico_bgp.cni.ipam_plugin", "calico_bgp.cni.service"]
IPAM_ADD = ["calico_bgp.datastore.blocking", "ipam.allocator", "calico_bgp.resources.ippool",
            "calico_bgp.resources.node"]
HEAVY = ("trio", "httpx", "yaml", "pyroute2", "click", "exabgp", "subprocess")


@pytest.mark.parametrize("module", PROTOCOL)
def test_a_protocol_module_loads_only_the_standard_library(module):
    assert broken(loaded_by(module), (*HEAVY, "attr", "attrs", "cattrs")) == []


@pytest.mark.parametrize("module", IPAM_ADD)
def test_what_an_ipam_add_loads_has_no_event_loop_http_or_yaml(module):
    assert broken(loaded_by(module), HEAVY) == []
