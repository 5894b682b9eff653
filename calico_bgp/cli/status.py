"""`status` and `routes`: what the agents publish under status/<node> in etcd, read from any machine."""
from __future__ import annotations

import datetime
import time

import click

from calico_bgp.agent import status as st
from calico_bgp.bfd.report import cell as bfd_cell
from calico_bgp.cli.common import EXIT_ERROR, Globals, age, echo_json, fail, pass_globals, run, table


def register(main: click.Group) -> None:
    main.add_command(status_cmd)
    main.add_command(routes_cmd)


async def _read_statuses(g: Globals, node_name: str | None) -> tuple[list[st.NodeStatus], list[str]]:
    async with g.client() as client:
        if node_name:
            kv = await client.get(g.keys.status(node_name))
            kvs = [kv] if kv else []
        else:
            kvs = (await client.range(g.keys.statuses())).kvs
    out, bad = [], []
    for kv in kvs:
        try:
            out.append(st.decode(kv.value, kv.key))
        except ValueError as exc:
            bad.append(str(exc))
    return out, bad


def _statuses(g: Globals, node_name: str | None) -> list[st.NodeStatus]:
    found, bad = run(_read_statuses, g, node_name)
    for b in bad:
        click.echo(f"warning: {b}", err=True)
    if not found:
        fail(f"no status published by node {node_name!r} (is its agent running?)" if node_name
             else "no agent has published a status (are agents running?)", EXIT_ERROR)
    return found


def _since(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _ago(bfd: st.BfdStatus, peer: str, now: float) -> str:
    row = bfd.of(peer)
    return age(now - row.since) if row is not None and row.since else "-"


@click.command("status")
@click.option("--node", "node_name", help="Only this node (default: every node that publishes).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@pass_globals
def status_cmd(g: Globals, node_name: str | None, output: str) -> None:
    """BGP sessions of each node, like `calicoctl node status`."""
    statuses = _statuses(g, node_name)
    if output == "json":
        echo_json([st.as_json(s) for s in statuses])
        return
    now = time.time()
    for i, s in enumerate(statuses):
        if i:
            click.echo()
        stale = "" if now - s.updated < 30 else f"  (stale: last update {age(now - s.updated)} ago)"
        click.echo(f"Node {s.node}: {s.role}, AS {s.asn}, router id {s.router_id}, version {s.version}, "
                   f"{s.routes_total} learned routes, {s.kernel_routes} in kernel"
                   f"{f', {s.routes_failed} failed (calico-bgp routes --failed)' if s.routes_failed else ''}"
                   f"{', filters: ' + s.filter_mode if s.filter_mode else ''}"
                   f"{', NAT: ' + s.nat_mode + ' (' + ' '.join(s.nat_masquerade) + ')' if s.nat_mode else ''}"
                   f"{', NAT failed: ' + s.nat_error if s.nat_error else ''}"
                   f"{', grace period' if s.in_grace else ''}"
                   f"{', BFD unavailable since ' + _since(s.bfd.unavailable_since) if s.bfd.engine == 'unavailable' else ''}"
                   f"{stale}")
        rows = [[x.peer, x.peer_type, x.state, _since(x.since), x.info or "-", f"{x.received}/{x.accepted}",
                 str(x.flaps), age(x.uptime) if x.uptime else "-", f"{x.churn_rate:.1f}/s", bfd_cell(s.bfd, x.peer, _ago(s.bfd, x.peer, now))]
                for x in s.sessions]
        click.echo(table(rows, ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO", "RECV/ACCEPTED", "FLAPS",
                                "UPTIME", "CHURN", "BFD"]))


@click.command("routes")
@click.option("--node", "node_name", help="Only this node.")
@click.option("--rejected", is_flag=True, help="Routes refused by import policy, origin validation or loop checks, with the reason.")
@click.option("--damped", is_flag=True, help="Paths suppressed by flap damping.")
@click.option("--churn", is_flag=True, help="The prefixes announced and withdrawn most often.")
@click.option("--failed", is_flag=True, help="Routes wanted in the kernel and not there, with the reason.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@pass_globals
def routes_cmd(g: Globals, node_name: str | None, rejected: bool, damped: bool, churn: bool, failed: bool,
               output: str) -> None:
    """Learned routes per node: best path, ECMP next hops, peers, whether in the kernel."""
    statuses = _statuses(g, node_name)
    if output == "json":
        key = "rejected" if rejected else "damped" if damped else "churn" if churn else "failed" if failed else "routes"
        echo_json({s.node: st.as_json(s).get(key, []) for s in statuses})
        return
    for i, s in enumerate(statuses):
        if i:
            click.echo()
        if rejected:
            total = sum(x.rejected for x in s.sessions)
            not_kept = sum(x.rejected_not_kept for x in s.sessions)
            shown = f" (showing {len(s.rejected)})" if total > len(s.rejected) else ""
            kept = f"; {not_kept} beyond the per-peer cap counted, not kept" if not_kept else ""
            click.echo(f"Node {s.node}: {max(total, len(s.rejected))} rejected{shown}{kept}")
            click.echo(table([[r.prefix, r.peer, r.reason] for r in s.rejected], ["PREFIX", "PEER", "REASON"]))
        elif failed:
            shown = f" (showing {len(s.failed)})" if s.routes_failed > len(s.failed) else ""
            click.echo(f"Node {s.node}: {s.routes_failed} failed{shown}")
            click.echo(table([[f.prefix, f.stage, str(f.attempts), f.reason] for f in s.failed],
                             ["PREFIX", "STAGE", "ATTEMPTS", "REASON"]))
        elif churn:
            click.echo(f"Node {s.node}: busiest prefixes")
            click.echo(table([[c.prefix, str(c.announces), str(c.withdraws), _since(c.last_change)] for c in s.churn],
                             ["PREFIX", "ANNOUNCED", "WITHDRAWN", "LAST CHANGE"]))
        elif damped:
            click.echo(f"Node {s.node}: {len(s.damped)} damped")
            click.echo(table([[d.prefix, d.peer, f"{d.penalty:.0f}", f"{d.reuse_in:.0f}s", str(d.flaps)] for d in s.damped],
                             ["PREFIX", "PEER", "PENALTY", "REUSE IN", "FLAPS"]))
        else:
            more = f" (showing {len(s.routes)})" if s.routes_total > len(s.routes) else ""
            click.echo(f"Node {s.node}: {s.routes_total} routes{more}, announcing {len(s.announced)}")
            click.echo(table([[r.prefix, " ".join(r.next_hops), " ".join(r.peers), "yes" if r.in_kernel else "no",
                               r.best_reason] for r in s.routes], ["PREFIX", "NEXT HOPS", "PEERS", "KERNEL", "BEST BY"]))


