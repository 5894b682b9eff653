"""YAML documents <-> resources: what `apply -f` reads and `get -o yaml` prints (pure).

A document is apiVersion (calico-bgp/v1, or projectcalico.org/v3 for Calico's kinds), kind,
metadata and spec, a List of them (kind List, or a kind's own list such as BGPPeerList), or a
YAML list of them (as calicoctl's createResourcesFromBytes takes). The text is read as calicoctl
reads it (yamlread.py), and bounded there before anything is built (MAX_VALUES, MAX_LIST_ITEMS: a
BGPFilter of 69,000 rules is refused at its 1,001st, not built and then failed on etcd's request
limit; MAX_DEPTH). Every document is validated before anything
is returned, and each error names its document by number (from 1), kind and name.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from calico_bgp.resources import model
from calico_bgp.resources.fields import InvalidField, InvalidResource, UnknownKind
from calico_bgp.resources.kinds import CALICO_KINDS, KINDS, Resource
from calico_bgp.resources.yamlread import (
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    MAX_VALUES,
    YAMLRefused,
    dump_yaml,
    read_documents,
    scalar_text,
    show,
)

__all__ = ["MAX_DEPTH", "MAX_VALUES", "MAX_LIST_ITEMS", "load_documents", "dump_documents", "to_document"]

API_VERSION = "calico-bgp/v1"
CALICO_API_VERSION = "projectcalico.org/v3"
API_VERSIONS = (API_VERSION, CALICO_API_VERSION)
# Top-level document keys written by calicoctl/kubectl that carry nothing we store.
_IGNORED_TOP = frozenset({"status"})
def _label(where: str, doc: Mapping[str, Any]) -> str:
    """'document 2 (IPPool 'rack-a')': where, and the kind and name when the document says them."""
    kind, meta = doc.get("kind"), doc.get("metadata")
    name = scalar_text(meta.get("name")) if isinstance(meta, Mapping) else None  # yaml.v2's `n` is "false"
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
    if kind == "List" or (kind.endswith("List") and kind[:-4] in KINDS and "spec" not in doc):
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
    extra = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec"} - _IGNORED_TOP, key=str)
    if extra:
        raise InvalidResource(f"{label}: {', '.join(show(e) for e in extra)}: unknown top-level field")
    body = {k: doc[k] for k in ("metadata", "spec") if k in doc}
    if (check := getattr(cls, "check_given", None)) is not None:
        meta = body.get("metadata")
        try:
            check(meta.get("name") if isinstance(meta, Mapping) else None, body.get("spec"))
        except InvalidField as exc:
            raise InvalidResource(f"{label}: {exc.message()}") from None
    return model.from_dict(cls, body, where=label)


def load_documents(text: str) -> list[Resource]:
    """Every resource in a multi-document YAML text, all validated; InvalidResource names each bad document.

    Documents are numbered from 1. Nothing is returned unless every document is valid."""
    try:
        docs = read_documents(text)
    except YAMLRefused as exc:
        raise InvalidResource(str(exc)) from None
    if not docs:
        raise InvalidResource("no documents found")
    out: list[Resource] = []
    errors: list[str] = []
    unknown_kind = False
    for i, doc in enumerate(docs, 1):
        try:
            if isinstance(doc, list):  # a YAML list of resources
                got: Any = [_item(f"document {i} item {j}", item) for j, item in enumerate(doc)]
            else:
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
    """The resource as a document `apply` takes back: apiVersion (projectcalico.org/v3 for Calico's
    kinds, as calicoctl prints them), kind, metadata, spec."""
    body = model.to_dict(resource)
    if resource.kind == "BGPConfiguration":  # printed at their default, as calico/node writes them
        s = resource.spec
        shown: dict[str, Any] = {"logSeverityScreen": s.log_severity_screen}
        if resource.metadata.name == "default":  # (a node's may not set the other two)
            shown |= {"nodeToNodeMeshEnabled": s.node_to_node_mesh_enabled, "asNumber": s.as_number}
        body["spec"] = {**shown, **body["spec"]}
    api = CALICO_API_VERSION if resource.kind in CALICO_KINDS else API_VERSION
    return {"apiVersion": api, "kind": resource.kind, **body}


def dump_documents(resources: Iterable[Resource]) -> str:
    return dump_yaml([to_document(r) for r in resources], documents=True)
