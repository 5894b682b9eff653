"""`calico-bgp ipam ...`: allocate, release, show, check. Thin: parse, call ipam, print."""
from __future__ import annotations

import ipaddress
from typing import Any

import click

from calico_bgp.cli.common import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_EXHAUSTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Globals,
    echo_json,
    node_name,
    pass_globals,
    register_errors,
    run,
    table,
)


def _register() -> None:
    from calico_bgp.datastore import EtcdUnavailable
    from ipam import errors as e

    register_errors({e.PoolExhausted: EXIT_EXHAUSTED, e.NoEligiblePool: EXIT_EXHAUSTED,
                     e.BlockConflict: EXIT_CONFLICT, e.InvalidAddress: EXIT_USAGE, e.NotAllocated: EXIT_ERROR,
                     e.CorruptBlock: EXIT_ERROR, e.IPAMError: EXIT_ERROR, EtcdUnavailable: EXIT_UNAVAILABLE})


_register()


# --- the cluster as IPAM needs it: pools and nodes from the resource store -----------------------
class Cluster:
    """Pools and nodes, read through the resource store; the one place cli_ipam touches resources."""

    def __init__(self, client: Any, keys: Any) -> None:
        from calico_bgp.resources.store import ResourceStore

        self.store = ResourceStore(client, keys)

    async def pools(self) -> list[Any]:
        return list((await self.store.list("IPPool")).items)

    async def nodes(self) -> dict[str, Any]:
        return {n.metadata.name: n for n in (await self.store.list("Node")).items}

    async def node_names(self) -> set[str]:
        """Every node that exists, its stored value readable or not: a Node whose value is corrupt is
        still a node, and `check --repair` must never release its addresses as if it were gone."""
        listing = await self.store.list("Node")
        names = {n.metadata.name for n in listing.items}
        for err in listing.errors:
            click.echo(f"warning: {err}", err=True)
            found = self.store.kind_for_key(err.key)
            if found is not None:
                names.add(found[1])
        return names

    @staticmethod
    def to_ipam(pool: Any) -> Any:
        from ipam import Pool

        return Pool(pool.metadata.name, pool.spec.cidr, pool.spec.block_size, pool.spec.disabled)

    async def eligible(self, node: str, only: str | None = None) -> list[Any]:
        """The node's pools: enabled, nodeSelector matching its labels, optionally one by name."""
        from ipam import NoEligiblePool

        pools = await self.pools()
        if only is not None:
            pools = [p for p in pools if p.metadata.name == only]
            if not pools:
                raise NoEligiblePool(f"--pool: no IPPool named {only!r}")
        known = await self.nodes()
        if node not in known:
            click.echo(f"warning: node {node!r} is not a Node resource; its pools are chosen as if it had no labels",
                       err=True)
        labels = known[node].metadata.labels if node in known else {}
        return [self.to_ipam(p) for p in pools if not p.spec.disabled and p.spec.node_selector.matches(labels)]


def _warn_corrupt(corrupt: dict[str, str]) -> None:
    for key, why in sorted(corrupt.items()):
        click.echo(f"warning: {key}: corrupt value skipped: {why}", err=True)


