"""Real routers for tests: BIRD 2 in a network namespace the test created, driven through birdc.

    with Bird(ns, router_id="198.18.0.2", tmp=tmp_path / "bird") as bird:
        bird.configure(bgp_sessions=[BirdPeer(name="exa", local_as=65001, neighbor="198.18.0.1", peer_as=65000)],
                       static4=["198.19.5.0/24"])
        bird.wait_established("exa")
        bird.routes("198.19.0.0/16")

Only 198.18.0.0/15 and 2001:db8::/32 belong in these configs. `stop()` (and leaving the `with`)
kills the daemon by its pid file, so nothing outlives the test even when it fails.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator, Sequence

import attrs

from tests.netns import sh


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


class Bird:
    """A BIRD 2 daemon in namespace `ns`, its files under `tmp`."""

    def __init__(self, ns: str, router_id: str, tmp: Path) -> None:
        self.ns, self.router_id, self.tmp = ns, router_id, Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.conf = self.tmp / "bird.conf"
        self.ctl = self.tmp / "bird.ctl"
        self.pidfile = self.tmp / "bird.pid"
        self.static4: list[str] = []
        self.static6: list[str] = []
        self.peers: list[BirdPeer] = []
        self.started = False

    def __enter__(self) -> "Bird":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
        self.conf.write_text(self.render())
        if not self.started:
            self.start()
        else:
            out = self.birdc("configure")
            if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
                raise RuntimeError(f"birdc configure failed: {out}")

    def start(self) -> None:
        log = open(self.tmp / "bird.log", "ab")
        proc = subprocess.run(["ip", "netns", "exec", self.ns, "bird", "-c", str(self.conf), "-s", str(self.ctl),
                               "-P", str(self.pidfile)], stdout=log, stderr=log)
        log.close()
        if proc.returncode != 0:
            raise RuntimeError(f"bird did not start: {(self.tmp / 'bird.log').read_text()[-2000:]}")
        self.started = True
        deadline = time.monotonic() + 10
        while not self.ctl.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("bird control socket did not appear")
            time.sleep(0.05)

    def pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.pidfile.read_text().strip())
        return None

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.started = False

    def birdc(self, *cmd: str) -> str:
        # birdc talks over a unix socket, so it works from outside the namespace
        return subprocess.run(["birdc", "-s", str(self.ctl), *cmd], capture_output=True, text=True, check=False).stdout

    def protocols(self) -> dict[str, dict[str, str]]:
        """`show protocols`: name -> {proto, table, state, since, info}."""
        out: dict[str, dict[str, str]] = {}
        for line in self.birdc("show", "protocols").splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[1] == "BGP":
                # since is "HH:MM:SS.mmm" or "YYYY-MM-DD HH:MM:SS" depending on age: keep the raw columns
                name, proto, table, state = parts[:4]
                rest = parts[4:]
                since = " ".join(rest[:2]) if len(rest) > 1 and re.match(r"\d{4}-\d\d-\d\d$", rest[0]) else rest[0]
                info = " ".join(rest[2:] if since.count(" ") else rest[1:])
                out[name] = {"proto": proto, "table": table, "state": state, "since": since, "info": info}
        return out

    def established(self, name: str) -> bool:
        return self.protocols().get(name, {}).get("info", "").startswith("Established")

    def wait_established(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.established(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"bird protocol {name} not Established: {self.birdc('show', 'protocols', 'all', name)}")
            time.sleep(0.1)

    def routes(self, table: str = "master4", protocol: str | None = None) -> dict[str, list[str]]:
        """Prefixes in `table` (optionally only from `protocol`) -> their 'via' next hops."""
        cmd = ["show", "route", "table", table]
        if protocol:
            cmd += ["protocol", protocol]
        routes: dict[str, list[str]] = {}
        current = None
        for line in self.birdc(*cmd).splitlines():
            m = re.match(r"^([0-9a-fA-F:.]+/\d+)\s", line)
            if m:
                current = m.group(1)
                routes.setdefault(current, [])
            via = re.search(r"\bvia ([0-9a-fA-F:.]+)", line)
            if via and current:
                routes[current].append(via.group(1))
        return routes

    def count(self, table: str = "master4", protocol: str | None = None) -> int:
        cmd = ["show", "route", "table", table, "count"]
        if protocol:
            cmd[4:4] = ["protocol", protocol]
        m = re.search(r"(\d+) of \d+ routes", self.birdc(*cmd))
        return int(m.group(1)) if m else 0

    def route_all(self, prefix: str, table: str = "master4") -> str:
        return self.birdc("show", "route", "table", table, "for", prefix, "all")


@contextlib.contextmanager
def bird(ns: str, router_id: str, tmp: Path) -> Iterator[Bird]:
    b = Bird(ns, router_id, tmp)
    try:
        yield b
    finally:
        b.stop()


__all__ = ["Bird", "BirdPeer", "bird", "sh"]
