"""BIRD 2 in a network namespace, driven through birdc: the one BIRD driver of the lab, the tests and
the benchmarks.

    with Bird(ns, router_id="198.18.0.2", tmp=tmp_path / "bird") as bird:
        bird.configure(bgp_sessions=[BirdPeer(name="exa", local_as=65001, neighbor="198.18.0.1", peer_as=65000)],
                       static4=["198.19.5.0/24"])
        bird.wait_established("exa")
        bird.routes("master4")

`configure` renders a config from `BirdPeer`s and static routes; `start(ledger, config=TEXT)` runs a
config written elsewhere (a topology's bound bird.conf, a benchmark's). The daemon runs in the
foreground as a lab `Process` (its own process group, in the ledger when there is one) with its
control socket, pid file and log under `tmp`, so `stop()` (and leaving the `with`) leaves nothing.
Only 198.18.0.0/15 and 2001:db8::/32 belong in these configs.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Sequence

import attrs

from lab.net import LabError, Ledger, Process, TimedOut, wait_for


@attrs.frozen
class BirdPeer:
    """One BGP protocol in BIRD. `passive` waits for the other side; `ipv4`/`ipv6` select channels."""

    name: str
    local_as: int
    neighbor: str
    peer_as: int
    local_address: str | None = None
    port: int = 179
    passive: bool = False
    ipv4: bool = True
    ipv6: bool = False
    hold_time: int = 90
    password: str | None = None
    add_path: bool = False
    graceful_restart: bool = False
    next_hop_self: bool = True
    # the body of the export filter; the default sends the static routes only
    export: str = "where source = RTS_STATIC"
    # more protocol lines as they are, e.g. "direct;" for an iBGP peer on the same link
    extra: tuple[str, ...] = ()
    # more lines in each channel, e.g. "next hop address 2001:db8:99::1;"
    channel: tuple[str, ...] = ()

    def render(self) -> str:
        local = f"local {self.local_address} as {self.local_as};" if self.local_address else f"local as {self.local_as};"
        lines = [f"protocol bgp {self.name} {{", f"  {local}",
                 f"  neighbor {self.neighbor} port {self.port} as {self.peer_as};",
                 f"  hold time {self.hold_time};", "  connect delay time 0;", "  connect retry time 1;",
                 "  error wait time 1, 5;"]
        if self.passive:
            lines.append("  passive on;")
        if self.password:
            lines.append(f'  password "{self.password}";')
        if self.graceful_restart:
            lines.append("  graceful restart on;")
        lines += [f"  {x}" for x in self.extra]
        for fam, on in (("ipv4", self.ipv4), ("ipv6", self.ipv6)):
            if not on:
                continue
            chan = [f"  {fam} {{", "    import all;", f"    export {self.export};"]
            if self.next_hop_self:
                chan.append("    next hop self;")
            if self.add_path:
                chan.append("    add paths on;")
            chan += [f"    {x}" for x in self.channel]
            chan.append("  };")
            lines += chan
        lines.append("}")
        return "\n".join(lines)


@attrs.frozen
class BgpSession:
    """One BGP protocol as `show protocols all` tells it."""

    name: str
    peer: str
    state: str          # "Established" or BIRD's own word
    imported: int = 0


def parse_protocols(text: str) -> dict[str, dict[str, str]]:
    """`show protocols`: BGP protocol name -> {proto, table, state, since, info}."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[1] == "BGP":
            # since is "HH:MM:SS.mmm" or "YYYY-MM-DD HH:MM:SS" depending on age: keep the raw columns
            name, proto, table, state = parts[:4]
            rest = parts[4:]
            since = " ".join(rest[:2]) if len(rest) > 1 and re.match(r"\d{4}-\d\d-\d\d$", rest[0]) else rest[0]
            info = " ".join(rest[2:] if since.count(" ") else rest[1:])
            out[name] = {"proto": proto, "table": table, "state": state, "since": since, "info": info}
    return out


def same_since(a: str, b: str) -> bool:
    """Two readings of one protocol's `since` column name the same moment. BIRD prints it as real now
    minus monotonic age (`tm_format_time`, lib/timer.c), two clocks read apart, so an unchanged moment
    can print a millisecond apart between readings; a session that was reset has a `since` seconds later
    (BIRD's connect and error waits are seconds long)."""
    dated = " " in a
    if dated != (" " in b):
        return False
    if dated:  # "YYYY-MM-DD HH:MM:SS": whole seconds, so a jitter can cross one
        fmt = "%Y-%m-%d %H:%M:%S"
        return abs((datetime.strptime(a, fmt) - datetime.strptime(b, fmt)).total_seconds()) <= 1
    day = 86400.0
    gap = abs(_seconds_of_day(a) - _seconds_of_day(b)) % day
    return min(gap, day - gap) <= 0.05


def _seconds_of_day(since: str) -> float:
    h, m, s = since.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def parse_sessions(text: str) -> list[BgpSession]:
    """`show protocols all`: its BGP protocols, with neighbour address, BGP state and routes imported."""
    out = []
    for block in text.split("\n\n"):
        head = block.strip().splitlines()
        if not head:
            continue
        cols = head[0].split()
        if len(cols) < 2 or cols[1] != "BGP":
            continue
        body = "\n".join(head)
        peer = re.search(r"Neighbor address:\s+(\S+)", body)
        state = re.search(r"BGP state:\s+(\S+)", body)
        routes = re.search(r"Routes:\s+(\d+) imported", body)
        out.append(BgpSession(cols[0], peer.group(1) if peer else cols[0], state.group(1) if state else cols[3],
                              int(routes.group(1)) if routes else 0))
    return out


