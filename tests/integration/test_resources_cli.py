"""`calico-bgp apply/get/delete` against a real etcd: round trips, one-line errors, nothing stored on bad input."""
from __future__ import annotations

import json
import logging

import pytest
import trio
import yaml
from click.testing import CliRunner

from calico_bgp.cli import main
from calico_bgp.cli.common import EXIT_CONFLICT, EXIT_ERROR, EXIT_UNAVAILABLE, EXIT_USAGE
from calico_bgp.datastore import EtcdClient, Keys
from calico_bgp.resources import model
from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.fields import InvalidResource
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.resources.documents import load_documents
from calico_bgp.resources.store import ConflictError, CorruptValue, ResourceStore

POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: rack-a
spec:
  cidr: 198.18.64.0/18
  ipipMode: Never
  natOutgoing: false
  nodeSelector: rack == 'a'
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: v6
spec:
  cidr: 2001:db8:64::/48
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: 63400
  nodeToNodeMeshEnabled: false
"""

PEERS = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1, labels: {rack: a}}
spec:
  bgp: {ipv4Address: 198.18.0.1/24, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: only-pools}
spec:
  importV4:
  - {action: Accept, cidr: 198.18.0.0/15, matchOperator: In}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-a}
spec:
  node: node-1
  peerIP: 198.18.0.254:1790
  asNumber: "65000"
  filters: [only-pools]
  password: {secretKeyRef: {name: bgp, key: tor-a}}
"""


