"""The node agent: one trio nursery wiring etcd, the speaker, the RIB and the kernel.

    cluster view (etcd watch) --> control.ControlLoop: sessions, neighbours, import policy, exports
    speaker events (ExaBGP)   --> session_events.SessionEvents: intake -> damping -> RIB -> reflection
    RIB + local blocks        --> kernel_writer.KernelWriter: the route programmer (coalesced batches)
    timers                    --> upkeep.Upkeep: grace, damping, stale routes, repairs, memory, IPAM, filters, NAT
    everything                --> status/<node> (StatusPublisher, from a snapshot) and the metrics collector

What the agent knows is one AgentState the jobs share; decisions live in pure modules (routing/,
neighbors, throttle, memory, status); this file builds the parts and runs them.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from calico_bgp.agent import sampling
from calico_bgp.agent import status as st
from calico_bgp.agent.bfd import BfdAgent, node_planner
from calico_bgp.agent.control import ControlLoop
from calico_bgp.agent.kernel_writer import KernelWriter
from calico_bgp.agent.publisher import StatusPublisher
from calico_bgp.agent.session_events import SessionEvents
from calico_bgp.agent.snapshot import origin_invalid_news
from calico_bgp.agent.state import AgentState
from calico_bgp.agent.upkeep import Upkeep
from calico_bgp.datastore import DatastoreError, Keys
from calico_bgp.resources import model
from calico_bgp.resources.node import Node, NodeAddress, NodeBGPSpec, NodeSpec
from calico_bgp.resources.store import ResourceStore
from calico_bgp.resources.view import ClusterView
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.speaker import Speaker
from calico_bgp.telemetry.collector import NodeSample
from calico_bgp.telemetry.eventlog import EventLog
from calico_bgp.telemetry.metrics import Metrics
from dataplane.logfmt import event
from dataplane.routes.programmer import RouteProgrammer
from dataplane.routes.route import Route

log = logging.getLogger("calico_bgp.agent.node")
VERSION = "0.1.0"
REGISTERED_WAIT = 2.0  # seconds the first sync waits for the etcd watch to bring back our own Node registration


@attrs.frozen
class AgentOptions:
    name: str
    ip: str | None = None                  # "198.18.0.1/24" or bare; None: autodetect or keep the Node's
    ip6: str | None = None
    ip_autodetect: str | None = None
    table: int = 254
    protocol: int | None = None            # None: dataplane's default
    metrics_port: int | None = None
    state_dir: Path = Path("/run/calico-bgp")
    grace_timeout: float = 30.0            # keep adopted kernel routes at most this long after start
    settle: float = 1.0                    # quiet time after the last session came up before ending grace
    status_ttl: int = 15
    ipam_sweep: float = 60.0               # seconds between sweeps releasing this node's empty blocks
    filter_mode: str = "auto"              # PolicyFilter enforcement: auto | xdp | nft | iptables | off
    ipam_service: bool = True              # serve calico-bgp-ipam's warm process (agent/ipam_service.py)
    ipam_service_idle: float = 600.0       # seconds without an invocation before that process leaves


class NodeAgent:
    def __init__(self, client: Any, keys: Keys, opts: AgentOptions, metrics: Metrics | None = None,
                 speaker: Speaker | None = None) -> None:
        """`speaker`: one made (and its ExaBGP perhaps started) before the agent; else the agent's own."""
        self.client, self.keys, self.opts = client, keys, opts
        self.store = ResourceStore(client, keys)
        self.view = ClusterView(client, keys)
        self.metrics = metrics or Metrics()
        self.speaker = speaker or Speaker(Path(opts.state_dir) / "speaker")
        kw = {} if opts.protocol is None else {"protocol": opts.protocol}
        self.programmer = RouteProgrammer(table=opts.table, **kw)
        self.events = EventLog(client, keys.events(opts.name), opts.name)
        self.state = AgentState(started=trio.current_time())
        self.publisher = StatusPublisher(client, keys.status(opts.name), opts.status_ttl, self.build_status,
                                         lambda: self.state.last_update)
        self.kernel = KernelWriter(self.programmer, self.metrics, self._kernel_inputs, self.publisher.mark_dirty)
        self.policy = None
        if opts.filter_mode != "off":
            from calico_bgp.agent.policy import PolicyFilterReconciler
            from dataplane.filters.engine import FilterEngine

            state_dir = Path(opts.state_dir)
            self.policy = PolicyFilterReconciler(
                FilterEngine(opts.filter_mode, pin_root=state_dir / "bpf", state_dir=state_dir / "filters"), self.metrics)
        from calico_bgp.agent.nat import NatReconciler
        from dataplane.nat.engine import NatEngine

        # IPPool natOutgoing, in the filters' netfilter tool
        self.nat = NatReconciler(NatEngine(state_dir=Path(opts.state_dir) / "nat"))
        self.sessions = SessionEvents(self.state, self.speaker, self.events, self.metrics, self.kernel,
                                      opts.grace_timeout, self.publisher.mark_dirty, lambda: self.control.poke())
        self.bfd = BfdAgent(self.state, self.sessions, self.speaker, self.events, self.metrics,
                            Path(opts.state_dir), node_planner(opts.name), self.publisher.mark_dirty)
        self.upkeep = Upkeep(self.state, opts.name, self.speaker, self.programmer, self.kernel, self.events,
                             self.metrics, self.sessions.warn)
        self.control = ControlLoop(self.state, opts.name, self.view, self.speaker, self.events, self.kernel,
                                   self.sessions, self.upkeep.released, self.synced)
        self.ready = self.control.ready
        self._token: trio.lowlevel.TrioToken | None = None
        self.metrics.watch(self.metrics_sample)

    def synced(self) -> None:
        """After each sync of the cluster: the policy filters, the NAT and the BFD plan follow it."""
        self.upkeep.policy_dirty_set()
        self.bfd.replan()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        Path(self.opts.state_dir).mkdir(parents=True, exist_ok=True)
        self._token = trio.lowlevel.current_trio_token()
        opts, upkeep = self.opts, self.upkeep
        async with self.programmer:
            event(log, "agent_start", node=opts.name, adopted_routes=self.programmer.adopted)
            async with trio.open_nursery() as nursery:
                # ExaBGP first: its start (~0.3 s of imports) overlaps the etcd sync and the Node
                # registration instead of following them; it waits with no neighbours until the
                # control loop gives it some
                await nursery.start(self.speaker.run)
                await self._start_view(nursery)
                await nursery.start(self.events.run)
                await self._ensure_node()
                await nursery.start(self.programmer.run)
                nursery.start_soon(self.sessions.run)
                await nursery.start(self.bfd.run)
                nursery.start_soon(self.control.run)
                nursery.start_soon(self.kernel.run)
                nursery.start_soon(upkeep.grace, self.ready, opts.grace_timeout, opts.settle)
                nursery.start_soon(upkeep.damping_timer)
                nursery.start_soon(self.publisher.run)
                nursery.start_soon(upkeep.stale_sweeper, opts.settle)
                nursery.start_soon(upkeep.give_back_memory)
                nursery.start_soon(upkeep.summaries)
                nursery.start_soon(upkeep.ipam_sweeper, self.client, self.keys, opts.ipam_sweep)
                if self.policy is not None:
                    nursery.start_soon(upkeep.policy_filters, self.policy)
                nursery.start_soon(upkeep.nat_outgoing, self.nat, opts.filter_mode)
                if opts.ipam_service:
                    nursery.start_soon(self._serve_ipam)
                if opts.metrics_port:
                    self.metrics.serve(opts.metrics_port, addr="0.0.0.0")
                task_status.started()

    async def _serve_ipam(self) -> None:
        """calico-bgp-ipam's warm process (agent/ipam_service.py), from a settle time after the first
        sync: its few ms stay off the way to the first sessions (plugins run in process until then)."""
        await self.ready.wait()
        await trio.sleep(self.opts.settle)
        from calico_bgp.agent.ipam_service import IpamServiceOwner

        await IpamServiceOwner(self.opts.ipam_service_idle).run()

    async def _start_view(self, nursery: trio.Nursery) -> None:
        """The first sync waits for etcd with back-off: an agent started before its datastore just waits."""
        delay = 0.5
        while True:
            try:
                await nursery.start(self.view.run)
                return
            except DatastoreError as exc:
                event(log, "etcd_wait", logging.WARNING, reason=str(exc), retry_in=delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _ensure_node(self) -> None:
        """Create or update our Node: BGP addresses from the flags (or autodetected when the Node has
        none) and spec.addresses from this host's interfaces, so sessions to a ToR on another link of a
        dual-homed node start from the address on that link."""
        from calico_bgp.agent.autodetect import EXCLUDED, detect, read_interfaces

        opts = self.opts
        current = self.view.snapshot().nodes.get(opts.name)
        bgp = current.spec.bgp if current is not None else None
        v4 = _with_len(opts.ip) if opts.ip else (bgp.ipv4_address if bgp else "")
        v6 = _with_len(opts.ip6) if opts.ip6 else (bgp.ipv6_address if bgp else "")
        if not v4 and not v6 and opts.ip_autodetect:
            v4 = str(await trio.to_thread.run_sync(detect, opts.ip_autodetect))
        interfaces = await trio.to_thread.run_sync(read_interfaces)
        addresses = tuple(NodeAddress(str(a), "InternalIP") for i in interfaces if not EXCLUDED.match(i.name)
                          for a in i.addresses if not (a.ip.is_link_local or a.ip.is_loopback))
        new_bgp = NodeBGPSpec(ipv4_address=v4, ipv6_address=v6, as_number=bgp.as_number if bgp else None,
                              route_reflector_cluster_id=bgp.route_reflector_cluster_id if bgp else "")
        meta = current.metadata if current is not None else model.Metadata(opts.name)
        spec = current.spec if current is not None else NodeSpec()
        node = Node(meta, attrs.evolve(spec, bgp=new_bgp, addresses=addresses))
        if node != current:
            applied = await self.store.apply(node)
            event(log, "node_registered", node=opts.name, ipv4=v4, ipv6=v6, addresses=len(addresses))
            # the first sync must see what was registered: from the Node as it was, sessions to a ToR
            # were first dialled from the BGP address instead of the link's, then reloaded (a second
            # parse of every neighbour, and a connect that can hang where the ToR has no route back)
            with trio.move_on_after(REGISTERED_WAIT):
                while self.view.revision < applied.revision:
                    await trio.sleep(0.005)

    def _kernel_inputs(self) -> tuple[Rib, str, dict, set[Prefix], list[Route]] | None:
        s = self.state
        if s.rib is None or s.cluster is None:
            return None
        return s.rib, self.opts.name, s.cluster.blocks, s.own, s.peer_routes

    # ------------------------------------------------------------------ what it tells about itself
    def build_status(self) -> st.NodeStatus:
        """The status document from a snapshot; and the `origin_invalid` news the snapshot holds."""
        snap = sampling.node(self.state, self.opts.name, VERSION, self.speaker.peers, self.programmer,
                             trio.current_time(), time.time())
        news, self.state.origin_flagged = origin_invalid_news(self.state.origin_flagged, snap.peers)
        for e in news:
            self.events.emit(e.kind, peer=e.peer, prefix=e.prefix, detail=e.detail)
        return attrs.evolve(st.build(snap), bfd=self.bfd.status())

    def metrics_sample(self) -> NodeSample | None:
        """What the metrics collector exposes, taken in the agent's thread whichever thread scrapes
        (the HTTP server's hops in, as GoBGP's collector goes through its server's loop); None when
        the agent is not running."""
        def take() -> NodeSample:
            return sampling.metrics(self.state, self.opts.name, self.speaker.peers, self.programmer, trio.current_time())

        try:
            trio.lowlevel.current_trio_token()
            return take()  # the agent's own thread (a test asking for the exposition)
        except RuntimeError:
            pass
        if self._token is None:
            return None
        try:
            return trio.from_thread.run_sync(take, trio_token=self._token)
        except trio.RunFinishedError:
            return None


def _with_len(ip: str) -> str:
    """'198.18.0.1' -> '198.18.0.1/32'; a given prefix length is kept."""
    return str(ipaddress.ip_interface(ip))
