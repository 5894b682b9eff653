"""What the calico-bgp-ipam tests share: a cluster's pools and nodes in etcd, the plugin run in-process
(skel.run, as its console script does) or exec'd as a runtime runs it, and `ipam check`."""
from __future__ import annotations

import io
import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from calico_bgp.cli import main as cli
from calico_bgp.cni import install, skel
from calico_bgp.cni.ipam_plugin import HANDLERS, PLUGIN

ROOT = str(Path(__file__).resolve().parents[2])
_ids = itertools.count()

CLUSTER = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool4}
spec: {cidr: 198.18.96.0/22, blockSize: 28}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool6}
spec: {cidr: "2001:db8:96::/120", blockSize: 124}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tiny4}
spec: {cidr: 198.18.100.0/30, blockSize: 30, nodeSelector: "tiny == 'yes'"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tiny6}
spec: {cidr: "2001:db8:100::/126", blockSize: 126}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {tiny: "yes"}}
spec: {bgp: {ipv4Address: 198.18.0.1/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2}
spec: {bgp: {ipv4Address: 198.18.0.2/24}}
"""


class Cluster:
    """A key prefix of the test etcd holding CLUSTER; the plugin's network config for it."""

    def __init__(self, etcd_url: str, tmp: Path, endpoint: str | None = None) -> None:
        self.url, self.tmp = etcd_url, tmp
        self.endpoint = endpoint or etcd_url
        self.prefix = f"/cni{os.getpid()}-{next(_ids)}/calico-bgp/v1"
        res = self.cli("apply", "-f", "-", input=CLUSTER)
        assert res.exit_code == 0, res.output
        self.bin_dir = tmp / "bin"
        files = install.plan(str(self.bin_dir), str(tmp / "conf"), {}, sys.executable, install.python_paths(ROOT))
        install.write(files[:2])

    def cli(self, *args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, ["--etcd-endpoints", self.url, "--prefix", self.prefix, *args], input=input)

    def conf(self, node: str = "n1", **over: Any) -> dict[str, Any]:
        conf = {"cniVersion": "1.1.0", "name": "net1", "type": "ptp", "etcd_endpoints": self.endpoint,
                "etcd_prefix": self.prefix, "nodename": node, "ipam_lock_file": str(self.tmp / "ipam.lock"),
                "ipam": {"type": PLUGIN}}
        conf.update(over)
        return conf

    def env(self, command: str, container: str, **over: str) -> dict[str, str]:
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": f"/var/run/netns/{container}",
                "CNI_IFNAME": "eth0", "CNI_PATH": str(self.bin_dir), **over}

    def check(self) -> dict[str, Any]:
        res = self.cli("ipam", "check", "-o", "json")
        return json.loads(res.output)

    def in_use(self) -> int:
        return sum(p["inUse"] for p in self.check()["pools"])

    def addresses(self) -> dict[str, list[Any]]:
        """handle -> the addresses it holds (ipam InUse values), read from etcd."""
        from calico_bgp.datastore.blocking import BlockingClient, drive
        from calico_bgp.datastore.keys import Keys
        from ipam.store import IPAMStore

        with BlockingClient([self.url]) as client:
            snap = drive(IPAMStore(client, Keys(self.prefix)).snapshot())
        out: dict[str, list[Any]] = {}
        for stored in snap.blocks.values():
            for u in stored.value.in_use():
                out.setdefault(u.handle, []).append(u)
        assert set(out) == set(snap.handles), "block and handle records disagree"
        return out


def invoke(command: str, conf: dict[str, Any] | bytes, environ: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
    """The plugin in this process, as its console script runs it: (exit code, the JSON it printed)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    try:
        code = skel.run(PLUGIN, HANDLERS, environ={**environ, "CNI_COMMAND": command}, stdin=io.BytesIO(data),
                        stdout=out)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    text = out.getvalue().strip()
    return code, (json.loads(text) if text else None)


def exec_plugin(exe: str, conf: dict[str, Any], environ: dict[str, str], ns: str | None = None) -> tuple[int, Any, str]:
    """A plugin exec'd as a runtime does (optionally inside namespace `ns`): (exit code, stdout JSON, stderr)."""
    argv = ["ip", "netns", "exec", ns, exe] if ns else [exe]
    p = subprocess.run(argv, input=json.dumps(conf).encode(), env={**os.environ, **environ}, capture_output=True,
                       timeout=60)
    text = p.stdout.decode().strip()
    return p.returncode, (json.loads(text) if text else None), p.stderr.decode()
