"""Every YAML example in the README applies as written: each ```yaml block, and each
`calico-bgp apply -f - <<EOF` heredoc, goes through `calico-bgp apply -f -` against a real etcd, in a
key prefix of its own (examples may reuse names), and `get` then shows every resource it holds."""
from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
import yaml

from calico_bgp.resources.codec import json_name
from calico_bgp.resources.kinds import KINDS

README = Path(__file__).resolve().parents[2] / "README.md"

_YAML_BLOCK = re.compile(r"^```ya?ml[^\n]*\n(.*?)^```", re.M | re.S)
_HEREDOC = re.compile(r"calico-bgp apply -f - <<-?\s*(['\"]?)(\w+)\1[^\n]*\n(.*?)^\2$", re.M | re.S)


def examples(text: str) -> list[tuple[str, str]]:
    """(README.md:LINE, the example's text) for every ```yaml block and `apply -f -` heredoc."""
    found = [(m.start(), m.group(1)) for m in _YAML_BLOCK.finditer(text)]
    found += [(m.start(), m.group(3)) for m in _HEREDOC.finditer(text)]
    return [(f"README.md:{text.count(chr(10), 0, start) + 1}", body) for start, body in sorted(found)]


EXAMPLES = examples(README.read_text())


def test_the_extraction_finds_blocks_and_heredocs():
    text = ("intro\n```yaml\nkind: A\n```\n```sh\ncalico-bgp apply -f - <<'EOF'\nkind: B\nEOF\n```\n"
            "```yml\nkind: C\n```\n```sh\ncalico-bgp get pools\n```\n")
    assert examples(text) == [("README.md:2", "kind: A\n"), ("README.md:6", "kind: B\n"),
                              ("README.md:10", "kind: C\n")]


def test_the_readme_shows_every_kind_in_an_example():
    kinds = {doc["kind"] for _, body in EXAMPLES for doc in yaml.safe_load_all(body) if doc}
    assert kinds == set(KINDS), kinds


@pytest.mark.parametrize("where, body", EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_a_readme_example_applies_as_written(cli, where, body):
    applied = cli("apply", "-f", "-", input=body)
    assert applied.exit_code == 0, f"{where}: {applied.stderr}"
    docs = [d for d in yaml.safe_load_all(body) if d]
    expected = [f"{d['kind']}/{(d.get('metadata') or {}).get('name', 'default')}" for d in docs]
    assert applied.stdout.split() == [word for e in expected for word in ("created", e)], applied.stdout
    for doc, ident in zip(docs, expected):
        kind, name = ident.split("/")
        shown = cli("get", kind, name, "-o", "yaml")
        assert shown.exit_code == 0, shown.stderr
        stored = yaml.safe_load(shown.stdout)
        assert (stored["kind"], stored["metadata"]["name"]) == (kind, name)
        # what the example sets is what is stored (spellings normalised, defaults left out)
        # (a Calico field calicoctl prints at its default, such as an IPPool's ipipMode, is shown too)
        always = {json_name(f) for f in getattr(attrs.fields(KINDS[kind]).spec.type, "always_shown", ())}
        if kind == "BGPConfiguration":
            always |= {"logSeverityScreen", "nodeToNodeMeshEnabled", "asNumber"}
        assert set(stored.get("spec", {})) - always <= set(doc.get("spec") or {}), (where, stored)
    assert cli("apply", "-f", "-", input=body).stdout.split()[::2] == ["unchanged"] * len(docs)