def keys_under(etcd_url: str, prefix: str) -> list[str]:
    async def go():
        async with EtcdClient([etcd_url]) as c:
            return [kv.key for kv in (await c.range(prefix)).kvs]
    return trio.run(go)


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_apply_get_delete_round_trip(cli, etcd_url, key_prefix):
    r = cli("apply", "-f", "-", input=POOLS)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == ["created", "IPPool/rack-a", "created", "IPPool/v6", "created",
                                "BGPConfiguration/default"]
    assert cli("apply", "-f", "-", input=POOLS).stdout.split()[0] == "unchanged"

    table = cli("get", "ippools").stdout.splitlines()
    assert table[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert table[1].split()[:2] == ["rack-a", "198.18.64.0/18"]
    wide = cli("get", "pool", "-o", "wide").stdout
    assert "BLOCKSIZE" in wide and "122" in wide

    doc = yaml.safe_load(cli("get", "IPPool", "rack-a", "-o", "yaml").stdout)
    assert doc == {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "rack-a"},
                   "spec": {"cidr": "198.18.64.0/18", "nodeSelector": 'rack == "a"', "blockSize": 26,
                            "disabled": False, "disableBGPExport": False, "ipipMode": "Never", "vxlanMode": "Never",
                            "natOutgoing": False}}
    listing = json.loads(cli("get", "ippools", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in listing["items"]] == ["rack-a", "v6"]
    # What get prints, apply takes back unchanged.
    again = cli("apply", "-f", "-", input=cli("get", "pools", "-o", "yaml").stdout)
    assert again.exit_code == 0 and again.stdout.split()[::2] == ["unchanged", "unchanged"]
    assert "63400" in cli("get", "bgpconfig").stdout

    r = cli("apply", "-f", "-", input=PEERS)
    assert r.exit_code == 0, r.stderr
    peers = cli("get", "bgppeers", "-o", "wide").stdout
    assert "198.18.0.254:1790" in peers and "only-pools" in peers and "set" in peers

    assert cli("delete", "ippool", "rack-a").exit_code == 0
    assert [ln.split()[0] for ln in cli("get", "ippools").stdout.splitlines()[1:]] == ["v6"]
    assert_one_line_error(cli("get", "ippool", "rack-a"), EXIT_ERROR, "IPPool 'rack-a' not found")
    assert_one_line_error(cli("delete", "ippool", "rack-a"), EXIT_ERROR, "IPPool 'rack-a' not found")
    assert_one_line_error(cli("delete", "bgpfilter", "only-pools"), EXIT_USAGE, "used by BGPPeer 'tor-a'")
    assert_one_line_error(cli("delete", "node", "node-1"), EXIT_USAGE, "spec.node of BGPPeer 'tor-a'")
    assert cli("delete", "bgppeer", "tor-a").exit_code == 0
    assert cli("delete", "bgpfilter", "only-pools").exit_code == 0  # with a compare over every peer key
    assert cli("delete", "node", "node-1").exit_code == 0
    # a per-node BGPConfiguration is its own resource: deleting one never reaches the cluster's
    assert_one_line_error(cli("delete", "bgpconfig", "node.node-1"), EXIT_ERROR, "BGPConfiguration 'node.node-1' not found")
    assert_one_line_error(cli("delete", "bgpconfig", "rack-1"), EXIT_USAGE, "'default' or 'node.<node name>'")
    assert "63400" in cli("get", "bgpconfig", "default").stdout


@pytest.mark.parametrize("text, fragments", [
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: inner}\nspec: {cidr: 198.18.64.0/24}\n",
     ["IPPool 'inner' (198.18.64.0/24) overlaps IPPool 'base' (198.18.64.0/18)"]),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.18.300.0/24}\n",
     ["document 2 (IPPool 'p')", "spec.cidr", "198.18.300.0/24"]),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.19.0.0/16, blockSize: 33}\n",
     ["spec.blockSize", "20..32", "33"]),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.19.0.0/16}\n---\n"
     "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: x}\nspec: {}\n",
     ["document 3", "unknown kind 'GlobalNetworkPolicy'"]),
    ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 198.18.0.1, asNumber: 0}\n",
     ["spec.asNumber", "1..4294967295", "0"]),
    ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\n"
     "spec: {peerIP: 198.18.0.1, asNumber: 65000, node: ghost, filters: [nope]}\n",
     ["BGPPeer 'p': spec.filters: BGPFilter 'nope' does not exist"]),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.19.0.0/16, ipipMode: Sometimes}\n",
     ["spec.ipipMode"]),
    ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerSelector: 'has(rr'}\n",
     ["document 2 (BGPPeer 'p'): spec.peerSelector: expected"]),
    ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: tor-a, asNumber: 1}\n",
     ["spec.peerIP: not a valid IP address"]),
    ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: '198.18.0.1:0', asNumber: 1}\n",
     ["spec.peerIP: port out of range"]),
    ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 198.18.0.1, asNumber: 4294967296}\n",
     ["spec.asNumber: AS number out of range"]),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.19.0.0/16, cidr: 198.19.0.0/17}\n",
     ["key 'cidr' given twice in one mapping"]),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p, annotations: {a: [1]}}\nspec: {cidr: 198.19.0.0/16}\n",
     ["metadata.annotations[a]: expected a string"]),
    # a required field left out or left empty (YAML's `cidr:` is null) is named as missing
    ("kind: PolicyFilter\nmetadata: {name: edge}\nspec: {rules: []}\n",
     ["document 2 (PolicyFilter 'edge'): apiVersion: missing (use calico-bgp/v1)"]),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr:\n",
     ["document 2 (IPPool 'p'): spec.cidr: missing"]),
])
def test_bad_input_is_one_line_nonzero_and_nothing_stored(cli, etcd_url, key_prefix, text, fragments):
    base = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: base}\nspec: {cidr: 198.18.64.0/18}\n"
    assert cli("apply", "-f", "-", input=base).exit_code == 0
    before = keys_under(etcd_url, key_prefix)
    # A good document in front of the bad one must not be stored either.
    good = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: good}\nspec: {cidr: 198.18.200.0/24}\n---\n"
    result = cli("apply", "-f", "-", input=good + text)
    assert_one_line_error(result, EXIT_USAGE, *fragments)
    assert keys_under(etcd_url, key_prefix) == before


def test_unknown_kind_on_get_and_delete(cli):
    assert_one_line_error(cli("get", "frobs"), EXIT_USAGE, "unknown kind 'frobs'")
    assert_one_line_error(cli("delete", "frob", "x"), EXIT_USAGE, "unknown kind 'frob'")


