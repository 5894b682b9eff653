"""A change to the kernel's routes: the netlink operations it is made of, and what it did.

An operation is (flags, key): codec.NEW_FLAGS adds exclusively (never over a route that is not
ours), codec.REPLACE_FLAGS replaces a route of ours, 0 deletes one. Everything here is pure: the
programmer decides with these and does the I/O itself.
"""
from __future__ import annotations

from typing import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import attrs

from dataplane import rtnl_codec as codec
from dataplane.routes.desired_index import DesiredIndex
from dataplane.routes.failures import RouteFailure
from dataplane.routes.route import Forwarding, Route, RouteKey

Op = tuple[int, RouteKey]
DELETE = 0


@attrs.frozen(slots=True)
class ChangeCounts:
    """Netlink changes sent since the programmer was made (errors: how many the kernel refused)."""

    adds: int = 0
    replaces: int = 0
    deletes: int = 0
    errors: int = 0

    @property
    def changes(self) -> int:
        return self.adds + self.replaces + self.deletes

    def __sub__(self, other: "ChangeCounts") -> "ChangeCounts":
        return ChangeCounts(self.adds - other.adds, self.replaces - other.replaces, self.deletes - other.deletes, self.errors - other.errors)

    def plus(self, adds: int, replaces: int, deletes: int, errors: int) -> "ChangeCounts":
        return ChangeCounts(self.adds + adds, self.replaces + replaces, self.deletes + deletes, self.errors + errors)


@attrs.frozen(slots=True)
class ReconcileResult:
    adds: int
    replaces: int
    deletes: int
    unchanged: int
    kept: int  # stale routes kept because the grace period is on
    failures: tuple[RouteFailure, ...]
    seconds: float

    @property
    def changes(self) -> int:
        return self.adds + self.replaces + self.deletes


class PlannedOps(Sequence[Op]):
    """A reconcile's operations in the order they are sent: the adds, the replaces, the deletes.

    Held as the three lists of keys, not as an (flags, key) pair per operation: 100k pairs held while
    the batch is sent would be 100k objects for the garbage collector to walk, and the full
    collections they set off cost as much as the kernel's own work. `ops[i]` makes the pair.
    """

    __slots__ = ("adds", "replaces", "deletes", "_first_replace", "_first_delete")

    def __init__(self, adds: Sequence[RouteKey], replaces: Sequence[RouteKey], deletes: Sequence[RouteKey]) -> None:
        self.adds, self.replaces, self.deletes = adds, replaces, deletes
        self._first_replace = len(adds)
        self._first_delete = len(adds) + len(replaces)

    def __len__(self) -> int:
        return self._first_delete + len(self.deletes)

    def __getitem__(self, i: int) -> Op:  # type: ignore[override]  # by index only
        if not 0 <= i < len(self):
            raise IndexError(i)
        if i >= self._first_delete:
            return (DELETE, self.deletes[i - self._first_delete])
        if i >= self._first_replace:
            return (codec.REPLACE_FLAGS, self.replaces[i - self._first_replace])
        return (codec.NEW_FLAGS, self.adds[i])

    def __iter__(self) -> Iterator[Op]:
        for flags, keys in ((codec.NEW_FLAGS, self.adds), (codec.REPLACE_FLAGS, self.replaces), (DELETE, self.deletes)):
            for key in keys:
                yield flags, key


def plan_ops(adds: Sequence[RouteKey], replaces: Sequence[RouteKey], deletes: Sequence[RouteKey]) -> PlannedOps:
    """A reconcile's operations: adds and replaces first, so a metric change is make-before-break."""
    return PlannedOps(adds, replaces, deletes)


