"""YAML documents are measured before they are read as resources: a document nested too deep, one that
holds itself through an alias, or input whose aliases expand it past MAX_VALUES (a "billion laughs") is
refused at once, naming the document and where it passed the limit; ordinary anchors and aliases apply."""
from __future__ import annotations

import time

import pytest

from calico_bgp.resources import documents
from calico_bgp.resources.documents import load_documents
from calico_bgp.resources.fields import InvalidResource

POOL = "apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {{name: p, annotations: {{{annotations}}}}}\n" \
       "spec: {{cidr: 198.18.0.0/16}}\n"


def laughs(levels: int) -> str:
    """Ten aliases of the level below on each level: 10**levels values from a few hundred bytes."""
    lines = ["    a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return ("apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata:\n  name: p\n  annotations:\n" + "\n".join(lines)
            + "\nspec: {cidr: 198.18.0.0/16}\n")


def refused(text: str) -> str:
    with pytest.raises(InvalidResource) as err:
        load_documents(text)
    return str(err.value)


def test_a_billion_laughs_is_refused_at_once_naming_the_document():
    ok = "apiVersion: calico-bgp/v1\nkind: IPPool\nmetadata: {name: q}\nspec: {cidr: 198.19.0.0/16}\n---\n"
    started = time.monotonic()
    message = refused(ok + laughs(9))
    assert time.monotonic() - started < 1
    assert message == ("document 2: more than 50,000 values once its YAML aliases are expanded "
                       "(at metadata.annotations.a4[3])")


def test_the_limit_is_on_expanded_values():
    assert len(str(laughs(5))) < 500
    assert refused(laughs(6)).startswith("document 1: more than 50,000 values once its YAML aliases are expanded")
    # 123,465 values: measured and taken, then refused by the resource as annotations are strings
    assert "metadata.annotations[a0]: expected a string, got list" in refused(laughs(4))


def test_ordinary_anchors_and_aliases_apply():
    text = ("apiVersion: calico-bgp/v1\nkind: List\nitems:\n"
            "- {apiVersion: calico-bgp/v1, kind: Node, metadata: {name: n1, labels: &rack {rack: r1, zone: a}},\n"
            "   spec: {bgp: {ipv4Address: 198.18.0.1/24}}}\n"
            "- {apiVersion: calico-bgp/v1, kind: Node, metadata: {name: n2, labels: *rack},\n"
            "   spec: {bgp: {ipv4Address: 198.18.0.2/24}}}\n")
    assert [n.metadata.labels for n in load_documents(text)] == [{"rack": "r1", "zone": "a"}] * 2


def test_a_document_that_holds_itself_is_refused():
    assert refused(POOL.format(annotations="a: &x [*x]")) == \
        "document 1: metadata.annotations.a[0] holds itself through a YAML alias"


def test_nesting_beyond_the_limit_is_refused_and_beyond_the_parser_too():
    deep = documents.MAX_DEPTH + 1
    assert refused(POOL.format(annotations="a: " + "[" * deep + "]" * deep)).startswith(
        f"document 1: nested deeper than {documents.MAX_DEPTH} levels")
    assert refused(POOL.format(annotations="a: " + "[" * 600 + "]" * 600)).startswith(
        f"document 1: nested deeper than {documents.MAX_DEPTH} levels")
