"""One worker of the parallel ADD/DEL cycles: `python -m tests.integration.cni_ipam_worker CONF_JSON WORKER
CYCLES HELD` runs calico-bgp-ipam's ADD and DEL in this process (skel.run, as the console script
does), keeping up to HELD containers attached at once, and prints one JSON line per container:
its address, when the ADD answered and when its DEL began (time.monotonic, shared by all workers)."""
from __future__ import annotations

import io
import json
import sys
import time

from calico_bgp.cni import skel
from calico_bgp.cni.ipam_plugin import HANDLERS, PLUGIN


def call(command: str, conf: bytes, container: str) -> dict:
    out = io.StringIO()
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": f"/var/run/netns/{container}",
           "CNI_IFNAME": "eth0"}
    code = skel.run(PLUGIN, HANDLERS, environ=env, stdin=io.BytesIO(conf), stdout=out)
    doc = json.loads(out.getvalue()) if out.getvalue().strip() else {}
    if code != 0:
        raise SystemExit(f"{command} {container}: {doc}")
    return doc


def main() -> None:
    conf, worker, cycles, held = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = json.dumps(conf).encode()
    live: list[dict] = []
    for i in range(cycles):
        cid = f"w{worker}-{i}"
        doc = call("ADD", data, cid)
        live.append({"container": cid, "node": conf["nodename"], "ips": [ip["address"] for ip in doc["ips"]],
                     "added": time.monotonic()})
        if len(live) > held or i == cycles - 1:
            for row in (live if i == cycles - 1 else live[:1]):
                row["deleting"] = time.monotonic()
                call("DEL", data, row["container"])
                call("DEL", data, row["container"])  # a second DEL is fine too
                print(json.dumps(row), flush=True)
            live = [] if i == cycles - 1 else live[1:]


if __name__ == "__main__":
    main()
