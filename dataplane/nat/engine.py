"""Outgoing NAT on this node, in the netfilter tool the node's policy filters use.

`NatEngine.apply(natset, prefer)` is the whole interface: `prefer` is the policy filters' mode
(dataplane/filters/engine.py); "nft" and "iptables" are used as they are, anything else (XDP, which
cannot rewrite addresses, or no filters at all) takes nftables when it is installed, else iptables +
ipset. Idempotent and restart-safe: each backend compares what the kernel holds with what is wanted
and writes only the difference, and the first apply in a process (and every change of mode) removes
what the other mode may have left, after the new one is in place. An empty NatSet removes it all.

Like the policy filters, what is programmed outlives the agent (a restart keeps masquerading, and
its connections' conntrack entries keep working); it goes when no pool asks for natOutgoing. With a
state dir, the mode in use is remembered there: a node that never masqueraded runs no netfilter tool
at all, and a restart in the same mode checks that mode alone.

Everything here blocks (nft/iptables/ipset subprocesses): the agent calls it in a thread.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
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
    def __init__(self, netns: str | None = None, state_dir: Path | None = None) -> None:
        self.netns = netns
        self.state_dir = state_dir
        self._backends: dict[str, Backend] = {"nft": NftNat(netns), "iptables": IptNat(netns)}
        self.mode: str | None = self._remembered()  # the mode masquerading now (None: nothing programmed)
        self._swept = False             # the other modes cleaned once in this process

    @property
    def _mode_file(self) -> Path | None:
        return self.state_dir / "nat-mode.json" if self.state_dir is not None else None

    def _remembered(self) -> str | None:
        if self._mode_file is None:
            return None
        try:
            mode = json.loads(self._mode_file.read_text()).get("mode")
        except (OSError, ValueError):
            return None
        return mode if mode in MODES else None

    def _remember(self, mode: str | None) -> None:
        if self._mode_file is None:
            return
        if mode is None:
            with contextlib.suppress(FileNotFoundError):
                self._mode_file.unlink()
            return
        self._mode_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._mode_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mode": mode}))
        os.replace(tmp, self._mode_file)

    def _installed(self) -> list[str]:
        return candidates(None, NftNat.available(), IptNat.available())

    def apply(self, nat: NatSet, prefer: str | None = None) -> bool:
        """Program `nat`; True when the kernel had to change (a first apply, a change, a repair).
        Raises NoNatMode when no mode takes it; what was programmed then stays."""
        if nat.empty:
            if self.mode is None and self._mode_file is not None:
                return False  # nothing of ours was left programmed, or the state dir would say so
            return self.remove()
        errors: list[str] = []
        for mode in candidates(prefer, NftNat.available(), IptNat.available()):
            try:
                changed = self._backends[mode].apply(nat)
            except (NatError, OSError) as exc:
                errors.append(f"{mode}: {exc}")
                event(log, "nat_mode_unavailable", logging.WARNING, mode=mode, error=str(exc)[:300])
                continue
            # the new mode masquerades now: only then the old one goes; on the first apply, every other
            # mode, unless the state dir says this one was in use (a crash mid-switch leaves the old name)
            switched, first = self.mode != mode, not self._swept
            trusted = self._mode_file is not None and not switched
            if switched or (first and not trusted):
                for old in (m for m in self._installed() if m != mode):
                    changed |= self._remove(old)
            if switched:
                event(log, "nat_mode", mode=mode, previous=self.mode)
            if switched or first:
                self._remember(mode)
            self.mode, self._swept = mode, True
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
        self._remember(None)
        return changed

    def counters(self) -> dict[int, int]:
        """Connections masqueraded per family, as the mode in use counts them."""
        return {} if self.mode is None else self._backends[self.mode].counters()
