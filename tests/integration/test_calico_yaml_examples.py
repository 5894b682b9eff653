"""Every example resource of Calico's documentation and confd inputs (IPPool, BGPPeer, BGPConfiguration,
BGPFilter, Node: ../shared/calico-yaml, see its SOURCES.md) applies unchanged through the real CLI
against a real etcd, warnings allowed, and `get -o yaml` gives back every field it was given; what get
prints, apply takes back unchanged. The files are read where they are, never copied into the repo;
`ORDER` says which apply together (one group per line, on an empty datastore)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from calico_bgp.cli import main
from calico_bgp.resources.yamlread import read_documents

_REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout (a worktree under wt/ finds it one level further up)
CORPUS = next((d / "shared" / "calico-yaml" for d in _REPO.parents if (d / "shared" / "calico-yaml").is_dir()),
              _REPO.parent / "shared" / "calico-yaml")
# Examples that cannot apply here, and why (none so far).
CANNOT: dict[str, str] = {}


def _groups() -> list[list[str]]:
    order = CORPUS / "ORDER"
    if not order.is_file():
        return []
    return [line.split() for line in order.read_text().splitlines() if line.strip() and not line.startswith("#")]


pytestmark = pytest.mark.skipif(not (CORPUS / "ORDER").is_file(),
                                reason=f"Calico's YAML examples are not at {CORPUS} (../shared/calico-yaml)")


def _resources(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in read_documents(text):
        items = doc if isinstance(doc, list) else doc.get("items", [doc]) if doc.get("kind") == "List" else [doc]
        out.extend(items)
    return out


def _missing(given: Any, back: Any, path: str) -> list[str]:
    """Paths under `given` that `back` does not hold (values may be normalised: a selector's quotes)."""
    if isinstance(given, dict):
        if not isinstance(back, dict):
            return [path]
        return [m for k, v in given.items() for m in (_missing(v, back[k], f"{path}.{k}") if k in back else
                                                      [f"{path}.{k}"])]
    if isinstance(given, list):
        if not isinstance(back, list) or len(back) != len(given):
            return [path]
        return [m for i, (g, b) in enumerate(zip(given, back)) for m in _missing(g, b, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("group", _groups(), ids=lambda g: "+".join(f.removesuffix(".yaml") for f in g))
def test_example_applies_unchanged_and_reads_back(group, etcd_url, key_prefix):
    skipped = [f for f in group if f in CANNOT]
    if skipped:
        pytest.skip("; ".join(f"{f}: {CANNOT[f]}" for f in skipped))
    runner = CliRunner()

    def cli(*args: str, input: str | None = None):
        return runner.invoke(main, ["--etcd-endpoints", etcd_url, "--prefix", key_prefix, *args], input=input)

    last: dict[tuple[str, str], dict[str, Any]] = {}
    for name in group:
        text = (CORPUS / name).read_text()
        r = cli("apply", "-f", "-", input=text)
        assert r.exit_code == 0, f"{name}: {r.stderr}"
        assert all(line.startswith("warning: ") for line in r.stderr.splitlines()), r.stderr
        for doc in _resources(text):
            last[(doc["kind"], doc["metadata"]["name"])] = doc
    for (kind, name), given in last.items():
        r = cli("get", kind, name, "-o", "yaml")
        assert r.exit_code == 0, r.stderr
        (back,) = read_documents(r.stdout)
        assert back["apiVersion"] == "projectcalico.org/v3" and back["kind"] == kind
        lost = [p for p in _missing({k: given.get(k) for k in ("metadata", "spec") if k in given},
                                    {k: back.get(k) for k in ("metadata", "spec")}, "")
                if not p.startswith((".metadata.resourceVersion", ".metadata.uid", ".metadata.creationTimestamp"))]
        assert lost == [], f"{kind} {name}: not given back: {lost}\n{r.stdout}"
        again = cli("apply", "-f", "-", input=r.stdout)
        assert again.exit_code == 0 and again.stdout.split()[0] == "unchanged", (again.stdout, again.stderr)
