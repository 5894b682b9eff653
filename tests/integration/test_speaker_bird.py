"""Our Speaker (ExaBGP in one namespace) against BIRD 2 in others: sessions, routes both ways,
reload that leaves unchanged sessions alone, replay to a neighbor added later, a 20k burst."""
from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import time
from pathlib import Path

import attrs
import pytest
import trio

from calico_bgp.speaker.events import EXABGP_EXITED, EndOfRib, PeerState, Update
from calico_bgp.speaker.neighbor import IPV4_UNICAST, IPV6_UNICAST, Neighbor
from calico_bgp.speaker.speaker import Speaker
from lab.bird import Bird, BirdPeer, same_since
from lab.net import netns, veth
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]
log = logging.getLogger(__name__)

AS_US, AS_BIRD = 65000, 65001


@pytest.fixture
def lab(tmp_path: Path):
    """spk <-> b1 (198.18.1.0/24, 2001:db8:1::/64) and spk <-> b2 (198.18.2.0/24)."""
    with contextlib.ExitStack() as stack:
        spk = stack.enter_context(netns("s"))
        b1 = stack.enter_context(netns("b"))
        b2 = stack.enter_context(netns("c"))
        veth(spk, "to-b1", b1, "eth0", ("198.18.1.1/24", "2001:db8:1::1/64"), ("198.18.1.2/24", "2001:db8:1::2/64"))
        veth(spk, "to-b2", b2, "eth0", ("198.18.2.1/24",), ("198.18.2.2/24",))
        bird1 = stack.enter_context(Bird(b1, "198.18.1.2", tmp_path / "bird1"))
        bird2 = stack.enter_context(Bird(b2, "198.18.2.2", tmp_path / "bird2"))
        yield {"spk": spk, "bird1": bird1, "bird2": bird2, "tmp": tmp_path}


def n4(peer: str, local: str, **kw) -> Neighbor:
    return Neighbor(peer_address=peer, peer_as=AS_BIRD, local_as=AS_US, local_address=local,
                    router_id="198.18.1.1", hold_time=9, **kw)


async def poll(predicate, timeout: float = 20.0, every: float = 0.1, what: str = "condition"):
    with trio.move_on_after(timeout):
        while True:
            value = await trio.to_thread.run_sync(predicate)
            if value:
                return value
            await trio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


async def next_event(speaker: Speaker, match, timeout: float = 20.0):
    with trio.fail_after(timeout):
        async for ev in speaker.events:
            if match(ev):
                return ev


def import_withdraws(bird: Bird, proto: str) -> int:
    out = bird.birdc("show", "protocols", "all", proto)
    m = re.search(r"Import withdraws:\s+(\d+)", out)
    return int(m.group(1)) if m else 0


