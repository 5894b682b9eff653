"""KernelWriter's batching, against a programmer that records what it is asked to send (the kernel
side is tests/integration/test_kernel_writer.py): after a quiet spell a change goes at once, with
the UPDATEs already read; while a burst streams in, batches wait WINDOW for more."""
from __future__ import annotations

import ipaddress

import trio
import trio.testing

from calico_bgp.agent.kernel_writer import WINDOW, KernelWriter
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.telemetry.metrics import Metrics
from dataplane.routes.changes import ReconcileResult

PEER = Peer("198.18.1.2", 65001, "198.18.1.2", ibgp=False)
ATTRS = PathAttributes("198.18.1.2", as_path=(65001,))


def prefixes(first: str, n: int) -> list[Prefix]:
    base = int(ipaddress.IPv4Address(first))
    return [Prefix(4, base + i, 32) for i in range(n)]


class Programmer:
    """What KernelWriter calls of a RouteProgrammer; each program() is one send, recorded with the
    trio time it was made at and the prefixes it carried."""

    def __init__(self) -> None:
        self.on_reconciled = None
        self.failure_changes, self.failures = 0, {}
        self.pending: list[str] = []
        self.sends: list[tuple[float, list[str]]] = []

    def set_desired(self, routes, unbuildable=None) -> None:
        pass

    async def reconcile(self) -> ReconcileResult:
        return ReconcileResult(0, 0, 0, 0, 0, (), 0.0)

    def update_desired(self, routes=(), removed=(), unbuildable=None) -> int:
        self.pending += [str(r.key.prefix()) for r in routes] + [str(k.prefix()) for k in removed]
        return len(self.pending)

    async def program(self) -> ReconcileResult | None:
        if not self.pending:
            return None
        self.sends.append((trio.current_time(), sorted(self.pending)))
        self.pending = []
        return ReconcileResult(1, 0, 0, 0, 0, (), 0.0)


async def _writer(nursery: trio.Nursery, rib: Rib, programmer: Programmer) -> KernelWriter:
    writer = KernelWriter(programmer, Metrics(), lambda: (rib, "n1", {}, set(), []), lambda: None)  # type: ignore[arg-type]
    nursery.start_soon(writer.run)
    writer.mark_full()
    await trio.testing.wait_all_tasks_blocked()
    return writer


def test_after_a_quiet_spell_a_change_goes_at_once_with_the_updates_already_read():
    """Steady churn: a tick's UPDATEs (withdrawals, then announcements) read together make one send,
    made without waiting on a timer (the mock clock does not move)."""
    clock = trio.testing.MockClock()
    rib, programmer = Rib(LocalSpeaker(64512, "198.18.1.1")), Programmer()
    a, b, c = prefixes("198.19.0.0", 3), prefixes("198.19.1.0", 2), prefixes("198.19.2.0", 2)
    queued: list[tuple[dict, list]] = []  # the UPDATEs read and not yet applied

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            writer = await _writer(nursery, rib, programmer)
            clock.jump(1.0)
            writer.mark_changed(rib.update(PEER, dict.fromkeys(a, ATTRS)), trio.current_time())
            await trio.testing.wait_all_tasks_blocked()
            assert programmer.sends == [(1.0, [str(p) for p in a])]

            clock.jump(1.0)  # a quiet second later, one tick's UPDATEs arrive together
            writer.backlog = lambda: len(queued)
            queued.extend([(dict.fromkeys(b[:1], ATTRS), []), (dict.fromkeys(b[1:], ATTRS), []), (dict.fromkeys(c, ATTRS), [])])

            async def apply_one_per_turn() -> None:  # as SessionEvents does: one UPDATE per loop turn
                writer.mark_changed(rib.update(PEER, {}, a), trio.current_time())
                while queued:
                    await trio.lowlevel.checkpoint()
                    announced, withdrawn = queued.pop(0)
                    writer.mark_changed(rib.update(PEER, announced, withdrawn), trio.current_time())

            nursery.start_soon(apply_one_per_turn)
            await trio.testing.wait_all_tasks_blocked()
            assert programmer.sends[1:] == [(2.0, sorted(str(p) for p in a + b + c))]
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)


def test_while_a_burst_streams_in_the_next_batch_waits_for_more():
    clock = trio.testing.MockClock()
    rib, programmer = Rib(LocalSpeaker(64512, "198.18.1.1")), Programmer()
    parts = [prefixes(f"198.19.{i}.0", 4) for i in range(3)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            writer = await _writer(nursery, rib, programmer)
            clock.jump(1.0)
            writer.mark_changed(rib.update(PEER, dict.fromkeys(parts[0], ATTRS)), trio.current_time())
            await trio.testing.wait_all_tasks_blocked()
            writer.mark_changed(rib.update(PEER, dict.fromkeys(parts[1], ATTRS)), trio.current_time())
            await trio.testing.wait_all_tasks_blocked()
            assert [t for t, _ in programmer.sends] == [1.0]  # the second waits for the window
            clock.jump(WINDOW / 2)
            writer.mark_changed(rib.update(PEER, dict.fromkeys(parts[2], ATTRS)), trio.current_time())
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(WINDOW / 2)
            await trio.testing.wait_all_tasks_blocked()
            assert programmer.sends == [(1.0, sorted(map(str, parts[0]))),
                                        (1.0 + WINDOW, sorted(map(str, parts[1] + parts[2])))]
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
