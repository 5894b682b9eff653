"""Outgoing NAT on this node, in the netfilter tool the node's policy filters use.

`NatEngine.apply(natset, prefer)` is the whole interface: `prefer` is the policy filters' mode
(dataplane/filters/engine.py); "nft" and "iptables" are used as they are, anything else (XDP, which
cannot rewrite addresses, or no filters at all) takes nftables when it is installed, else iptables +
ipset. Idempotent and restart-safe: each backend compares what the kernel holds with what is wanted
and writes only the difference, and the first apply in a process (and every change of mode) removes
what the other mode may have left, after the new one is in place. An empty NatSet removes it all.

Like the policy filters, what is programmed outlives the agent (a restart keeps masquerading, and
its connections' conntrack entries keep working); it goes when no pool asks for natOutgoing.

Everything here blocks (nft/iptables/ipset subprocesses): the agent calls it in a thread.
"""
from __future__ import annotations

import logging
from typing import Protocol

from dataplane.logfmt import event
from dataplane.nat.ipt import IptNat
from dataplane.nat.nft import NftNat
from dataplane.nat.rules import NatError, NatSet

log = logging.getLogger(__name__)

MODES = ("nft", "iptables")


class NoNatMode(NatError):
    """Neither nftables nor iptables + ipset works here."""


class Backend(Protocol):
    mode: str

    def apply(self, nat: NatSet) -> bool: ...
    def remove(self) -> bool: ...
    def counters(self) -> dict[int, int]: ...


def candidates(prefer: str | None, nft: bool, ipt: bool) -> list[str]:
    """The modes to try, in order (pure): the filters' netfilter mode first, then nftables, then
    iptables; only those installed."""
    order = [prefer] if prefer in MODES else []
    order += [m for m in MODES if m not in order]
    return [m for m in order if (m != "nft" or nft) and (m != "iptables" or ipt)]


class NatEngine:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._backends: dict[str, Backend] = {"nft": NftNat(netns), "iptables": IptNat(netns)}
        self.mode: str | None = None    # the mode masquerading now (None: nothing programmed)
        self._swept = False             # the other modes cleaned once in this process

    def _installed(self) -> list[str]:
        return candidates(None, NftNat.available(), IptNat.available())

    def apply(self, nat: NatSet, prefer: str | None = None) -> bool:
        """Program `nat`; True when the kernel had to change (a first apply, a change, a repair).
        Raises NoNatMode when no mode takes it; what was programmed then stays."""
        if nat.empty:
            changed = self.remove()
            return changed
        errors: list[str] = []
        for mode in candidates(prefer, NftNat.available(), IptNat.available()):
            try:
                changed = self._backends[mode].apply(nat)
            except (NatError, OSError) as exc:
                errors.append(f"{mode}: {exc}")
                event(log, "nat_mode_unavailable", logging.WARNING, mode=mode, error=str(exc)[:300])
                continue
            leaving = [m for m in self._installed() if m != mode] if not self._swept or self.mode != mode else []
            for old in leaving:  # the new mode masquerades now: only then the old one goes
                changed |= self._remove(old)
            self._swept = True
            if self.mode != mode:
                event(log, "nat_mode", mode=mode, previous=self.mode)
            self.mode = mode
            return changed
        raise NoNatMode("; ".join(errors) or "neither nft nor iptables + ipset is installed")

    def _remove(self, mode: str) -> bool:
        try:
            return self._backends[mode].remove()
        except (NatError, OSError) as exc:  # leaving a mode must not mask the one that works
            event(log, "nat_cleanup_failed", logging.WARNING, mode=mode, error=str(exc)[:300])
            return False

    def remove(self) -> bool:
        """Remove our NAT in every mode; True when there was some."""
        changed = False
        for mode in self._installed():
            changed |= self._remove(mode)
        self.mode = None
        self._swept = True
        return changed

    def counters(self) -> dict[int, int]:
        """Connections masqueraded per family, as the mode in use counts them."""
        return {} if self.mode is None else self._backends[self.mode].counters()