async def test_sessions_routes_reload_and_replay(lab, nursery):
    bird1: Bird = lab["bird1"]
    bird2: Bird = lab["bird2"]
    bird1.configure([BirdPeer("exa4", AS_BIRD, "198.18.1.1", AS_US, passive=True, hold_time=9),
                     BirdPeer("exa6", AS_BIRD, "2001:db8:1::1", AS_US, passive=True, ipv4=False, ipv6=True,
                              hold_time=9)],
                    static4=["198.19.100.0/24"], static6=["2001:db8:100::/48"])
    # bird2 dials us: our side of that session is passive and listens (added by a reload)
    bird2.configure([BirdPeer("exa", AS_BIRD, "198.18.2.1", AS_US, passive=False, hold_time=9)])

    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"])
    await nursery.start(speaker.run)
    first = n4("198.18.1.2", "198.18.1.1")
    six = Neighbor(peer_address="2001:db8:1::2", peer_as=AS_BIRD, local_as=AS_US, local_address="2001:db8:1::1",
                   router_id="198.18.1.1", families=(IPV6_UNICAST,), hold_time=9)
    await speaker.set_neighbors([first, six])

    with trio.fail_after(30):
        await speaker.wait_state("198.18.1.2", "up")
        await speaker.wait_state("2001:db8:1::2", "up")

    # BIRD's static routes arrive as Update events, v4 and v6
    got: dict[str, Update] = {}
    eors: set[EndOfRib] = set()
    with trio.fail_after(20):
        async for ev in speaker.events:
            if isinstance(ev, Update):
                for p in ev.announced:
                    got[p] = ev
            if isinstance(ev, EndOfRib):
                eors.add(ev)
            if {"198.19.100.0/24", "2001:db8:100::/48"} <= set(got) and len(eors) == 2:
                break
    assert eors == {EndOfRib("198.18.1.2", IPV4_UNICAST), EndOfRib("2001:db8:1::2", IPV6_UNICAST)}
    assert got["198.19.100.0/24"].announced["198.19.100.0/24"].next_hop == "198.18.1.2"
    assert got["198.19.100.0/24"].announced["198.19.100.0/24"].as_path == (AS_BIRD,)
    assert got["2001:db8:100::/48"].family == IPV6_UNICAST

    # our announcements reach BIRD, next hop self, each family on its session
    await speaker.announce(None, ["198.19.0.0/26", "2001:db8:200::/64"], wait=True)
    r4 = await poll(lambda: bird1.routes("master4", "exa4").get("198.19.0.0/26"), what="v4 route in bird1")
    r6 = await poll(lambda: bird1.routes("master6", "exa6").get("2001:db8:200::/64"), what="v6 route in bird1")
    assert r4 == ["198.18.1.1"] and r6 == ["2001:db8:1::1"]

    # BIRD withdraws: we see it withdrawn
    bird1.configure(static4=[])
    ev = await next_event(speaker, lambda e: isinstance(e, Update) and "198.19.100.0/24" in e.withdrawn)
    assert ev.peer == "198.18.1.2" and ev.family == IPV4_UNICAST

    # adding a neighbor: the existing sessions stay up, nothing withdrawn, and the new one gets our routes
    before = bird1.protocols()
    withdraws_before = import_withdraws(bird1, "exa4")
    second = n4("198.18.2.2", "198.18.2.1", passive=True, listen_port=179)
    await speaker.set_neighbors([first, six, second])
    with trio.fail_after(30):
        await speaker.wait_state("198.18.2.2", "up")
    r = await poll(lambda: bird2.routes("master4", "exa").get("198.19.0.0/26"), what="replayed route in bird2")
    assert r == ["198.18.2.1"]
    assert "2001:db8:200::/64" not in bird2.routes("master6")  # an ipv4-only session gets no v6
    after = bird1.protocols()
    for proto in ("exa4", "exa6"):
        assert same_since(after[proto]["since"], before[proto]["since"]), (before, after)
        assert after[proto]["info"].startswith("Established")
    assert import_withdraws(bird1, "exa4") == withdraws_before
    assert bird1.routes("master4", "exa4").get("198.19.0.0/26") == ["198.18.1.1"]

    # removing it: a polite Cease to that peer, the others untouched
    await speaker.set_neighbors([first, six])
    await poll(lambda: not bird2.established("exa"), what="bird2 session closed")
    info = bird2.birdc("show", "protocols", "all", "exa")
    assert "Administrative shutdown" in info or "shutdown" in info.lower(), info
    assert same_since(bird1.protocols()["exa4"]["since"], before["exa4"]["since"])

    # withdraw ours
    await speaker.withdraw(None, ["198.19.0.0/26"], wait=True)
    await poll(lambda: "198.19.0.0/26" not in bird1.routes("master4", "exa4"), what="route withdrawn in bird1")
    assert speaker.stats["malformed"] == 0
    assert speaker.window.errors == 0, "ExaBGP answered error to a command"


async def two_passive_birds(lab, nursery) -> tuple[Bird, Bird, Speaker]:
    """Both BIRDs waiting for our speaker to dial them, and the speaker running."""
    bird1: Bird = lab["bird1"]
    bird2: Bird = lab["bird2"]
    bird1.configure([BirdPeer("exa4", AS_BIRD, "198.18.1.1", AS_US, passive=True, hold_time=9)])
    bird2.configure([BirdPeer("exa", AS_BIRD, "198.18.2.1", AS_US, passive=True, hold_time=9)])
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"])
    await nursery.start(speaker.run)
    return bird1, bird2, speaker


