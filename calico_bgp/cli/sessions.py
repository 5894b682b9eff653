"""`node sessions`: the BGP sessions a node gets, read from etcd, without running anything.

The same computation as the agent's (routing/topology.py sessions_for, then runnable), over one read
of the datastore; routing/session_rows.py turns it into rows.
"""
from __future__ import annotations

import click

from calico_bgp.cli.common import EXIT_ERROR, Globals, echo_json, fail, node_name, pass_globals, run, table


async def _cluster(g: Globals):  # noqa: ANN202 - ClusterState, imported lazily with the view
    from calico_bgp.resources.view import ClusterView

    async with g.client() as client:
        return await ClusterView(client, g.keys).read_once()


def node_sessions(cluster, name: str) -> tuple[list[dict], list[str]]:  # noqa: ANN001 - ClusterState
    """The rows `node sessions` prints for node `name` (none for a node without spec.bgp, as the agent
    makes none), and a warning line for each BGPPeer selecting it that makes no session. Raises
    LookupError (no such node) or TopologyError."""
    from calico_bgp.routing import topology
    from calico_bgp.routing.session_rows import rows

    me = cluster.nodes.get(name)
    if me is None:
        raise LookupError(f"node {name!r} not found (no Node resource of that name)")
    if me.spec.bgp is None:  # as the agent: such a node has no sessions
        return [], [f"node {name!r} has no spec.bgp (no BGP address): it has no sessions"]
    declined: list[str] = []
    sessions = topology.sessions_for(me, list(cluster.nodes.values()), cluster.config, cluster.peers.values(),
                                     cluster.node_configs, declined)
    kept, skipped = topology.runnable(sessions)
    return rows(kept.values(), skipped), declined


@click.command("sessions")
@click.option("--name", required=True, callback=node_name, help="The node (its Node resource's name).")
@click.option("-o", "--output", type=click.Choice(["table", "json", "wide"]), default="table", show_default=True)
@pass_globals
def sessions_cmd(g: Globals, name: str, output: str) -> None:
    """The BGP sessions node NAME gets from what is in etcd, and why (nothing is run)."""
    from calico_bgp.routing.session_rows import TABLE, WIDE, cells
    from calico_bgp.routing.topology import TopologyError

    cluster = run(_cluster, g)
    try:
        found, warnings = node_sessions(cluster, name)
    except (LookupError, TopologyError) as exc:
        fail(str(exc), EXIT_ERROR)
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    if output == "json":
        echo_json(found)
        return
    columns = WIDE if output == "wide" else TABLE
    click.echo(table([cells(r, columns) for r in found], [_HEADERS.get(c, c.upper()) for c in columns]))


_HEADERS = {"peerIP": "PEER", "asNumber": "AS", "localAS": "LOCAL-AS", "rrClient": "RR-CLIENT",
            "sourceAddress": "SOURCE", "ttlSecurity": "TTL-SECURITY", "nextHopMode": "NEXT-HOP",
            "gracefulRestartTime": "GR-TIME"}
