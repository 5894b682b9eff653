"""`apply -f FILE`, `get KIND [NAME]`, `delete KIND NAME`: resources in the style of calicoctl."""
from __future__ import annotations

import sys
from typing import Any, Callable

import click

from calico_bgp.cli.common import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_USAGE,
    Globals,
    echo_json,
    fail,
    pass_globals,
    read_utf8,
    register_errors,
    run,
    table,
)
from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.documents import API_VERSION, load_documents, to_document
from calico_bgp.resources.durations import format_ms
from calico_bgp.resources.fields import InvalidField, InvalidResource, UnknownKind
from calico_bgp.resources.kinds import resolve_kind
from calico_bgp.resources.pending import warning as pending_warning
from calico_bgp.resources.selector import SelectorError
from calico_bgp.resources.yamlread import dump_yaml
from calico_bgp.resources.store import ConflictError, CorruptValue, Listing, NotFound, ResourceStore

register_errors({
    InvalidResource: EXIT_USAGE,     # includes UnknownKind and ResourceInUse
    InvalidField: EXIT_USAGE,
    SelectorError: EXIT_USAGE,
    ConflictError: EXIT_CONFLICT,
    NotFound: EXIT_ERROR,
    CorruptValue: EXIT_ERROR,
})

KIND_HELP = ("ippool(s), node(s), bgppeer(s), bgpconfig(uration)(s), bgpfilter(s), policyfilter(s), "
             "bfdconfig(uration)(s)")


def _kind(text: str) -> type:
    try:
        return resolve_kind(text)
    except UnknownKind as exc:
        fail(str(exc), EXIT_USAGE)


def _named(cls: type, name: str) -> str:
    """A NAME argument as the store will key it: a BGPConfiguration is 'default' or 'node.<name>'."""
    if cls is BGPConfiguration and name != "default" and not name.startswith("node."):
        fail(f"BGPConfiguration {name!r}: a BGPConfiguration is 'default' or 'node.<node name>'", EXIT_USAGE)
    return name


# --- table columns per kind: (header, value); the second list is added by -o wide -----------------

def _sel(s: Any) -> str:
    return "" if s is None else str(s)


def _asn(n: Any) -> str:
    return "" if n is None else str(n)


Column = tuple[str, Callable[[Any], Any]]
COLUMNS: dict[str, tuple[list[Column], list[Column]]] = {
    "IPPool": ([("NAME", lambda r: r.name), ("CIDR", lambda r: r.spec.cidr),
                ("SELECTOR", lambda r: _sel(r.spec.node_selector))],
               [("BLOCKSIZE", lambda r: r.spec.block_size), ("DISABLED", lambda r: str(r.spec.disabled).lower()),
                ("DISABLEBGPEXPORT", lambda r: str(r.spec.disable_bgp_export).lower())]),
    "Node": ([("NAME", lambda r: r.name), ("ASN", lambda r: _asn(r.spec.bgp and r.spec.bgp.as_number)),
              ("IPV4", lambda r: r.spec.bgp.ipv4_address if r.spec.bgp else ""),
              ("IPV6", lambda r: r.spec.bgp.ipv6_address if r.spec.bgp else "")],
             [("RRCLUSTERID", lambda r: r.spec.bgp.route_reflector_cluster_id if r.spec.bgp else ""),
              ("LABELS", lambda r: ",".join(f"{k}={v}" for k, v in sorted(r.metadata.labels.items())))]),
    "BGPPeer": ([("NAME", lambda r: r.name), ("PEERIP", lambda r: r.spec.peer_ip),
                 ("NODE", lambda r: r.spec.node or _sel(r.spec.node_selector) or "(global)"),
                 ("ASN", lambda r: _asn(r.spec.as_number))],
                [("PEERSELECTOR", lambda r: _sel(r.spec.peer_selector)),
                 ("FILTERS", lambda r: ",".join(r.spec.filters)),
                 ("MAXPREFIXES", lambda r: f"{r.spec.max_prefixes} ({r.spec.max_prefix_action})"
                  if r.spec.max_prefixes else ""),
                 ("PASSWORD", lambda r: "set" if r.spec.password else "")]),
    "BGPConfiguration": ([("NAME", lambda r: r.name), ("LOGSEVERITY", lambda r: r.spec.log_severity_screen),
                          ("MESHENABLED", lambda r: str(r.spec.node_to_node_mesh_enabled).lower()),
                          ("ASNUMBER", lambda r: r.spec.as_number)],
                         [("LISTENPORT", lambda r: r.spec.listen_port), ("HOLD", lambda r: f"{r.spec.hold_time}s"),
                          ("KEEPALIVE", lambda r: f"{r.spec.hold_time // 3}s"),
                          ("DAMPING", lambda r: "on" if r.spec.damping.enabled else "off")]),
    "BGPFilter": ([("NAME", lambda r: r.name),
                   ("IMPORTV4", lambda r: len(r.spec.import_v4)), ("EXPORTV4", lambda r: len(r.spec.export_v4)),
                   ("IMPORTV6", lambda r: len(r.spec.import_v6)), ("EXPORTV6", lambda r: len(r.spec.export_v6))],
                  []),
    "PolicyFilter": ([("NAME", lambda r: r.name), ("SELECTOR", lambda r: _sel(r.spec.node_selector)),
                      ("RULES", lambda r: len(r.spec.rules))],
                     [("INTERFACES", lambda r: ",".join(r.spec.interfaces) or "(uplinks)"),
                      ("FAILSAFE", lambda r: ",".join(str(p) for p in r.spec.failsafe_inbound_ports))]),
    "BFDConfiguration": ([("NAME", lambda r: r.name), ("SELECTOR", lambda r: _sel(r.spec.node_selector) or "all()"),
                          ("INTERFACES", lambda r: ",".join(e.match_pattern for e in r.spec.interfaces) or "(none)")],
                         [("TIMERS", lambda r: " ".join(
                             f"{e.match_pattern}:rx{format_ms(e.min_rx_ms)}/tx{format_ms(e.min_tx_ms)}/"
                             f"idle{format_ms(e.idle_tx_ms)}/x{e.detect_multiplier}" for e in r.spec.interfaces))]),
}


