"""The speaker: ExaBGP driven from one trio program.

    speaker = Speaker(state_dir)
    async with trio.open_nursery() as nursery:
        await nursery.start(speaker.run)
        await speaker.set_neighbors([Neighbor(...), ...])
        await speaker.announce(None, ["198.19.1.0/26"])           # every neighbor, next hop self
        async for event in speaker.events: ...                     # Update / EndOfRib / PeerState ...

`Speaker` is the one object the agent uses; it wires the parts, each in its own module:
supervisor.py keeps ExaBGP running, connection.py serves its bridge, channel.py sends commands
through the ack-matched window, replay.py sends a session what it is owed when it comes up, and
reload.py writes the configuration, reloads it and changes neighbours.

- What the agent asked for is kept (RouteIntent) and replayed to a neighbor when its session comes
  up: ExaBGP does not replay API routes to a neighbor that a reload added. Commands issued while
  no bridge is connected are dropped (counted); the intent is what survives.
- Flow control: at most `max_in_flight` commands await ExaBGP's `done`/`error`; acks are matched in
  order. The bridge drains ExaBGP whatever the agent does, so ExaBGP never blocks on us.
- Sessions: set_neighbors() rewrites the config and sends `reload` (never SIGUSR1 to an ExaBGP
  that may still be starting); a removed neighbor that is up gets `teardown 2` first.
- Events are delivered on an unbounded channel: the bridge reader must never wait on a consumer,
  since acks travel on the same stream.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Collection, Iterable, Mapping, Sequence

import attrs
import trio

from calico_bgp.routing.reflection import Reflected
from calico_bgp.speaker import bridge
from calico_bgp.speaker import commands as cmds
from calico_bgp.speaker.channel import CommandSender, CommandWindow
from calico_bgp.speaker.commands import RouteChange
from calico_bgp.speaker.connection import BridgeServer, Hello
from calico_bgp.speaker.errors import InvalidRoute, MalformedMessage
from calico_bgp.speaker.events import (
    EXABGP_EXITED,
    Ack,
    BridgeConnected,
    BridgeLost,
    Event,
    Ignored,
    PeerState,
    Text,
)
from calico_bgp.speaker.intent import RouteIntent
from calico_bgp.speaker.neighbor import Neighbor
from calico_bgp.speaker.parse import parse_line
from calico_bgp.speaker.process import (
    Backoff,
    ExaBGPProcess,
    Runtime,
    exabgp_command,
    exabgp_env,
    exabgp_runtime,
    kill_leftover,
)
from calico_bgp.speaker.reload import RELOADED, ConfigReloader
from calico_bgp.speaker.replay import Replayer, ReplayTo, came_up, owed_to_new_bridge
from calico_bgp.speaker.supervisor import Supervisor, watch_stalls
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.speaker")

__all__ = ["RELOADED", "Speaker", "bridge_command"]


BRIDGE_ENV = "CALICO_BGP_BRIDGE"  # which API process ExaBGP runs: auto (the default), c or python
COMPILED_BRIDGE = Path(__file__).with_name("calico-bgp-bridge")  # bridge.c, as `make -C calico_bgp/speaker` builds it


def bridge_command(socket_path: Path, env: Mapping[str, str] | None = None, compiled: Path | None = None) -> list[str]:
    """The API process ExaBGP runs, relaying to `socket_path`: the compiled bridge (bridge.c: the same
    protocol in ~1 MB, where bridge.py's interpreter holds ~10) when it is built, else bridge.py.
    CALICO_BGP_BRIDGE=python forces bridge.py, `c` the compiled one (an error when it is not built)."""
    compiled = COMPILED_BRIDGE if compiled is None else compiled
    choice = (os.environ if env is None else env).get(BRIDGE_ENV, "").strip().lower() or "auto"
    if choice not in ("auto", "c", "python"):
        raise ValueError(f"{BRIDGE_ENV}={choice!r}: one of auto, c, python")
    built = os.access(compiled, os.X_OK)
    if choice == "c" and not built:
        raise FileNotFoundError(f"{BRIDGE_ENV}=c but {compiled} is not built (make -s -C {compiled.parent})")
    if choice != "python" and built:
        return [str(compiled), "--socket", os.fspath(socket_path)]
    return bridge.command(socket_path)


class Speaker:
    def __init__(self, state_dir: str | os.PathLike[str], *, netns: str | None = None,
                 exabgp_cmd: Sequence[str] | None = None, max_in_flight: int = 128,
                 max_nlri: int = cmds.MAX_NLRI_PER_COMMAND, env: dict[str, str] | None = None,
                 backoff: Backoff | None = None, listen: Sequence[str] = (), listen_port: int = 179,
                 stall_after: float = 30.0) -> None:
        self.state_dir = Path(state_dir)
        self.config_path = self.state_dir / "exabgp.conf"
        self.socket_path = self.state_dir / "api.sock"
        self.pidfile = self.state_dir / "exabgp.pid"
        self.netns = netns
        # under PyPy when bootstrap.sh built its venv, else CPython (process.exabgp_runtime); None: a given command
        self.runtime: Runtime | None = None if exabgp_cmd else exabgp_runtime()
        self.exabgp_cmd = list(exabgp_cmd or exabgp_command(self.runtime))
        self._bridges_at_start = -1  # bridge connections counted when the last ExaBGP started
        # addresses ExaBGP listens on for every neighbor (exabgp_tcp_bind); a Neighbor's own
        # `listen_port` binds its local address only. Empty: ExaBGP only dials.
        self.env = {"exabgp_tcp_bind": " ".join(str(ipaddress.ip_address(a)) for a in listen),
                    "exabgp_tcp_port": str(listen_port), **(env or {})}
        self.max_nlri = max_nlri
        self.stall_after = stall_after
        self.backoff = backoff or Backoff()
        self.intent = RouteIntent()
        self.window = CommandWindow(max_in_flight)
        self._event_tx, self.events = trio.open_memory_channel[Event](math.inf)
        # called with each session state change as the bridge reads it, ahead of the UPDATEs still
        # queued in `events` before it (the agent's back-off must not wait behind a peer's 10k routes)
        self.on_state: Callable[[PeerState], None] | None = None
        self.peers: dict[str, PeerState] = {}
        self.stats = {"events": 0, "malformed": 0, "ignored": 0, "restarts": 0, "replays": 0,
                      "replayed_routes": 0, "dropped_commands": 0, "bridge_connections": 0, "stalls": 0}
        self._changed = trio.Event()
        self.sender = CommandSender(self.window, self.stats)
        self.reloader = ConfigReloader(self.config_path, bridge_command(self.socket_path), self.intent,
                                       self.sender, self.peers, self._lines, self._wait_changed)
        self.replayer = Replayer(self.sender, self.intent, self.peers, self.stats, self.max_nlri,
                                 self.reloader.reload)
        self.bridges = BridgeServer(self.sender, self.stats, self._on_bridge, self._on_line, self._on_bridge_lost)
        self.supervisor = Supervisor(self._exabgp_argv, self.pidfile, self.state_dir, self.backoff, self.reloader,
                                     self.stats, self.bridges.serves, self._exabgp_exited)

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the bridge and supervise ExaBGP until cancelled; ExaBGP is stopped on the way out."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.supervisor.early is None:  # else start_exabgp() did, before starting this one
            kill_leftover(self.pidfile)
        self.socket_path.unlink(missing_ok=True)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(self.socket_path))
        sock.listen(8)
        listener = trio.SocketListener(sock)
        self.reloader.write()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.bridges.accept, listener, nursery)
                nursery.start_soon(self.replayer.run)
                nursery.start_soon(self.supervisor.run, exabgp_env(**self.env))
                nursery.start_soon(watch_stalls, self.window, self.stall_after, self.stats)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.supervisor.shutdown()
                await listener.aclose()
                self.socket_path.unlink(missing_ok=True)

    def start_exabgp(self) -> ExaBGPProcess | None:
        """Start ExaBGP now, before `run()` takes it over (synchronous: `node run` calls it before
        trio runs, so ExaBGP's own start overlaps the rest of the agent's). A leftover ExaBGP goes
        first; the bridge waits for `run()` to listen. None: it did not start (logged; `run()` retries)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        kill_leftover(self.pidfile)
        return self.supervisor.start_now(exabgp_env(**self.env))

    @property
    def process(self) -> ExaBGPProcess | None:
        """The running ExaBGP, if any."""
        return self.supervisor.process

    def _exabgp_argv(self) -> list[str]:
        rt = self.runtime
        if rt is not None:
            if self._bridges_at_start < 0:
                event(log, "exabgp_runtime", runtime=rt.name, python=rt.python, why=rt.why)
            elif rt.name == "pypy" and not rt.forced and self.stats["bridge_connections"] == self._bridges_at_start:
                # it exited before its API process ever connected: PyPy's ExaBGP does not start here
                self.runtime = rt = Runtime("cpython", sys.executable, "PyPy's ExaBGP exited before it started")
                self.exabgp_cmd = exabgp_command(rt)
                event(log, "exabgp_runtime", logging.WARNING, runtime=rt.name, python=rt.python, why=rt.why)
            self._bridges_at_start = self.stats["bridge_connections"]
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return prefix + self.exabgp_cmd + [str(self.config_path)]

    def _exabgp_exited(self) -> None:
        for peer, st in list(self.peers.items()):
            if st.state != "down":
                self._emit_state(PeerState(peer=peer, state="down", reason=EXABGP_EXITED, at=time.time()))

    async def close(self) -> None:
        await self.supervisor.close()

    # -- the bridge ----------------------------------------------------------------------
    def _on_bridge(self, hello: Hello, same_exabgp: bool) -> None:
        self._emit(BridgeConnected())
        work = owed_to_new_bridge(config_stale=self.reloader.stale, same_exabgp=same_exabgp,
                                  lost_withdrawals=bool(self.sender.lost),
                                  up=[key for key, st in self.peers.items() if st.state == "up"])
        if self.reloader.stale:
            self.reloader.mark_loaded()
        if not same_exabgp:  # a new ExaBGP: its sessions start empty, nothing lost is owed to them
            self.sender.lost.clear()
        for item in work:
            self.replayer.put(item)

    def _on_bridge_lost(self) -> None:
        self._emit(BridgeLost())

    async def _on_line(self, line: str) -> None:
        try:
            items = parse_line(line)
        except MalformedMessage as e:
            self.stats["malformed"] += 1
            event(log, "exabgp_malformed", logging.WARNING, why=e.why, line=e.line[:200])
            return
        except Exception as e:  # a parser bug must not take the bridge down with it
            self.stats["malformed"] += 1
            event(log, "exabgp_unparseable", logging.ERROR, exc_info=True, error=repr(e), line=line[:200])
            return
        for item in items:
            if isinstance(item, Ack):
                await self.window.ack(item.ok)
            elif isinstance(item, Text):
                event(log, "exabgp_text", logging.DEBUG, text=item.text)
            elif isinstance(item, Ignored):
                self.stats["ignored"] += 1
            elif isinstance(item, PeerState):
                self._emit_state(item)
            else:
                self._emit(item)

    def _emit(self, ev: Event) -> None:
        self.stats["events"] += 1
        self._event_tx.send_nowait(ev)

    def _emit_state(self, st: PeerState) -> None:
        prev = self.peers.get(st.peer)
        self.peers[st.peer] = st
        event(log, "peer_state", peer=st.peer, state=st.state, reason=st.reason)
        if self.on_state is not None:
            self.on_state(st)
        if came_up(prev, st) and st.peer not in self.replayer.holding_back:
            self.replayer.put(ReplayTo(st.peer))
        self._emit(st)
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    async def routes_complete(self) -> None:
        """The agent has asked for every route it means to send (after a restart: all it announced
        before). Neighbors with graceful restart get End-of-RIB after their routes from now on, and
        those already up get it now: a helper peer then drops what we did not re-announce."""
        await self.replayer.complete()

    # -- commands ------------------------------------------------------------------------
    async def send(self, lines: Iterable[str]) -> int:
        """Send command lines within the in-flight window; returns how many went out."""
        return await self.sender.send(lines)

    def _lines(self, changes: list[RouteChange]) -> list[str]:
        return self.intent.command_lines(changes, self.max_nlri)

    async def announce(self, neighbors: Iterable[str] | None, prefixes: Iterable[str], next_hop: str = "self",
                       *, wait: bool = False, **attributes: object) -> int:
        """Announce `prefixes` to `neighbors` (peer addresses) or None for every neighbor.

        `attributes`: origin, local_pref, med, as_path, communities, large_communities,
        originator_id, cluster_list, or one PathAttributes value as `attributes=` (see
        commands.route_attributes). Returns the number of route changes sent.
        """
        spec = cmds.route_attributes(next_hop, **attributes)  # type: ignore[arg-type]
        keys = self._keys(neighbors)
        prefixes = list(prefixes)
        # intent change and its commands under one lock: a replay or withdraw cannot slip between
        async with self.sender.lock:
            changes = self.intent.announce(keys, prefixes, spec)
            await self.sender.send_locked(self._lines(changes))
        if wait:
            await self.window.drained()
        return len(changes)

    async def withdraw(self, neighbors: Iterable[str] | None, prefixes: Iterable[str], *, wait: bool = False) -> int:
        keys = self._keys(neighbors)
        prefixes = list(prefixes)
        async with self.sender.lock:
            changes = self.intent.withdraw(keys, prefixes)
            await self.sender.send_locked(self._lines(changes))
        if wait:
            await self.window.drained()
        return len(changes)

    async def reflect(self, updates: Mapping[str, Reflected | None], *, complete: bool = False) -> None:
        """Set how prefixes (canonical text) are reflected, and send what that changes: a route that
        many neighbours get goes out as one command for all of them. `complete`: `updates` is
        everything reflected (other prefixes are withdrawn where they were reflected)."""
        sendable: dict[str, Reflected | None] = {}
        for prefix, r in updates.items():
            try:
                sendable[prefix] = None if r is None else attrs.evolve(
                    r, attributes=cmds.checked(r.attributes),
                    others=tuple(attrs.evolve(o, attributes=cmds.checked(o.attributes)) for o in r.others))
            except InvalidRoute as exc:  # a path no command can carry is not reflected (and says why)
                event(log, "reflection_skipped", logging.WARNING, prefix=prefix, reason=str(exc))
                sendable[prefix] = None
        async with self.sender.lock:
            groups, fallback = self.intent.reflect(sendable, complete)
            await self.sender.send_locked(cmds.render_groups(groups, self.max_nlri) + self._lines(fallback))

    @staticmethod
    def _keys(neighbors: Iterable[str] | None) -> list[str] | None:
        if neighbors is None:
            return None
        return [str(ipaddress.ip_address(n)) for n in ([neighbors] if isinstance(neighbors, str) else neighbors)]

    # -- sessions ------------------------------------------------------------------------
    async def set_neighbors(self, neighbors: Iterable[Neighbor], teardown_wait: float = 1.0,
                            abrupt: Collection[str] = ()) -> None:
        """Make ExaBGP's sessions these; unchanged sessions stay up (ExaBGP reloads only the diff).
        A removed neighbour is sent our withdrawals and a Cease first, unless it is in `abrupt` (held
        idle for errors: every moment before the reload lets a hostile peer in again)."""
        async with self.reloader.lock:
            await self.reloader.set_neighbors({n.key: n for n in neighbors}, teardown_wait, abrupt)

    def hold_back(self, key: str) -> None:
        """`key` is about to be dropped: replay nothing more to it (each replay holds the command lock
        the removal needs, while the peer reconnects and sends its routes again)."""
        self.replayer.hold_back(key)

    async def drop_neighbor(self, key: str) -> None:
        """Take one neighbour out of ExaBGP now, without withdrawals or a Cease (a peer held idle for
        errors): ahead of the agent's next full sync, which may be busy with what that peer sent."""
        self.hold_back(key)
        try:
            async with self.reloader.lock:
                if key in self.intent.neighbors:
                    await self.reloader.set_neighbors(
                        {k: n for k, n in self.intent.neighbors.items() if k != key}, 0.0, (key,))
        finally:
            self.replayer.release(key)

    # -- waiting (agent checks and tests) --------------------------------------------------
    async def wait_connected(self) -> None:
        await self.bridges.connected.wait()

    async def wait_state(self, peer: str, state: str = "up") -> PeerState:
        key = str(ipaddress.ip_address(peer))
        while True:
            st = self.peers.get(key)
            if st is not None and st.state == state:
                return st
            await self._changed.wait()

    async def drained(self) -> None:
        await self.window.drained()