async def test_burst_of_10000_to_two_neighbors(lab, nursery):
    """10k /32s to two BIRDs at once: no stall, no session lost, ExaBGP answers every command. At 16
    prefixes a command that is 625 commands, five times the 128 the speaker keeps in flight: the
    window fills and drains over and over, as with 20k."""
    bird1, bird2, speaker = await two_passive_birds(lab, nursery)
    await speaker.set_neighbors([n4("198.18.1.2", "198.18.1.1"), n4("198.18.2.2", "198.18.2.1")])
    with trio.fail_after(30):
        await speaker.wait_state("198.18.1.2", "up")
        await speaker.wait_state("198.18.2.2", "up")
    # ExaBGP may say up a moment before BIRD moves its own protocol to up: read the baseline once BIRD
    # agrees (same_since allows for BIRD printing one moment a millisecond apart)
    await poll(lambda: bird1.established("exa4") and bird2.established("exa"), what="both BIRDs Established")
    since = (bird1.protocols()["exa4"]["since"], bird2.protocols()["exa"]["since"])
    n = 10_000
    prefixes = [f"198.19.{i // 256}.{i % 256}/32" for i in range(n)]

    def both_have(count: int) -> bool:
        return bird1.count("master4", "exa4") == count and bird2.count("master4", "exa") == count

    t0 = time.monotonic()
    await speaker.announce(None, prefixes, wait=True)
    t_acked = time.monotonic() - t0
    await poll(lambda: both_have(n), timeout=180, every=0.25, what=f"{n} routes in both BIRDs")
    t_all = time.monotonic() - t0
    print(f"\nburst: {n} prefixes x 2 neighbors acked in {t_acked:.2f}s, in both BIRDs after {t_all:.2f}s "
          f"= {n / t_all:.0f} prefixes/s ({2 * n / t_all:.0f} routes/s)")
    log.warning("burst_announce n=%d neighbors=2 seconds=%.2f prefixes_per_s=%.0f", n, t_all, n / t_all)
    t0 = time.monotonic()
    await speaker.withdraw(None, prefixes, wait=True)
    await poll(lambda: both_have(0), timeout=180, every=0.25, what=f"{n} withdrawn")
    t_w = time.monotonic() - t0
    print(f"burst: {n} prefixes x 2 withdrawn in {t_w:.2f}s = {n / t_w:.0f} prefixes/s")
    assert same_since(bird1.protocols()["exa4"]["since"], since[0])
    assert same_since(bird2.protocols()["exa"]["since"], since[1])
    assert bird1.established("exa4") and bird2.established("exa")
    assert speaker.peers["198.18.1.2"].state == "up" and speaker.peers["198.18.2.2"].state == "up"
    assert speaker.window.errors == 0 and speaker.window.sent == speaker.window.acked


async def test_a_neighbor_added_while_routes_are_still_queued_for_another_comes_up(lab, nursery):
    """ExaBGP drops a `reload` that arrives while it still has routes queued for some peer: the speaker
    sends it again until ExaBGP's log says the configuration was loaded."""
    bird1, bird2, speaker = await two_passive_birds(lab, nursery)
    first = n4("198.18.1.2", "198.18.1.1")
    await speaker.set_neighbors([first])
    with trio.fail_after(30):
        await speaker.wait_state("198.18.1.2", "up")
    await speaker.announce(None, [f"198.19.{i // 256}.{i % 256}/32" for i in range(20_000)])
    await speaker.set_neighbors([first, n4("198.18.2.2", "198.18.2.1")])  # while the 20k still go out
    with trio.fail_after(30):
        await speaker.wait_state("198.18.2.2", "up")
    await poll(lambda: bird2.count("master4", "exa") == 20_000, timeout=120, every=0.25, what="20k replayed to bird2")


async def test_a_neighbor_added_while_another_cannot_connect_with_routes_queued_comes_up(lab, nursery):
    """ExaBGP holds a `reload` back while any peer it dials has routes queued, and a peer whose
    session is not up never sends its queue: with a neighbour whose TCP connect hangs (its SYNs
    dropped: the rack lab's nodes dialled their ToRs from a loopback address the ToRs had no route
    back to, before the agent registered its link addresses), and our routes queued for it, the
    reload that fixed the address, and any later one, waited for the connect to time out (2 min).
    A neighbour added meanwhile must come up at once."""
    bird1, bird2, speaker = await two_passive_birds(lab, nursery)
    with netns("d") as d:
        veth(lab["spk"], "to-d", d, "eth0", ("198.18.3.1/24",), ("198.18.3.2/24",))
        subprocess.run(["ip", "netns", "exec", d, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "179",
                        "-j", "DROP"], check=True)
        hangs = n4("198.18.3.2", "198.18.3.1")
        await speaker.set_neighbors([hangs])
        await trio.sleep(0.5)  # ExaBGP is dialling it: SYN sent, never answered
        await speaker.announce(None, ["198.19.0.0/26", "198.19.0.64/26"], wait=True)
        await trio.sleep(0.5)
        await speaker.set_neighbors([hangs, n4("198.18.2.2", "198.18.2.1")])
        with trio.fail_after(10):
            await speaker.wait_state("198.18.2.2", "up")
        await poll(lambda: bird2.count("master4", "exa") == 2, timeout=10, what="our two routes at bird2")


