"""The speaker's parts, each on its own: what a new bridge is owed, the hello, who is told before
a neighbour goes, stalls, and the sender with no bridge."""
from __future__ import annotations

import pytest
import trio
import trio.testing

from calico_bgp.speaker.channel import CommandSender, CommandWindow
from calico_bgp.speaker.connection import Hello
from calico_bgp.speaker.errors import BadHello
from calico_bgp.speaker.events import PeerState
from calico_bgp.speaker.reload import leaving_politely
from calico_bgp.speaker.replay import Reload, ReplayTo, ResendWithdrawals, came_up, owed_to_new_bridge
from calico_bgp.speaker.supervisor import stalled_for

A, B, C = "198.18.0.2", "198.18.0.3", "198.18.0.4"


def st(peer: str, state: str) -> PeerState:
    return PeerState(peer=peer, state=state, reason="", at=0.0)


def test_a_new_exabgp_is_owed_only_a_reload_of_a_config_it_may_have_missed():
    assert owed_to_new_bridge(config_stale=True, same_exabgp=False, lost_withdrawals=True, up=[A]) == [
        Reload("config_changed_during_start")]
    assert owed_to_new_bridge(config_stale=False, same_exabgp=False, lost_withdrawals=True, up=[A]) == []


def test_the_same_exabgp_gets_lost_withdrawals_then_every_up_session_replayed():
    assert owed_to_new_bridge(config_stale=True, same_exabgp=True, lost_withdrawals=True, up=[A, B]) == [
        Reload("config_changed_during_start"), ResendWithdrawals(), ReplayTo(A), ReplayTo(B)]
    assert owed_to_new_bridge(config_stale=False, same_exabgp=True, lost_withdrawals=False, up=[]) == []


def test_only_a_session_that_was_not_up_comes_up():
    assert came_up(None, st(A, "up"))
    assert came_up(st(A, "connected"), st(A, "up"))
    assert not came_up(st(A, "up"), st(A, "up"))
    assert not came_up(None, st(A, "down"))


def test_a_hello_names_its_exabgp_and_what_it_dropped():
    h = Hello.parse("bridge hello pid=1 exabgp=4242 dropped=7")
    assert (h.exabgp_pid, h.dropped) == (4242, 7)
    assert Hello.parse("bridge hello pid=1").exabgp_pid == 0
    for bad in ("hello, who is this?", "bridge hello exabgp=x"):
        with pytest.raises(BadHello, match="not a bridge hello"):
            Hello.parse(bad)


def test_only_removed_neighbours_that_are_up_and_not_held_idle_are_told():
    peers = {A: st(A, "up"), B: st(B, "up"), C: st(C, "connected")}
    assert leaving_politely([A, B, C, "198.18.0.9"], peers, abrupt=[B]) == [A]


async def test_a_stall_is_the_age_of_the_oldest_unanswered_command():
    w = CommandWindow()
    assert stalled_for(w, 100.0) == (0.0, "")
    p = w.add("reload")
    p.sent_at = 40.0
    w.add("withdraw route 198.19.0.0/24").sent_at = 90.0
    assert stalled_for(w, 100.0) == (60.0, "reload")


async def test_with_no_bridge_commands_are_dropped_and_withdrawals_kept_for_a_resend():
    stats = {"dropped_commands": 0}
    sender = CommandSender(CommandWindow(), stats)
    lines = ["neighbor 198.18.0.2 announce attributes next-hop self origin igp nlri 198.19.0.0/24",
             "neighbor 198.18.0.2 withdraw attributes next-hop self nlri 198.19.1.0/24"]
    assert await sender.send(lines) == 0
    assert stats["dropped_commands"] == 2
    assert sender.take_lost() == lines[1:] and not sender.lost
    with pytest.raises(ValueError, match="one line"):
        await sender.send(["reload\nreload"])


async def test_a_bridge_that_goes_takes_its_unanswered_withdrawals_to_the_lost_list():
    a, b = trio.testing.memory_stream_pair()
    sender = CommandSender(CommandWindow(), {"dropped_commands": 0})
    await sender.attach(a)
    assert await sender.send(["neighbor 198.18.0.2 withdraw attributes next-hop self nlri 198.19.1.0/24"]) == 1
    assert await sender.detach(object()) is False  # not the current bridge: nothing happens
    assert await sender.detach(a) is True
    assert not sender.connected and len(sender.lost) == 1 and not sender.window.in_flight
