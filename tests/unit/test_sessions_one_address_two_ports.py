"""One peer address on two ports (Calico: two sessions; projectcalico/calico confd/etc/calico/confd/
templates/bird.cfg.template names them `Global_<ip>_port_<port>`, client.go keys peerings by
GlobalBGPPeerKey{PeerIP, Port}). ExaBGP cannot hold the second, so the agent runs the lower port and
says, in its log and in `node sessions`, why the other does not run (routing/topology.py runnable)."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
from calico_bgp.resources.model import Metadata
from calico_bgp.routing import session_rows, topology
from calico_bgp.speaker.config import render_neighbor
from calico_bgp.speaker.neighbor import Neighbor
from tests.unit.test_agent_wiring import agent, cluster

PEER = "198.18.0.99"


def two_ports() -> list[BGPPeer]:
    return [BGPPeer(Metadata("a"), BGPPeerSpec(peer_ip=PEER, as_number=65001)),
            BGPPeer(Metadata("b"), BGPPeerSpec(peer_ip=f"{PEER}:1179", as_number=65001))]


def test_exabgp_refuses_a_second_neighbour_on_one_address_with_another_port(tmp_path: Path):
    """The evidence for the refusal: ExaBGP 5's neighbour key (bgp/neighbor.py Neighbor.name) has no
    port. When a future ExaBGP takes both, this test fails: run both sessions then."""
    exabgp = Path(sys.executable).with_name("exabgp")
    if not exabgp.exists():
        pytest.skip("exabgp not installed next to the interpreter")
    base = dict(peer_address=PEER, peer_as=65001, local_as=64512, local_address="198.18.0.1", router_id="198.18.0.1")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_neighbor(Neighbor(**base)) + render_neighbor(Neighbor(**base, peer_port=1179)))
    out = subprocess.run([str(exabgp), "validate", str(conf)], capture_output=True, text=True, cwd=tmp_path,
                         env={"exabgp_daemon_user": "root", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode != 0 and "duplicate peer definition" in out.stdout + out.stderr


async def test_the_agent_runs_the_lower_port_and_logs_why_the_other_does_not_run(tmp_path, caplog):
    a, speaker = agent(tmp_path)
    caplog.set_level(logging.WARNING)
    await a.control.sync(cluster(*two_ports()))
    assert speaker.last[PEER].peer_port == 179
    said = [r.getMessage() for r in caplog.records if "session_skipped" in r.getMessage()]
    assert len(said) == 1 and f"peer={PEER}" in said[0] and "port=1179" in said[0]
    assert "duplicate peer definition" in said[0]
    await a.control.sync(cluster(*two_ports()))  # said once, not on every pass
    assert len([r for r in caplog.records if "session_skipped" in r.getMessage()]) == 1


def test_node_sessions_shows_the_second_port_with_the_reason():
    n1 = cluster(*two_ports()).nodes["n1"]
    cl = cluster(*two_ports())
    kept, skipped = topology.runnable(topology.sessions_for(n1, list(cl.nodes.values()), cl.config, cl.peers.values()))
    rows = {(r["peerIP"], r["port"]): r for r in session_rows.rows(kept.values(), skipped)}
    assert "not run" not in rows[(PEER, 179)]["reason"]
    assert rows[(PEER, 1179)]["reason"].startswith("BGPPeer b: peerIP 198.18.0.99:1179; not run: ExaBGP holds")
