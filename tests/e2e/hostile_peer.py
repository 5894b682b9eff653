"""The hostile-peer harness: two meshed agents (n1, n2), a good BIRD 2 ToR peering with both, and
our raw BGP speaker (tests/bgpwire) in its own namespace as an eBGP fabric peer of n1.

    hub bridge 198.18.0.0/24:  n1 .1, n2 .2 (agents, workloads)   tor .60 (BIRD, AS 65001, both nodes)
                               evil .50 (raw speaker, AS 65099, BGPPeer "hostile" on n1)
                                    .51 (raw speaker, AS 65098, BGPPeer "storm" on n1: reset storms)
    the raw speakers may announce 198.18.128.0/18 (BGPFilter fabric-space) besides the pool

The raw speaker dials the agent's ExaBGP (which accepts a configured neighbour); nothing listens on
.50/.51, so ExaBGP's own attempts to dial out are refused and do no harm. A case is a few lines:

    def test_something(hostile):
        s = hostile.session()                       # Established with n1, as AS 65099
        s.send(message.update(...))                 # whatever bytes the case is about
        hostile.assert_healthy("n1")                # other sessions up, and a new ToR route is
                                                    # programmed and an old one removed
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import attrs

from lab.bird import Bird, BirdPeer
from lab.cluster import MeshCluster
from lab.net import wait_for
from tests.bgpwire import message as m
from tests.bgpwire.session import RawSpeaker

NODE_AS, TOR_AS = 64512, 65001
TOR = "198.18.0.60"
HOSTILE, HOSTILE_AS = "198.18.0.50", 65099
STORM, STORM_AS = "198.18.0.51", 65098
POOL = "198.19.0.0/16"
# ToR prefixes no block will ever hold (origin-invalid by IPAM: the ToR's BGPPeer has originValidation Disabled)
PROBES = (f"198.19.{i}.0/24" for i in itertools.count(200))
# fabric space outside the pool the raw speakers may announce (BGPFilter fabric-space): inside the
# pool, a prefix no node's block holds is origin-invalid
FABRIC_SPACE = "198.18.128.0/18"

RESOURCES = f"""
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: default}}
spec: {{asNumber: {NODE_AS}, nodeToNodeMeshEnabled: true}}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {{name: pods}}
spec: {{cidr: {POOL}, blockSize: 26}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {{name: n1}}
spec: {{bgp: {{ipv4Address: 198.18.0.1/24}}}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {{name: n2}}
spec: {{bgp: {{ipv4Address: 198.18.0.2/24}}}}
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {{name: fabric-space}}
spec:
  importV4: [{{action: Accept, cidr: {FABRIC_SPACE}, matchOperator: In}}]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: tor}}