def parse_routes(text: str) -> dict[str, list[str]]:
    """`show route`: prefix -> its 'via' next hops."""
    routes: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^([0-9a-fA-F:.]+/\d+)\s", line)
        if m:
            current = m.group(1)
            routes.setdefault(current, [])
        via = re.search(r"\bvia ([0-9a-fA-F:.]+)", line)
        if via and current:
            routes[current].append(via.group(1))
    return routes


class Bird:
    """A BIRD 2 daemon in namespace `ns`, its files under `tmp`; `router_id` is for `configure`."""

    def __init__(self, ns: str, router_id: str | None, tmp: Path) -> None:
        self.ns, self.router_id, self.tmp = ns, router_id, Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.conf = self.tmp / "bird.conf"
        self.ctl = self.tmp / "bird.ctl"
        self.pidfile = self.tmp / "bird.pid"
        self.log = self.tmp / "bird.log"
        self.static4: list[str] = []
        self.static6: list[str] = []
        self.peers: list[BirdPeer] = []
        self.started = False
        self.process: Process | None = None

    def __enter__(self) -> "Bird":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ config and life
    def render(self) -> str:
        parts = [f"router id {self.router_id};", "log stderr all;",
                 "protocol device { scan time 10; }",
                 "protocol static static4 { ipv4;"] + [f"  route {p} blackhole;" for p in self.static4] + ["}",
                 "protocol static static6 { ipv6;"] + [f"  route {p} blackhole;" for p in self.static6] + ["}"]
        parts += [p.render() for p in self.peers]
        return "\n".join(parts) + "\n"

    def configure(self, bgp_sessions: Sequence[BirdPeer] | None = None, static4: Sequence[str] | None = None,
                  static6: Sequence[str] | None = None) -> None:
        """Write the config; start BIRD the first time, `birdc configure` afterwards."""
        if bgp_sessions is not None:
            self.peers = list(bgp_sessions)
        if static4 is not None:
            self.static4 = list(static4)
        if static6 is not None:
            self.static6 = list(static6)
        if not self.started:
            self.start(config=self.render())
        else:
            self.reconfigure(self.render())

    def reconfigure(self, config: str) -> None:
        """A new config for the running daemon (BIRD sends its peers only the difference)."""
        self.conf.write_text(config)
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise LabError(f"birdc configure failed: {out}")

    def start(self, ledger: Ledger | None = None, config: str | None = None) -> int:
        """Run BIRD on `config` (else the config file as it is); its pid once the control socket is up."""
        if config is not None:
            self.conf.write_text(config)
        if self.process is not None:  # a restart: the last daemon (dead, or stopped now) gives its log back
            self.process.stop(timeout=5)
        for stale in (self.ctl, self.pidfile):  # a restart must not see the last run's socket
            stale.unlink(missing_ok=True)
        check = subprocess.run(["bird", "-p", "-c", str(self.conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise LabError(f"{self.conf} does not parse: {(check.stderr or check.stdout).strip()}")
        self.process = Process(ledger, self.ns, ["bird", "-f", "-c", str(self.conf), "-s", str(self.ctl),
                                                 "-P", str(self.pidfile)], self.log)
        self.started = True
        wait_for(f"BIRD's control socket {self.ctl}", lambda: self.ctl.exists() or not self.process.alive(),
                 timeout=15, interval=0.05)
        if not self.ctl.exists():
            raise LabError(f"bird did not start: {self.process.tail(20)}")
        return self.process.pid

    def pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.pidfile.read_text().strip())
        return None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=5)
        self.started = False

    # ------------------------------------------------------------ birdc
    def birdc(self, *cmd: str) -> str:
        # birdc talks over a unix socket, so it works from outside the namespace
        return subprocess.run(["birdc", "-s", str(self.ctl), *cmd], capture_output=True, text=True, timeout=30,
                              check=False).stdout

    def protocols(self) -> dict[str, dict[str, str]]:
        """`show protocols`: name -> {proto, table, state, since, info}."""
        return parse_protocols(self.birdc("show", "protocols"))

    def sessions(self) -> list[BgpSession]:
        return parse_sessions(self.birdc("show", "protocols", "all"))

    def established(self, name: str) -> bool:
        return self.protocols().get(name, {}).get("info", "").startswith("Established")

    def wait_established(self, name: str, timeout: float = 30) -> None:
        try:
            wait_for(f"BIRD protocol {name} Established", lambda: self.established(name), timeout, interval=0.1)
        except TimedOut as exc:
            raise TimedOut(f"{exc}: {self.birdc('show', 'protocols', 'all', name)}") from None

    def routes(self, table: str = "master4", protocol: str | None = None) -> dict[str, list[str]]:
        """Prefixes in `table` (optionally only from `protocol`) -> their 'via' next hops."""
        cmd = ["show", "route", "table", table]
        if protocol:
            cmd += ["protocol", protocol]
        return parse_routes(self.birdc(*cmd))

    def count(self, table: str = "master4", protocol: str | None = None) -> int:
        cmd = ["show", "route", "table", table, "count"]
        if protocol:
            cmd[4:4] = ["protocol", protocol]
        m = re.search(r"(\d+) of \d+ routes", self.birdc(*cmd))
        return int(m.group(1)) if m else 0

    def route_all(self, prefix: str, table: str = "master4") -> str:
        return self.birdc("show", "route", "table", table, "for", prefix, "all")

    def version(self) -> str:
        m = re.search(r"BIRD (\S+)", self.birdc("show", "status"))
        return f"BIRD {m.group(1)}" if m else "BIRD"
