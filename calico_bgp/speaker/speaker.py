"""The speaker: ExaBGP driven from one trio program.

    speaker = Speaker(state_dir)
    async with trio.open_nursery() as nursery:
        await nursery.start(speaker.run)
        await speaker.set_neighbors([Neighbor(...), ...])
        await speaker.announce(None, ["198.19.1.0/26"])           # every neighbor, next hop self
        async for event in speaker.events: ...                     # Update / EndOfRib / PeerState ...

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

import collections
import ipaddress
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Collection, Iterable, Sequence

import trio

from calico_bgp.speaker import commands as cmds
from calico_bgp.speaker.channel import CommandWindow, LineReader
from calico_bgp.speaker.commands import RouteChange
from calico_bgp.speaker.config import render_config
from calico_bgp.speaker.errors import MalformedMessage
from calico_bgp.speaker.events import (
    EXABGP_EXITED,
    Ack,
    BridgeConnected,
    BridgeLost,
    Event,
    ExaBGPShutdown,
    Ignored,
    PeerState,
    Text,
)
from calico_bgp.speaker.intent import RouteIntent
from calico_bgp.speaker.neighbor import Neighbor, family_of
from calico_bgp.speaker.parse import parse_line
from calico_bgp.speaker.process import Backoff, ExaBGPProcess, exabgp_command, exabgp_env, kill_leftover

log = logging.getLogger("calico_bgp.speaker")

_RELOAD = "\0reload"  # a replayer work item that is not a neighbor
_RESEND = "\0resend"  # another: send the withdrawals a lost bridge may have dropped
LOST_WITHDRAWALS = 100_000  # command lines kept for that at most (each up to MAX_NLRI prefixes)
WITHDRAW_FLUSH = 0.2  # seconds for ExaBGP to put queued withdrawals on the wire before a teardown
DRAIN_WAIT = 10.0     # seconds a neighbour change waits for ExaBGP to answer what it was sent
BRIDGE_DRAIN = 2.0    # seconds a dead ExaBGP's bridge has to deliver its last lines
RELOADED = "loaded new configuration successfully"  # ExaBGP's log line once a reload is done
RELOAD_CONFIRM = 2.0   # seconds to wait for it before sending the reload again
RELOAD_ATTEMPTS = 30


def bridge_command(socket_path: Path) -> list[str]:
    return [sys.executable, "-m", "calico_bgp.speaker.bridge", "--socket", str(socket_path)]


def _atomic_write(path: Path, text: str) -> bool:
    """Write if different; True when the file changed."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


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
        self.exabgp_cmd = list(exabgp_cmd or exabgp_command())
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
        self._dropping: set[str] = set()  # neighbours on their way out (drop_neighbor): no replay to them
        self.peers: dict[str, PeerState] = {}
        self.stats = {"events": 0, "malformed": 0, "ignored": 0, "restarts": 0, "replays": 0,
                      "replayed_routes": 0, "dropped_commands": 0, "bridge_connections": 0, "stalls": 0}
        self.process: ExaBGPProcess | None = None
        self._conn: trio.abc.Stream | None = None
        self._conn_scope: trio.CancelScope | None = None
        self._bridge_exabgp_pids: set[int] = set()
        self._conn_exabgp = 0  # the pid of the ExaBGP the current bridge serves
        # withdrawals that may not have reached ExaBGP (no bridge, or lost with one): sent again when
        # a new bridge serves the same ExaBGP (its sessions, and what they were sent, live on); the
        # replay then re-announces what is wanted. A new ExaBGP starts empty: they are dropped.
        self._lost_withdrawals: collections.deque[str] = collections.deque(maxlen=LOST_WITHDRAWALS)
        self._send_lock = trio.Lock()
        self._neighbors_lock = trio.Lock()
        self._changed = trio.Event()
        self._replay_tx, self._replay_rx = trio.open_memory_channel[str | None](math.inf)
        # End-of-RIB (neighbors with graceful restart): sent after a neighbor's routes once the agent
        # says its routes are complete; owed to those that came up before
        self._routes_complete = False
        self._eor_owed: set[str] = set()
        self._closing = False
        self._connected = trio.Event()
        # config file versions: written, and the one the running ExaBGP has loaded
        self._generation = 0
        self._loaded_generation = -1
        self._reloads_seen = 0  # "loaded new configuration" lines in ExaBGP's log
        self._reload_seen = trio.Event()

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the bridge and supervise ExaBGP until cancelled; ExaBGP is stopped on the way out."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        kill_leftover(self.pidfile)
        self.socket_path.unlink(missing_ok=True)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(self.socket_path))
        sock.listen(8)
        listener = trio.SocketListener(sock)
        self._write_config()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._accept, listener, nursery)
                nursery.start_soon(self._replayer)
                nursery.start_soon(self._supervise)
                nursery.start_soon(self._watch_stalls)
                task_status.started()
        finally:
            self._closing = True
            with trio.CancelScope(shield=True):
                if self.process is not None:
                    await self.process.stop()
                    with trio.move_on_after(3):
                        await self.process.wait()
                await listener.aclose()
                self.socket_path.unlink(missing_ok=True)

    def _exabgp_argv(self) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return prefix + self.exabgp_cmd + [str(self.config_path)]

    async def _supervise(self) -> None:
        env = exabgp_env(**self.env)
        while not self._closing:
            self._write_config()
            started = trio.current_time()
            try:
                self.process = proc = ExaBGPProcess.start(self._exabgp_argv(), env, self.pidfile, self.state_dir)
            except OSError as e:
                delay = self.backoff.next(0.0)
                log.error("exabgp_start_failed error=%r argv=%r retry_in=%.1fs", e, self._exabgp_argv(), delay)
                await trio.sleep(delay)
                continue
            self._loaded_generation = self._generation
            async with trio.open_nursery() as n:
                n.start_soon(proc.pump_log, self._on_exabgp_log)
                code = await proc.wait()
                # the last lines (a crash's traceback) may still be in the pipe: up to a second to read them
                n.cancel_scope.deadline = trio.current_time() + 1.0
            self.process = None
            if self._closing:
                return
            # what the dead ExaBGP wrote last (an UPDATE, a session coming up) may still be on its way
            # through the bridge: let the bridge deliver it and go before the sessions are declared down,
            # or it would land after, on routes already marked stale
            with trio.move_on_after(BRIDGE_DRAIN):
                while self._conn is not None and self._conn_exabgp == proc.pid:
                    await trio.sleep(0.02)
            self.stats["restarts"] += 1
            delay = self.backoff.next(trio.current_time() - started)
            log.warning("exabgp_exited pid=%d code=%s restart_in=%.1fs", proc.pid, code, delay)
            for peer, st in list(self.peers.items()):
                if st.state != "down":
                    self._emit_state(PeerState(peer=peer, state="down", reason=EXABGP_EXITED, at=time.time()))
            await trio.sleep(delay)

    async def _watch_stalls(self) -> None:
        """Say so when ExaBGP stops answering (its send path can stall under load: #652/#682)."""
        stalled = False
        while True:
            await trio.sleep(min(5.0, self.stall_after / 2))
            oldest = self.window.in_flight[0] if self.window.in_flight else None
            age = trio.current_time() - oldest.sent_at if oldest else 0.0
            if age > self.stall_after and not stalled:
                stalled = True
                self.stats["stalls"] += 1
                log.error("exabgp_stalled oldest_command_age=%.1fs in_flight=%d command=%r",
                          age, len(self.window.in_flight), oldest.command[:120] if oldest else "")
            elif age <= self.stall_after and stalled:
                stalled = False
                log.warning("exabgp_unstalled")

    async def close(self) -> None:
        self._closing = True
        if self.process is not None:
            await self.process.stop()

    # -- the bridge ----------------------------------------------------------------------
    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            nursery.start_soon(self._serve_bridge, stream)

    async def _serve_bridge(self, stream: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            reader = LineReader(stream)
            lines = reader.lines()
            try:
                hello = await lines.__anext__()
            except (StopAsyncIteration, trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()
                return
            if not hello.startswith("bridge hello"):
                log.warning("bridge_bad_hello line=%r", hello[:200])
                await stream.aclose()
                return
            previous, self._conn_scope = self._conn_scope, scope
            if previous is not None:
                previous.cancel()  # a newer bridge replaces the old one
            fields = dict(f.split("=", 1) for f in hello.split()[2:] if "=" in f)
            try:
                exabgp_pid = int(fields.get("exabgp", "0") or 0)
                dropped = int(fields.get("dropped", "0") or 0)
            except ValueError:
                log.warning("bridge_bad_hello line=%r", hello[:200])
                await stream.aclose()
                return
            self._note_lost(await self.window.fail_all())  # answers to an old bridge's commands never come
            self._conn, self._conn_exabgp = stream, exabgp_pid
            self.stats["bridge_connections"] += 1
            log.info("bridge_connected hello=%r", hello)
            if dropped:
                log.warning("bridge_dropped_lines count=%d", dropped)
            self._emit(BridgeConnected())
            self._connected.set()
            if self._loaded_generation != self._generation:
                # the config changed while ExaBGP was starting: it may have read the old one
                self._loaded_generation = self._generation
                self._replay_tx.send_nowait(_RELOAD)
            if exabgp_pid in self._bridge_exabgp_pids:
                # the same ExaBGP with a new bridge: sessions did not restart, no `up` will come; what
                # may have been lost is withdrawn again first, then each session's routes replayed
                if self._lost_withdrawals:
                    self._replay_tx.send_nowait(_RESEND)
                for key, st in self.peers.items():
                    if st.state == "up":
                        self._replay_tx.send_nowait(key)
            else:  # a new ExaBGP: its sessions start empty, nothing is owed to them
                self._lost_withdrawals.clear()
            self._bridge_exabgp_pids.add(exabgp_pid)
            try:
                async for line in lines:
                    await self._on_line(line)
                log.debug("bridge_eof")
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                # the bridge went away with commands unread (ExaBGP died under it): a lost bridge,
                # like an EOF, never a reason to take the speaker down
                log.info("bridge_reset error=%r", e)
            except BaseException as e:
                log.debug("bridge_ended error=%r", e)
                raise
            finally:
                if self._conn is stream:
                    self._conn = None
                    self._connected = trio.Event()
                    with trio.CancelScope(shield=True):
                        self._note_lost(await self.window.fail_all())
                    self._emit(BridgeLost())
                    log.warning("bridge_lost")
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _on_line(self, line: str) -> None:
        try:
            items = parse_line(line)
        except MalformedMessage as e:
            self.stats["malformed"] += 1
            log.warning("exabgp_malformed why=%r line=%r", e.why, e.line[:200])
            return
        except Exception as e:  # a parser bug must not take the bridge down with it
            self.stats["malformed"] += 1
            log.exception("exabgp_unparseable error=%r line=%r", e, line[:200])
            return
        for item in items:
            if isinstance(item, Ack):
                await self.window.ack(item.ok)
            elif isinstance(item, Text):
                log.debug("exabgp_text text=%r", item.text)
            elif isinstance(item, Ignored):
                self.stats["ignored"] += 1
            elif isinstance(item, PeerState):
                self._emit_state(item)
            elif isinstance(item, ExaBGPShutdown):
                self._emit(item)
            else:
                self._emit(item)

    def _emit(self, event: Event) -> None:
        self.stats["events"] += 1
        self._event_tx.send_nowait(event)

    def _emit_state(self, st: PeerState) -> None:
        prev = self.peers.get(st.peer)
        self.peers[st.peer] = st
        log.info("peer_state peer=%s state=%s reason=%r", st.peer, st.state, st.reason)
        if self.on_state is not None:
            self.on_state(st)
        if st.state == "up" and (prev is None or prev.state != "up") and st.peer not in self._dropping:
            self._replay_tx.send_nowait(st.peer)
        self._emit(st)
        self._changed.set()
        self._changed = trio.Event()

    async def _replayer(self) -> None:
        # its own task: the bridge reader must never wait on the command window it feeds acks to
        async for key in self._replay_rx:
            if key is _RESEND:
                async with self._send_lock:
                    lines = list(self._lost_withdrawals)
                    self._lost_withdrawals.clear()
                    log.warning("resend_withdrawals commands=%d reason=bridge_reconnected", len(lines))
                    await self._send_locked(lines)
                continue
            if key is _RELOAD:
                log.info("exabgp_reload reason=config_changed_during_start")
                await self._reload()
                continue
            if key is None or key not in self.intent.neighbors or key in self._dropping:
                continue
            async with self._send_lock:
                changes = self.intent.replay(key)
                self.stats["replays"] += 1
                self.stats["replayed_routes"] += len(changes)
                log.info("replay peer=%s routes=%d", key, len(changes))
                await self._send_locked(self._lines(changes))
                # the neighbour may have gone while the routes went out (e.g. a peer held idle after a
                # reset): a KeyError here ended the whole agent
                neighbor = self.intent.neighbors.get(key)
                if neighbor is not None and neighbor.graceful_restart is not None:
                    if self._routes_complete:
                        await self._send_locked(self._eor_lines(key))
                    else:
                        self._eor_owed.add(key)

    def _eor_lines(self, key: str) -> list[str]:
        return [cmds.announce_eor(key, family) for family in self.intent.neighbors[key].families]

    async def routes_complete(self) -> None:
        """The agent has asked for every route it means to send (after a restart: all it announced
        before). Neighbors with graceful restart get End-of-RIB after their routes from now on, and
        those already up get it now: a helper peer then drops what we did not re-announce."""
        if self._routes_complete:
            return
        async with self._send_lock:
            self._routes_complete = True
            owed, self._eor_owed = sorted(self._eor_owed), set()
            for key in owed:
                st = self.peers.get(key)
                if key in self.intent.neighbors and st is not None and st.state == "up":
                    log.info("eor peer=%s families=%s", key, ",".join(self.intent.neighbors[key].families))
                    await self._send_locked(self._eor_lines(key))

    # -- commands ------------------------------------------------------------------------
    async def send(self, lines: Iterable[str]) -> int:
        """Send command lines within the in-flight window; returns how many went out."""
        async with self._send_lock:
            return await self._send_locked(lines)

    async def _send_locked(self, lines: Iterable[str]) -> int:
        # the caller holds _send_lock: a batch goes out whole, in the order its intent changed
        sent = 0
        for line in lines:
            if "\n" in line:
                raise ValueError("a command is one line")
            await self.window.reserve()
            conn = self._conn
            if conn is None:
                self.stats["dropped_commands"] += 1
                self._note_lost([line])
                continue
            pending = self.window.add(line)
            try:
                await conn.send_all(line.encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.window.forget(pending)  # else the next bridge's first ack would answer it
                self.stats["dropped_commands"] += 1
                self._note_lost([line])
                continue
            sent += 1
        return sent

    def _note_lost(self, lines: Iterable[str]) -> None:
        self._lost_withdrawals.extend(line for line in lines if cmds.is_withdrawal(line))

    def _lines(self, changes: list[RouteChange]) -> list[str]:
        configured = self.intent.neighbors
        ready = [cmds.resolve_self(c, configured[c.neighbor].self_next_hop(family_of(c.prefix)))
                 for c in changes if c.neighbor in configured]
        return cmds.batch(ready, self.max_nlri)

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
        async with self._send_lock:
            changes = self.intent.announce(keys, prefixes, spec)
            await self._send_locked(self._lines(changes))
        if wait:
            await self.window.drained()
        return len(changes)

    async def withdraw(self, neighbors: Iterable[str] | None, prefixes: Iterable[str], *, wait: bool = False) -> int:
        keys = self._keys(neighbors)
        prefixes = list(prefixes)
        async with self._send_lock:
            changes = self.intent.withdraw(keys, prefixes)
            await self._send_locked(self._lines(changes))
        if wait:
            await self.window.drained()
        return len(changes)

    @staticmethod
    def _keys(neighbors: Iterable[str] | None) -> list[str] | None:
        if neighbors is None:
            return None
        return [str(ipaddress.ip_address(n)) for n in ([neighbors] if isinstance(neighbors, str) else neighbors)]

    # -- sessions ------------------------------------------------------------------------
    def _on_exabgp_log(self, line: str) -> None:
        if RELOADED in line:
            self._reloads_seen += 1
            self._reload_seen.set()
            self._reload_seen = trio.Event()

    async def _reload(self) -> None:
        """`reload`, until ExaBGP's log says it loaded the configuration. ExaBGP drops a reload that
        arrives while it still has routes queued for some peer (its reactor clears the signal, then
        finds updates pending and goes on without reloading): the new sessions were then missing
        until the next reload, a minute or more later. Retried every RELOAD_CONFIRM seconds."""
        for attempt in range(1, RELOAD_ATTEMPTS + 1):
            seen = self._reloads_seen
            await self.send(["reload"])
            with trio.move_on_after(RELOAD_CONFIRM):
                while self._reloads_seen == seen:
                    await self._reload_seen.wait()
                return
            if self._conn is None:  # ExaBGP is restarting: it reads the file when it starts
                return
            log.warning("exabgp_reload_unconfirmed attempt=%d action=retry", attempt)
        log.error("exabgp_reload_unconfirmed attempts=%d action=give_up", RELOAD_ATTEMPTS)

    def _write_config(self) -> bool:
        text = render_config(self.intent.neighbors.values(), bridge_command(self.socket_path))
        changed = _atomic_write(self.config_path, text)
        if changed:
            self._generation += 1
        return changed

    async def set_neighbors(self, neighbors: Iterable[Neighbor], teardown_wait: float = 1.0,
                            abrupt: Collection[str] = ()) -> None:
        """Make ExaBGP's sessions these; unchanged sessions stay up (ExaBGP reloads only the diff).
        A removed neighbour is sent our withdrawals and a Cease first, unless it is in `abrupt` (held
        idle for errors: every moment before the reload lets a hostile peer in again)."""
        async with self._neighbors_lock:
            await self._set_neighbors({n.key: n for n in neighbors}, teardown_wait, abrupt)

    def hold_back(self, key: str) -> None:
        """`key` is about to be dropped: replay nothing more to it (each replay holds the command lock
        the removal needs, while the peer reconnects and sends its routes again)."""
        self._dropping.add(key)

    async def drop_neighbor(self, key: str) -> None:
        """Take one neighbour out of ExaBGP now, without withdrawals or a Cease (a peer held idle for
        errors): ahead of the agent's next full sync, which may be busy with what that peer sent."""
        self.hold_back(key)
        try:
            async with self._neighbors_lock:
                if key in self.intent.neighbors:
                    await self._set_neighbors({k: n for k, n in self.intent.neighbors.items() if k != key},
                                              0.0, (key,))
        finally:
            self._dropping.discard(key)

    async def _set_neighbors(self, new: dict[str, Neighbor], teardown_wait: float, abrupt: Collection[str] = ()) -> None:
        removed = [k for k in self.intent.neighbors if k not in new]
        going = [k for k in removed if self.peers.get(k) and self.peers[k].state == "up" and k not in abrupt]
        if going and self._conn is not None:
            graceful = [k for k in going if self.intent.neighbors[k].graceful_restart is not None]
            if graceful:
                # with graceful restart negotiated ExaBGP closes the session without a NOTIFICATION, and
                # the peer would keep our routes (stale) for the restart time: take them back first
                await self.send(self._lines([cmds.RouteChange(k, p, spec, False) for k in graceful
                                             for p, spec in self.intent.routes_for(k).items()]))
                with trio.move_on_after(DRAIN_WAIT):
                    await self.window.drained()
                await trio.sleep(WITHDRAW_FLUSH)  # ExaBGP answers a command once queued, not once sent
            await self.send([cmds.teardown(k, 2) for k in going])  # Cease/administrative shutdown
            with trio.move_on_after(DRAIN_WAIT):  # a stalled ExaBGP must not hold every session change
                await self.window.drained()
            with trio.move_on_after(teardown_wait):
                while any(self.peers.get(k) and self.peers[k].state == "up" for k in going):
                    await self._changed.wait()
        async with self._send_lock:
            self.intent.set_neighbors(new.values())
        for k in removed:
            self.peers.pop(k, None)
        if not self._write_config():
            return
        if self._conn is not None:
            log.info("exabgp_reload neighbors=%d removed=%d", len(new), len(removed))
            self._loaded_generation = self._generation
            await self._reload()
        # else: ExaBGP is starting (or restarting) and is reloaded when its bridge connects;
        # a SIGUSR1 before it installs its handlers would kill it

    # -- waiting (agent checks and tests) --------------------------------------------------
    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_state(self, peer: str, state: str = "up") -> PeerState:
        key = str(ipaddress.ip_address(peer))
        while True:
            st = self.peers.get(key)
            if st is not None and st.state == state:
                return st
            await self._changed.wait()

    async def drained(self) -> None:
        await self.window.drained()
