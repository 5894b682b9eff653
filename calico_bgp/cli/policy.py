"""`calico-bgp policy show`: the filter mode of this machine and every rule's counters, per interface;
and the outgoing NAT (IPPool natOutgoing): its mode and the connections it masqueraded.

Reads the local dataplane directly (pinned XDP maps, our nft table, our iptables chains), through
the same engines the agent uses; needs root like the agent does.
"""
from __future__ import annotations

from pathlib import Path

import click

from calico_bgp.cli.common import EXIT_ERROR, echo_json, fail, table


def register(main: click.Group) -> None:
    main.add_command(policy)


@click.group()
def policy() -> None:
    """Policy filters enforced on this machine (XDP, nftables or iptables)."""


@policy.command("show")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("/run/calico-bgp/filters"),
              show_default=True, help="Where the agent keeps its filter state (<node run --state-dir>/filters).")
@click.option("--nat-state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("/run/calico-bgp/nat"),
              show_default=True, help="Where the agent keeps its outgoing NAT state (<node run --state-dir>/nat).")
@click.option("--pin-root", type=click.Path(file_okay=False, path_type=Path), default=Path("/run/calico-bgp/bpf"),
              show_default=True, help="The bpffs the agent pins its XDP programs and maps under.")
@click.option("--netns", default=None, help="Look inside this network namespace (labs and tests).")
def show(output: str, state_dir: Path, nat_state_dir: Path, pin_root: Path, netns: str | None) -> None:
    """The enforcement mode and per interface/filter/rule packet and byte counters; the NAT's mode."""
    from dataplane.filters.engine import FilterEngine
    from dataplane.filters.rules import FAILSAFE_RULE
    from dataplane.nat.engine import NatEngine

    engine = FilterEngine("auto", netns=netns, pin_root=pin_root, state_dir=state_dir)
    nat = NatEngine(netns=netns, state_dir=nat_state_dir)
    try:
        counters = engine.counters()
        masqueraded = nat.counters()
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: one line, an exit code
        fail(f"reading filter counters ({engine.mode}, NAT {nat.mode}): {exc}", EXIT_ERROR)
    rows = []
    for c in sorted(counters, key=lambda c: (c.interface, c.rule_id != FAILSAFE_RULE, c.rule_id)):
        failsafe = c.rule_id == FAILSAFE_RULE
        rows.append({"interface": c.interface, "filter": "" if failsafe else c.rule_id.filter,
                     "rule": "failsafe" if failsafe else c.rule_id.index, "action": c.action,
                     "packets": c.packets, "bytes": c.bytes})
    nat_doc = {"mode": nat.mode, "masqueraded": {str(v): n for v, n in sorted(masqueraded.items())}}
    if output == "json":
        echo_json({"mode": engine.mode, "counters": rows, "nat": nat_doc})
        return
    click.echo(f"mode: {engine.mode or 'none (no filter programmed)'}")
    done = ", ".join(f"IPv{v} {n}" for v, n in sorted(masqueraded.items()))
    nat_line = nat.mode + (f" (connections masqueraded: {done})" if done else "") if nat.mode else \
        "none (no pool has natOutgoing)"
    click.echo(f"nat: {nat_line}")
    if rows:
        click.echo(table([[r["interface"], r["filter"] or "-", str(r["rule"]), r["action"], str(r["packets"]),
                           str(r["bytes"])] for r in rows],
                         ["INTERFACE", "FILTER", "RULE", "ACTION", "PACKETS", "BYTES"]))