def _handle_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A handle is a key segment in etcd: not empty, no '/', no spaces or control characters."""
    if value is None:
        return None
    if not value or len(value) > 253 or not value.isprintable() or any(c in value for c in "/ "):
        raise click.BadParameter(f"{value!r}: a handle is 1..253 printable characters without '/' or spaces")
    return value


@click.group("ipam")
def ipam_group() -> None:
    """IP address management: blocks of the pools, affine to nodes, allocated by compare-and-swap."""


@ipam_group.command("allocate")
@click.option("--node", required=True, callback=node_name,
              help="Node the addresses are for (its affine blocks are used first).")
@click.option("--handle", required=True, callback=_handle_id,
              help="Handle that owns the addresses (release them together).")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 65536))
@click.option("--pool", "pool_name", help="Only this IPPool (by name).")
@click.option("--ipv6", is_flag=True, help="IPv6 addresses instead of IPv4.")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="Per-address attribute (repeatable).")
@click.option("--max-blocks-per-host", type=click.IntRange(1), help="Claim no more blocks than this for the node.")
@click.option("--strict-affinity", is_flag=True, help="Never borrow from blocks affine to other nodes.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_globals
def allocate_cmd(g: Globals, node: str, handle: str, count: int, pool_name: str | None, ipv6: bool,
                 attrs: tuple[str, ...], max_blocks_per_host: int | None, strict_affinity: bool, output: str) -> None:
    """Allocate COUNT addresses for HANDLE on NODE (all or nothing; exit 4 when exhausted)."""
    owner = {}
    for a in attrs:
        k, sep, v = a.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{a!r}: expected KEY=VALUE", param_hint="--attr")
        owner[k] = v

    async def go() -> list[Any]:
        from ipam.allocator import BlockAllocator

        async with g.client() as client:
            pools = await Cluster(client, g.keys).eligible(node, pool_name)
            alloc = BlockAllocator(client, g.keys)
            got = await alloc.allocate(node, handle, count, pools, owner, ipv6=ipv6,
                                       max_blocks_per_host=max_blocks_per_host, strict_affinity=strict_affinity)
            _warn_corrupt(alloc.corrupt)
            return got

    got = run(go)
    if output == "json":
        echo_json({"node": node, "handle": handle, "addresses": [
            {"ip": a.ip, "block": a.block, "seq": a.seq, "borrowed": a.borrowed} for a in got]})
    else:
        click.echo(table([[a.ip, a.block, str(a.seq), "yes" if a.borrowed else "no"] for a in got],
                         ["IP", "BLOCK", "SEQ", "BORROWED"]))


@ipam_group.command("release")
@click.option("--ip", "ip", help="Release this address.")
@click.option("--seq", type=int, help="With --ip: only if its sequence number is still this (exit 5 otherwise).")
@click.option("--handle", callback=_handle_id, help="Release every address of this handle (idempotent).")
@pass_globals
def release_cmd(g: Globals, ip: str | None, seq: int | None, handle: str | None) -> None:
    """Release one address (--ip) or all addresses of a handle (--handle)."""
    if (ip is None) == (handle is None):
        raise click.UsageError("give exactly one of --ip or --handle")
    if seq is not None and ip is None:
        raise click.UsageError("--seq goes with --ip")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise click.BadParameter(f"{ip!r} is not an IP address", param_hint="--ip") from None

    async def go() -> str:
        from ipam import NotAllocated
        from ipam.allocator import BlockAllocator

        async with g.client() as client:
            alloc = BlockAllocator(client, g.keys)
            if handle is not None:
                n = await alloc.release_handle(handle)
                return f"released {n} address(es) of handle {handle}"
            addr = ipaddress.ip_address(ip)
            home = [c for c in await alloc.store.block_keys() if addr in ipaddress.ip_network(c)]
            if not home:
                raise NotAllocated(f"{ip} is in no allocated block")
            rel = await alloc.release([(ip, seq)], blocks=home)
            if rel.count == 0:
                return f"{ip} was not allocated (nothing to do)"
            return f"released {ip}"

    click.echo(run(go))


@ipam_group.command("show")
@click.option("--show-blocks", is_flag=True, help="One line per block: affinity, in use, free.")
@click.option("--show-borrowed", is_flag=True, help="Addresses borrowed from blocks affine to other nodes.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_globals
def show_cmd(g: Globals, show_blocks: bool, show_borrowed: bool, output: str) -> None:
    """Pool utilisation, and optionally blocks and borrowed addresses."""
    async def go() -> tuple[Any, list[Any]]:
        from ipam.store import IPAMStore

        async with g.client() as client:
            pools = [Cluster.to_ipam(p) for p in await Cluster(client, g.keys).pools()]
            return await IPAMStore(client, g.keys).snapshot(), pools

    snap, pools = run(go)
    from ipam.check import check

    report = check(snap, pools, None)
    _warn_corrupt(snap.corrupt)
    blocks = sorted(snap.blocks.items(), key=lambda kv: (kv[1].value.network.version, kv[1].value.network))
    if output == "json":
        data: dict[str, Any] = {"pools": [_usage_json(u) for u in report.pools],
                                "corrupt": [{"key": k, "problem": v} for k, v in sorted(snap.corrupt.items())]}
        if show_blocks:
            data["blocks"] = [{"cidr": c, "affinity": s.value.host, "inUse": s.value.used_count,
                               "free": s.value.free_count, "seenEmpty": s.value.seen_empty,
                               "handles": s.value.handle_counts()} for c, s in blocks]
        if show_borrowed:
            data["borrowed"] = [_borrowed_json(b) for b in report.borrowed]
        echo_json(data)
        return
    click.echo(table([[u.name, u.cidr, str(u.size), str(u.blocks), str(u.allocated), str(u.size - u.allocated),
                       f"{100 * u.utilisation:.1f}%", "yes" if u.disabled else "no"] for u in report.pools],
                     ["POOL", "CIDR", "SIZE", "BLOCKS", "IN USE", "FREE", "USED", "DISABLED"]))
    if show_blocks:
        click.echo()
        click.echo(table([[c, s.value.host or "-", str(s.value.used_count), str(s.value.free_count),
                           str(s.value.seen_empty)] for c, s in blocks],
                         ["BLOCK", "AFFINITY", "IN USE", "FREE", "SEEN EMPTY"]))
    if show_borrowed and not report.borrowed:
        click.echo("\nborrowed addresses: none")
    elif show_borrowed:
        click.echo()
        click.echo(table([[b.ip, b.block, b.owner or "-", b.node or "-", b.handle or "-"] for b in report.borrowed],
                         ["IP", "BLOCK", "AFFINE TO", "BORROWED BY", "HANDLE"]))


def _usage_json(u: Any) -> dict[str, Any]:
    return {"name": u.name, "cidr": u.cidr, "size": u.size, "blocks": u.blocks, "inUse": u.allocated,
            "free": u.size - u.allocated, "utilisation": round(u.utilisation, 6), "disabled": u.disabled}


def _borrowed_json(b: Any) -> dict[str, Any]:
    return {"ip": b.ip, "block": b.block, "affineTo": b.owner, "borrowedBy": b.node, "handle": b.handle}


@ipam_group.command("check")
@click.option("--repair", is_flag=True, help="Show (or with --yes, carry out) the repairs. Dry run by default.")
@click.option("--yes", is_flag=True, help="With --repair: act.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_globals
def check_cmd(g: Globals, repair: bool, yes: bool, output: str) -> None:
    """Leaked handles (node gone), orphaned affinities, inconsistencies, corrupt keys, borrowed
    addresses and pool utilisation. Exit 0 when clean, 1 when problems are found."""
    if yes and not repair:
        raise click.UsageError("--yes goes with --repair")

    async def go() -> tuple[Any, list[Any], list[Any]]:
        from ipam.allocator import BlockAllocator
        from ipam.check import check, plan_repair
        from ipam.check import repair as do_repair
        from ipam.store import IPAMStore

        async with g.client() as client:
            cluster = Cluster(client, g.keys)
            pools = [Cluster.to_ipam(p) for p in await cluster.pools()]
            nodes = await cluster.node_names()
            report = check(await IPAMStore(client, g.keys).snapshot(), pools, nodes)
            plan = plan_repair(report) if repair else []
            done: list[Any] = []
            if plan and yes:
                def progress(i: int, n: int, act: Any) -> None:
                    click.echo(f"[{i}/{n}] {act.describe()}", err=True)
                done = await do_repair(BlockAllocator(client, g.keys), plan, progress)
                report = check(await IPAMStore(client, g.keys).snapshot(), pools, nodes)
            return report, plan, done

    report, plan, done = run(go)
    if output == "json":
        echo_json({
            "clean": report.clean,
            "leakedHandles": [{"handle": h.handle, "node": h.node, "count": h.count, "blocks": list(h.blocks)}
                              for h in report.leaked_handles],
            "orphanedAffinities": [{"node": o.node, "cidr": o.cidr, "reason": o.reason}
                                   for o in report.orphaned_affinities],
            "inconsistencies": [{"kind": i.kind, "key": i.key, "detail": i.detail} for i in report.inconsistencies],
            "corrupt": [{"key": k, "problem": v} for k, v in sorted(report.corrupt.items())],
            "borrowed": [_borrowed_json(b) for b in report.borrowed],
            "emptyBlocks": [{"cidr": e.cidr, "node": e.node, "seenEmpty": e.seen_empty} for e in report.empty_blocks],
            "pools": [_usage_json(u) for u in report.pools],
            "repair": {"dryRun": not yes, "actions": [a.describe() for a in plan],
                       "done": [{"action": a.describe(), "outcome": o} for a, o in done]} if repair else None,
        })
    else:
        _print_report(report, plan, done, repair, yes)
    if not report.clean:
        raise SystemExit(EXIT_ERROR)


def _print_report(report: Any, plan: list[Any], done: list[Any], repair: bool, yes: bool) -> None:
    click.echo(table([[u.name, u.cidr, str(u.allocated), str(u.size), f"{100 * u.utilisation:.1f}%"]
                      for u in report.pools], ["POOL", "CIDR", "IN USE", "SIZE", "USED"]))
    click.echo(f"\nborrowed addresses: {len(report.borrowed)}; empty affine blocks: {len(report.empty_blocks)}")
    lines = [f"leaked handle {h.handle}: node {h.node} is gone, holds {h.count} address(es)"
             for h in report.leaked_handles]
    lines += [f"orphaned affinity {o.node} -> {o.cidr}: {o.reason}" for o in report.orphaned_affinities]
    lines += [f"{i.kind}: {i.detail}" for i in report.inconsistencies]
    lines += [f"corrupt: {k}: {v}" for k, v in sorted(report.corrupt.items())]
    click.echo(f"problems: {len(lines)}" + ("" if lines else " (clean)"))
    for line in lines:
        click.echo(f"  {line}")
    if repair:
        if not plan:
            click.echo("repair: nothing to do")
        elif not yes:
            click.echo(f"repair (dry run; add --yes to act): {len(plan)} action(s)")
            for a in plan:
                click.echo(f"  would {a.describe()}")
        else:
            click.echo(f"repair: {len(done)} action(s) done")
            for a, outcome in done:
                click.echo(f"  {a.describe()} -> {outcome}")


def register(main: click.Group) -> None:
    main.add_command(ipam_group)