spec: {{peerIP: {TOR}, asNumber: {TOR_AS}, originValidation: Disabled}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: hostile}}
spec: {{node: n1, peerIP: {HOSTILE}, asNumber: {HOSTILE_AS}, filters: [fabric-space]}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: storm}}
spec: {{node: n1, peerIP: {STORM}, asNumber: {STORM_AS}, filters: [fabric-space]}}
"""


@attrs.define
class HostilePeer:
    c: MeshCluster
    bird: Bird
    ns: str                                  # the raw speaker's namespace
    probe: str = ""                          # the ToR prefix announced now
    speakers: list[RawSpeaker] = attrs.field(factory=list)

    # ------------------------------------------------------------ the raw speaker
    def session(self, node: str = "n1", source: str = HOSTILE, asn: int = HOSTILE_AS,
                timeout: float = 90.0, hold_time: int = 90) -> RawSpeaker:
        """A new Established session with `node`'s ExaBGP, retried until it accepts us (the agent may
        hold the peer idle after a reset: up to a few minutes with repeated ones, see reset_backoff)."""
        def attempt() -> RawSpeaker | None:
            s = RawSpeaker.connect(self.c.addrs[node], ns=self.ns, source=source, timeout=5)
            try:
                s.establish(asn, source, hold_time, timeout=5)
            except (OSError, TimeoutError):
                s.close()
                raise
            self.speakers.append(s)
            return s
        return wait_for(f"an Established session {source} -> {node}", attempt, timeout=timeout, interval=0.5)

    def reset_backoff(self, name: str = "hostile", address: str = HOSTILE) -> None:
        """Delete and re-create a BGPPeer: the agent forgets the peer's resets (a test that caused
        resets leaves the next one a clean start)."""
        spec = self.c.cli("get", "bgppeer", name, "-o", "yaml").stdout
        self.c.cli("delete", "bgppeer", name)
        wait_for(f"{name} gone from n1's sessions", lambda: all(
            s["peer"] != address for s in self.c.status("n1")["sessions"]), timeout=30)
        self.c.apply(spec)

    # ------------------------------------------------------------ what must keep working
    def session_state(self, node: str, peer: str) -> dict:
        return next(s for s in self.c.status(node)["sessions"] if s["peer"] == peer)

    def others_up(self, node: str) -> bool:
        """Every session of `node` but the raw speaker's is Established."""
        others = [s for s in self.c.status(node)["sessions"] if s["peer"] not in (HOSTILE, STORM)]
        return len(others) >= 2 and all(s["state"] == "Established" for s in others)

    def programming_goes_on(self, node: str, timeout: float = 30.0) -> None:
        """The ToR announces a new prefix and withdraws the last one: both reach `node`'s kernel."""
        old, new = self.probe, next(PROBES)
        self.bird.configure(static4=[new])
        self.probe = new
        wait_for(f"{new} from the ToR in {node}'s kernel (and {old or 'nothing'} withdrawn)", lambda: (
            (r := self.c.routes(node)).get(new) == [TOR] and (not old or old not in r)), timeout=timeout)

    def assert_healthy(self, node: str = "n1") -> None:
        wait_for(f"{node}'s mesh and ToR sessions Established", lambda: self.others_up(node), timeout=30)
        self.programming_goes_on(node)

    def kernel(self, node: str = "n1") -> dict[str, list[str]]:
        """prefix -> gateways of the agent's routes in `node`'s main table."""
        return self.c.routes(node)

    def rejected(self, node: str = "n1") -> dict[str, str]:
        """prefix -> reason, from `routes --rejected`."""
        import json
        out = json.loads(self.c.cli("routes", "--node", node, "--rejected", "-o", "json").stdout)
        return {r["prefix"]: r.get("reason", "") for r in out.get(node, [])}

    def announce(self, s: RawSpeaker, prefixes: list[str], attributes: list | None = None) -> None:
        """A well-formed UPDATE from the hostile peer (ORIGIN IGP, AS_PATH its AS, NEXT_HOP itself),
        or the `attributes` given, exactly as given."""
        attrs_ = attributes if attributes is not None else [
            m.origin(0), m.as_path([(m.AS_SEQUENCE, [HOSTILE_AS])]), m.next_hop(HOSTILE)]
        s.send(b"".join(m.updates(attrs_, prefixes)))

    def events(self, node: str = "n1") -> list[dict]:
        import json
        out = self.c.cli("events", "--node", node, "-o", "json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def cpu_seconds(self, pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def logs(self) -> str:
        return self.c.logs()

    def close_speakers(self) -> None:
        for s in self.speakers:
            s.close()
        self.speakers.clear()


def bad_update_resetting_exabgp() -> bytes:
    """An UPDATE ExaBGP itself answers with a NOTIFICATION (3/10 Invalid Network Field: a /33)."""
    good = [m.origin(0), m.as_path([(m.AS_SEQUENCE, [STORM_AS])]), m.next_hop(STORM)]
    attrs_ = b"".join(m.encode_attr(a) for a in good)
    return m.message(m.UPDATE, b"\x00\x00" + len(attrs_).to_bytes(2, "big") + attrs_ + b"\x21\xc6\x13\x01\x00\x00")


@contextlib.contextmanager
def hostile_cluster(etcd) -> Iterator[HostilePeer]:
    run_dir = Path(tempfile.mkdtemp(prefix="calico-bgp-hostile-"))
    c = MeshCluster(run_dir, etcd, f"/hostile{os.getpid()}/calico-bgp/v1", f"cbh{os.getpid() % 1000}")
    bird = None
    h = None
    try:
        c.apply(RESOURCES)
        for name, i in (("n1", 1), ("n2", 2)):
            c.add_node(name, i)
            c.add_workload(name)
            c.start_agent(name, "--log-level", "info")
        tor_ns = c.add_node("tor", 60)
        bird = Bird(tor_ns, router_id=TOR, tmp=run_dir / "bird")
        bird.configure([BirdPeer(name=n, local_as=TOR_AS, neighbor=c.addrs[n], peer_as=NODE_AS, local_address=TOR)
                        for n in ("n1", "n2")], static4=[])
        evil = c.add_node("evil", 50)
        c.net.address(evil, "eth0", f"{STORM}/24")
        h = HostilePeer(c, bird, evil)
        for n in ("n1", "n2"):
            wait_for(f"{n}'s mesh and ToR sessions up", lambda n=n: h.others_up(n), timeout=90)
        h.programming_goes_on("n1", timeout=60)
        yield h
    except BaseException:
        print(c.logs())
        raise
    finally:
        if h is not None:
            h.close_speakers()
        if bird is not None:
            bird.stop()
        c.teardown()
        shutil.rmtree(run_dir, ignore_errors=True)
