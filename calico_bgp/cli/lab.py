"""`calico-bgp lab`: containerlab topologies on network namespaces (up, status, check, chaos, down)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from calico_bgp.cli.common import EXIT_ERROR, EXIT_USAGE, age, echo_json, fail, table

EXIT_CHECK_FAILED = 1


def register(main: click.Group) -> None:
    main.add_command(lab)


def _run_dir(run_dir: str | None, name: str | None = None, topology: str | None = None) -> Path:
    """The lab's run directory: --run-dir, else the lab named --name, else the one named by the
    topology file's `name:` (as `containerlab destroy -t FILE`), else the only lab up."""
    from lab.state import DEFAULT_RUN_ROOT, run_dir_for
    if run_dir:
        return Path(run_dir)
    if name:
        return run_dir_for(name)
    if topology:
        from lab.clab import load
        return run_dir_for(load(topology).name)
    labs = sorted(p for p in DEFAULT_RUN_ROOT.glob("*") if (p / "state.json").exists()) if DEFAULT_RUN_ROOT.exists() else []
    if len(labs) == 1:
        return labs[0]
    if not labs:
        fail(f"no lab is up under {DEFAULT_RUN_ROOT} (give --run-dir, or `calico-bgp lab up FILE`)", EXIT_ERROR)
    fail(f"several labs are up: {', '.join(p.name for p in labs)}; choose one with -t FILE, --name or --run-dir",
         EXIT_USAGE)


def _progress(msg: str) -> None:
    click.echo(msg)
    sys.stdout.flush()


