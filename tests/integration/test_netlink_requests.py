"""RequestChannel against a real kernel (root only): a batch sent from the event loop's thread (at
most INLINE_MAX requests) and one sent from a worker thread report the same refusals, by index, and
program every other route."""
from __future__ import annotations

import pytest

from dataplane import netlink
from dataplane.routes.route import Route
from tests.integration.test_route_programmer import GW1, lab, programmer, routes  # noqa: F401 - the fixture
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]


@pytest.mark.parametrize("count", [netlink.INLINE_MAX - 1, netlink.INLINE_MAX + 1])
async def test_refusals_by_index_from_the_loop_thread_and_a_worker_alike(lab, count):  # noqa: F811 - the fixture
    """`count` routes in one batch, the one in the middle refused (its gateway is on no link)."""
    good = [Route.via(f"198.18.{64 + i // 200}.{i % 200}/32", GW1) for i in range(count - 1)]
    off_link = Route.via("198.18.70.0/24", "198.18.99.9")
    async with programmer(lab) as rp:
        rp.set_desired(good[:count // 2] + [off_link] + good[count // 2:])
        res = await rp.reconcile()
        assert res.adds == count
        assert [f.prefix for f in res.failures] == ["198.18.70.0/24"]
        assert "Network is unreachable" in res.failures[0].reason
        assert set(routes(lab.host)) == {str(r.prefix) for r in good}

