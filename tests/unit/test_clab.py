"""The topology files: valid containerlab (its published schema), parsed with containerlab's
inheritance, and everything the lab cannot realise named before anything is made."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from lab import clab, execs
from lab.expectations import AgentView, SessionView, route_problems

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted((ROOT / "containerlab").glob("*.clab.yml"))
SCHEMA = Path("/work/shared/containerlab/clab.schema.json")
for candidate in (ROOT / "containerlab" / "clab.schema.json", SCHEMA):
    if candidate.exists():
        SCHEMA = candidate
        break


def test_the_three_topologies_exist():
    assert {p.name for p in TOPOLOGIES} >= {"rack.clab.yml", "rr.clab.yml", "mesh.clab.yml"}


@pytest.mark.skipif(not SCHEMA.exists(), reason="containerlab's clab.schema.json is not available")
@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_topology_validates_against_containerlabs_schema(path):
    # the schema's patterns are Go/ECMAScript regexes: Python's `re` has no \\p{L}/\\p{N} classes, \\w is close
    text = SCHEMA.read_text().replace("\\\\p{N}\\\\p{L}", "\\\\w").replace("\\\\p{L}", "\\\\w").replace("\\\\p{N}", "\\\\d")
    schema = json.loads(text)
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_topology_uses_only_the_lab_address_space(path):
    text = path.read_text() + "".join(p.read_text() for p in path.parent.rglob("*") if p.is_file()
                                      and p.suffix in (".conf", ".toml", ".yaml") or p.name == "daemons")
    for addr in clab.addresses_in(text):
        assert clab._allowed_text(addr) or clab._harmless(addr), f"{path.name}: {addr}"


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_topology_parses_and_every_agent_node_starts_an_agent(path):
    topo = clab.load(path)
    assert topo.resources_path().exists()
    nodes = topo.by_role("node")
    assert nodes
    for n in nodes:
        steps = execs.plan(n.name, n.exec, n.binds, n.role)
        agents = [s for s in steps if isinstance(s, execs.AgentStart)]
        assert len(agents) == 1 and agents[0].name == n.name


def test_rack_has_each_router_kind():
    topo = clab.load(ROOT / "containerlab" / "rack.clab.yml")
    assert {n.role for n in topo.nodes.values()} >= {"frr", "bird", "gobgp", "etcd", "node"}
    assert topo.nodes["tor1"].bind_for("/daemons") is not None


FOREIGN = """
name: foreign
topology:
  defaults:
    kind: linux
    env: {A: "1"}
    labels: {site: lab}
    binds: [files/a.txt:/etc/a.txt]
  kinds:
    linux:
      image: debian:bookworm
      env: {B: "2"}
      exec: ["echo kind"]
  groups:
    routers:
      image: quay.io/frrouting/frr:8.4.1
      binds: [files/frr.conf:/etc/frr/frr.conf, files/daemons:/etc/frr/daemons]
      labels: {role: router}
  nodes:
    r1: {group: routers}
    h1: {env: {A: "3"}, exec: ["ip addr add 198.18.9.1/24 dev eth1"]}
    h2: {}
  links:
    - endpoints: ["r1:eth1", "h1:eth1"]
