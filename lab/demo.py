"""The README's first command: the rack topology on network namespaces, checked and shown.

    python -m lab.demo          # (./bootstrap.sh demo) bring up containerlab/rack.clab.yml, check, status
    python -m lab.demo down     # (./bootstrap.sh demo down) remove everything it made

Runs the same `calico-bgp lab` commands a user would, printing each one first. The lab stays up
afterwards so it can be explored (`calico-bgp lab status`, `calico-bgp routes`, `lab chaos ...`).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = ROOT / "containerlab" / "rack.clab.yml"
RUN_DIR = Path("/run/calico-bgp-lab/rack")


def calico_bgp(*args: str, check: bool = True) -> int:
    print(f"\n$ calico-bgp {' '.join(shlex.quote(a) for a in args)}", flush=True)
    rc = subprocess.run([sys.executable, "-m", "calico_bgp", *args], cwd=ROOT).returncode
    if check and rc != 0:
        raise SystemExit(f"demo failed: `calico-bgp {' '.join(args)}` exited {rc}")
    return rc


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "up"
    if action not in ("up", "down"):
        print("usage: python -m lab.demo [up|down]", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("the lab creates network namespaces: run the demo as root (sudo ./bootstrap.sh demo)", file=sys.stderr)
        return 1
    if action == "down":
        return calico_bgp("lab", "down", "--run-dir", str(RUN_DIR))
    t0 = time.monotonic()
    if (RUN_DIR / "state.json").exists() or (RUN_DIR / "ledger").exists():
        print(f"a rack lab is already up in {RUN_DIR}: taking it down for a fresh demo")
        calico_bgp("lab", "down", "--run-dir", str(RUN_DIR))
    calico_bgp("lab", "up", str(TOPOLOGY.relative_to(ROOT)))
    rc = calico_bgp("lab", "check", "--timeout", "120", check=False)
    calico_bgp("lab", "status")
    print(f"\ndemo {'passed' if rc == 0 else 'FAILED'} in {time.monotonic() - t0:.0f}s. The lab keeps running; try")
    print("  .venv/bin/calico-bgp lab chaos tor-stop      # stop a ToR: lost pings, re-convergence, routes lost")
    print(f"  .venv/bin/calico-bgp --etcd-endpoints unix://{RUN_DIR}/etcd/etcd.sock:2379 routes --rejected")
    print("and take it down with\n  ./bootstrap.sh demo down      # or: .venv/bin/calico-bgp lab down")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