def pending_ops(pending: Iterable[RouteKey], desired: DesiredIndex, installed: Collection[RouteKey],
                keep: Collection[RouteKey]) -> tuple[PlannedOps, dict[RouteKey, Route], dict[RouteKey, Forwarding]]:
    """The operations that send the changed keys `pending`, and the routes they desire: a desired
    key is replaced when a route of ours is installed on it, else added; a key no longer desired
    is deleted if ours is installed and not kept for the restart grace. Sent as a reconcile's are:
    adds and replaces before deletes."""
    routes: dict[RouteKey, Route] = {}
    forwarding: dict[RouteKey, Forwarding] = {}
    adds: list[RouteKey] = []
    replaces: list[RouteKey] = []
    deletes: list[RouteKey] = []
    desired_fwd, desired_routes = desired.forwarding.get, desired.routes
    add, replace, delete = adds.append, replaces.append, deletes.append
    for key in pending:
        fwd = desired_fwd(key)
        if fwd is None:
            if key in installed and key not in keep:
                delete(key)
            continue
        routes[key] = desired_routes[key]
        forwarding[key] = fwd
        if key in installed:
            replace(key)
        else:
            add(key)
    return PlannedOps(adds, replaces, deletes), routes, forwarding


def op_counts(ops: Sequence[Op]) -> tuple[int, int, int]:
    """(adds, replaces, deletes) among `ops`."""
    if isinstance(ops, PlannedOps):
        return len(ops.adds), len(ops.replaces), len(ops.deletes)
    n_del = sum(1 for flags, _ in ops if not flags)
    n_add = sum(1 for flags, _ in ops if flags == codec.NEW_FLAGS)
    return n_add, len(ops) - n_del - n_add, n_del


def installed_after_program(installed: set[RouteKey], ops: Sequence[Op], refused: Collection[RouteKey]) -> None:
    """Update `installed` (the keys holding a route of ours) for `ops` sent, `refused` among them."""
    if isinstance(ops, PlannedOps):
        installed.difference_update(ops.deletes)
        for keys in (ops.adds, ops.replaces):
            installed.update((k for k in keys if k not in refused) if refused else keys)
        return
    installed.difference_update(key for flags, key in ops if not flags)
    if any(flags for flags, _ in ops):
        installed.update(key for flags, key in ops if flags and key not in refused)


def installed_after_reconcile(desired: Iterable[RouteKey], failures: Iterable[RouteFailure],
                              held: Mapping[RouteKey, RouteFailure], kept: Iterable[RouteKey]) -> set[RouteKey]:
    """The keys holding a route of ours after a full reconcile: every desired key but those whose
    add failed or was held back (a failed replace leaves our old route there, still ours to
    replace or delete), and the stale routes kept for the grace."""
    installed = set(desired)
    installed.difference_update(f.route.key for f in failures if f.route is not None and f.op == "add")
    installed.difference_update(k for k in held if held[k].op == "add")
    installed.update(kept)
    return installed


def encoder(ops: Sequence[Op], table: int, protocol: int, forwarding: Mapping[RouteKey, Forwarding],
            ifindex: Mapping[str, int]) -> Callable[[int, int], bytes]:
    """(index into `ops`, sequence number) -> the netlink request of that operation."""
    ifindex_of = ifindex.__getitem__
    encode_new, encode_del = codec.encode_newroute, codec.encode_delroute
    if isinstance(ops, PlannedOps):  # straight to the key: no pair made per operation
        adds, replaces, deletes = ops.adds, ops.replaces, ops.deletes
        first_replace, first_delete = len(adds), len(adds) + len(replaces)
        new_flags, replace_flags = codec.NEW_FLAGS, codec.REPLACE_FLAGS
        delete_of = codec.delroute_encoder(table, protocol) if deletes else None

        def encode_planned(i: int, seq: int) -> bytes:
            if i >= first_delete:
                return delete_of(seq, deletes[i - first_delete])  # type: ignore[misc]
            if i >= first_replace:
                key, flags = replaces[i - first_replace], replace_flags
            else:
                key, flags = adds[i], new_flags
            fwd = forwarding[key]
            return encode_new(seq, flags, table, protocol, key, fwd.rtype, fwd.hops, ifindex_of)

        return encode_planned

    def encode(i: int, seq: int) -> bytes:
        flags, key = ops[i]
        if not flags:
            return encode_del(seq, table, protocol, key)
        fwd = forwarding[key]
        return encode_new(seq, flags, table, protocol, key, fwd.rtype, fwd.hops, ifindex_of)

    return encode
