"""Enforce a FilterSet with the XDP program: encode the compiled entries into its maps, in place.

The update order is what makes a change windowless (no allowed packet dropped, no denied packet
passed that both the old and the new filter agree on):

1. counters of newly assigned slots are zeroed, exception sets that are new are written (under a
   fresh id; an existing set is never modified), failsafe bits are written;
2. LPM entries that are new or changed are written longest prefix first;
3. LPM entries that are gone are deleted shortest prefix first;
4. exception sets no entry references any more are deleted.

Between 2 and 3, for every address, the most specific entry present is either its old decider
(with its old value) or its new one (with its new value) — never a third entry whose verdict
neither filter would give it.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import struct
from pathlib import Path

from dataplane.filters.rules import (
    FAILSAFE_RULE,
    LIMITS,
    EntryAction,
    FilterSet,
    InterfaceFilter,
    PortException,
    RuleCounter,
    RuleId,
    assign_slots,
)
from dataplane.filters.xdp import bpf
from dataplane.filters.xdp.loader import DEFAULT_PIN_ROOT, PinnedFilter, XdpLoader
from dataplane.logfmt import event

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/run/calico-bgp/xdp-state")
FAILSAFE_WORDS = 2048
_VERDICT = struct.Struct("=IIB3x")
_EXC_KEY = struct.Struct("=IBBH")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


def lpm_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    return _U32.pack(net.prefixlen) + net.network_address.packed


def _key_prefixlen(key: bytes) -> int:
    return _U32.unpack_from(key)[0]


def exception_key_map(excs: tuple[PortException, ...], slots: dict[RuleId, int]) -> dict[tuple[int, int, int], int]:
    """(proto, any_port, port) -> slot; the first exception naming a key counts it."""
    out: dict[tuple[int, int, int], int] = {}
    for e in excs:
        if not e.ports:
            out.setdefault((e.protocol, 1, 0), slots[e.rule_id])
        for r in e.ports:
            for port in range(r.first, r.last + 1):
                out.setdefault((e.protocol, 0, port), slots[e.rule_id])
    return out


def failsafe_words(f: InterfaceFilter) -> dict[int, int]:
    words: dict[int, int] = {}
    for fp in f.failsafe:
        idx = (1024 if fp.protocol == 17 else 0) + (fp.port >> 6)
        words[idx] = words.get(idx, 0) | (1 << (fp.port & 63))
    return words


class XdpFilter:
    """One XDP program per interface, pinned; maps updated in place; slot tables kept as JSON."""

    mode = "xdp"

    def __init__(self, netns: str | None = None, pin_root: Path = DEFAULT_PIN_ROOT,
                 state_dir: Path = DEFAULT_STATE_DIR, obj_path: Path | None = None, attach_mode: str = "native") -> None:
        kw = {"obj_path": obj_path} if obj_path else {}
        self.loader = XdpLoader(Path(pin_root), netns=netns, **kw)
        self.state_dir = Path(state_dir)
        self.attach_mode = attach_mode
        self.ncpu = bpf.possible_cpus()

    # -- state ---------------------------------------------------------------------------------

    def _state_path(self, ifname: str) -> Path:
        return self.state_dir / f"{ifname}.json"

    @staticmethod
    def _maps_id(p: PinnedFilter) -> int:
        """The counters map's id: the slot table belongs to these maps (a program upgrade keeps them)."""
        return bpf.map_info(p.maps["cb_counters"]).id

    def _load_slots(self, ifname: str, maps_id: int) -> dict[RuleId, int]:
        try:
            doc = json.loads(self._state_path(ifname).read_text())
        except (OSError, ValueError):
            return {}
        if doc.get("maps_id") != maps_id:   # maps were recreated: the old table means nothing
            return {}
        return {RuleId(r["filter"], r["index"]): r["slot"] for r in doc.get("rules", [])}

    def _load_actions(self, ifname: str) -> dict[RuleId, str]:
        try:
            doc = json.loads(self._state_path(ifname).read_text())
        except (OSError, ValueError):
            return {}
        return {RuleId(r["filter"], r["index"]): r.get("action", "") for r in doc.get("rules", [])}

    def _save_slots(self, f: InterfaceFilter, maps_id: int, slots: dict[RuleId, int]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        actions = {r.rule_id: r.action.value for r in f.rules}
        doc = {"interface": f.interface, "maps_id": maps_id,
               "rules": [{"filter": r.filter, "index": r.index, "slot": s, "action": actions.get(r, "")}
                         for r, s in sorted(slots.items(), key=lambda kv: kv[1])]}
        tmp = self._state_path(f.interface).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self._state_path(f.interface))

    def programmed(self) -> list[str]:
        return self.loader.pinned_interfaces()

    # -- apply ---------------------------------------------------------------------------------

    def apply(self, fs: FilterSet) -> None:
        pinned: list[PinnedFilter] = []
        try:
            for f in fs.interfaces:
                p = self.loader.open_or_load(f.interface)
                pinned.append(p)
                self.program_maps(p, f)
            for p in pinned:
                att = self.loader.attach(p, self.attach_mode)
                event(log, "xdp_filter_applied", interface=p.ifname, prog_id=att.prog_id, mode=att.mode)
        finally:
            for p in pinned:
                p.close()
        for ifname in set(self.programmed()) - set(fs.names):
            self.remove_interface(ifname)

    def remove_interface(self, ifname: str) -> None:
        p = self.loader.open_existing(ifname)
        if p is not None:
            try:
                self.loader.detach(p)
            finally:
                p.close()
        self.loader.unpin(ifname)
        try:
            self._state_path(ifname).unlink()
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        for ifname in self.programmed():
            self.remove_interface(ifname)

    def program_maps(self, p: PinnedFilter, f: InterfaceFilter) -> None:
        """Bring `p`'s maps to `f`, in place, in the windowless order of the module docstring."""
        m = p.maps
        maps_id = self._maps_id(p)
        previous = self._load_slots(f.interface, maps_id)
        slots = assign_slots([r.rule_id for r in f.rules], previous, LIMITS.rules)
        zero = bytes(16 * self.ncpu)
        for rid, slot in slots.items():
            if previous.get(rid) != slot:
                bpf.map_update(m["cb_counters"], _U32.pack(slot), zero)
        if not previous:
            bpf.map_update(m["cb_counters"], _U32.pack(0), zero)
        self._save_slots(f, maps_id, slots)   # before use: a crash leaves a table that covers the maps

        # exception sets: content-addressed; existing ones are re-used, never edited
        current_sets: dict[int, dict[tuple[int, int, int], int]] = {}
        for key in bpf.map_keys(m["cb_exc"], _EXC_KEY.size):
            set_id, proto, any_port, port = _EXC_KEY.unpack(key)
            val = bpf.map_lookup(m["cb_exc"], key, 4)
            if val is not None:
                current_sets.setdefault(set_id, {})[(proto, any_port, port)] = _U32.unpack(val)[0]
        set_ids: dict[tuple[PortException, ...], int] = {}
        used_ids: set[int] = set()
        for e in f.entries:
            excs = e.verdict.exceptions
            if not excs or excs in set_ids:
                continue
            want = exception_key_map(excs, slots)
            sid = next((i for i, keys in current_sets.items() if keys == want and i not in used_ids), None)
            if sid is None:
                sid = next(i for i in range(1, 1 << 31) if i not in current_sets and i not in used_ids)
                for (proto, any_port, port), slot in want.items():
                    bpf.map_update(m["cb_exc"], _EXC_KEY.pack(sid, proto, any_port, port), _U32.pack(slot))
            set_ids[excs] = sid
            used_ids.add(sid)

        words = failsafe_words(f)
        for idx in range(FAILSAFE_WORDS):
            val = bpf.map_lookup(m["cb_failsafe"], _U32.pack(idx), 8)
            cur = _U64.unpack(val)[0] if val else 0
            if cur != words.get(idx, 0):
                bpf.map_update(m["cb_failsafe"], _U32.pack(idx), _U64.pack(words.get(idx, 0)))

        for version, map_name in ((4, "cb_v4"), (6, "cb_v6")):
            fd, ksize = m[map_name], p.map_defs[map_name].key_size
            want: dict[bytes, bytes] = {}
            for e in f.entries_for(version):
                v = e.verdict
                slot = slots[v.rule_id] if v.rule_id is not None and v.action is not EntryAction.PASS else 0
                want[lpm_key(e.prefix)] = _VERDICT.pack(slot, set_ids.get(v.exceptions, 0), int(v.action))
            have = {k: bpf.map_lookup(fd, k, _VERDICT.size) for k in bpf.map_keys(fd, ksize)}
            changed = sorted((k for k in want if have.get(k) != want[k]), key=_key_prefixlen, reverse=True)
            for k in changed:
                bpf.map_update(fd, k, want[k])
            gone = sorted((k for k in have if k not in want), key=_key_prefixlen)
            for k in gone:
                bpf.map_delete(fd, k)
            if changed or gone:
                event(log, "xdp_map_updated", interface=f.interface, family=f"ipv{version}", written=len(changed),
                      deleted=len(gone))

        for sid in set(current_sets) - used_ids:
            for proto, any_port, port in current_sets[sid]:
                bpf.map_delete(m["cb_exc"], _EXC_KEY.pack(sid, proto, any_port, port))

    # -- counters ------------------------------------------------------------------------------

    def counters(self) -> list[RuleCounter]:
        out: list[RuleCounter] = []
        for ifname in self.programmed():
            p = self.loader.open_existing(ifname)
            if p is None:
                continue
            try:
                slots, actions = self._load_slots(ifname, self._maps_id(p)), self._load_actions(ifname)
                fd = p.maps["cb_counters"]
                for rid, slot in [(FAILSAFE_RULE, 0), *slots.items()]:
                    raw = bpf.map_lookup(fd, _U32.pack(slot), 16 * self.ncpu) or bytes(16 * self.ncpu)
                    vals = struct.unpack(f"={2 * self.ncpu}Q", raw)
                    out.append(RuleCounter(ifname, rid, actions.get(rid, "Allow"), sum(vals[0::2]), sum(vals[1::2])))
            finally:
                p.close()
        return out
