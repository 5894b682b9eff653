"""Fabric routers from Debian in a namespace: FRR, BIRD 2, GoBGP, started with a topology's bound configs.

Each daemon runs in the foreground as a lab `Process` (its own process group, recorded in the
ledger), with its sockets and pid files under the router's state directory, so nothing is left in
/etc or /run. `sessions()` reads each router's BGP sessions in a common shape for `lab status`
and `lab check`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import attrs

from lab.clab import NodeDef
from lab import bird
from lab.net import LabError, Ledger, Process, sh, wait_for

log = logging.getLogger("lab.routers")
FRR_DIR = Path("/usr/lib/frr")
FRR_ALWAYS = ("zebra", "staticd")


@attrs.frozen
class RouterSession:
    peer: str
    state: str          # "Established" or the daemon's own word
    prefixes: int = 0   # received (accepted) prefixes, when the daemon says


def parse_daemons(text: str) -> list[str]:
    """FRR's `daemons` file -> the daemons to start, zebra first (zebra and staticd are always on)."""
    enabled = [d for d in FRR_ALWAYS]
    for line in text.splitlines():
        m = re.match(r"^\s*([a-z0-9]+d)\s*=\s*(yes|no)\s*$", line)
        if m and m.group(2) == "yes" and m.group(1) not in enabled:
            enabled.append(m.group(1))
    return enabled


def frr_config(node: NodeDef) -> str:
    """The node's FRR configuration: the integrated frr.conf, or the per-daemon files it binds
    (zebra.conf first), as one text for vtysh."""
    confs = [b for b in node.file_binds() if b.target.startswith("/etc/frr/") and b.target.endswith(".conf")
             and not b.target.endswith("/vtysh.conf")]
    confs.sort(key=lambda b: (not b.target.endswith("/frr.conf"), not b.target.endswith("/zebra.conf"), b.target))
    return "\n".join(Path(b.source).read_text() for b in confs)


class Router:
    kind = ""

    def __init__(self, node: NodeDef, ns: str, state_dir: Path) -> None:
        self.node, self.ns, self.dir = node, ns, Path(state_dir)

    def start(self, ledger: Ledger) -> list[int]:
        raise NotImplementedError

    def sessions(self) -> list[RouterSession]:
        raise NotImplementedError

    def wrappers(self) -> dict[str, str]:
        """Commands exec steps may use, pointed at this router's sockets (name -> shell script body)."""
        return {}

    def version(self) -> str:
        return ""


def _traversable(path: Path) -> None:
    """FRR drops to the frr user: every directory above its state dir must be traversable."""
    for p in [path, *path.parents]:
        if str(p) == "/":
            break
        mode = p.stat().st_mode
        if not mode & 0o001:
            os.chmod(p, mode | 0o011)


