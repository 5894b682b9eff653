"""`node run` (the agent), `status` and `routes` (what agents publish in etcd)."""
from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import click
import trio

from calico_bgp import eventlog as ev, status as st
from calico_bgp.cli_common import EXIT_ERROR, Globals, echo_json, fail, node_name, pass_globals, run, table
from calico_bgp.datastore import Resync


def register(main: click.Group) -> None:
    main.add_command(node)
    main.add_command(status_cmd)
    main.add_command(routes_cmd)
    main.add_command(events_cmd)


@click.group()
def node() -> None:
    """Run this host's node agent."""


@node.command("run")
@click.option("--name", required=True, callback=node_name, help="This node's name (its Node resource).")
@click.option("--ip", help="IPv4 BGP address, e.g. 198.18.0.1/24 (created/updated on the Node resource).")
@click.option("--ip6", help="IPv6 BGP address, e.g. 2001:db8::1/64.")
@click.option("--ip-autodetect", help="first-found | interface=REGEX | can-reach=IP (when --ip is not given).")
@click.option("--table", type=click.IntRange(1, 2**32 - 1), default=254, show_default=True,
              help="Kernel routing table for learned routes and blackholes.")
@click.option("--protocol", type=click.IntRange(5, 255), help="rtnetlink protocol number marking our routes.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics on this port.")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Runtime files (default /run/calico-bgp/NAME).")
@click.option("--grace", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds to keep routes from a previous run while sessions re-sync.")
@click.option("--ipam-sweep", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Seconds between sweeps that release this node's empty blocks (after two sightings).")
@click.option("--filter-mode", type=click.Choice(["auto", "xdp", "nft", "iptables", "off"]), default="auto",
              show_default=True, help="How PolicyFilters are enforced (auto: XDP, else nftables, else iptables).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@pass_globals
def node_run(g: Globals, name: str, ip: str | None, ip6: str | None, ip_autodetect: str | None, table: int,
             protocol: int | None, metrics_port: int | None, state_dir: str | None, grace: float, ipam_sweep: float,
             filter_mode: str, log_level: str) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    from calico_bgp.agent import AgentOptions, NodeAgent, configure_logging, state_dir_for, tune_gc
    _check_node_flags(ip, ip6, ip_autodetect, metrics_port)
    _use_system_malloc()
    configure_logging(log_level)
    tune_gc()
    opts = AgentOptions(name=name, ip=ip, ip6=ip6, ip_autodetect=ip_autodetect or (None if ip or ip6 else "first-found"),
                        table=table, protocol=protocol, metrics_port=metrics_port,
                        state_dir=Path(state_dir) if state_dir else state_dir_for(name), grace_timeout=grace,
                        ipam_sweep=ipam_sweep, filter_mode=filter_mode)

    async def main() -> None:
        async with g.client() as client:
            agent = NodeAgent(client, g.keys, opts)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
                await nursery.start(agent.run)

    run(main)


def _check_node_flags(ip: str | None, ip6: str | None, autodetect: str | None, metrics_port: int | None) -> None:
    """Everything `node run` can judge before it touches etcd or the kernel: one line, exit 2."""
    import ipaddress
    import re
    import socket

    for flag, value, version in (("--ip", ip, 4), ("--ip6", ip6, 6)):
        if value:
            try:
                addr = ipaddress.ip_interface(value)
            except ValueError:
                raise click.BadParameter(f"{value!r} is not an IP address", param_hint=flag) from None
            if addr.version != version:
                raise click.BadParameter(f"{value!r} is not an IPv{version} address", param_hint=flag)
    if autodetect:
        kind, _, arg = autodetect.partition("=")
        try:
            if kind == "interface" and arg:
                re.compile(arg)
            elif kind == "can-reach" and arg:
                ipaddress.ip_address(arg)
            elif autodetect != "first-found":
                raise ValueError("use first-found, interface=REGEX or can-reach=IP")
        except (ValueError, re.error) as exc:
            raise click.BadParameter(f"{autodetect!r}: {exc}", param_hint="--ip-autodetect") from None
    if metrics_port:
        with socket.socket() as probe:  # taken now: better said here than after sessions came up
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", metrics_port))
            except OSError as exc:
                raise click.BadParameter(f"port {metrics_port}: {exc.strerror}", param_hint="--metrics-port") from None


_REEXEC = "CALICO_BGP_SYSTEM_MALLOC"  # set across the re-exec below


def _use_system_malloc() -> None:
    """Run the agent on the C library's malloc rather than Python's small-object allocator (re-exec
    with PYTHONMALLOC=malloc, unless it is set). pymalloc frees an arena only when every object in it
    is gone: after 200k rejected routes came and went, a few survivors per arena kept the agent 65 MB
    above where it started; with malloc (and malloc_trim when a large table left) it came back within
    1 MB (bench/memory.py). Only for a real `node run` command line, never inside another program."""
    if os.environ.pop(_REEXEC, None) is not None:
        os.environ.pop("PYTHONMALLOC", None)  # ExaBGP and the bridge keep Python's own (faster) allocator
        return
    argv = sys.orig_argv
    if os.environ.get("PYTHONMALLOC") or "node" not in argv or "run" not in argv[argv.index("node"):]:
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    os.environ[_REEXEC] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


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


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


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
        stale = "" if now - s.updated < 30 else f"  (stale: last update {_age(now - s.updated)} ago)"
        click.echo(f"Node {s.node}: {s.role}, AS {s.asn}, router id {s.router_id}, version {s.version}, "
                   f"{s.routes_total} learned routes, {s.kernel_routes} in kernel"
                   f"{f', {s.routes_failed} failed (calico-bgp routes --failed)' if s.routes_failed else ''}"
                   f"{', filters: ' + s.filter_mode if s.filter_mode else ''}"
                   f"{', grace period' if s.in_grace else ''}{stale}")
        rows = [[x.peer, x.peer_type, x.state, _since(x.since), x.info or "-", f"{x.received}/{x.accepted}",
                 str(x.flaps), _age(x.uptime) if x.uptime else "-", f"{x.churn_rate:.1f}/s"] for x in s.sessions]
        click.echo(table(rows, ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO", "RECV/ACCEPTED", "FLAPS",
                                "UPTIME", "CHURN"]))


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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    try:
        value = float(text[:-1]) * _UNITS[text[-1]] if text and text[-1] in _UNITS else float(text)
        if not 0 <= value < float("inf"):  # also refuses nan
            raise ValueError
        return value
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a number of seconds or e.g. 90s, 15m, 2h, 1d",
                                 param_hint="--since") from None


def _event_row(e: ev.Event) -> list[str]:
    return [datetime.datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S"), e.node, e.kind,
            e.peer or "-", e.prefix or "-", e.detail]


@click.command("events")
@click.option("--node", "node_name", help="Only this node.")
@click.option("--since", help="Only events newer than this (e.g. 90s, 15m, 2h, 1d).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@pass_globals
def events_cmd(g: Globals, node_name: str | None, since: str | None, follow: bool, output: str) -> None:
    """Session changes, damping, max-prefix actions and repairs, from every node's event ring."""
    cutoff = time.time() - _duration(since) if since else None
    prefix = g.keys.events(node_name) if node_name else g.keys.events()
    headers = ["TIME", "NODE", "EVENT", "PEER", "PREFIX", "DETAIL"]

    def show(batch: list[ev.Event], first: bool) -> None:
        if output == "json":
            for e in batch:
                click.echo(json.dumps(attrs.asdict(e), sort_keys=True))
        elif batch or first:
            text = table([_event_row(e) for e in batch], headers)
            click.echo(text if first else "\n".join(text.splitlines()[1:]))

    def decoded(kvs: Any) -> list[ev.Event]:
        out = []
        for kv in kvs:
            try:
                out.append(ev.decode(kv.value, kv.key))
            except ValueError as exc:
                click.echo(f"warning: {exc}", err=True)
        return out

    async def go() -> None:
        async with g.client() as client:
            res = await client.range(prefix)
            found = decoded(res.kvs)
            show(ev.ordered(found, cutoff), True)
            if not follow:
                return
            last: dict[str, int] = {}  # per node, the newest seq shown (a node's seq only grows)

            def note(batch: list[ev.Event]) -> None:
                for e in batch:
                    last[e.node] = max(last.get(e.node, 0), e.seq)

            note(found)
            async with client.watch(prefix, res.revision + 1) as watch:
                async for item in watch:
                    if isinstance(item, Resync):  # fell behind a compaction: what the rings hold that is new
                        batch = [e for e in decoded(item.kvs) if e.seq > last.get(e.node, 0)]
                    else:
                        batch = decoded(e.kv for e in item.events if e.type == "put")
                    note(batch)
                    show(ev.ordered(batch), False)

    try:
        run(go)
    except KeyboardInterrupt:
        pass
