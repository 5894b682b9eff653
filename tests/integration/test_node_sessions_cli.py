"""`calico-bgp node sessions` against a real etcd: the sessions a node gets from what is stored, before
any agent runs, in each output form; errors name the node."""
from __future__ import annotations

import json
from pathlib import Path

from calico_bgp.cli.common import EXIT_ERROR

README = Path(__file__).resolve().parents[2] / "README.md"

RACK = """
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true, listenPort: 1790}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: node.n3}
spec: {listenPort: 1791}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {rack: "1"}}
spec: {bgp: {ipv4Address: 198.18.0.10/24, ipv6Address: 2001:db8::10/64}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2, labels: {rack: "1"}}
spec: {bgp: {ipv4Address: 198.18.0.9/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n3}
spec: {bgp: {ipv4Address: 198.18.0.11/24}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {nodeSelector: rack == '1', peerIP: 198.18.0.1, asNumber: 65001, localASNumber: 65010, ttlSecurity: 1,
       password: {secretKeyRef: {name: tor, key: pw}}, filters: []}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-alt}
spec: {node: n1, peerIP: '198.18.0.1:1179', asNumber: 65001}
"""


def test_node_sessions_json_shows_calicos_sessions_without_running_anything(cli):
    assert cli("apply", "-f", "-", input=RACK).exit_code == 0
    out = cli("node", "sessions", "--name", "n1", "-o", "json")
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.stdout)
    by = {(r["peerIP"], r["port"]): r for r in rows}
    assert list(by) == [("198.18.0.1", 179), ("198.18.0.1", 1179), ("198.18.0.9", 1790), ("198.18.0.11", 1791)]
    tor = by[("198.18.0.1", 179)]
    assert {k: tor[k] for k in ("asNumber", "localAS", "family", "kind", "passive", "password", "ttlSecurity",
                                "rrClient", "sourceAddress")} == {
        "asNumber": 65001, "localAS": 65010, "family": 4, "kind": "node-specific", "passive": False,
        "password": True, "ttlSecurity": 1, "rrClient": False, "sourceAddress": "198.18.0.10"}
    assert tor["reason"].startswith("BGPPeer tor: peerIP 198.18.0.1")
    assert "pw" not in out.stdout.replace("password", "")  # the secret's name and key are not shown either
    # one address on two ports: Calico makes both; the speaker runs one, and says why not the other
    assert "not run" in by[("198.18.0.1", 1179)]["reason"]
    # the mesh: n2's address is the lower as a string ('198.18.0.9' > '198.18.0.10'), so n1 waits for it;
    # n3 listens on its own port (BGPConfiguration node.n3)
    assert (by[("198.18.0.9", 1790)]["kind"], by[("198.18.0.9", 1790)]["passive"]) == ("mesh", True)
    assert (by[("198.18.0.11", 1791)]["passive"], by[("198.18.0.11", 1791)]["localAS"]) == (True, 64512)
    assert set(rows[0]) == {"peerIP", "port", "asNumber", "localAS", "family", "kind", "rrClient", "passive",
                            "password", "sourceAddress", "ttlSecurity", "nextHopMode", "gracefulRestartTime",
                            "filters", "reason"}


def test_node_sessions_table_and_wide_one_line_per_session(cli):
    assert cli("apply", "-f", "-", input=RACK).exit_code == 0
    table = cli("node", "sessions", "--name", "n2")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["PEER", "PORT", "AS", "LOCAL-AS"]
    assert [ln.split()[0] for ln in lines[1:]] == ["198.18.0.1", "198.18.0.10", "198.18.0.11"]
    wide = cli("node", "sessions", "--name", "n2", "-o", "wide")
    assert "TTL-SECURITY" in wide.stdout.splitlines()[0]
    assert len(wide.stdout.splitlines()) == len(lines)


def test_node_sessions_names_a_node_that_is_not_there(cli):
    assert cli("apply", "-f", "-", input=RACK).exit_code == 0
    out = cli("node", "sessions", "--name", "n9")
    assert out.exit_code == EXIT_ERROR
    assert out.stderr.strip() == "error: node 'n9' not found (no Node resource of that name)"


def test_the_readme_example_shows_what_it_says(cli):
    """README's `node sessions` example: its YAML applied, the command prints exactly the table shown."""
    text = README.read_text()
    shown = text.index("```text\n$ calico-bgp node sessions --name rack1-n1\n")
    start = text.rindex("```yaml\n", 0, shown) + len("```yaml\n")
    body = text[start:text.index("```", start)]
    expected = text[shown:text.index("```", shown + 3)].split("\n", 2)[2]
    assert cli("apply", "-f", "-", input=body).exit_code == 0
    out = cli("node", "sessions", "--name", "rack1-n1")
    assert out.exit_code == 0, out.stderr
    assert out.stdout == expected


def test_node_sessions_warns_of_a_peer_that_selects_the_node_and_makes_no_session(cli):
    extra = """
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: nobody}
spec: {peerIP: 198.18.0.99}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: v6-tor}
spec: {node: n2, peerIP: '2001:db8::1', asNumber: 65001}
"""
    assert cli("apply", "-f", "-", input=RACK + "---" + extra).exit_code == 0
    out = cli("node", "sessions", "--name", "n2", "-o", "json")
    assert out.exit_code == 0
    assert out.stderr.splitlines() == [
        "warning: BGPPeer nobody: no session: peerIP 198.18.0.99 without asNumber is no Calico node's address",
        "warning: BGPPeer v6-tor: no session: node n2 has no IPv6 address for peerIP 2001:db8::1"]
    assert "198.18.0.99" not in {r["peerIP"] for r in json.loads(out.stdout)}