def test_apply_from_file(cli, tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS)
    assert cli("apply", "-f", str(path)).exit_code == 0
    assert cli("get", "ippool", "v6", "-o", "json").exit_code == 0


def test_etcd_unreachable_names_the_endpoint(key_prefix):
    result = CliRunner().invoke(main, ["--etcd-endpoints", "http://127.0.0.1:9", "--prefix", key_prefix,
                                       "get", "ippools"])
    assert_one_line_error(result, EXIT_UNAVAILABLE, "http://127.0.0.1:9")
    result = CliRunner().invoke(main, ["--etcd-endpoints", "http://127.0.0.1:9", "--prefix", key_prefix,
                                       "apply", "-f", "-"], input=POOLS)
    assert_one_line_error(result, EXIT_UNAVAILABLE, "http://127.0.0.1:9")


def test_corrupted_value_names_the_key_and_others_still_list(cli, etcd_url, key_prefix, caplog):
    caplog.set_level(logging.INFO, logger="calico_bgp.resources.store")
    assert cli("apply", "-f", "-", input=POOLS).exit_code == 0
    assert "event=resource_applied kind=IPPool name=rack-a action=created" in caplog.text
    bad_key = Keys(key_prefix).pool("broken")

    async def corrupt():
        async with EtcdClient([etcd_url]) as c:
            await c.put(bad_key, b'{"metadata": {"name": "broken"}, "spec": {"cidr": "198.18.0.1/16"')
            await c.put(Keys(key_prefix).pool("wrong"), b'{"metadata": {"name": "wrong"}, "spec": {"cidr": "x"}}')
    trio.run(corrupt)

    result = cli("get", "ippools")
    assert result.exit_code == EXIT_ERROR
    assert [ln.split()[0] for ln in result.stdout.splitlines()[1:]] == ["rack-a", "v6"]
    warnings = result.stderr.splitlines()
    assert any(bad_key in w and "not valid JSON" in w for w in warnings)
    assert any(Keys(key_prefix).pool("wrong") in w and "spec.cidr" in w for w in warnings)
    # the log has one logfmt line per bad key, the problem quoted so the line splits back into fields
    logged = [r.getMessage() for r in caplog.records if "event=corrupt_value" in r.getMessage()]
    assert any(m.startswith(f"event=corrupt_value key={bad_key} problem=\"") for m in logged), logged
    assert_one_line_error(cli("get", "ippool", "broken"), EXIT_ERROR, bad_key)
    # Applying a good value over the corrupted key repairs it.
    fix = "apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {name: broken}\nspec: {cidr: 198.19.0.0/16}\n"
    assert cli("apply", "-f", "-", input=fix).exit_code == 0
    assert cli("get", "ippool", "broken").exit_code == 0


async def test_store_api_and_cas(etcd_url, key_prefix):
    async with EtcdClient([etcd_url]) as client:
        store = ResourceStore(client, Keys(key_prefix))
        (pool,) = load_documents("apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {name: a}\n"
                                 "spec: {cidr: 198.18.0.0/24}\n")
        applied = await store.apply(pool)
        assert applied.action == "created"
        assert await store.get("ippool", "a") == pool
        listing = await store.list(IPPool)
        assert listing.items == [pool] and listing.errors == []
        updated = IPPool(pool.metadata, IPPoolSpec(cidr="198.18.0.0/24", disabled=True))
        assert (await store.apply(updated)).action == "updated"
        assert (await store.get(IPPool, "a")).spec.disabled

        # Someone else keeps writing the key between our read and our transaction: bounded retries, then ConflictError.
        real_txn = client.txn

        async def racing_txn(compares, success, failure):
            if success and any(getattr(op, "value", None) for op in success):
                await client.put(store.key("IPPool", "a"), model.encode(pool))
            return await real_txn(compares, success, failure)

        client.txn = racing_txn
        try:
            with pytest.raises(ConflictError):
                await store.apply(IPPool(pool.metadata, IPPoolSpec(cidr="198.18.0.0/24",
                                                                   node_selector="has(x)")))
        finally:
            client.txn = real_txn
        await store.delete("ippool", "a")
        assert (await store.list("ippools")).items == []
        assert isinstance(CorruptValue("k", "k: x"), Exception)


