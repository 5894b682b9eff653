"""`events`: each node's event ring in etcd (sessions, damping, max-prefix actions, repairs), like `show log`."""
from __future__ import annotations

import datetime
import json
import time
from typing import Any

import attrs
import click

from calico_bgp.cli.common import Globals, pass_globals, run, table
from calico_bgp.datastore import Resync
from calico_bgp.telemetry import eventlog as ev


def register(main: click.Group) -> None:
    main.add_command(events_cmd)


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
