"""`calico-bgp node run --no-ipam-service`: the agent serves no warm IPAM (AgentOptions.ipam_service off);
without the flag it does (the default)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from calico_bgp.agent import node as agent_node
from calico_bgp.cli import main as cli
from calico_bgp.cli import node as cli_node
from calico_bgp.speaker import speaker


@pytest.mark.parametrize("flags, served", [([], True), (["--no-ipam-service"], False)])
def test_the_warm_ipam_can_be_turned_off_from_the_command_line(flags, served, monkeypatch, tmp_path):
    made = []
    real = agent_node.AgentOptions

    class NoExaBGP:
        def __init__(self, _dir):
            pass

        def start_exabgp(self):
            pass

    monkeypatch.setattr(speaker, "Speaker", NoExaBGP)
    monkeypatch.setattr(agent_node, "AgentOptions", lambda **kw: made.append(real(**kw)) or made[-1])
    for name in ("configure_logging", "tune_gc", "run"):
        monkeypatch.setattr(cli_node, name, lambda *a, **k: None)
    monkeypatch.setattr(cli_node.attrs_cache, "finish", lambda: None)
    res = CliRunner().invoke(cli, ["--etcd-endpoints", "http://127.0.0.1:1", "node", "run", "--name", "n1",
                                   "--ip", "198.18.0.1/24", "--state-dir", str(tmp_path), *flags])
    assert res.exit_code == 0, res.output
    assert [o.ipam_service for o in made] == [served]