"""


def _foreign(tmp_path, text=FOREIGN):
    (tmp_path / "files").mkdir()
    for f in ("a.txt", "frr.conf", "daemons"):
        (tmp_path / "files" / f).write_text("")
    p = tmp_path / "foreign.clab.yml"
    p.write_text(text)
    return p


def test_inheritance_defaults_kinds_groups_node(tmp_path):
    topo = clab.load(_foreign(tmp_path))
    r1, h1, h2 = topo.nodes["r1"], topo.nodes["h1"], topo.nodes["h2"]
    assert r1.role == "frr" and r1.image.startswith("quay.io/frrouting")
    assert h1.role == "host" and h1.image == "debian:bookworm"
    assert dict(h1.env) == {"A": "3", "B": "2"}                  # maps merge, the node wins
    assert dict(r1.labels) == {"site": "lab", "role": "router"}
    assert {b.target for b in r1.binds} == {"/etc/a.txt", "/etc/frr/frr.conf", "/etc/frr/daemons"}
    assert all(Path(b.source).is_absolute() and b.source.startswith(str(tmp_path)) for b in r1.binds)
    assert h1.exec == ("ip addr add 198.18.9.1/24 dev eth1",)   # exec is taken whole from the closest level
    assert h2.exec == ("echo kind",)


def test_everything_unsupported_is_named_at_once(tmp_path):
    bad = FOREIGN.replace("    h2: {}", "    h2: {kind: nokia_srlinux, startup-config: x.cfg}\n"
                                         "    h3: {exec: ['ip addr add 10.0.0.1/24 dev eth1']}")  # refused on purpose
    bad = bad.replace('    - endpoints: ["r1:eth1", "h1:eth1"]',
                      '    - endpoints: ["r1:eth1", "h1:eth1"]\n    - endpoints: ["h1:eth2", "host:veth0"]')
    with pytest.raises(clab.UnsupportedTopology) as err:
        clab.load(_foreign(tmp_path, bad))
    msg = str(err.value)
    assert "kind 'nokia_srlinux'" in msg and "startup-config" in msg and "10.0.0.1/24" in msg and "host:veth0" in msg
    assert len(err.value.problems) == 4


def test_a_sysctl_that_would_change_the_host_is_refused(tmp_path):
    bad = FOREIGN.replace("    h2: {}", "    h2: {sysctls: {vm.swappiness: 1, net.core.rmem_max: 8388608, "
                                         "net.ipv4.ip_forward: 1}}")
    with pytest.raises(clab.UnsupportedTopology) as err:
        clab.load(_foreign(tmp_path, bad))
    assert len(err.value.problems) == 2
    assert "sysctl vm.swappiness is not per network namespace" in str(err.value)
    assert "sysctl net.core.rmem_max" in str(err.value) and "ip_forward" not in str(err.value)


def test_mgmt_outside_the_lab_space_is_refused(tmp_path):
    with pytest.raises(clab.UnsupportedTopology, match="172.20.20.0/24"):
        clab.load(_foreign(tmp_path, FOREIGN + "mgmt: {ipv4-subnet: 172.20.20.0/24}\n"))  # refused on purpose


def test_exec_plans_agent_start_and_maps_bind_paths():
    binds = [clab.Bind("/src/r.yaml", "/etc/calico-bgp/resources.yaml")]
    steps = execs.plan("n1", [
        "sh -c 'calico-bgp --etcd-endpoints http://198.18.254.2:2379 node run --name n1 --ip 198.18.0.1/24 "
        "--grace 10 --state-dir /x >/var/log/c.log 2>&1 &'",
        "sh -c 'until calico-bgp apply -f /etc/calico-bgp/resources.yaml; do sleep 1; done'",
        "nohup calico-bgp node run --ip=198.18.0.1/24",
        "vtysh -b",
    ], binds, "frr")
    a1, shell, a2, skip = steps
    assert isinstance(a1, execs.AgentStart) and a1.name == "n1"
    assert a1.options == ("--ip", "198.18.0.1/24", "--grace", "10")   # --state-dir is the lab's
    assert isinstance(shell, execs.Shell) and "/src/r.yaml" in shell.text
    assert isinstance(a2, execs.AgentStart) and a2.option("--ip") == "198.18.0.1/24"
    assert isinstance(skip, execs.Skip)


def test_frr_daemons_file():
    from lab.routers import parse_daemons
    assert parse_daemons("bgpd=yes\nospfd=no\nbfdd=yes\n# x=yes\n") == ["zebra", "staticd", "bgpd", "bfdd"]


def _view(node, addr, sessions, kernel):
    return AgentView(node=node, name=node, address=addr, published=True, fresh=True,
                     sessions=tuple(SessionView(*s) for s in sessions), kernel=kernel)


def test_route_expectations_mesh_and_fabric():
    bh = ("blackhole",)
    a = _view("a", "198.18.0.1", [("198.18.0.2", "Established", "b")], {"198.19.0.0/26": bh, "198.19.0.64/26": ("198.18.0.2",)})
    b = _view("b", "198.18.0.2", [("198.18.0.1", "Established", "a")], {"198.19.0.64/26": bh, "198.19.0.0/26": ("198.18.0.9",)})
    probs = route_problems([a, b])
    assert probs["a"] == [] and "expected 198.18.0.1" in probs["b"][0]
    f1 = _view("f1", "198.18.0.1", [("198.18.1.1", "Established"), ("198.18.2.1", "Established")],
               {"198.19.0.0/26": bh, "198.19.0.64/26": ("198.18.1.1", "198.18.2.1")})
    f2 = _view("f2", "198.18.0.2", [("198.18.1.1", "Established"), ("198.18.2.1", "Established")],
               {"198.19.0.64/26": bh, "198.19.0.0/26": ("198.18.2.1",)})
    probs = route_problems([f1, f2])
    assert probs["f1"] == [] and "1 next hop(s), expected 2" in probs["f2"][0]
    assert route_problems([f1, f2], strict=False)["f2"] == []


@pytest.mark.skipif(not SCHEMA.exists(), reason="containerlab's clab.schema.json is not available")
def test_the_schema_check_catches_a_bad_file():
    text = SCHEMA.read_text().replace("\\\\p{N}\\\\p{L}", "\\\\w").replace("\\\\p{L}", "\\\\w").replace("\\\\p{N}", "\\\\d")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(json.loads(text)).validate({"name": "x", "topology": {"nodes": {"a": {"kind": "dockr"}}}})


def test_frr_config_from_integrated_or_per_daemon_files(tmp_path):
    from lab.routers import frr_config
    for name, text in (("bgpd.conf", "router bgp 65001\n"), ("zebra.conf", "hostname z\n"), ("vtysh.conf", "x\n")):
        (tmp_path / name).write_text(text)
    node = clab.NodeDef(name="r", kind="linux", image="frr", binds=tuple(
        clab.Bind(str(tmp_path / n), f"/etc/frr/{n}") for n in ("bgpd.conf", "vtysh.conf", "zebra.conf")))
    assert frr_config(node) == "hostname z\n\nrouter bgp 65001\n"


def test_a_bound_directory_stands_for_its_files(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "frr.conf").write_text("hostname r1\n")
    (tmp_path / "r1" / "daemons").write_text("bgpd=yes\n")
    p = tmp_path / "t.clab.yml"
    p.write_text("name: t\ntopology:\n  nodes:\n    r1: {kind: linux, image: frrouting/frr:v8.4.1, binds: [r1:/etc/frr]}\n")
    r1 = clab.load(p).nodes["r1"]
    assert r1.role == "frr"
    assert r1.bind_for("/daemons").source == str(tmp_path / "r1" / "daemons")
    from lab.routers import frr_config
    assert frr_config(r1) == "hostname r1\n"
