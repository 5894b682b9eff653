"""YAML documents <-> resources: what `apply -f` reads and `get -o yaml` prints (pure).

A document is apiVersion (calico-bgp/v1, or projectcalico.org/v3 for Calico's kinds), kind,
metadata and spec, or a List of them. Every document is validated before anything is returned,
and each error names its document by number (from 1), kind and name. A document is measured
before it is read: nested deeper than MAX_DEPTH or, with its YAML aliases expanded, holding more
than MAX_VALUES values (a "billion laughs"), it is refused at once.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import yaml

from calico_bgp.resources import model
from calico_bgp.resources.fields import InvalidResource, UnknownKind
from calico_bgp.resources.kinds import CALICO_KINDS, KINDS, Resource

API_VERSION = "calico-bgp/v1"
CALICO_API_VERSION = "projectcalico.org/v3"
API_VERSIONS = (API_VERSION, CALICO_API_VERSION)
# Top-level document keys written by calicoctl/kubectl that carry nothing we store.
_IGNORED_TOP = frozenset({"status"})
# A resource is a few levels deep and a file of them thousands of values; far beyond that is a
# mistake or a "billion laughs" (aliases of aliases of lists), refused before it is read further.
MAX_DEPTH = 64
MAX_VALUES = 1_000_000


class _TooDeep(Exception):
    pass


def _oversized(doc: Any) -> str | None:
    """Why `doc` is refused unread: nested deeper than MAX_DEPTH (or holding itself, which YAML
    aliases allow), or more than MAX_VALUES values with its aliases expanded. Each shared value is
    measured once, so this costs what the document's text does, not what its expansion would."""
    sizes: dict[int, int] = {}

    def size(value: Any, depth: int) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise _TooDeep
        if id(value) not in sizes:
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            sizes[id(value)] = 1 + sum(size(c, depth + 1) for c in children)
        return sizes[id(value)]

    try:
        total = size(doc, 0)
    except _TooDeep:
        return f"nested deeper than {MAX_DEPTH} levels, or holds itself through a YAML alias"
    if total > MAX_VALUES:
        return f"{total:,} values once its YAML aliases are expanded (at most {MAX_VALUES:,})"
    return None


def _label(where: str, doc: Mapping[str, Any]) -> str:
    """'document 2 (IPPool 'rack-a')': where, and the kind and name when the document says them."""
    kind, meta = doc.get("kind"), doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(kind, str) or not kind:
        return where
    return f"{where} ({kind} {name!r})" if name else f"{where} ({kind})"


def _check_api_version(label: str, doc: Mapping[str, Any]) -> None:
    api, kind = doc.get("apiVersion"), doc.get("kind")
    use = f"{API_VERSION} or {CALICO_API_VERSION}" if kind in CALICO_KINDS or kind == "List" else API_VERSION
    if api is None or api == "":
        raise InvalidResource(f"{label}: apiVersion: missing (use {use})")
    if api not in API_VERSIONS:
        raise InvalidResource(f"{label}: apiVersion {api!r} is not supported (use {use})")


def _document_resource(index: int, doc: Any) -> Resource | list[Resource]:
    where = f"document {index}"
    if not isinstance(doc, Mapping):
        raise InvalidResource(f"{where}: expected a mapping with apiVersion, kind, metadata and spec")
    kind = doc.get("kind")
    _check_api_version(_label(where, doc), doc)
    if kind is None or kind == "":
        raise InvalidResource(f"{where}: kind: missing (one of {', '.join(KINDS)}, or List)")
    if not isinstance(kind, str):
        raise UnknownKind(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if kind == "List" or (kind.endswith("List") and kind[:-4] in KINDS):
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise InvalidResource(f"{where}: items: expected a list")
        return [_item(f"{where} item {i}", item) for i, item in enumerate(items)]
    return _item(where, doc)


def _item(where: str, doc: Any) -> Resource:
    if not isinstance(doc, Mapping):
        raise InvalidResource(f"{where}: expected a mapping")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    label = _label(where, doc)
    _check_api_version(label, doc)
    if kind is None or kind == "":
        raise InvalidResource(f"{where}: kind: missing (one of {', '.join(KINDS)})")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownKind(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if api == CALICO_API_VERSION and kind not in CALICO_KINDS:
        raise UnknownKind(f"{where}: {kind} is not a {CALICO_API_VERSION} kind; use apiVersion {API_VERSION}")
    extra = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec"} - _IGNORED_TOP)
    if extra:
        raise InvalidResource(f"{label}: {', '.join(extra)}: unknown top-level field")
    body = {k: doc[k] for k in ("metadata", "spec") if k in doc}
    return model.from_dict(cls, body, where=label)


def load_documents(text: str) -> list[Resource]:
    """Every resource in a multi-document YAML text, all validated; InvalidResource names each bad document.

    Documents are numbered from 1. Nothing is returned unless every document is valid."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidResource(f"YAML{where}: {problem}") from None
    except RecursionError:  # the parser recurses once per level
        raise InvalidResource(f"YAML: nested deeper than the parser goes (resources need a few levels; "
                              f"at most {MAX_DEPTH} are taken)") from None
    if not docs:
        raise InvalidResource("no documents found")
    out: list[Resource] = []
    errors: list[str] = []
    unknown_kind = False
    for i, doc in enumerate(docs, 1):
        if (why := _oversized(doc)) is not None:
            errors.append(f"document {i}: {why}")
            continue
        try:
            got = _document_resource(i, doc)
        except InvalidResource as exc:
            errors.append(str(exc))
            unknown_kind = unknown_kind or isinstance(exc, UnknownKind)
            continue
        out.extend(got if isinstance(got, list) else [got])
    seen: set[tuple[str, str]] = set()
    for r in out:
        ident = (r.kind, r.metadata.name)
        if ident in seen:
            errors.append(f"{model.describe(r)} appears more than once")
        seen.add(ident)
    if errors:
        raise (UnknownKind if unknown_kind else InvalidResource)("; ".join(errors))
    return out


def to_document(resource: Resource) -> dict[str, Any]:
    """The resource as a document `apply` takes back: apiVersion, kind, metadata, spec."""
    body = model.to_dict(resource)
    return {"apiVersion": API_VERSION, "kind": resource.kind, **body}


def dump_documents(resources: Iterable[Resource]) -> str:
    return yaml.safe_dump_all([to_document(r) for r in resources], sort_keys=False, default_flow_style=False)