async def test_exabgp_crash_is_restarted_and_routes_replayed(lab, nursery):
    import os
    bird1: Bird = lab["bird1"]
    # here BIRD dials and ExaBGP listens on its global bind address (exabgp_tcp_bind), also after a restart
    bird1.configure([BirdPeer("exa4", AS_BIRD, "198.18.1.1", AS_US, passive=False, hold_time=9)])
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"], listen=["198.18.1.1"])
    await nursery.start(speaker.run)
    await speaker.set_neighbors([n4("198.18.1.2", "198.18.1.1", passive=True)])
    await speaker.announce(None, ["198.19.7.0/24"])
    await poll(lambda: bird1.routes("master4", "exa4").get("198.19.7.0/24"), what="route in bird")
    first = speaker.process.pid
    os.kill(first, 9)
    await next_event(speaker, lambda e: isinstance(e, PeerState) and e.state == "down" and e.reason == EXABGP_EXITED)
    await poll(lambda: "198.19.7.0/24" not in bird1.routes("master4", "exa4"), what="route gone with the session")
    with trio.fail_after(30):
        await speaker.wait_state("198.18.1.2", "up")
    assert speaker.process.pid != first and speaker.stats["restarts"] == 1
    await poll(lambda: bird1.routes("master4", "exa4").get("198.19.7.0/24"), what="route replayed after restart")


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                out.append(int(status.parent.name))
        except OSError:
            continue
    return out


async def test_a_withdrawal_made_while_the_bridge_is_away_reaches_the_peer_when_it_is_back(lab, nursery):
    """The bridge dies, ExaBGP (frozen meanwhile) respawns it: same ExaBGP, same sessions, so nothing
    replays a withdrawal that found no bridge. It is sent again when the new bridge connects."""
    import os
    import signal

    from calico_bgp.speaker.events import BridgeConnected, BridgeLost
    bird1: Bird = lab["bird1"]
    bird1.configure([BirdPeer("exa4", AS_BIRD, "198.18.1.1", AS_US, passive=False, hold_time=9)])
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"], listen=["198.18.1.1"])
    await nursery.start(speaker.run)
    await speaker.set_neighbors([n4("198.18.1.2", "198.18.1.1", passive=True)])
    await speaker.announce(None, ["198.19.7.0/24", "198.19.8.0/24"])
    await poll(lambda: bird1.routes("master4", "exa4").get("198.19.8.0/24"), what="routes in bird")
    exabgp = speaker.process.pid
    (bridge,) = _children(exabgp)
    os.kill(exabgp, signal.SIGSTOP)  # it cannot respawn the bridge before the withdrawal is made
    try:
        os.kill(bridge, signal.SIGKILL)
        await next_event(speaker, lambda e: isinstance(e, BridgeLost))
        dropped = speaker.stats["dropped_commands"]
        await speaker.withdraw(None, ["198.19.8.0/24"])
        assert speaker.stats["dropped_commands"] == dropped + 1  # no bridge to take it
    finally:
        os.kill(exabgp, signal.SIGCONT)
    await next_event(speaker, lambda e: isinstance(e, BridgeConnected))
    await poll(lambda: "198.19.8.0/24" not in bird1.routes("master4", "exa4"), what="withdrawal re-sent")
    assert "198.19.7.0/24" in bird1.routes("master4", "exa4") and speaker.process.pid == exabgp


