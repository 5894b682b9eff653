"""A workload: a namespace attached to its node by `calico-bgp-cni`, exactly as a container runtime does it.

    network = CniNetwork(etcd.unix_url, prefix, bin_dir=install_plugins(run_dir / "cni-bin"))
    ws, ips = attach_workload(net, node_ns, "w1", network, node="n1")     # ADD: an address from IPAM
    detach_workload(node_ns, ws, "w1", network, node="n1")               # DEL: veth, routes, address gone

The plugins and the network config are what `calico-bgp cni install` writes (calico_bgp/cni/install.py:
its launchers, its conflist for the node); the plugin is exec'd inside the node's namespace
(standing in for a host) with CNI_* in its environment and the conflist's plugin entry on stdin, as
libcni hands it (the list's name and cniVersion folded in). It asks `calico-bgp-ipam` for the
addresses (the handle is "<network>.<container>") and wires the namespace the way Calico's CNI does
it (dataplane/workload). The lab has no other way to wire a workload.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from calico_bgp.cni import install
from lab.net import LabError, Net, sh

NETWORK = install.NETWORK
PLUGIN = "calico-bgp-cni"


class CniNetwork(NamedTuple):
    """What every workload of one lab shares: where etcd is (a unix socket: the node namespaces
    reach it through the filesystem), the key prefix, the plugins' directory, the families, and
    where the plugins log (None: their stderr)."""

    etcd_endpoint: str
    prefix: str | None
    bin_dir: Path
    ipv6: bool = False
    log_file: str | None = None

    def config(self, node: str) -> dict[str, Any]:
        """The plugin entry of `cni install`'s conflist for `node`, as libcni hands it to the plugin."""
        listed = install.conflist(node, [self.etcd_endpoint], self.prefix, log_file=self.log_file)
        # libcni (api.go, buildOneConfig) passes the highest of the list's cniVersions it supports as
        # cniVersion, and only name and cniVersion: the plugin answers in that version
        newest = max(listed["cniVersions"], key=lambda v: tuple(int(x) for x in v.split(".")))
        conf = {"cniVersion": newest, "name": listed["name"], **listed["plugins"][0]}
        if self.ipv6:
            conf["ipam"] = {**conf["ipam"], "assign_ipv6": "true"}
        return conf


def install_plugins(bin_dir: Path) -> Path:
    """Both plugins' launchers in `bin_dir` (the lab's CNI_PATH), as `cni install` writes them."""
    import calico_bgp

    root = os.path.dirname(os.path.dirname(os.path.abspath(calico_bgp.__file__)))
    files = install.plan(str(bin_dir), str(bin_dir), {}, sys.executable, install.python_paths(root))
    install.write([f for f in files if os.path.basename(f.path) in install.PLUGINS])
    return bin_dir


def run_plugin(node_ns: str, command: str, container: str, netns: str, network: CniNetwork, node: str,
               ifname: str = "eth0", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One plugin command in the node's namespace; its result (ADD) or {}; LabError with the CNI error."""
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": str(network.bin_dir)}
    conf = {**network.config(node), **(extra or {})}
    res = subprocess.run(["ip", "netns", "exec", node_ns, str(network.bin_dir / PLUGIN)], input=json.dumps(conf),
                         capture_output=True, text=True, env=env, timeout=60)
    out = json.loads(res.stdout) if res.stdout.strip() else {}
    if res.returncode != 0:
        raise LabError(f"{PLUGIN} {command} for {container} on {node}: {out.get('msg', res.stderr.strip())} "
                       f"(code {out.get('code', res.returncode)})")
    return out


def ensure_gateway_route(node_ns: str) -> None:
    """Proxy ARP answers a workload's ARP for 169.254.1.1 only when the node has a route to it: a
    default route is one (Calico's issue #3270). Lab nodes have none, so each gets this one."""
    sh("ip", "route", "replace", "169.254.1.1/32", "dev", "lo", ns=node_ns)


def attach_workload(net: Net, node_ns: str, name: str, network: CniNetwork, node: str) -> tuple[str, list[str]]:
    """Create workload namespace `name` and ADD it through the plugin; (its namespace, its addresses)."""
    ws = net.namespace(name)
    ensure_gateway_route(node_ns)
    result = run_plugin(node_ns, "ADD", name, f"/run/netns/{ws}", network, node)
    return ws, [ip["address"].split("/", 1)[0] for ip in result.get("ips", [])]


def detach_workload(node_ns: str, ws: str, name: str, network: CniNetwork, node: str) -> None:
    """DEL through the plugin: the veth, its routes and the addresses go; the namespace stays."""
    run_plugin(node_ns, "DEL", name, f"/run/netns/{ws}", network, node)
