"""`node run`: the node agent, in the foreground, until a signal; `node sessions` lives in sessions.py."""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from pathlib import Path

import click
import trio

from calico_bgp.cli import attrs_cache
from calico_bgp.cli.common import Globals, node_name, pass_globals, run


def register(main: click.Group) -> None:
    main.add_command(node)


class NodeCommands(click.Group):
    """`node run` here; `node sessions` in sessions.py, imported only when it is used (or listed)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | {"sessions"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "sessions" and cmd_name not in self.commands:
            from calico_bgp.cli.sessions import sessions_cmd
            self.add_command(sessions_cmd)
        return super().get_command(ctx, cmd_name)


@click.group(cls=NodeCommands)
def node() -> None:
    """Run this host's node agent; show the sessions a node gets."""


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
@click.option("--no-ipam-service", "no_ipam_service", is_flag=True,
              help="Do not serve calico-bgp-ipam's warm process: every plugin invocation runs in its own process.")
@click.option("--filter-mode", type=click.Choice(["auto", "xdp", "nft", "iptables", "off"]), default="auto",
              show_default=True, help="How PolicyFilters are enforced (auto: XDP, else nftables, else iptables).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@pass_globals
def node_run(g: Globals, name: str, ip: str | None, ip6: str | None, ip_autodetect: str | None, table: int,
             protocol: int | None, metrics_port: int | None, state_dir: str | None, grace: float, ipam_sweep: float,
             no_ipam_service: bool, filter_mode: str, log_level: str) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    _check_node_flags(ip, ip6, ip_autodetect, metrics_port)
    configure_logging(log_level)
    tune_gc()
    skip_unused_imports()
    state = Path(state_dir) if state_dir else state_dir_for(name)
    # ExaBGP first, before the agent's own modules load: its start (~0.3 s of CPU, its imports)
    # then runs beside theirs on another core instead of after them
    from calico_bgp.speaker.speaker import Speaker

    speaker = Speaker(state / "speaker")
    speaker.start_exabgp()
    from calico_bgp.agent.node import AgentOptions, NodeAgent
    opts = AgentOptions(name=name, ip=ip, ip6=ip6, ip_autodetect=ip_autodetect or (None if ip or ip6 else "first-found"),
                        table=table, protocol=protocol, metrics_port=metrics_port, state_dir=state,
                        grace_timeout=grace, ipam_sweep=ipam_sweep, filter_mode=filter_mode,
                        ipam_service=not no_ipam_service)

    from calico_bgp.datastore import client as _  # noqa: F401  (what g.client() loads: its classes cached too)

    async def main() -> None:
        async with g.client() as client:
            agent = NodeAgent(client, g.keys, opts, speaker=speaker)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
                await nursery.start(agent.run)
                await agent.ready.wait()
                attrs_cache.finish_logged()  # after the first sync: the codec's hooks for what is stored are made too
                trim_heap()  # the cache's ~2 MB, freed beneath what the first sync allocated

    run(main)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpcore"):  # one line per HTTP request is not an event
        logging.getLogger(noisy).setLevel(logging.WARNING)


def skip_unused_imports(modules: dict | None = None) -> None:
    """Keep out of the agent what it imports and never uses: httpx's package imports its command-line
    client (`httpx._main`: pygments, rich) and gives up on it quietly where rich is missing, ~20 ms of
    every agent start. A `None` in sys.modules makes that import fail at once, which httpx expects."""
    (sys.modules if modules is None else modules).setdefault("httpx._main", None)  # type: ignore[arg-type]


def tune_gc() -> None:
    """Fewer full garbage collections. A RIB of 100k routes is about a million tracked objects, and
    with the default thresholds Python walks them all each time the heap grows by a quarter: ~35% of
    the CPU of learning 100k prefixes. Full passes now come after ~8M allocations instead of ~70k.
    And a shorter GIL switch interval: the kernel writer thread takes the GIL several times per
    netlink chunk, and waiting 5 ms each time behind the UPDATE parser made it lag a burst."""
    gc.set_threshold(2000, 20, 200)
    sys.setswitchinterval(0.0005)


def trim_heap() -> None:
    """Hand memory freed inside the heap back to the system (glibc's malloc_trim; nothing elsewhere):
    `node run` runs on the C library's malloc, which keeps freed pages below live ones."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def state_dir_for(name: str) -> Path:
    base = Path(os.environ.get("CALICO_BGP_STATE_DIR", "/run/calico-bgp"))
    return base / name


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


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