def render_table(kind: str, items: list[Any], wide: bool) -> str:
    base, extra = COLUMNS[kind]
    cols = base + (extra if wide else [])
    return table([[str(fn(r)) for _, fn in cols] for r in items], [h for h, _ in cols])


def _store(g: Globals, client: Any) -> ResourceStore:
    return ResourceStore(client, g.keys)


def register(main: click.Group) -> None:
    main.add_command(apply_cmd)
    main.add_command(get_cmd)
    main.add_command(delete_cmd)


@click.command("apply")
@click.option("-f", "--filename", "source", required=True, type=click.File("r"),
              help="YAML file with one or more documents (apiVersion projectcalico.org/v3 or calico-bgp/v1); - for stdin.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_globals
def apply_cmd(g: Globals, source: Any, output: str) -> None:
    """Create or update every resource in FILE. All documents are validated first; nothing is stored
    when one of them is invalid. Up to 50 (and 1 MiB) are written in one transaction; more go in further
    transactions, so an etcd failure part way leaves the earlier batches stored (apply the file again)."""
    text = read_utf8(source.read, getattr(source, "name", "input"))
    try:
        resources = load_documents(text)
    except InvalidResource as exc:
        fail(str(exc), EXIT_USAGE)

    async def go() -> Any:
        async with g.client() as client:
            return await _store(g, client).apply_all(resources)

    applied = run(go)
    for r in resources:  # one line per resource whose fields are stored and not acted on yet
        if (line := pending_warning(r)) is not None:
            click.echo(f"warning: {line}", err=True)
    if output == "json":
        echo_json([{"kind": a.kind, "name": a.name, "action": a.action, "revision": a.revision} for a in applied])
        return
    for a in applied:
        click.echo(f"{a.action:<9} {a.kind}/{a.name}")


@click.command("get")
@click.argument("kind", metavar="KIND")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "wide", "yaml", "json"]), default="table",
              show_default=True)
@pass_globals
def get_cmd(g: Globals, kind: str, name: str | None, output: str) -> None:
    cls = _kind(kind)
    if name is not None:
        _named(cls, name)

    async def go() -> Any:
        async with g.client() as client:
            store = _store(g, client)
            if name is not None:
                return Listing([await store.get(cls, name)], [], 0)
            return await store.list(cls)

    listing: Listing = run(go)
    for err in listing.errors:
        click.echo(f"warning: {err}", err=True)
    items = listing.items
    if output in ("yaml", "json"):
        docs = [to_document(r) for r in items]
        data: Any = docs[0] if name is not None else {"apiVersion": API_VERSION, "kind": "List", "items": docs}
        if output == "json":
            echo_json(data)
        else:
            click.echo(dump_yaml(data).rstrip())
    else:
        click.echo(render_table(cls.kind, items, output == "wide"))
    if listing.errors:
        sys.exit(EXIT_ERROR)


get_cmd.help = f"Show resources of KIND ({KIND_HELP}), or the one called NAME."


@click.command("delete")
@click.argument("kind", metavar="KIND")
@click.argument("name")
@pass_globals
def delete_cmd(g: Globals, kind: str, name: str) -> None:
    """Delete the resource NAME of KIND."""
    cls = _kind(kind)
    _named(cls, name)

    async def go() -> int:
        async with g.client() as client:
            return await _store(g, client).delete(cls, name)

    run(go)
    click.echo(f"deleted   {cls.kind}/{name}")


delete_cmd.help = f"Delete the resource NAME of KIND ({KIND_HELP})."
