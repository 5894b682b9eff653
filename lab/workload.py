"""A workload: a namespace attached to its node by `calico-bgp-cni`, exactly as a container runtime does it.

    network = CniNetwork(etcd.unix_url, prefix, bin_dir=install_plugins(run_dir / "cni-bin"))
    ws, ips = attach_workload(net, node_ns, "w1", network, node="n1")     # ADD: an address from IPAM
    detach_workload(node_ns, ws, "w1", network, node="n1")               # DEL: veth, routes, address gone

The plugin is exec'd inside the node's namespace (standing in for a host) with CNI_* in its
environment and the network config on stdin; it asks `calico-bgp-ipam` for the addresses (the
handle is "<network>.<container>") and wires the namespace the way Calico's CNI does it
(dataplane/workload). The lab has no other way to wire a workload.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from lab.net import LabError, Net, sh

NETWORK = "calico-bgp"
PLUGIN = "calico-bgp-cni"
IPAM_PLUGIN = "calico-bgp-ipam"
_MODULES = {PLUGIN: "calico_bgp.cni.plugin", IPAM_PLUGIN: "calico_bgp.cni.ipam_plugin"}


class CniNetwork(NamedTuple):
    """What every workload of one lab shares: where etcd is (a unix socket: the node namespaces
    reach it through the filesystem), the key prefix, the plugins' directory, the families."""

    etcd_endpoint: str
    prefix: str | None
    bin_dir: Path
    ipv6: bool = False

    def config(self, node: str) -> dict[str, Any]:
        """The network config a runtime on `node` would hand the plugin (Calico's fields)."""
        conf: dict[str, Any] = {"cniVersion": "1.1.0", "name": NETWORK, "type": PLUGIN, "nodename": node,
                                "etcd_endpoints": self.etcd_endpoint,
                                "ipam": {"type": IPAM_PLUGIN, "assign_ipv4": "true",
                                         "assign_ipv6": "true" if self.ipv6 else "false"}}
        if self.prefix:
            conf["etcd_prefix"] = self.prefix
        return conf


def install_plugins(bin_dir: Path) -> Path:
    """Both plugins as executables in `bin_dir` (the lab's CNI_PATH), run by this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, module in _MODULES.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from {module} import main; main()' \"$@\"\n")
        path.chmod(0o755)
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