async def test_graceful_restart_a_helper_keeps_our_routes_and_a_removal_takes_them(lab, nursery):
    """BIRD as graceful-restart helper: while our ExaBGP is dead and restarting, its routes stay at
    BIRD; after the restart what is still wanted is re-sent, then End-of-RIB, and BIRD drops what was
    withdrawn meanwhile. Removing the neighbor takes our routes back at once, though ExaBGP then
    closes without a NOTIFICATION."""
    import os
    bird1: Bird = lab["bird1"]
    bird1.configure([BirdPeer("exa4", AS_BIRD, "198.18.1.1", AS_US, passive=False, hold_time=9,
                              graceful_restart=True)])
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"], listen=["198.18.1.1"])
    await nursery.start(speaker.run)
    await speaker.set_neighbors([n4("198.18.1.2", "198.18.1.1", passive=True, graceful_restart=30)])
    await speaker.announce(None, ["198.19.7.0/24", "198.19.8.0/24"])
    await speaker.routes_complete()
    await poll(lambda: bird1.routes("master4", "exa4").get("198.19.8.0/24"), what="routes in bird")
    os.kill(speaker.process.pid, 9)
    await next_event(speaker, lambda e: isinstance(e, PeerState) and e.state == "down")
    await speaker.withdraw(None, ["198.19.8.0/24"])  # while ExaBGP is away: not re-sent after the restart
    gaps = 0
    with trio.fail_after(30):
        while speaker.peers.get("198.18.1.2") is None or speaker.peers["198.18.1.2"].state != "up":
            gaps += "198.19.7.0/24" not in bird1.routes("master4", "exa4")
            await trio.sleep(0.1)
    await poll(lambda: "198.19.8.0/24" not in bird1.routes("master4", "exa4"), what="stale route swept by End-of-RIB")
    assert gaps == 0 and "198.19.7.0/24" in bird1.routes("master4", "exa4")
    await speaker.set_neighbors([])
    await poll(lambda: "198.19.7.0/24" not in bird1.routes("master4", "exa4"), timeout=10,
               what="routes taken back when the neighbor is removed")


async def test_reflection_attributes_reach_an_ibgp_peer(lab, nursery):
    """What a route reflector sends: a client's next hop, ORIGINATOR_ID, CLUSTER_LIST, local pref, communities."""
    bird1: Bird = lab["bird1"]
    bird1.configure([BirdPeer("exa4", AS_US, "198.18.1.1", AS_US, passive=True, hold_time=9, extra=("direct;",))])
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"])
    await nursery.start(speaker.run)
    ibgp = Neighbor(peer_address="198.18.1.2", peer_as=AS_US, local_as=AS_US, local_address="198.18.1.1",
                    router_id="198.18.1.1", hold_time=9)
    await speaker.set_neighbors([ibgp])
    with trio.fail_after(30):
        await speaker.wait_state("198.18.1.2", "up")
    await speaker.announce(["198.18.1.2"], ["198.19.44.0/26"], next_hop="198.18.1.50", originator_id="198.18.1.50",
                           cluster_list=["198.18.1.1"], local_pref=200, communities=[(65000, 7)],
                           large_communities=[(65000, 1, 2)], med=5, wait=True)
    out = await poll(lambda: (lambda t: t if "198.19.44.0/26" in t else "")(bird1.route_all("198.19.44.0/26")),
                     what="reflected route in bird")
    assert "via 198.18.1.50" in out, out
    assert re.search(r"BGP.originator_id:\s+198.18.1.50", out), out
    assert re.search(r"BGP.cluster_list:\s+198.18.1.1", out), out
    assert re.search(r"BGP.local_pref:\s+200", out), out
    assert re.search(r"BGP.med:\s+5", out), out
    assert "(65000,7)" in out and "(65000, 1, 2)" in out, out
    assert speaker.window.errors == 0


