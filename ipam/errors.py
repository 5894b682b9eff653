"""IPAM errors are types; the CLI maps them to exit codes at its boundary."""
from __future__ import annotations


class IPAMError(Exception):
    """Base of every IPAM error."""


class PoolExhausted(IPAMError):
    """No free address (and no block left to claim or borrow) in the eligible pools."""


class NoEligiblePool(IPAMError):
    """No enabled pool of the requested IP version is eligible for the node."""


class InvalidAddress(IPAMError):
    """An address that is malformed or lies in no known block/pool."""


class NotAllocated(IPAMError):
    """An address that was asked for by IP or handle is not allocated."""


class BlockConflict(IPAMError):
    """A block changed underneath a decision (lost CAS, stale sequence number, handle mismatch)."""


class StaleRelease(BlockConflict):
    """A release named a sequence number that no longer matches: the address was re-used."""

    def __init__(self, ip: str, requested: int, current: int | None) -> None:
        self.ip, self.requested, self.current = ip, requested, current
        super().__init__(f"release of {ip} refused: sequence number {requested} is stale "
                         f"(current {current if current is not None else 'unallocated'})")


class CASRetriesExhausted(BlockConflict):
    """A compare-and-swap kept losing after its bounded retries."""

    def __init__(self, key: str, attempts: int) -> None:
        self.key, self.attempts = key, attempts
        super().__init__(f"{key}: compare-and-swap lost {attempts} times in a row; too much contention, try again")


class CorruptBlock(IPAMError):
    """A stored block (or handle/affinity) does not decode; names the key so an operator can fix it."""

    def __init__(self, key: str, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(f"{key}: corrupt value: {reason}")
