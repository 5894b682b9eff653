"""BfdEngine against a BIRD peer across a veth: sessions come Up, a silent peer is Down within the
detection time (read from BIRD's log stream), the node's own interface going down is a failure too
(BIRD removes the session without a state change), `configure` adds and removes sessions without a
restart, and a SIGKILLed engine is back, its sessions Up again, within 5 s."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import trio

from calico_bgp.bfd.engine import BfdEngine
from calico_bgp.routing.bfd import BfdSession
from lab.bird import Bird
from lab.net import netns, sh, veth, wait_for
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird (./bootstrap.sh setup)")]

PEER_CONF = """router id 198.18.3.2;
log stderr all;
protocol device { scan time 10; }
protocol bfd tor {
  interface "tor0" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
  neighbor 198.18.3.1 dev "tor0";
}
"""
CRASHING = """
import trio
from calico_bgp.bfd.engine import BfdEngine
from calico_bgp.routing.bfd import BfdSession

async def main():
    e = BfdEngine({dir!r}, wrapper=["ip", "netns", "exec", {ns!r}])
    async with trio.open_nursery() as n:
        await n.start(e.run)
        e.set_sessions([BfdSession("198.18.3.2", "eth0", 100, 100, 1000, 3)])

trio.run(main)
"""
SILENCE = ("table inet silence {\n chain in { type filter hook input priority -300; policy drop; }\n"
           " chain out { type filter hook output priority -300; policy drop; }\n}\n")


async def _until(what: str, fn, timeout: float = 10.0) -> float:
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not fn():
            await trio.sleep(0.005)
    return trio.current_time() - start


def test_engine_against_a_bird_peer(tmp_path):
    with netns("node") as node, netns("tor") as tor:
        veth(node, "eth0", tor, "tor0", ("198.18.3.1/24",), ("198.18.3.2/24",))
        peer = Bird(tor, None, tmp_path / "tor")
        try:
            peer.start(config=PEER_CONF)
            changes = []
            engine = BfdEngine(tmp_path / "engine", on_change=lambda c, at: changes.append((c, time.monotonic())),
                               wrapper=["ip", "netns", "exec", node])
            session = BfdSession("198.18.3.2", "eth0", 100, 100, 1000, 3)
            extra = BfdSession("198.18.3.9", "eth0", 100, 100, 1000, 3)
            figures: dict[str, float] = {}

            async def main():
                async with trio.open_nursery() as n:
                    await n.start(engine.run)
                    assert engine.state_of("198.18.3.2") == ""
                    engine.set_sessions([session])
                    await _until("Up", lambda: engine.state_of("198.18.3.2") == "Up")
                    pid = engine.pid
                    await _until("figures", lambda: engine.states.get("198.18.3.2") is not None
                                 and engine.states["198.18.3.2"].timeout_ms == 300, timeout=5)
                    # a second session by `configure`: the first stays Up, BIRD is not restarted
                    engine.set_sessions([session, extra])
                    await _until("two rows", lambda: len(engine.states) == 2, timeout=5)
                    assert engine.pid == pid and engine.state_of("198.18.3.2") == "Up"
                    assert engine.state_of("198.18.3.9") == "Down"
                    # the peer goes silent: Down within the detection time (300 ms) and a little
                    changes.clear()
                    (tmp_path / "silence.nft").write_text(SILENCE)
                    sh("nft", "-f", str(tmp_path / "silence.nft"), ns=tor)
                    silenced = time.monotonic()
                    await _until("Down", lambda: any(c.failed for c, _ in changes), timeout=3)
                    detected = figures["detected"] = next(at for c, at in changes if c.failed) - silenced
                    assert detected < 0.6, detected
                    sh("nft", "delete", "table", "inet", "silence", ns=tor)
                    await _until("Up again", lambda: engine.state_of("198.18.3.2") == "Up")
                    # our end of the link goes down: BIRD drops the session, heard as Up -> Down
                    changes.clear()
                    sh("ip", "link", "set", "eth0", "down", ns=node)
                    await _until("Down by link", lambda: any(c.failed for c, _ in changes), timeout=2)
                    sh("ip", "link", "set", "eth0", "up", ns=node)
                    await _until("Up after the link", lambda: engine.state_of("198.18.3.2") == "Up")
                    # SIGKILL: unavailable at once, back and Up within 5 s; its Down->Init->Up is no failure
                    changes.clear()
                    os.kill(pid, signal.SIGKILL)
                    await _until("unavailable", lambda: not engine.available, timeout=2)
                    assert engine.state_of("198.18.3.2") == "Unavailable"
                    back = figures["back"] = await _until("back Up", lambda: engine.state_of("198.18.3.2") == "Up", timeout=5)
                    assert engine.pid != pid and engine.starts == 2 and back < 5
                    assert not [c for c, _ in changes if c.failed]
                    n.cancel_scope.cancel()

            trio.run(main)
            # the engine stopped in order (the agent stopping): BIRD with it
            assert not os.path.exists(f"/proc/{engine.pid}")
            print(f"detected in {figures['detected'] * 1000:.0f} ms, back in {figures['back']:.2f} s")

            # an agent that crashes (SIGKILL) leaves BIRD running and the peer's session Up; the next
            # agent adopts that BIRD, and stops it when no session is left
            crashing = subprocess.Popen([sys.executable, "-c", CRASHING.format(dir=str(tmp_path / "engine"), ns=node)])
            try:
                wait_for("the peer's session Down (the last engine stopped)",
                         lambda: " Up " not in peer.birdc("show", "bfd", "sessions"), timeout=15)
                wait_for("the peer's session Up with the crashing agent's BIRD",
                         lambda: (tmp_path / "engine" / "bird.pid").exists()
                         and " Up " in peer.birdc("show", "bfd", "sessions"), timeout=15)
            finally:
                crashing.kill()
                crashing.wait()
            kept = int((tmp_path / "engine" / "bird.pid").read_text())
            before = peer.birdc("show", "bfd", "sessions").splitlines()[-1]

            async def adopt():
                async with trio.open_nursery() as n:
                    again = BfdEngine(tmp_path / "engine", wrapper=["ip", "netns", "exec", node])
                    await n.start(again.run)
                    again.set_sessions([session])
                    await _until("adopted, Up", lambda: again.state_of("198.18.3.2") == "Up", timeout=5)
                    assert again.pid == kept and again.available
                    await trio.sleep(1)
                    # the peer's session never went down: the same since as before the crash
                    assert before.split()[2] == "Up" and before in peer.birdc("show", "bfd", "sessions"), before
                    again.set_sessions([])
                    await _until("stopped", lambda: not os.path.exists(f"/proc/{kept}"), timeout=5)
                    n.cancel_scope.cancel()

            trio.run(adopt)
        finally:
            peer.stop()
