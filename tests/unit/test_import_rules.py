"""The layers' import rules, each module imported alone in a fresh interpreter:
the routing core loads nothing that does I/O, dataplane loads nothing of calico_bgp, and ipam loads
no BGP (README, "How it fits together")."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IO = ("trio", "httpx", "pyroute2", "subprocess", "socket", "calico_bgp.speaker", "calico_bgp.datastore",
      "calico_bgp.agent", "dataplane.netlink")
RULES = {  # package -> modules (or packages) none of its modules may load
    "calico_bgp.routing": IO,
    "dataplane": ("calico_bgp",),
    "ipam": ("calico_bgp.routing", "calico_bgp.speaker", "calico_bgp.agent", "exabgp"),
}


def modules_of(package: str) -> list[str]:
    base = ROOT / package.replace(".", "/")
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in base.rglob("*.py")
                  if p.name != "__init__.py")


def loaded_by(module: str) -> set[str]:
    """Every module a fresh interpreter holds after importing `module` (and nothing else)."""
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def broken(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded for f in forbidden if m == f or m.startswith(f + "."))


CASES = [(m, pkg) for pkg in RULES for m in modules_of(pkg)]


@pytest.mark.parametrize("module, package", CASES, ids=[m for m, _ in CASES])
def test_a_module_loads_nothing_its_layer_forbids(module, package):
    assert broken(loaded_by(module), RULES[package]) == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The check itself: a routing module that imports trio is caught."""
    pkg = tmp_path / "fake_routing"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "decide.py").write_text("import trio\n")
    code = ("import importlib, json, sys; sys.path.insert(0, sys.argv[1]); importlib.import_module('fake_routing.decide');"
            " print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert "trio" in broken(set(json.loads(out.stdout)), RULES["calico_bgp.routing"])
