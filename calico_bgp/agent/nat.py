"""IPPool natOutgoing -> the NatEngine (dataplane/nat/), in the netfilter tool the policy filters use:
routing/nat_outgoing.py decides, NatReconciler moves the value. Apart from agent/policy.py so that a
node running without policy filters does not load them.
"""
from __future__ import annotations

import logging
from typing import Iterable

from calico_bgp.routing.nat_outgoing import nat_set
from dataplane.logfmt import event
from dataplane.nat.rules import NatSet

log = logging.getLogger(__name__)


class NatReconciler:
    """What the agent wires in for natOutgoing: the pools (from the cluster view) -> the NatEngine, in
    a thread, in the netfilter tool the policy filters use (`prefer`). The engine compares with the
    kernel and writes only a difference, so every call also repairs what was changed behind our back.
    A failure is logged and kept in `last_error`; what is programmed stays and the next pass retries.
    """

    def __init__(self, engine) -> None:
        self.engine = engine
        self.last_error: str | None = None
        self.applied: NatSet | None = None
        self.applied_mode: str | None = None  # the tool the applied NAT is in (None: none programmed)

    def status(self) -> tuple[str, tuple[str, ...], str]:
        """(mode, masqueraded CIDRs, last error) for the status document and the metrics: the mode is
        "" while no pool asks for NAT (nothing programmed), the error "" when the last pass worked."""
        masq = tuple(str(n) for n in self.applied.masquerade) if self.applied is not None else ()
        return (self.applied_mode or "") if masq else "", masq, self.last_error or ""

    async def reconcile(self, pools: Iterable, prefer: str | None) -> str | None:
        """Returns what happened ("applied": the wanted NAT changed, "repaired": it had not, the
        kernel had), or None when nothing had to change or it failed."""
        import trio

        nat = nat_set(pools)
        if nat.empty and self.applied == nat:  # removed once already: nothing of ours to look for
            return None
        try:
            changed = await trio.to_thread.run_sync(self.engine.apply, nat, prefer)
        except Exception as exc:  # noqa: BLE001 - routing does not depend on it: never fatal to the agent
            self.last_error = f"{type(exc).__name__}: {exc}"
            event(log, "nat_outgoing_failed", logging.ERROR, error=self.last_error[:500])
            return None
        what = None if not changed else "applied" if nat != self.applied else "repaired"
        self.applied_mode = None if nat.empty else self.engine.mode
        if what:
            event(log, f"nat_outgoing_{what}", logging.WARNING if what == "repaired" else logging.INFO,
                  mode=self.engine.mode or "-", masquerade=",".join(map(str, nat.masquerade)) or "-")
        self.applied, self.last_error = nat, None
        return what
