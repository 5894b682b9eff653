"""Choose how policy filters are enforced (XDP, else nftables, else iptables + ipset) and apply them.

`FilterEngine.apply(filterset)` is the whole interface: idempotent, validated before anything is
touched (unknown interfaces are refused with the filter in place left as it was), and restart-safe:
the mode in use is remembered under the state dir and a new engine picks the same mode and re-uses
what is programmed (pinned XDP program and maps, our nft table, our iptables chains).

Switching mode (auto fell back, or the configuration changed) programs the new mode first and
removes the old one after, so the node is never unfiltered in between.

Everything here blocks (syscalls, netlink, nft/iptables subprocesses): the agent calls it through
`trio.to_thread.run_sync` (calico_bgp.agent.policy.PolicyFilterReconciler does).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from pathlib import Path
from typing import Protocol

from dataplane.filters.ipt import IptError, IptFilter
from dataplane.filters.nft import NftError, NftFilter
from dataplane.filters.rules import FilterError, FilterSet, RuleCounter
from dataplane.filters.xdp.bpf import BpfError
from dataplane.filters.xdp.enforce import XdpFilter
from dataplane.filters.xdp.loader import DEFAULT_PIN_ROOT, XdpError
from dataplane.logfmt import event

log = logging.getLogger(__name__)

MODES = ("xdp", "nft", "iptables")
DEFAULT_STATE_DIR = Path("/run/calico-bgp")


class UnknownInterface(FilterError):
    pass


class NoFilterMode(RuntimeError):
    """No enforcement mode works here (no XDP, no nft, no iptables+ipset)."""


class Backend(Protocol):
    mode: str

    def apply(self, fs: FilterSet) -> None: ...
    def remove(self) -> None: ...
    def counters(self) -> list[RuleCounter]: ...
    def programmed(self) -> list[str]: ...


class FilterEngine:
    def __init__(self, mode: str = "auto", netns: str | None = None, pin_root: Path = DEFAULT_PIN_ROOT,
                 state_dir: Path = DEFAULT_STATE_DIR, obj_path: Path | None = None,
                 xdp_attach: str = "native") -> None:
        if mode not in ("auto", *MODES):
            raise ValueError(f"filter mode {mode!r} is not auto, {', '.join(MODES)}")
        self.requested = mode
        self.netns = netns
        self.state_dir = Path(state_dir)
        self._backends: dict[str, Backend] = {
            "xdp": XdpFilter(netns, pin_root, self.state_dir / "xdp-state", obj_path, xdp_attach),
            "nft": NftFilter(netns),
            "iptables": IptFilter(netns),
        }
        self._mode: str | None = self._remembered()
        self._swept = False  # every mode but the one in use has been cleaned once in this process

    # -- mode ------------------------------------------------------------------------------------

    @property
    def _mode_file(self) -> Path:
        return self.state_dir / "filter-mode.json"

    def _remembered(self) -> str | None:
        try:
            mode = json.loads(self._mode_file.read_text()).get("mode")
        except (OSError, ValueError):
            return None
        return mode if mode in MODES else None

    def _remember(self, mode: str | None) -> None:
        if mode is None:
            with contextlib.suppress(FileNotFoundError):
                self._mode_file.unlink()
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._mode_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mode": mode}))
        os.replace(tmp, self._mode_file)

    @property
    def mode(self) -> str | None:
        """The mode enforcing filters now (None before the first apply)."""
        return self._mode

    def _candidates(self) -> list[str]:
        if self.requested != "auto":
            return [self.requested]
        order = list(MODES)
        if self._mode in order:     # a restart keeps what is programmed
            order.remove(self._mode)
            order.insert(0, self._mode)
        if not NftFilter.available():
            order.remove("nft")
        if not IptFilter.available():
            order.remove("iptables")
        return order

    # -- apply -----------------------------------------------------------------------------------

    def check_interfaces(self, fs: FilterSet) -> None:
        if not fs.names:  # nothing to look up: pyroute2 (a tenth of an agent's memory) stays unloaded
            return
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        try:
            for name in fs.names:
                try:
                    ipr.link("get", ifname=name)
                except NetlinkError as exc:
                    if exc.code == errno.ENODEV:
                        raise UnknownInterface(f"interface {name!r} does not exist") from None
                    raise
        finally:
            ipr.close()

    def apply(self, fs: FilterSet) -> str:
        """Program `fs`; returns the mode used. Raises before changing anything on bad input."""
        self.check_interfaces(fs)
        errors: list[str] = []
        failed: list[str] = []
        for mode in self._candidates():
            try:
                self._backends[mode].apply(fs)
            except (XdpError, BpfError, NftError, IptError, OSError) as exc:
                if self.requested != "auto":
                    raise
                errors.append(f"{mode}: {exc}")
                failed.append(mode)
                event(log, "filter_mode_unavailable", logging.WARNING, mode=mode, error=str(exc)[:300])
                continue
            # the new mode enforces now: only then undo the old one and any half-applied attempt; the
            # first time in this process, every other mode (a crash mid-switch may have left one
            # enforcing that the state file does not name)
            leaving = [m for m in self._installed_modes() if m != mode] if not self._swept else [*failed, self._mode]
            for old in dict.fromkeys(leaving):
                if old not in (None, mode):
                    self._cleanup(old)
            self._swept = True
            if self._mode != mode:
                event(log, "filter_mode", mode=mode, previous=self._mode)
            self._mode = mode
            self._remember(mode if fs.interfaces else None)
            if not fs.interfaces:
                self._mode = None
            return mode
        for half in failed:  # what a failed attempt put in place, unless it is what still enforces
            if half != self._mode:
                self._cleanup(half)
        raise NoFilterMode("; ".join(errors) or "no filter mode available")

    @staticmethod
    def _installed_modes() -> list[str]:
        """The modes that could have left state here (no nft binary: no nft table of ours)."""
        return [m for m in MODES if (m != "nft" or NftFilter.available()) and (m != "iptables" or IptFilter.available())]

    def _cleanup(self, mode: str) -> None:
        try:
            self._backends[mode].remove()
        except Exception as exc:  # noqa: BLE001 - cleanup of a mode we are leaving must not mask the switch
            event(log, "filter_cleanup_failed", logging.WARNING, mode=mode, error=str(exc)[:300])

    def remove(self) -> None:
        """Remove every filter of ours in every mode (the agent shutting filtering off)."""
        for mode in MODES:
            self._cleanup(mode)
        self._mode = None
        self._remember(None)

    def counters(self) -> list[RuleCounter]:
        if self._mode is None:
            return []
        return self._backends[self._mode].counters()

    def programmed(self) -> list[str]:
        return [] if self._mode is None else self._backends[self._mode].programmed()