def _guard(fn):  # type: ignore[no-untyped-def]
    """Typed lab errors become one message and an exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        from lab.clab import TopologyError
        from lab.execs import ExecError
        from lab.net import LabError
        from lab.state import LabNotUp
        try:
            return fn(*args, **kwargs)
        except (TopologyError, ExecError) as exc:
            fail(str(exc), EXIT_USAGE)
        except (LabError, LabNotUp) as exc:
            fail(str(exc), EXIT_ERROR)
    return wrapper


run_dir_option = click.option("--run-dir", type=click.Path(file_okay=False),
                              help="The lab's state directory (default /run/calico-bgp-lab/<name>).")
name_option = click.option("--name", "lab_name", help="The lab's name (its topology's `name`) when several are up.")
topo_option = click.option("-t", "--topo", "topology", type=click.Path(exists=True, dir_okay=False),
                           help="The lab's topology file: the lab named by its `name` (as containerlab's -t).")


@click.group()
def lab() -> None:
    """Run containerlab topologies on network namespaces, without docker."""


@lab.command("up")
@click.argument("topology", type=click.Path(exists=True, dir_okay=False))
@run_dir_option
@click.option("--name", "lab_name", help="Lab name instead of the topology's `name` (as `containerlab deploy --name`).")
@_guard
def up_cmd(topology: str, run_dir: str | None, lab_name: str | None) -> None:
    """Realise TOPOLOGY (a *.clab.yml): namespaces, links, etcd, routers, agents, workloads."""
    from lab import runtime

    runtime.up(Path(topology), Path(run_dir) if run_dir else None, progress=_progress, name=lab_name)


@lab.command("down")
@run_dir_option
@name_option
@topo_option
@_guard
def down_cmd(run_dir: str | None, lab_name: str | None, topology: str | None) -> None:
    """Remove everything the lab made (also after a crash of `lab up`)."""
    from lab import runtime

    runtime.down(_run_dir(run_dir, lab_name, topology), progress=_progress)


@lab.command("status")
@run_dir_option
@name_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@topo_option
@_guard
def status_cmd(run_dir: str | None, lab_name: str | None, topology: str | None, output: str) -> None:
    """Every node's sessions, routes and version; every fabric router's sessions."""
    from lab import observe, runtime

    state, topo = runtime.current(_run_dir(run_dir, lab_name, topology))
    agents = observe.agents(state)
    routers = observe.routers(state, topo)
    if output == "json":
        import attrs
        echo_json({"lab": state.name, "upSeconds": state.up_seconds,
                   "agents": [attrs.asdict(a) for a in agents], "routers": [attrs.asdict(r) for r in routers],
                   "workloads": {k: attrs.asdict(v) for k, v in state.workloads.items()}})
        return
    click.echo(f"Lab {state.name} ({Path(state.topology).name}), up {age(time.time() - state.started)}, "
               f"brought up in {state.up_seconds:.1f}s, etcd {state.etcd.url}")
    click.echo()
    rows = []
    for a in agents:
        est = sum(1 for s in a.sessions if s.state == "Established")
        learned = sum(1 for hops in a.kernel.values() if hops != ("blackhole",))
        ecmp = sum(1 for hops in a.kernel.values() if len(hops) > 1)
        w = state.workloads.get(a.node)
        rows.append([a.node, a.role or "-", a.address or "-", f"calico-bgp {a.version}" if a.version else "(no status)",
                     f"{est}/{len(a.sessions)}", ",".join(a.blocks) or "-", str(learned), str(ecmp),
                     str(a.rejected), f"{w.ip}" if w else "-", "grace" if a.in_grace else ""])
    click.echo(table(rows, ["NODE", "ROLE", "ADDRESS", "VERSION", "ESTABLISHED", "BLOCKS", "ROUTES", "ECMP", "REJECTED",
                            "WORKLOAD", ""]))
    for a in agents:
        click.echo()
        click.echo(f"{a.node}: sessions")
        click.echo(table([["  " + s.peer, s.peer_type, s.peer_node or s.peer_name or "-", s.state,
                           age(time.time() - s.since) if s.since else "-", str(s.flaps)] for s in a.sessions],
                         ["  PEER", "TYPE", "NODE/PEER", "STATE", "SINCE", "FLAPS"]))
    if routers:
        click.echo()
        prefixes = observe.router_prefixes(state, topo)
        rows = []
        for r in routers:
            for s in r.sessions or ():
                rows.append([r.node, r.version or r.kind, s.peer, s.state, str(prefixes.get(r.node, {}).get(s.peer, 0))])
            if not r.sessions:
                rows.append([r.node, r.version or r.kind, "-", "not running" if not r.alive else "no sessions", "-"])
        click.echo(table(rows, ["ROUTER", "VERSION", "PEER", "STATE", "PREFIXES"]))


@lab.command("check")
@run_dir_option
@name_option
@click.option("--timeout", type=click.FloatRange(0), default=120, show_default=True,
              help="Retry until everything passes or this many seconds have passed (0: check once).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@topo_option
@_guard
def check_cmd(run_dir: str | None, lab_name: str | None, topology: str | None, timeout: float,
              output: str) -> None:
    """Sessions Established, routes as expected, every workload pings every other (exit 1 if not)."""
    from lab import runtime
    from lab.check import check_until

    state, topo = runtime.current(_run_dir(run_dir, lab_name, topology))
    t0 = time.monotonic()
    rep = check_until(state, topo, timeout, progress=None if output == "json" else _progress)
    took = time.monotonic() - t0
    if output == "json":
        echo_json({"ok": rep.ok, "seconds": round(took, 2),
                   "items": [{"check": i.what, "ok": i.ok, "detail": i.detail} for i in rep.items]})
    else:
        click.echo(table([[i.what, "ok" if i.ok else "FAIL", i.detail] for i in rep.items], ["CHECK", "RESULT", "DETAIL"]))
        click.echo(f"\n{'PASS' if rep.ok else 'FAIL'}: {sum(i.ok for i in rep.items)}/{len(rep.items)} checks "
                   f"passed after {took:.1f}s")
    if not rep.ok:
        sys.exit(EXIT_CHECK_FAILED)


@lab.command("chaos")
@click.argument("scenario", type=click.Choice(["tor-stop", "link-cut", "agent-kill", "etcd-stop", "session-flap"]))
@click.option("--target", help="The router, link (NODE:IFACE), node or session (NODE:PEER) to hit; default: chosen.")
@click.option("--outage", type=click.FloatRange(0), help="Seconds the fault lasts (default 30 for etcd-stop, else 10).")
@click.option("--timeout", type=click.FloatRange(1), default=90, show_default=True,
              help="Give up waiting for re-convergence after this many seconds.")
@run_dir_option
@name_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@topo_option
@_guard
def chaos_cmd(scenario: str, target: str | None, outage: float | None, timeout: float, run_dir: str | None,
              lab_name: str | None, topology: str | None, output: str) -> None:
    """Break something, measure lost pings, time to re-converge and routes lost, then repair it.

    \b
    tor-stop      stop a fabric router, then start it again
    link-cut      take a link down on both ends, then up again
    agent-kill    SIGKILL a node agent and restart it
    etcd-stop     stop etcd (30 s by default), then start it again
    session-flap  reset one BGP session from the router side
    """
    from lab import chaos, runtime

    state, topo = runtime.current(_run_dir(run_dir, lab_name, topology))
    result = chaos.run(state, topo, scenario, target=target, outage=outage, timeout=timeout,
                       progress=None if output == "json" else _progress)
    if output == "json":
        echo_json(result.as_json())
    else:
        click.echo()
        click.echo(table([[k, v] for k, v in result.rows()], ["MEASURE", "VALUE"]))
    if not result.reconverged:
        sys.exit(EXIT_CHECK_FAILED)
