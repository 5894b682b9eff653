"""CNI errors: the spec's well-known codes and the one exception a plugin raises to report one.

Follows the CNI spec 1.1.0 ("Error" and "Well-known error codes"; containernetworking/cni
SPEC.md and pkg/types/types.go): an error is printed on stdout as
`{"cniVersion", "code", "msg", "details"}` and the plugin exits non-zero. Codes 0-99 are the
spec's; 100 and up are this plugin's own.
"""
from __future__ import annotations

from typing import Any

INCOMPATIBLE_VERSION = 1   # the config's cniVersion is not one this plugin speaks
UNSUPPORTED_FIELD = 2      # a field this plugin cannot honour; the message names key and value
UNKNOWN_CONTAINER = 3      # the container is unknown or does not exist
INVALID_ENV = 4            # a CNI_* variable is missing or malformed
IO_FAILURE = 5             # reading stdin, a file, or running a delegate failed
DECODE_FAILURE = 6         # stdin (or a delegate's output) is not the JSON it must be
INVALID_CONFIG = 7         # the network config is well-formed JSON but wrong
TRY_AGAIN_LATER = 11       # transient: the datastore is unreachable, contention
NOT_AVAILABLE = 50         # STATUS: the plugin cannot service ADD now
LIMITED_CONNECTIVITY = 51  # STATUS: and existing containers may have limited connectivity
POOL_EXHAUSTED = 100       # no address left in the pools this network may use
ALLOCATION_MISMATCH = 101  # CHECK: what IPAM holds for the container differs from prevResult
INTERNAL = 999             # a bug: libcni's ErrInternal

CODE_NAMES = {INCOMPATIBLE_VERSION: "incompatible CNI version", UNSUPPORTED_FIELD: "unsupported field",
              UNKNOWN_CONTAINER: "unknown container", INVALID_ENV: "invalid environment variables",
              IO_FAILURE: "I/O failure", DECODE_FAILURE: "failed to decode content",
              INVALID_CONFIG: "invalid network config", TRY_AGAIN_LATER: "try again later",
              NOT_AVAILABLE: "plugin not available", LIMITED_CONNECTIVITY: "plugin not available, limited connectivity",
              POOL_EXHAUSTED: "address pool exhausted", ALLOCATION_MISMATCH: "allocation differs from prevResult",
              INTERNAL: "internal error"}


class CNIError(Exception):
    """An error the plugin reports to the runtime: a code, a message, optional details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = int(code), msg, details

    def __str__(self) -> str:
        return f"{self.msg} ({self.details})" if self.details else self.msg

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_json(cls, data: Any) -> "CNIError":
        """An error another plugin printed (a delegate's stdout); a malformed one is still an error."""
        if not isinstance(data, dict) or not isinstance(data.get("code"), int):
            return cls(INTERNAL, "plugin failed with an error that is not the spec's JSON", repr(data)[:300])
        return cls(data["code"], str(data.get("msg", "")), str(data.get("details", "") or ""))
