"""Conformance with Calico's own confd golden tests (../shared/calico-confd, see its README): for each
scenario, its calicoctl YAML goes through `calico-bgp apply` into a fresh key prefix, step by step (each
step's input on top of the ones before), and `calico-bgp node sessions --name <the node confd renders
for> -o json` must give the sessions Calico's golden BIRD configs hold: peer address, family, AS, local
AS, port (BIRD's 179 where the config gives none), passive, rrClient and whether a password is set.
Count-only steps compare the number of sessions per family. The data is read where it is, never copied
into the repo; Kubernetes-only scenarios are not applicable here and say why."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.marks import not_applicable

_REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout (a worktree under wt/ finds it one level further up)
CORPUS = next((d / "shared" / "calico-confd" for d in _REPO.parents if (d / "shared" / "calico-confd").is_dir()),
              _REPO.parent / "shared" / "calico-confd")

# Scenarios (or "scenario@step") whose sessions differ from Calico's here, and why (each an xfail, strict).
CANNOT: dict[str, str] = {}


def _cases() -> list[tuple[str, int]]:
    index = CORPUS / "scenarios.json"
    if not index.is_file():
        return []
    scenarios = json.loads(index.read_text())["scenarios"]
    return [(s["name"], i) for s in scenarios for i in range(len(s["steps"]))]


def _scenario(name: str) -> dict[str, Any]:
    return next(s for s in json.loads((CORPUS / "scenarios.json").read_text())["scenarios"] if s["name"] == name)


pytestmark = pytest.mark.skipif(not (CORPUS / "scenarios.json").is_file(),
                                reason=f"Calico's confd scenarios are not at {CORPUS} (../shared/calico-confd)")


def _case_id(case: tuple[str, int]) -> str:
    name, step = case
    return f"{name}@{step}"


def _params() -> list[Any]:
    out = []
    for case in _cases():
        ident = _case_id(case)
        why = CANNOT.get(ident) or CANNOT.get(case[0])
        marks = [pytest.mark.xfail(reason=why, strict=True)] if why else []
        out.append(pytest.param(case, id=ident, marks=marks))
    return out


def expected_session(x: dict[str, Any]) -> tuple[Any, ...]:
    """What is compared of one golden session: the local AS is the template's unless the protocol
    sets its own; a protocol without a port is dialled on BIRD's 179."""
    local_as = x.get("localAS", x.get("defaultLocalAS"))
    return (x["family"], x["peerIP"], int(x.get("port") or 179), int(x["asNumber"]),
            None if local_as is None else int(local_as), x["passive"], x["rrClient"], x["password"])


def our_session(r: dict[str, Any], expected_local_as: bool) -> tuple[Any, ...]:
    return (r["family"], r["peerIP"], r["port"], r["asNumber"], r["localAS"] if expected_local_as else None,
            r["passive"], r["rrClient"], r["password"])


@pytest.mark.parametrize("case", _params())
def test_calico_scenario_gives_calicos_sessions(case, cli):
    name, index = case
    scenario = _scenario(name)
    if scenario["skip_reason"]:
        not_applicable(scenario["skip_reason"])
    steps = scenario["steps"][: index + 1]
    if steps[-1].get("skip_reason"):
        not_applicable(steps[-1]["skip_reason"])
    for step in steps:
        if not step.get("inputFile"):
            continue
        applied = cli("apply", "-f", "-", input=(CORPUS / step["inputFile"]).read_text())
        assert applied.exit_code == 0, f"{step['inputFile']}: {applied.stderr}"
        assert all(line.startswith("warning: ") for line in applied.stderr.splitlines()), applied.stderr
    shown = cli("node", "sessions", "--name", scenario["node"], "-o", "json")
    assert shown.exit_code == 0, shown.stderr
    ours = json.loads(shown.stdout)
    golden = json.loads((CORPUS / steps[-1]["expectedFile"]).read_text())
    if golden.get("countOnly") or golden["sessions"] is None:
        counts = {str(f): sum(1 for r in ours if r["family"] == f) for f in (4, 6)}
        want = {f: n for f, n in steps[-1]["sessionCount"].items()}
        assert {f: counts[f] for f in want} == want, ours
        return
    want = sorted(expected_session(x) for x in golden["sessions"])
    local_as_given = all(expected_session(x)[4] is not None for x in golden["sessions"])
    got = sorted(our_session(r, local_as_given) for r in ours)
    if not local_as_given:
        want = sorted(w[:4] + (None,) + w[5:] for w in want)
    assert got == want, "\n".join(f"{r['peerIP']}:{r['port']} {r['reason']}" for r in ours)
