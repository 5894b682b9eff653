"""Typed datastore errors; the CLI maps them to exit codes (calico_bgp.cli.common.register_errors)."""
from __future__ import annotations


class DatastoreError(Exception):
    """Base of every error raised by calico_bgp.datastore."""


class EtcdUnavailable(DatastoreError):
    """No endpoint could be reached; the message names every endpoint tried and why it failed."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        super().__init__("etcd unreachable at " + "; ".join(f"{url}: {why}" for url, why in failures))


class EtcdError(DatastoreError):
    """etcd answered with an error (gRPC status `code`, etcd's own `message`)."""

    def __init__(self, endpoint: str, code: int, message: str) -> None:
        self.endpoint, self.code, self.message = endpoint, code, message
        super().__init__(f"etcd at {endpoint}: {message} (code {code})")


class AuthFailed(DatastoreError):
    """Wrong user name or password, or credentials missing where etcd requires them."""


class LeaseExpired(DatastoreError):
    """A lease lapsed (etcd says it is gone, or it could not be refreshed before its TTL ran out)."""


class Compacted(DatastoreError):
    """The requested revision is older than etcd's compaction point (the watch turns this into a Resync)."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"revision compacted (compact revision {compact_revision})")
