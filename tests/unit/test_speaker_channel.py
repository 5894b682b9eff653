"""The command window: acks complete commands in order; a command that never went out is forgotten."""
from __future__ import annotations

from calico_bgp.speaker.channel import CommandWindow


async def test_acks_match_commands_in_order_and_a_failed_send_owes_no_ack():
    w = CommandWindow(limit=4)
    lost, kept = w.add("announce route 198.19.0.0/26 next-hop self"), w.add("withdraw route 198.19.1.0/26")
    w.forget(lost)  # its send failed: the bridge never saw it
    assert lost.done.is_set() and lost.ok is None
    assert await w.ack(True) is kept and kept.ok is True
    assert not w.in_flight and w.unmatched_acks == 0


async def test_forgetting_after_the_bridge_failed_everything_is_harmless():
    w = CommandWindow()
    p = w.add("announce route 198.19.0.0/26 next-hop self")
    await w.fail_all()
    w.forget(p)
    assert p.done.is_set() and not w.in_flight
    await w.drained()
