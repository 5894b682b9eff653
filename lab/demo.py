"""The README's first command, until the lab lands: IPAM end to end on a real etcd.

    python -m lab.demo

Starts etcd on loopback (temporary data dir), applies two pools and three nodes, allocates
addresses for the nodes through the `calico-bgp ipam` CLI, shows and checks the result,
releases everything, and stops etcd. Every step prints what it runs.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time

import trio

from lab.etcd import EtcdServer

PREFIX = "/calico-bgp-demo/v1"
STEPS = 7


def step(i: int, what: str) -> None:
    print(f"\n[{i}/{STEPS}] {what}", flush=True)


def cli(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    shown = "calico-bgp " + " ".join(shlex.quote(a) for a in args)
    print(f"$ {shown}", flush=True)
    cmd = [sys.executable, "-c", "from calico_bgp.cli import main; main()",
           "--etcd-endpoints", url, "--prefix", PREFIX, *args]
    res = subprocess.run(cmd, text=True, capture_output=True)
    out = (res.stdout + res.stderr).rstrip()
    if out:
        print("  " + out.replace("\n", "\n  "), flush=True)
    if check and res.returncode != 0:
        raise SystemExit(f"demo failed: `{shown}` exited {res.returncode}")
    return res


async def apply_resources(url: str) -> None:
    from calico_bgp import model
    from calico_bgp.datastore import EtcdClient, Keys
    from calico_bgp.resources import ResourceStore

    pools = [model.IPPool(model.Metadata("demo-v4"), model.IPPoolSpec(cidr="198.19.0.0/20", block_size=26)),
             model.IPPool(model.Metadata("demo-v6"), model.IPPoolSpec(cidr="2001:db8:1::/112", block_size=122))]
    nodes = [model.Node(model.Metadata(f"node-{c}", labels={"rack": "r1"}),
                        model.NodeSpec(bgp=model.NodeBGPSpec(ipv4_address=f"198.18.0.{i + 1}/24")))
             for i, c in enumerate("abc")]
    async with EtcdClient([url]) as client:
        for r in await ResourceStore(client, Keys(PREFIX)).apply_all([*pools, *nodes]):
            print(f"  {r.kind} {r.name}: {r.action}")


def main() -> None:
    t0 = time.monotonic()
    step(1, "starting etcd on loopback (temporary data dir)")
    with EtcdServer() as etcd:
        print(f"  etcd up at {etcd.url}")
        step(2, "applying pools demo-v4 (198.19.0.0/20, /26 blocks), demo-v6 (2001:db8:1::/112, /122) and nodes a, b, c")
        trio.run(apply_resources, etcd.url)
        step(3, "allocating: node-a 3 workloads, node-b 2, node-c 1 (each one IPv4, some one IPv6)")
        for node, n in (("node-a", 3), ("node-b", 2), ("node-c", 1)):
            for i in range(n):
                cli(etcd.url, "ipam", "allocate", "--node", node, "--handle", f"{node}-pod{i}", "--count", "2")
            cli(etcd.url, "ipam", "allocate", "--node", node, "--handle", f"{node}-pod0-v6", "--ipv6")
        step(4, "showing pools and blocks (each node got its own affine block)")
        cli(etcd.url, "ipam", "show", "--show-blocks", "--show-borrowed")
        step(5, "checking consistency")
        cli(etcd.url, "ipam", "check")
        step(6, "releasing every handle")
        for node, n in (("node-a", 3), ("node-b", 2), ("node-c", 1)):
            for i in range(n):
                cli(etcd.url, "ipam", "release", "--handle", f"{node}-pod{i}")
            cli(etcd.url, "ipam", "release", "--handle", f"{node}-pod0-v6")
        cli(etcd.url, "ipam", "show")
        cli(etcd.url, "ipam", "check")
        step(7, "stopping etcd")
    print(f"\ndone in {time.monotonic() - t0:.1f}s: IPAM allocated, showed, checked and released on a real etcd")


if __name__ == "__main__":
    main()