async def test_ipv6_on_an_ipv4_session_and_editing_one_peer_resets_only_it(lab, nursery):
    bird1: Bird = lab["bird1"]
    bird1.configure([BirdPeer("exa4", AS_BIRD, "198.18.1.1", AS_US, passive=True, ipv6=True, hold_time=9),
                     BirdPeer("exa6", AS_BIRD, "2001:db8:1::1", AS_US, passive=True, ipv4=False, ipv6=True,
                              hold_time=9)])
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"])
    await nursery.start(speaker.run)
    dual = n4("198.18.1.2", "198.18.1.1", families=(IPV4_UNICAST, IPV6_UNICAST), next_hop_v6="2001:db8:1::1")
    six = Neighbor(peer_address="2001:db8:1::2", peer_as=AS_BIRD, local_as=AS_US, local_address="2001:db8:1::1",
                   router_id="198.18.1.1", hold_time=9)
    await speaker.set_neighbors([dual, six])
    with trio.fail_after(30):
        await speaker.wait_state("198.18.1.2", "up")
        await speaker.wait_state("2001:db8:1::2", "up")
    await speaker.announce(None, ["2001:db8:300::/64", "198.19.30.0/24"], wait=True)
    assert await poll(lambda: bird1.routes("master6", "exa4").get("2001:db8:300::/64")) == ["2001:db8:1::1"]
    assert await poll(lambda: bird1.routes("master6", "exa6").get("2001:db8:300::/64")) == ["2001:db8:1::1"]
    assert speaker.window.errors == 0

    # a peer edited (hold time): that session alone restarts, and gets its routes back
    await trio.sleep(1.1)  # BIRD's "since" has millisecond resolution only for today's times
    before = bird1.protocols()
    await speaker.set_neighbors([dual, attrs.evolve(six, hold_time=12)])
    await poll(lambda: not same_since(bird1.protocols()["exa6"]["since"], before["exa6"]["since"]) and bird1.established("exa6"),
               what="exa6 re-established")
    assert await poll(lambda: bird1.routes("master6", "exa6").get("2001:db8:300::/64")) == ["2001:db8:1::1"]
    assert same_since(bird1.protocols()["exa4"]["since"], before["exa4"]["since"])


FROZEN_AGENT = """
import sys, trio
from calico_bgp.speaker.events import Update
from calico_bgp.speaker.neighbor import Neighbor
from calico_bgp.speaker.speaker import Speaker
async def main():
    state, ns = sys.argv[1], sys.argv[2]
    speaker = Speaker(state, netns=ns)
    async with trio.open_nursery() as n:
        await n.start(speaker.run)
        await speaker.set_neighbors([Neighbor(peer_address="198.18.1.2", peer_as=65001, local_as=65000,
                                              local_address="198.18.1.1", router_id="198.18.1.1", hold_time=6)])
        await speaker.wait_state("198.18.1.2", "up")
        print("up", flush=True)
        seen = set()
        async for ev in speaker.events:
            if isinstance(ev, Update):
                seen.update(ev.announced)
                if len(seen) >= int(sys.argv[3]):
                    print("received", len(seen), speaker.stats["malformed"], flush=True)
trio.run(main)
"""


def readline(proc, timeout: float) -> str:
    import select
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no line from pid {proc.pid} within {timeout}s")
    return proc.stdout.readline()


def test_a_frozen_agent_does_not_freeze_exabgp(lab):
    """The agent stops reading (SIGSTOP) while BIRD floods 20k routes: the bridge keeps draining
    ExaBGP, whose sessions keep their keepalives (hold time 6 s, frozen 10 s: the session would have
    expired and been reset if ExaBGP had stopped with the agent); nothing is lost."""
    import os
    import signal
    import subprocess
    import sys
    bird1: Bird = lab["bird1"]
    n = 20_000
    bird1.configure([BirdPeer("exa4", AS_BIRD, "198.18.1.1", AS_US, passive=True, hold_time=6)])
    agent = subprocess.Popen([sys.executable, "-c", FROZEN_AGENT, str(lab["tmp"] / "spk"), lab["spk"], str(n)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert readline(agent, 30).strip() == "up"
        bird1.wait_established("exa4")
        since = bird1.protocols()["exa4"]["since"]
        os.kill(agent.pid, signal.SIGSTOP)
        bird1.configure(static4=[f"198.19.{i // 256}.{i % 256}/32" for i in range(n)])
        time.sleep(10)
        assert bird1.established("exa4") and same_since(bird1.protocols()["exa4"]["since"], since)
        os.kill(agent.pid, signal.SIGCONT)
        line = readline(agent, 60).split()
        assert line[:2] == ["received", str(n)] and line[2] == "0", line
        assert same_since(bird1.protocols()["exa4"]["since"], since)
    finally:
        os.kill(agent.pid, signal.SIGCONT)
        agent.kill()
        agent.wait()
