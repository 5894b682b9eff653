"""dataplane.netlink.Held: a trio.Lock taken without a turn of the scheduler when it is free, waited
for when it is not, and a cancelled task still stops there."""
from __future__ import annotations

import pytest
import trio
import trio.testing

from dataplane.netlink import Held


async def test_a_free_lock_is_taken_without_letting_another_task_run():
    lock, ran = trio.Lock(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _note(ran))
        async with Held(lock):
            assert lock.locked() and ran == []  # with `async with lock` the other task had run here
        assert not lock.locked()
        assert ran == []
    assert ran == ["ran"]


async def _note(ran: list) -> None:
    ran.append("ran")


async def test_a_held_lock_is_waited_for_and_then_taken():
    lock, order = trio.Lock(), []

    async def other() -> None:
        async with Held(lock):
            order.append("other")

    await lock.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []
        order.append("first")
        lock.release()
    assert order == ["first", "other"] and not lock.locked()


async def test_a_cancelled_task_stops_at_the_lock_and_leaves_it_free():
    lock = trio.Lock()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            async with Held(lock):
                pytest.fail("entered in a cancelled scope")
    assert not lock.locked()


async def test_the_lock_is_released_when_the_body_raises():
    lock = trio.Lock()
    with pytest.raises(ValueError):
        async with Held(lock):
            raise ValueError("boom")
    assert not lock.locked()
