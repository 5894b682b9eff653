"""What every resource shares: `metadata` (name, labels) beside its `spec`, and the conversion of any
resource to and from its {metadata, spec} dict and the JSON stored in etcd.

Resources are spelled as Calico's projectcalico.org/v3 API (camelCase on the wire through the one
codec, snake_case here). Values are frozen attrs classes; every field normalises and validates
itself where it is declared, so a resource that exists is valid, whether it came from YAML, from
etcd or from Python. Errors name the field path and value; a required field left out (or null,
or empty) reads `spec.cidr: missing`.

Fields Calico has and calico-bgp does not implement are listed per class (`calico_only`) so
input using them is reported as "not supported", never silently dropped. The kinds themselves are
one module each (ippool.py, node.py, bgpconfig.py, bgppeer.py, bgpfilter.py, policyfilter.py, bfdconfig.py),
named by kinds.py.
"""
from __future__ import annotations

import functools
import json
import typing
from typing import Any, ClassVar, Mapping, TypeVar

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError, IterableValidationNote

from calico_bgp.resources import codec
from calico_bgp.resources.durations import Milliseconds, format_ms, format_seconds
from calico_bgp.resources.fields import (
    ASNumber,
    Integer,
    InvalidField,
    InvalidResource,
    Port,
    Seconds,
    annotation_map,
    checked,
    join_path,
    label_map,
    name,
)
from calico_bgp.resources.selector import Selector

T = TypeVar("T")


@attrs.frozen
class Metadata:
    name: str = attrs.field(converter=checked(name))
    labels: dict[str, str] = attrs.field(factory=dict, converter=checked(label_map), hash=False)
    annotations: dict[str, str] = attrs.field(factory=dict, converter=checked(annotation_map), hash=False)

    # Written by Kubernetes/calicoctl, meaningless here; accepted on input and not stored.
    ignored: ClassVar[frozenset[str]] = frozenset(
        {"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"})


# ------------------------------------------------------------------------------------------------
# The codec: resources <-> dicts/JSON through calico_bgp.resources.codec, with errors that name paths

def _passthrough(value: Any, _type: Any) -> Any:
    return value  # the attrs converter on the field parses and names the field on error


for _t in (Selector, ASNumber, Seconds, Port, Integer, Milliseconds):
    codec.converter.register_structure_hook(_t, _passthrough)
codec.converter.register_unstructure_hook(Selector, str)
codec.converter.register_unstructure_hook(Milliseconds, format_ms)  # stored and shown as "300ms", "1m"
codec.converter.register_unstructure_hook(Port, lambda v: v)
# as duration text: Calico's durations are metav1.Duration, which takes no bare number back
codec.converter.register_unstructure_hook(Seconds, format_seconds)


def _messages(exc: BaseException, path: str, cls: Any = None) -> list[str]:
    if isinstance(exc, ForbiddenExtraKeysError):
        only = getattr(exc.cl, "calico_only", frozenset())
        ignored = getattr(exc.cl, "ignored", frozenset())
        return [f"{join_path(path, f)}: " + ("field not supported by calico-bgp" if f in only else "unknown field")
                for f in sorted(exc.extra_fields) if f not in ignored]
    if isinstance(exc, cattrs.BaseValidationError):
        with_notes, without = exc.group_exceptions()
        out: list[str] = []
        for inner, note in with_notes:
            if isinstance(note, IterableValidationNote):
                out += _messages(inner, f"{path}[{note.index}]", note.type)
            else:
                out += _messages(inner, join_path(path, codec.json_name(note.name)), note.type)
        for inner in without:
            out += _messages(inner, path, getattr(exc, "cl", None))
        return out
    if isinstance(exc, InvalidField):
        return [exc.message(path)]
    if isinstance(exc, KeyError):
        return [f"{path}: missing"]
    if isinstance(cls, type) and attrs.has(cls):
        return [f"{path or 'value'}: expected a mapping"]
    expected = getattr(cls, "__name__", None) or str(cls)
    if str(exc).startswith("expected"):
        return [f"{path or 'value'}: {exc}"]
    return [f"{path or 'value'}: expected {expected} ({exc})"]


def _strip_ignored_metadata(data: Any) -> Any:
    if isinstance(data, Mapping) and isinstance(data.get("metadata"), Mapping):
        meta = {k: v for k, v in data["metadata"].items() if k not in Metadata.ignored}
        data = {**data, "metadata": meta}
    return data


@functools.cache
def _shape(cls: type) -> tuple[tuple[str, type | None], ...]:
    """Each field's JSON name, with the attrs class its value holds (X, X | None, tuple[X, ...]) or None."""
    out = []
    for a in attrs.fields(attrs.resolve_types(cls)):
        inner = [t for t in (a.type, *typing.get_args(a.type)) if isinstance(t, type) and attrs.has(t)]
        out.append((codec.json_name(a.name), inner[0] if inner else None))
    return tuple(out)


def _without_nulls(cls: type, data: Any) -> Any:
    """`data` with every field given as null left out, at every depth: null is a field not given, as
    in Kubernetes and calicoctl, so it takes its default or, required, reads "missing" (cattrs
    would turn it into the text 'None' before the field's parser saw it)."""
    if isinstance(data, list):
        return [_without_nulls(cls, item) for item in data]
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    for key, inner in _shape(cls):
        if key not in out:
            continue
        if out[key] is None:
            del out[key]
        elif inner is not None:
            out[key] = _without_nulls(inner, out[key])
    return out


def from_dict(cls: type[T], data: Any, *, where: str) -> T:
    """A resource from its {metadata, spec} dict; InvalidResource('<where>: <path>: <problem>; ...').
    A required field left out, null or empty reads `<path>: missing`."""
    if not isinstance(data, Mapping):
        raise InvalidResource(f"{where}: expected a mapping with metadata and spec")
    data = _strip_ignored_metadata(data)
    data = _without_nulls(cls, data)
    try:
        return codec.converter.structure(data, cls)
    except (cattrs.BaseValidationError, InvalidField, ValueError, TypeError, KeyError) as exc:
        raise InvalidResource(f"{where}: {'; '.join(_messages(exc, '', cls)) or exc}") from None


def to_dict(resource: Any) -> dict[str, Any]:
    """{metadata, spec} with JSON types only (lists, not tuples); defaults omitted, but never the name."""
    body = json.loads(codec.encode(resource))
    return {"metadata": body.get("metadata", {"name": resource.metadata.name}), "spec": body.get("spec", {})}


def encode(resource: Any) -> bytes:
    return codec.encode(resource)


def decode(cls: type[T], raw: bytes | str, *, where: str) -> T:
    """A stored value back into a resource; errors name `where` (the etcd key)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidResource(f"{where}: not valid JSON ({exc})") from None
    return from_dict(cls, data, where=where)


def describe(resource: Any) -> str:
    return f"{resource.kind} {resource.metadata.name!r}"
