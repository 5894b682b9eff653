"""A required field left out, given as null (YAML's `field:` with nothing after it) or empty says
"missing" and names the field, for every kind; never "None", never a parser's complaint about the text
'None'. Null on a field with a default is that default, as in Kubernetes and calicoctl."""
from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from calico_bgp.resources.documents import load_documents
from calico_bgp.resources.fields import InvalidResource
from calico_bgp.resources.kinds import KINDS

# One valid document per kind that sets every field some rule requires.
VALID: dict[str, dict[str, Any]] = {
    "IPPool": {"metadata": {"name": "p"}, "spec": {"cidr": "198.18.0.0/16"}},
    "Node": {"metadata": {"name": "n"},
             "spec": {"bgp": {"ipv4Address": "198.18.0.1/24"}, "addresses": [{"address": "198.18.0.1/24"}]}},
    "BGPConfiguration": {"metadata": {"name": "default"}, "spec": {
        "communities": [{"name": "rack", "value": "65000:1"}],
        "prefixAdvertisements": [{"cidr": "198.19.0.0/24", "communities": ["rack"]}],
        "nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": "mesh"}}}},
    "BGPPeer": {"metadata": {"name": "tor"}, "spec": {
        "peerIP": "198.18.0.254", "asNumber": 65000, "maxPrefixes": 100, "maxPrefixAction": "teardown",
        "password": {"secretKeyRef": {"name": "bgp", "key": "tor"}}}},
    "BGPFilter": {"metadata": {"name": "f"}, "spec": {
        "importV4": [{"action": "Accept", "cidr": "198.18.0.0/15", "matchOperator": "In",
                      "prefixLength": {"max": 32}}]}},
    "PolicyFilter": {"metadata": {"name": "edge"}, "spec": {
        "rules": [{"action": "Deny", "source": {"nets": ["198.18.0.0/15"]}}],
        "failsafeInboundPorts": [{"protocol": "tcp", "port": 22}]}},
    "BFDConfiguration": {"metadata": {"name": "tor-links"}, "spec": {
        "nodeSelector": "all()", "interfaces": [{"matchPattern": "eth*", "minimumRecvInterval": "100ms"}]}},
}

ABSENT, NULL, EMPTY = "absent", "null", "empty"
SCALAR = (ABSENT, NULL, EMPTY)
BLOCK = (ABSENT, NULL)  # a mapping: "" is a wrong type there, not a missing value

# (kind, the field taken away, how, what the error says)
CASES: list[tuple[str, str, tuple[str, ...], str]] = [
    *[(k, "apiVersion", SCALAR, "apiVersion: missing") for k in KINDS],
    *[(k, "kind", SCALAR, "document 1: kind: missing") for k in KINDS],
    *[(k, "metadata.name", SCALAR, "metadata.name: missing") for k in KINDS],
    *[(k, "metadata", BLOCK, "metadata: missing") for k in KINDS if k != "BGPConfiguration"],
    ("IPPool", "spec", BLOCK, "spec: missing"),
    ("IPPool", "spec.cidr", SCALAR, "spec.cidr: missing"),
    ("Node", "spec.bgp.ipv4Address", SCALAR, "spec.bgp.ipv4Address: missing (a node's bgp needs ipv4Address"),
    ("Node", "spec.addresses[0].address", SCALAR, "spec.addresses[0].address: missing"),
    ("BGPConfiguration", "spec.communities[0].name", SCALAR, "spec.communities[0].name: missing"),
    ("BGPConfiguration", "spec.communities[0].value", SCALAR, "spec.communities[0].value: missing"),
    ("BGPConfiguration", "spec.prefixAdvertisements[0].cidr", SCALAR, "spec.prefixAdvertisements[0].cidr: missing"),
    ("BGPConfiguration", "spec.nodeMeshPassword.secretKeyRef", BLOCK,
     "spec.nodeMeshPassword: missing (set one of secretKeyRef or file)"),
    ("BGPConfiguration", "spec.nodeMeshPassword.secretKeyRef.name", SCALAR,
     "spec.nodeMeshPassword.secretKeyRef.name: missing"),
    ("BGPConfiguration", "spec.nodeMeshPassword.secretKeyRef.key", SCALAR,
     "spec.nodeMeshPassword.secretKeyRef.key: missing"),
    ("BGPPeer", "spec", BLOCK, "spec: missing"),
    ("BGPPeer", "spec.maxPrefixes", (ABSENT, NULL), "spec.maxPrefixes: missing (maxPrefixAction teardown needs it)"),
    ("BGPPeer", "spec.password.secretKeyRef", BLOCK, "spec.password: missing (set one of secretKeyRef or file)"),
    ("BGPPeer", "spec.password.secretKeyRef.name", SCALAR, "spec.password.secretKeyRef.name: missing"),
    ("BGPPeer", "spec.password.secretKeyRef.key", SCALAR, "spec.password.secretKeyRef.key: missing"),
    ("BGPFilter", "spec.importV4[0].action", SCALAR, "spec.importV4[0].action: missing"),
    ("BGPFilter", "spec.importV4[0].matchOperator", SCALAR,
     "spec.importV4[0].matchOperator: missing (cidr and matchOperator go together)"),
    ("BGPFilter", "spec.importV4[0].cidr", SCALAR, "spec.importV4[0].cidr: missing"),
    ("PolicyFilter", "spec.rules[0].action", SCALAR, "spec.rules[0].action: missing"),
    ("PolicyFilter", "spec.rules[0].source.nets", (ABSENT, NULL),
     "spec.rules[0].source.nets: missing (at least one source CIDR"),
    ("PolicyFilter", "spec.rules[0].source", BLOCK, "spec.rules[0].source.nets: missing"),
    ("PolicyFilter", "spec.failsafeInboundPorts[0].protocol", SCALAR, "spec.failsafeInboundPorts[0].protocol: missing"),
    ("PolicyFilter", "spec.failsafeInboundPorts[0].port", (ABSENT, NULL), "spec.failsafeInboundPorts[0].port: missing"),
]