def test_conflict_exit_code_registered():
    from calico_bgp.cli.common import ERROR_CODES
    assert ERROR_CODES[ConflictError] == EXIT_CONFLICT
    assert ERROR_CODES[InvalidResource] == EXIT_USAGE


async def test_store_helpers_for_watchers(etcd_url, key_prefix):
    async with EtcdClient([etcd_url]) as client:
        store = ResourceStore(client, Keys(key_prefix))
        assert (await store.bgp_configuration()) == BGPConfiguration()
        resources = load_documents(POOLS + "---\n" + PEERS)
        await store.apply_all(resources)
        assert (await store.bgp_configuration()).spec.as_number == 63400
        kvs = (await client.range(key_prefix + "/")).kvs
        decoded = sorted((type(r).__name__, r.name) for r in map(store.decode, kvs))
        assert decoded == sorted((r.kind, r.name) for r in resources)
        assert store.kind_for_key(Keys(key_prefix).block("198.18.0.0/26")) is None
        assert store.kind_for_key(Keys(key_prefix).pool("a")) == (IPPool, "a")


def test_secrets_store_values_and_never_print_them(etcd_url, key_prefix):
    from click.testing import CliRunner

    from calico_bgp.cli import main

    base = ["--etcd-endpoints", etcd_url, "--prefix", key_prefix]
    r = CliRunner().invoke(main, [*base, "secret", "set", "tor-md5", "password"], input="s3cret-value\n")
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*base, "secret", "list", "-o", "json"])
    assert r.exit_code == 0 and '"tor-md5"' in r.output and "s3cret" not in r.output
    r = CliRunner().invoke(main, [*base, "secret", "set", "bad/name", "k"], input="x\n")
    assert r.exit_code == 2 and "secret name" in r.output
    r = CliRunner().invoke(main, [*base, "secret", "delete", "tor-md5"])
    assert r.exit_code == 0


def test_calico_fields_apply_with_one_warning_line_per_resource(cli):
    text = ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
            "spec: {cidr: 198.19.0.0/16, ipipMode: Always, natOutgoing: true}\n---\n"
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rr}\n"
            "spec: {node: not-yet, ttlSecurity: 1}\n---\n"
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1, labels: {route-reflector: yes}}\n"
            "spec: {bgp: {ipv4Address: 198.18.0.1/24}}\n")
    r = cli("apply", "-f", "-", input=text)
    assert r.exit_code == 0, r.stderr
    assert [line.split(":")[1].strip() for line in r.stderr.splitlines()] == ["IPPool 'p'", "BGPPeer 'rr'"]
    assert "ttlSecurity" not in r.stderr  # GTSM on the wire (speaker/config.py)
    assert "route-reflector: 'true'" in cli("get", "node", "n1", "-o", "yaml").stdout
    again = cli("apply", "-f", "-", input=cli("get", "bgppeer", "rr", "-o", "yaml").stdout)
    assert again.stdout.split()[0] == "unchanged", again.stderr


@pytest.mark.parametrize("text, fragment", [
    ("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)),
     "more than 50,000 values once its YAML aliases are expanded"),
    ("apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: big}\nspec:\n  exportV4:\n"
     + "".join(f"  - {{action: Reject, cidr: 198.18.{i % 256}.0/24}}\n" for i in range(69_000)),
     "spec.exportV4: more than 1,000 items in one list"),
])
def test_hostile_input_is_refused_in_one_line_and_nothing_stored(cli, etcd_url, key_prefix, text, fragment):
    assert len(text) < 600 or len(text) > 2_000_000  # a few hundred bytes, or megabytes
    result = cli("apply", "-f", "-", input=text)
    assert_one_line_error(result, EXIT_USAGE, fragment)
    assert keys_under(etcd_url, key_prefix) == []
