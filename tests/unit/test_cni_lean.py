"""A CNI plugin is exec'd once per container operation, so what it loads is its start-up cost
(`python -X importtime`): the protocol modules load only the standard library, an IPAM ADD's
modules (the blocking etcd client, the allocator) no event loop, HTTP library or YAML parser, and
reading the stored pools and node (pools.py) not the resource model. Each checked in a fresh interpreter, as tests/unit/test_import_rules.py does."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.unit.test_import_rules import ROOT, broken, loaded_by

PROTOCOL = ["calico_bgp.cni.spec", "calico_bgp.cni.env", "calico_bgp.cni.netconf", "calico_bgp.cni.result",
            "calico_bgp.cni.error", "calico_bgp.cni.skel", "calico_bgp.cni.delegate", "calico_bgp.cni.pools",
            "calico_bgp.cni.install", "calico_bgp.cni.ipam_plugin", "calico_bgp.cni.service"]
IPAM_ADD = ["calico_bgp.datastore.blocking", "ipam.allocator"]
HEAVY = ("trio", "httpx", "yaml", "pyroute2", "click", "exabgp", "subprocess")


@pytest.mark.parametrize("module", PROTOCOL)
def test_a_protocol_module_loads_only_the_standard_library(module):
    assert broken(loaded_by(module), (*HEAVY, "attr", "attrs", "cattrs")) == []


@pytest.mark.parametrize("module", IPAM_ADD)
def test_what_an_ipam_add_loads_has_no_event_loop_http_or_yaml(module):
    assert broken(loaded_by(module), HEAVY) == []


PROBE = """
import json, sys
import calico_bgp.cni.ipam_plugin, ipam.allocator
from calico_bgp.cni import pools
pool = {"metadata": {"name": "a"}, "spec": {"cidr": "198.18.0.0/16", "nodeSelector": "rack == 'r1'"}}
assert pools.stored_pool(json.dumps(pool).encode()).selects({"rack": "r1"})
assert pools.stored_labels(json.dumps({"metadata": {"labels": {"rack": "r1"}}}).encode()) == {"rack": "r1"}
print(json.dumps(sorted(sys.modules)))
"""


def test_reading_the_stored_pools_and_node_does_not_build_the_resource_model():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "calico_bgp.resources.selector" in loaded  # a nodeSelector other than all() was parsed
    assert broken(loaded, (*HEAVY, "calico_bgp.resources.model", "calico_bgp.resources.fields",
                           "calico_bgp.resources.ippool", "calico_bgp.resources.node")) == []


SERVED = """
import sys
sys.path[:0] = [{root!r}]
from calico_bgp.cni import service
for data in (b'{{"cniVersion": "1.1.0"}}', b'{{"ipam_service": true}}', b'{{"ipam_service" : false}}'):
    service.wanted(data)
service.socket_path()
service.ask({{b"CNI_COMMAND": b"ADD"}}, b"{{}}")  # nothing answers here: the path up to the connect
service.ask({{b"CNI_COMMAND": b"ADD"}}, b"{{}}", b"calico-bgp-cni", service.netns_id(b"/proc/self/ns/net"))
print(" ".join(sorted(sys.modules)))
"""


def test_the_executables_path_to_the_warm_process_loads_no_os_json_or_logging():
    """Under -S, as the launchers run (calico-bgp-ipam's and calico-bgp-cni's, whose netlink half is the
    warm process's too): asking the agent's warm process (the default path) loads none of
    what the in-process path needs; os alone was a tenth of the executable's start."""
    out = subprocess.run([sys.executable, "-S", "-c", SERVED.format(root=str(ROOT))], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    loaded = set(out.stdout.split())
    assert "calico_bgp.cni.service" in loaded
    assert not loaded & {"os", "json", "logging", "re", "enum", "socket", "typing", "__future__"}, sorted(loaded)