def document(kind: str) -> dict[str, Any]:
    api = "calico-bgp/v1" if kind == "PolicyFilter" else "projectcalico.org/v3"
    return {"apiVersion": api, "kind": kind, **copy.deepcopy(VALID[kind])}


def _steps(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]


def _parent(doc: dict[str, Any], path: str) -> tuple[Any, str | int]:
    *parents, last = _steps(path)
    here: Any = doc
    for step in parents:
        here = here[step]
    return here, last


def without(doc: dict[str, Any], path: str, how: str) -> dict[str, Any]:
    """`doc` with the field at `path` (which it has) left out, null or empty."""
    here, last = _parent(doc, path)
    if how == ABSENT:
        del here[last]
    else:
        here[last] = None if how == NULL else ""
    return doc


def error_of(doc: dict[str, Any]) -> str:
    with pytest.raises(InvalidResource) as err:
        load_documents(yaml.safe_dump(doc, sort_keys=False))
    return str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_the_valid_documents_are_valid(kind):
    assert [r.kind for r in load_documents(yaml.safe_dump(document(kind)))] == [kind]


@pytest.mark.parametrize("kind, path, how, fragment", [
    pytest.param(kind, path, how, fragment, id=f"{kind}-{path}-{how}")
    for kind, path, hows, fragment in CASES for how in hows])
def test_a_required_field_left_out_says_missing_and_names_it(kind, path, how, fragment):
    message = error_of(without(document(kind), path, how))
    assert fragment in message, message
    assert "None" not in message and "null" not in message, message


def test_every_kind_has_its_required_fields_checked():
    assert {k for k, *_ in CASES} == set(KINDS)


def test_the_document_says_which_resource_lacks_its_api_version():
    message = error_of(without(document("PolicyFilter"), "apiVersion", ABSENT))
    assert message == "document 1 (PolicyFilter 'edge'): apiVersion: missing (use calico-bgp/v1)"
    message = error_of(without(document("IPPool"), "apiVersion", NULL))
    assert message == "document 1 (IPPool 'p'): apiVersion: missing (use calico-bgp/v1 or projectcalico.org/v3)"


def test_every_problem_of_a_document_is_listed():
    doc = without(without(document("BGPConfiguration"), "spec.communities[0].name", ABSENT),
                  "spec.communities[0].value", NULL)
    assert error_of(doc) == ("document 1 (BGPConfiguration 'default'): spec.communities[0].name: missing; "
                             "spec.communities[0].value: missing")


@pytest.mark.parametrize("kind, path", [
    ("IPPool", "spec.blockSize"), ("IPPool", "spec.nodeSelector"), ("IPPool", "spec.disabled"),
    ("Node", "metadata.labels"), ("Node", "spec.bgp"), ("BGPPeer", "spec.node"), ("BGPPeer", "spec.keepOriginalNextHop"),
    ("BGPConfiguration", "spec.damping"), ("BGPConfiguration", "metadata"),
    ("PolicyFilter", "spec.failsafeInboundPorts"), ("PolicyFilter", "spec.interfaces"),
])
def test_null_on_a_field_with_a_default_is_the_default(kind, path):
    nulled, left_out = document(kind), document(kind)
    here, last = _parent(nulled, path)
    here[last] = None
    here, last = _parent(left_out, path)
    here.pop(last, None)
    assert load_documents(yaml.safe_dump(nulled)) == load_documents(yaml.safe_dump(left_out))
