"""BFDConfiguration and BGPPeer failureDetectionMode through `calico-bgp apply/get/delete` against a
real etcd: Calico Enterprise's YAML applies unchanged and round-trips; bad input is refused with the
field named and nothing stored; the agent's cluster view carries the configurations."""
from __future__ import annotations

import pytest
import trio
import yaml

from calico_bgp.cli.common import EXIT_USAGE
from calico_bgp.datastore import EtcdClient, Keys
from calico_bgp.resources.documents import load_documents
from calico_bgp.resources.store import ResourceStore
from calico_bgp.resources.view import ClusterView

# docs.tigera.io/calico-enterprise/latest/reference/resources/bfdconfig, the sample as published
ENTERPRISE_SAMPLE = """
apiVersion: projectcalico.org/v3
kind: BFDConfiguration
metadata:
  name: default
spec:
  nodeSelector: "all()"
  interfaces:
  - matchPattern: "*"
    minimumRecvInterval: 10ms
    minimumSendInterval: 100ms
    idleSendInterval: 1m
    multiplier: 5
"""

RACK = """
apiVersion: projectcalico.org/v3
kind: BFDConfiguration
metadata: {name: rack-uplinks}
spec:
  nodeSelector: rack == 'r1'
  interfaces:
  - {matchPattern: "ens1f*", minimumRecvInterval: 300ms, minimumSendInterval: 300ms, multiplier: 3}
  - {matchPattern: eth0, idleSendInterval: 1m30s}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor1}
spec:
  nodeSelector: rack == 'r1'
  peerIP: 198.18.1.1
  asNumber: 65101
  failureDetectionMode: BFDIfDirectlyConnected
"""


def keys_under(etcd_url: str, prefix: str) -> list[str]:
    async def go():
        async with EtcdClient([etcd_url]) as c:
            return [kv.key for kv in (await c.range(prefix)).kvs]
    return trio.run(go)


def test_the_enterprise_sample_applies_unchanged_and_round_trips(cli):
    r = cli("apply", "-f", "-", input=ENTERPRISE_SAMPLE + "---\n" + RACK)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == ["created", "BFDConfiguration/default", "created", "BFDConfiguration/rack-uplinks",
                                "created", "BGPPeer/tor1"]
    for alias in ("bfdconfigurations", "bfdconfiguration", "bfdconfig", "bfdconfigs", "bfdc", "BFDConfiguration"):
        table = cli("get", alias)
        assert table.exit_code == 0, (alias, table.stderr)
        assert table.stdout.splitlines()[0].split() == ["NAME", "SELECTOR", "INTERFACES"]
    rows = [ln.split() for ln in cli("get", "bfdconfigs").stdout.splitlines()[1:]]
    assert rows == [["default", "all()", "*"], ["rack-uplinks", 'rack', '==', '"r1"', "ens1f*,eth0"]]
    wide = cli("get", "bfdconfig", "rack-uplinks", "-o", "wide").stdout
    assert "ens1f*:rx300ms/tx300ms/idle1m/x3" in wide and "eth0:rx10ms/tx100ms/idle1m30s/x5" in wide

    shown = yaml.safe_load(cli("get", "bfdconfig", "rack-uplinks", "-o", "yaml").stdout)
    assert shown["spec"]["interfaces"] == [
        {"matchPattern": "ens1f*", "minimumRecvInterval": "300ms", "minimumSendInterval": "300ms", "multiplier": 3},
        {"matchPattern": "eth0", "idleSendInterval": "1m30s"}]
    peer = yaml.safe_load(cli("get", "bgppeer", "tor1", "-o", "yaml").stdout)
    assert peer["spec"]["failureDetectionMode"] == "BFDIfDirectlyConnected"
    # what get prints, apply takes back unchanged
    again = cli("apply", "-f", "-", input=cli("get", "bfdconfigs", "-o", "yaml").stdout)
    assert again.exit_code == 0 and again.stdout.split()[::2] == ["unchanged", "unchanged"]
    assert cli("apply", "-f", "-", input=ENTERPRISE_SAMPLE).stdout.split() == ["unchanged", "BFDConfiguration/default"]

    assert cli("delete", "bfdconfig", "default").exit_code == 0
    assert [ln.split()[0] for ln in cli("get", "bfdconfigs").stdout.splitlines()[1:]] == ["rack-uplinks"]


