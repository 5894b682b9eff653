"""calico_bgp.agent.upkeep: an idle agent's timers sleep with no deadline at all, and each still fires
on time once it has something to time (a damped path's release, stale routes' deadline, a summary
of warnings held back)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import trio
import trio.testing

from calico_bgp.agent.state import AgentState
from calico_bgp.agent.upkeep import Upkeep
from calico_bgp.routing.damping import Dampener, DampingParams
from calico_bgp.routing.graceful_restart import SPEAKER_RESTART
from calico_bgp.routing.path import LocalSpeaker
from calico_bgp.routing.rib import Rib
from calico_bgp.telemetry.metrics import Metrics
from dataplane.ratelimit import RateLimitedLog

PEER, PREFIX = "198.18.1.1", "198.19.0.0/26"
PARAMS = DampingParams(half_life=10.0, reuse=750, suppress=2000, max_suppress=40.0)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def emit(self, kind: str, **_fields: object) -> None:
        self.seen.append((trio.current_time(), kind))


def _upkeep(clock: trio.testing.MockClock) -> tuple[Upkeep, AgentState, Events, RateLimitedLog]:
    state, events = AgentState(dampener=Dampener(PARAMS, enabled=True)), Events()
    warn = RateLimitedLog(logging.getLogger("t.upkeep"), burst=1, window=2.0, clock=trio.current_time)
    programmer = SimpleNamespace(warnings=RateLimitedLog(logging.getLogger("t.programmer")), flush_logs=lambda: None)
    kernel = SimpleNamespace(mark_changed=lambda changed: None)
    upkeep = Upkeep(state, "n1", SimpleNamespace(peers={}), programmer, kernel, events, Metrics(), warn)  # type: ignore[arg-type]
    return upkeep, state, events, warn


def _next_deadline() -> float:
    return trio.lowlevel.current_statistics().seconds_to_next_deadline


def test_idle_timers_have_no_deadline_and_wake_on_time_for_what_comes():
    clock = trio.testing.MockClock()

    async def main() -> None:
        upkeep, state, events, warn = _upkeep(clock)
        async with trio.open_nursery() as n:
            n.start_soon(upkeep.damping_timer)
            n.start_soon(upkeep.stale_sweeper, 1.0)
            n.start_soon(upkeep.summaries)
            await trio.testing.wait_all_tasks_blocked()
            assert _next_deadline() == float("inf")  # nothing to time: nothing wakes

            # three flaps: suppressed at penalty 3000, reusable 20 s later (half-life 10 s, reuse 750)
            state.dampener.update(PEER, {PREFIX: "a"}, [], 0.0)
            for _ in range(3):
                state.dampener.update(PEER, {}, [PREFIX], 0.0)
                state.dampener.update(PEER, {PREFIX: "a"}, [], 0.0)
            await trio.testing.wait_all_tasks_blocked()
            assert state.dampener.next_release(0.0) == 20.0
            clock.jump(19.9)
            await trio.testing.wait_all_tasks_blocked()
            assert [k for _, k in events.seen] == []
            for _ in range(3):  # the 5 s cap: 5, 10, 15, then 20.01
                clock.jump(_next_deadline())
                await trio.testing.wait_all_tasks_blocked()
            assert [k for _, k in events.seen] == ["damping_end"] and 20.0 <= events.seen[0][0] <= 20.1
            while not state.dampener.idle():  # reused; forgotten once below reuse/2 (t=30 s), a pass a second
                assert _next_deadline() <= 1.0
                clock.jump(_next_deadline())
                await trio.testing.wait_all_tasks_blocked()
            assert 30.0 <= trio.current_time() <= 31.1 and _next_deadline() == float("inf")

            # a peer's routes kept for 5 s while it is down go at the deadline (within the 0.5 s tick)
            events.seen.clear()
            start = trio.current_time()
            state.rib = None
            state.stale.keep(PEER, start, 5.0, SPEAKER_RESTART)
            await trio.testing.wait_all_tasks_blocked()
            assert _next_deadline() == 0.5
            state.rib = Rib(LocalSpeaker(64512, "198.18.0.1"))
            while not events.seen:
                clock.jump(_next_deadline())
                await trio.testing.wait_all_tasks_blocked()
            assert events.seen[0][1] == "stale_swept" and 5.0 < events.seen[0][0] - start <= 5.5
            assert len(state.stale) == 0 and _next_deadline() == float("inf")

            # a warning held back is summarised as its window ends, then nothing wakes
            assert warn.warning("w") and not warn.warning("w") and warn.pending() == 1
            await trio.testing.wait_all_tasks_blocked()
            assert _next_deadline() == 1.0
            clock.jump(1.0)
            await trio.testing.wait_all_tasks_blocked()
            assert warn.pending() == 1
            clock.jump(1.0)
            await trio.testing.wait_all_tasks_blocked()
            assert warn.pending() == 0 and _next_deadline() == float("inf")
            n.cancel_scope.cancel()

    trio.run(main, clock=clock)