class Frr(Router):
    kind = "frr"

    def start(self, ledger: Ledger) -> list[int]:
        self.dir.mkdir(parents=True, exist_ok=True)
        _traversable(self.dir)
        daemons_bind = self.node.bind_for("/daemons")
        daemons = parse_daemons(Path(daemons_bind.source).read_text()) if daemons_bind else [*FRR_ALWAYS, "bgpd"]
        missing = [d for d in daemons if not (FRR_DIR / d).exists()]
        if missing:
            raise LabError(f"node {self.node.name}: FRR daemon(s) {', '.join(missing)} enabled in daemons but not installed")
        _clear(self.dir, "*.vty", "*.pid", "zserv.api")  # a restart must not see the last run's sockets
        (self.dir / "frr.conf").write_text(frr_config(self.node))
        empty = self.dir / "empty.conf"
        empty.write_text("")
        subprocess.run(["chown", "-R", "frr:frr", str(self.dir)], check=True)
        pids = []
        for d in daemons:
            argv = [str(FRR_DIR / d), "-N", self.ns, "-F", "datacenter", "--vty_socket", str(self.dir),
                    "-z", str(self.dir / "zserv.api"), "-i", str(self.dir / f"{d}.pid"), "-f", str(empty), "-P", "0"]
            pids.append(Process(ledger, self.ns, argv, self.dir / f"{d}.log").pid)
            if d == "zebra":
                wait_for(f"{self.node.name}: zebra's zserv.api", lambda: (self.dir / "zserv.api").exists(), 15, interval=0.05)
        for d in daemons:
            wait_for(f"{self.node.name}: {d}'s vty socket", lambda d=d: (self.dir / f"{d}.vty").exists(), 15, interval=0.05)
        res = subprocess.run(["vtysh", "--vty_socket", str(self.dir), "-f", str(self.dir / "frr.conf")],
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise LabError(f"node {self.node.name}: vtysh could not apply frr.conf: {(res.stdout + res.stderr).strip()}")
        return pids

    def vtysh(self, *cmds: str) -> str:
        args = ["vtysh", "--vty_socket", str(self.dir)]
        for c in cmds:
            args += ["-c", c]
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout

    def sessions(self) -> list[RouterSession]:
        try:
            data = json.loads(self.vtysh("show bgp summary json") or "{}")
        except json.JSONDecodeError:
            return []
        out = {}
        for fam in data.values():
            if not isinstance(fam, dict):
                continue
            for peer, info in (fam.get("peers") or {}).items():
                out[peer] = RouterSession(peer, info.get("state", "?"), int(info.get("pfxRcd", 0) or 0))
        return list(out.values())

    def wrappers(self) -> dict[str, str]:
        return {"vtysh": f'exec /usr/bin/vtysh --vty_socket {self.dir} "$@"'}

    def version(self) -> str:
        m = re.search(r"FRRouting (\S+)", self.vtysh("show version"))
        return f"FRR {m.group(1)}" if m else "FRR"


class Bird(Router):
    kind = "bird"

    def __init__(self, node: NodeDef, ns: str, state_dir: Path) -> None:
        super().__init__(node, ns, state_dir)
        self.daemon = bird.Bird(ns, None, self.dir)

    @property
    def ctl(self) -> Path:
        return self.daemon.ctl

    def start(self, ledger: Ledger) -> list[int]:
        conf = self.node.bind_for("bird.conf")
        assert conf is not None
        try:
            return [self.daemon.start(ledger, config=Path(conf.source).read_text())]
        except LabError as exc:
            raise LabError(f"node {self.node.name}: {exc}") from None

    def birdc(self, *cmd: str) -> str:
        return self.daemon.birdc(*cmd)

    def sessions(self) -> list[RouterSession]:
        return [RouterSession(s.peer, s.state, s.imported) for s in self.daemon.sessions()]

    def wrappers(self) -> dict[str, str]:
        return {"birdc": f'exec /usr/sbin/birdc -s {self.ctl} "$@"', "birdcl": f'exec /usr/sbin/birdcl -s {self.ctl} "$@"'}

    def version(self) -> str:
        return self.daemon.version()


class GoBgp(Router):
    kind = "gobgp"

    def start(self, ledger: Ledger) -> list[int]:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.node.bind_for(".toml", ".yaml", ".yml", ".json")
        assert conf is not None
        ext = Path(conf.source).suffix.lstrip(".").replace("yml", "yaml")
        target = self.dir / f"gobgpd.{ext}"
        shutil.copy(conf.source, target)
        p = Process(ledger, self.ns, ["gobgpd", "-f", str(target), "-t", ext, "-p", "--pprof-disable",
                                      "--api-hosts", "127.0.0.1:50051"], self.dir / "gobgpd.log")
        wait_for(f"{self.node.name}: gobgpd's API", lambda: self.gobgp("global").returncode == 0, 15, interval=0.05)
        return [p.pid]

    def gobgp(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh("gobgp", *args, ns=self.ns, check=False, timeout=30)

    def sessions(self) -> list[RouterSession]:
        try:
            data = json.loads(self.gobgp("neighbor", "-j").stdout or "[]")
        except json.JSONDecodeError:
            return []
        out = []
        for n in data:
            addr = n.get("conf", {}).get("neighbor_address", "?")
            st = n.get("state", {}).get("session_state", "?")
            state = {6: "Established", "established": "Established", "ESTABLISHED": "Established"}.get(st, str(st))
            recv = 0
            for af in n.get("afi_safis") or []:
                recv += int((af.get("state") or {}).get("received", 0) or 0)
            out.append(RouterSession(addr, state, recv))
        return out

    def version(self) -> str:
        res = subprocess.run(["gobgpd", "--version"], capture_output=True, text=True)
        m = re.search(r"(\d+\.\d+\.\d+)", res.stdout + res.stderr)
        return f"GoBGP {m.group(1)}" if m else "GoBGP"


ROUTERS: dict[str, type[Router]] = {"frr": Frr, "bird": Bird, "gobgp": GoBgp}


def router_for(node: NodeDef, ns: str, state_dir: Path) -> Router:
    return ROUTERS[node.role](node, ns, state_dir)


def _clear(directory: Path, *patterns: str) -> None:
    for pattern in patterns:
        for p in directory.glob(pattern):
            p.unlink(missing_ok=True)