def _bfd(interface: str) -> str:
    return ("apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {name: bad}\n"
            f"spec:\n  interfaces:\n  - {interface}\n")


def _peer(mode: str) -> str:
    return ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: bad}\n"
            f"spec: {{peerIP: 198.18.1.1, asNumber: 65101, failureDetectionMode: {mode}}}\n")


@pytest.mark.parametrize("text, fragments", [
    (_bfd("{matchPattern: eth0, multiplier: 0}"), ["spec.interfaces[0].multiplier", "1..255", "got 0"]),
    (_bfd("{matchPattern: eth0, multiplier: 256}"), ["spec.interfaces[0].multiplier", "1..255", "got 256"]),
    (_bfd("{matchPattern: eth0, minimumRecvInterval: 0s}"),
     ["spec.interfaces[0].minimumRecvInterval", "greater than 0", "'0s'"]),
    (_bfd("{matchPattern: eth0, minimumSendInterval: -100ms}"),
     ["spec.interfaces[0].minimumSendInterval", "greater than 0", "'-100ms'"]),
    (_bfd("{matchPattern: eth0, idleSendInterval: soon}"),
     ["spec.interfaces[0].idleSendInterval", "expected a duration like '300ms'", "'soon'"]),
    (_bfd("{matchPattern: eth0, minimumRecvInterval: 300}"),
     ["spec.interfaces[0].minimumRecvInterval", "a bare number has no unit", "got 300"]),
    (_bfd("{matchPattern: eth0, minimumRecvInterval: 1.5ms}"),
     ["spec.interfaces[0].minimumRecvInterval", "whole number of milliseconds"]),
    (_bfd("{matchPattern: 'e*0'}"),
     ["spec.interfaces[0].matchPattern", "a name prefix ending in '*'", "'e*0'"]),
    (_bfd("{matchPattern: averyveryverylongname}"), ["spec.interfaces[0].matchPattern", "at most 15 characters"]),
    (_bfd("{matchPattern: eth0}\n  - {matchPattern: eth0, multiplier: 3}"),
     ["spec.interfaces[1].matchPattern", "the same pattern as interfaces[0]"]),
    (_bfd("{matchPattern: eth0, echo: true}"), ["spec.interfaces[0].echo: unknown field"]),
    (_peer("BFD"), ["spec.failureDetectionMode", "expected one of None, BFDIfDirectlyConnected", "'BFD'"]),
    (_peer("bfdifdirectlyconnected"), ["spec.failureDetectionMode", "'bfdifdirectlyconnected'"]),
])
def test_bad_input_names_the_field_and_stores_nothing(cli, etcd_url, key_prefix, text, fragments):
    assert cli("apply", "-f", "-", input=ENTERPRISE_SAMPLE).exit_code == 0
    before = keys_under(etcd_url, key_prefix)
    # a good document in front of the bad one is not stored either
    good = ("apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {name: good}\n"
            "spec: {interfaces: [{matchPattern: eth1}]}\n---\n")
    result = cli("apply", "-f", "-", input=good + text)
    assert result.exit_code == EXIT_USAGE, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "document 2" in lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]
    assert keys_under(etcd_url, key_prefix) == before


async def test_the_cluster_view_carries_bfd_configurations_and_follows_them(etcd_url, key_prefix):
    keys = Keys(key_prefix)
    async with EtcdClient([etcd_url]) as client:
        store = ResourceStore(client, keys)
        sample, = load_documents(ENTERPRISE_SAMPLE)
        await store.apply(sample)
        view = ClusterView(client, keys)
        async with trio.open_nursery() as nursery:
            await nursery.start(view.run)
            assert view.snapshot().bfd_configs == {"default": sample}
            rack = load_documents(RACK)
            await store.apply_all(rack)
            with trio.fail_after(10):
                while "rack-uplinks" not in view.snapshot().bfd_configs:
                    await view.changed()
            assert view.snapshot().bfd_configs["rack-uplinks"] == rack[0]
            assert view.snapshot().peers["tor1"].spec.failure_detection_mode == "BFDIfDirectlyConnected"
            await store.delete("bfdconfig", "default")
            with trio.fail_after(10):
                while "default" in view.snapshot().bfd_configs:
                    await view.changed()
            nursery.cancel_scope.cancel()
