"""Values exchanged with etcd: stored key-values, results, transaction compares and operations, watch items."""
from __future__ import annotations

from typing import Any, Literal, Union

import attrs


def _to_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@attrs.frozen
class TLSConfig:
    """PEM file paths: the CA that signed etcd's server certificate, and an optional client cert/key."""
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None


@attrs.frozen
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@attrs.frozen
class RangeResult:
    kvs: list[KeyValue]
    revision: int  # the store revision the snapshot was read at; watch from revision + 1


@attrs.frozen
class TxnResult:
    succeeded: bool
    revision: int
    # per operation of the branch that ran: list[KeyValue] for Get, int deleted for Delete, revision for Put
    responses: list[Any]


CompareTarget = Literal["mod", "create", "version", "value"]
CompareResult = Literal["==", "!=", ">", "<"]


@attrs.frozen
class Compare:
    key: str
    target: CompareTarget = attrs.field(validator=attrs.validators.in_(("mod", "create", "version", "value")))
    result: CompareResult = attrs.field(validator=attrs.validators.in_(("==", "!=", ">", "<")))
    value: int | bytes = attrs.field()
    prefix: bool = False  # the compare holds for every key under `key` (etcd's range_end)

    @value.validator
    def _check(self, _attr: Any, value: int | bytes) -> None:
        if (self.target == "value") != isinstance(value, (bytes, bytearray)):
            raise ValueError(f"Compare {self.key!r}: target {self.target!r} needs "
                             f"{'bytes' if self.target == 'value' else 'an int'}, got {value!r}")

    @classmethod
    def mod(cls, key: str, rev: int) -> Compare:
        return cls(key, "mod", "==", rev)

    @classmethod
    def created(cls, key: str, rev: int) -> Compare:
        """create_revision == rev; rev 0 means the key does not exist."""
        return cls(key, "create", "==", rev)

    @classmethod
    def unchanged_since(cls, prefix: str, rev: int) -> Compare:
        """No key under `prefix` was created or modified after revision `rev` (a key deleted since
        is not seen: pair it with the reads that would notice)."""
        return cls(prefix, "mod", "<", rev + 1, prefix=True)

    @classmethod
    def version(cls, key: str, version: int) -> Compare:
        return cls(key, "version", "==", version)

    @classmethod
    def _value(cls, key: str, value: bytes | str) -> Compare:
        return cls(key, "value", "==", _to_bytes(value))


class _FieldOrConstructor:
    """`Compare.value(key, b)` builds a Compare while `compare.value` still reads the field (slots clash)."""

    def __init__(self, slot: Any, constructor: Any) -> None:
        self.slot, self.constructor = slot, constructor

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        return self.constructor if obj is None else self.slot.__get__(obj, cls)

    def __set__(self, obj: Any, value: Any) -> None:
        self.slot.__set__(obj, value)


Compare.value = _FieldOrConstructor(Compare.__dict__["value"], Compare._value)  # type: ignore[assignment,method-assign]


@attrs.frozen
class Put:
    key: str
    value: bytes = attrs.field(converter=_to_bytes)
    lease: int = 0


@attrs.frozen
class Delete:
    key: str
    prefix: bool = False


@attrs.frozen
class Get:
    key: str
    prefix: bool = False
    keys_only: bool = False  # revisions and version without the value: cheap "what is there now"


Op = Union[Put, Delete, Get]


@attrs.frozen
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KeyValue  # for a delete: the key with mod_revision = the deletion revision and an empty value
    prev: KeyValue | None = None


@attrs.frozen
class WatchBatch:
    events: list[WatchEvent]
    revision: int  # the store revision this batch brings the watcher up to


@attrs.frozen
class Resync:
    """The watch fell behind compaction: `kvs` is the whole prefix as of `revision`; events follow from revision + 1."""
    kvs: list[KeyValue]
    revision: int
