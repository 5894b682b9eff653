"""ExaBGP's receive path made cheaper per prefix (patched into ExaBGP by exabgp_run.patch, as its
other mends are; each to be offered upstream, see the README's "ExaBGP
patches"). The JSON it writes to the agent is the same, byte for byte
(tests/unit/test_exabgp_receive.py compares patched and unpatched output over varied UPDATEs).

Profiled with py-spy while ExaBGP received 100k /32s from BIRD, most of its CPU went per prefix.
Decoding the prefixes is exabgp_decode's; here:

- `JSON._update` (reactor/api/response/json.py) made a Family per prefix to learn its family,
  printed the next hop per prefix and formatted each prefix's JSON through three method calls. The
  family and next hop are now taken once per distinct object of an UPDATE, and a plain INET prefix
  is printed straight from its bytes; other NLRI types still print themselves.
- `Peer.id` (reactor/peer.py) formatted "peer-N" for every prefix received (an argument of a debug
  call made per prefix); it is now kept per neighbour object.
- `Peer._main` walked every received UPDATE's NLRIs once more after the API was told of them, for
  its adj-rib-in cache (off: `adj-rib-in false`) and a debug line (discarded): an object, a format
  and four calls per prefix for nothing (`_no_second_walk`).

and cheaper per UPDATE: ExaBGP flushed its pipe to the API process after every line
(`Processes.write`), so the UPDATEs a peer sends together (BIRD sends a tick's withdrawals and
announcements as two) reached the bridge and the agent as separate writes, each waking both for a
turn of its own. The lines of received messages now wait until the reactor has read what its
sockets hold (`_api_lines_per_read`). And each message read cost a turn of the reactor loop, and
one more to find the socket empty: a peer now reads what its socket holds in one turn
(`_messages_per_turn`).
"""
from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any, Callable

from calico_bgp.speaker import exabgp_decode

_AF_BY_LENGTH = {4: socket.AF_INET, 16: socket.AF_INET6}


def patch() -> None:
    _json_update()
    _peer_id()
    _no_second_walk()
    _api_lines_per_read()
    _withdrawals_keep_attribute_cache()
    exabgp_decode.patch()  # after the attribute cache: the one-walk decoding takes Attributes.unpack as it is then
    _messages_per_turn()


def _json_update() -> None:
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.qualifier import PathInfo
    from exabgp.reactor.api.response.json import JSON

    announce, withdraw, nopath = Action.ANNOUNCE, Action.WITHDRAW, PathInfo.NOPATH
    ntop, af_of = socket.inet_ntop, _AF_BY_LENGTH

    def prefixes_text(nlris, compact):  # type: ignore[no-untyped-def]
        """The prefixes' INET.json joined; a plain INET prefix (no path id) printed from its bytes
        here, without its three method calls."""
        out = []
        append = out.append
        for nlri in nlris:
            if type(nlri) is not INET or nlri.path_info is not nopath:
                append(nlri.json(compact=compact))
                continue
            c = nlri.cidr
            ip = c._ip
            if not ip:
                ip = c._ip = ntop(af_of[len(c._packed)], c._packed)
            append(f'"{ip}/{c.mask}"' if compact else f'{{ "nlri": "{ip}/{c.mask}" }}')
        return ", ".join(out)

    def _update(self, update):  # type: ignore[no-untyped-def]
        plus: dict = {}
        minus: dict = {}
        hops: dict[int, str] = {}  # id(next hop object) -> its text, for the objects of this UPDATE
        families: dict[tuple, tuple] = {}
        # the prefixes of an UPDATE come in runs of one family and next hop: those of the last kept
        last_hop = last_afi = last_safi = hops  # (nothing is hops)
        nexthop = family = ""
        for nlri in update.nlris:
            hop = nlri.nexthop
            if hop is not last_hop:
                nexthop = hops.get(id(hop))
                if nexthop is None:
                    try:
                        nexthop = str(hop)
                    except Exception:  # noqa: BLE001 - as ExaBGP has it
                        nexthop = "null"
                    hops[id(hop)] = nexthop
                last_hop = hop
            if type(nlri) is INET:  # its family() is (afi, safi), made anew
                afi, safi = nlri.afi, nlri.safi
                if afi is not last_afi or safi is not last_safi:
                    pair = (afi, safi)
                    family = families.get(pair)
                    if family is None:
                        family = families[pair] = nlri.family().afi_safi()
                    last_afi, last_safi = afi, safi
            else:
                family = nlri.family().afi_safi()
                last_afi = hops
            action = nlri.action
            if action == announce:
                plus.setdefault(family, {}).setdefault(nexthop, []).append(nlri)
            if action == withdraw:
                minus.setdefault(family, []).append(nlri)

        compact = self.compact
        add = []
        for family in plus:
            s = f'"{family[0]} {family[1]}": {{ '
            m = ""
            for nexthop in plus[family]:
                nlris = plus[family][nexthop]
                m += f'"{nexthop}": [ '
                m += prefixes_text(nlris, compact)
                m += " ], "
            s += m[:-2]
            s += " }"
            add.append(s)

        remove = []
        for family in minus:
            nlris = minus[family]
            s = f'"{family[0]} {family[1]}": [ '
            s += prefixes_text(nlris, compact)
            s += " ]"
            remove.append(s)

        nlri_text = ""
        if not add and not remove:
            if update.nlris:  # an EOR, whose json() is already an object
                return {"message": self._json(update.nlris[0].json())}
        if add:
            add_str = ", ".join(add)
            nlri_text += f'"announce": {{ {add_str} }}'
        if add and remove:
            nlri_text += ", "
        if remove:
            remove_str = ", ".join(remove)
            nlri_text += f'"withdraw": {{ {remove_str} }}'

        attributes = "" if not update.attributes else f'"attribute": {{ {update.attributes.json()} }}'
        if not attributes or not nlri_text:
            text = f'"update": {{ {attributes}{nlri_text} }}'
        else:
            text = f'"update": {{ {attributes}, {nlri_text} }}'
        return {"message": self._json(f"{{ {text} }}")}

    JSON._update = _update  # type: ignore[method-assign]


def _peer_id() -> None:
    from exabgp.reactor.peer import Peer

    def peer_id(self):  # type: ignore[no-untyped-def]
        neighbor = self.neighbor
        kept = self.__dict__.get("_calico_id")
        if kept is None or kept[0] is not neighbor:
            kept = self._calico_id = (neighbor, f"peer-{neighbor.uid}")
        return kept[1]

    Peer.id = peer_id  # type: ignore[method-assign]


def _withdrawals_keep_attribute_cache() -> None:
    """ExaBGP reuses the attribute set it parsed last in a session when the next UPDATE's attribute
    section is the same bytes (`Attributes.unpack`), but an UPDATE that only withdraws (an empty
    section) took the cache's place: under churn a peer sends withdrawals and announcements as
    UPDATEs in turn (BIRD: one of each per change of its table), so every announcement's attributes
    were parsed again. An empty section is now an empty set without touching the cache (what
    parsing it gave: no attribute, nothing for RFC 7606 to report)."""
    from exabgp.bgp.message.update.attribute.attributes import Attributes

    unpack = Attributes.unpack.__func__  # type: ignore[attr-defined]

    def unpack_keeping_cache(cls, data, direction, negotiated):  # type: ignore[no-untyped-def]
        if not data:
            return cls()
        return unpack(cls, data, direction, negotiated)

    Attributes.unpack = classmethod(unpack_keeping_cache)  # type: ignore[method-assign,assignment]


def _no_second_walk() -> None:
    """What `Protocol.read_message` yields to `Peer._main` after the API process was told of an
    UPDATE: the same message without its NLRIs when nothing there would use them, i.e. the
    neighbour's adj-rib-in cache is off (`Cache.update_cache` returns at once) and ExaBGP's debug
    log is off (exabgp_run drops it unless exabgp_log_level is DEBUG). `Peer._main` uses the NLRIs
    of a received UPDATE for those two alone; the API, treat-as-withdraw and attribute discard
    are done with the message before it is yielded."""
    from exabgp.bgp.message.update import Update
    from exabgp.reactor.protocol import Protocol

    if os.environ.get("exabgp_log_level", "INFO").upper() == "DEBUG":
        return
    read = Protocol.read_message
    update = Update.TYPE

    def read_message(self: Protocol):  # type: ignore[no-untyped-def]
        for message in read(self):
            if message.TYPE == update and message.nlris and not self.neighbor.rib.incoming.cache:
                message = Update([], message.attributes)
            yield message

    Protocol.read_message = read_message  # type: ignore[method-assign]


TURN_MESSAGES = 8  # messages a peer may read in one turn of the reactor loop at most
TURN_SECONDS = 0.005  # and no more runs once its runs took this long: many flooding peers keep turns short


def _messages_per_turn(most: int = TURN_MESSAGES, most_seconds: float = TURN_SECONDS) -> None:
    """A peer that just read a message is run again at once, in the same turn of the reactor loop,
    up to `most` runs: ExaBGP's `Peer._main` asks for another turn (ACTION.NOW) after every message
    it reads, so each UPDATE cost a whole turn of the loop (every peer, the API pipes, the scheduler,
    a poll), and one more turn to find the socket empty, before the loop could wait. Under churn
    (BIRD sends a withdrawal and an announcement per change of its table) that was three turns per
    tick for the work of one. A run that read nothing (its socket empty, or only routes to send)
    ends the repeats, and the loop goes on as before; a peer with a `rate-limit` (messages per
    second, counted per run by the loop) is left to the loop. Runs stop after `most_seconds` too:
    with many peers flooding, a turn (keepalives, API commands, new connections wait for it) stays
    about as long as before."""
    from exabgp.bgp.message import NOP
    from exabgp.reactor.peer import ACTION, FSM, Peer
    from exabgp.reactor.protocol import Protocol

    read = Protocol.read_message
    nop, now, established = NOP.TYPE, ACTION.NOW, FSM.ESTABLISHED

    def read_message(self: Protocol):  # type: ignore[no-untyped-def]
        for message in read(self):
            if message.TYPE != nop:
                self.peer._calico_read = True
            yield message

    run = Peer.run
    clock = time.monotonic

    def run_while_reading(self: Peer):  # type: ignore[no-untyped-def]
        self._calico_read = False
        start = clock()
        action = run(self)
        runs = 1
        while action == now and self._calico_read and runs < most and self.fsm == established \
                and not self.neighbor['rate-limit'] and clock() - start < most_seconds:
            self._calico_read = False
            action = run(self)
            runs += 1
        return action

    Protocol.read_message = read_message  # type: ignore[method-assign]
    Peer.run = run_while_reading  # type: ignore[method-assign]


HOLD_MOST = 0.005  # seconds a line of a received message waits in ExaBGP's pipe buffer at most


def _api_lines_per_read(most: float = HOLD_MOST) -> None:
    """Lines to the API process written without a flush each, and flushed together:
    - those of received messages (UPDATEs, OPENs, NOTIFICATIONs: `Processes.message`) when the
      reactor is about to block in its poll (nothing more to read: every UPDATE of a burst the peer
      sent together is in), or once the oldest has waited `most` seconds (a reactor busy sending
      never blocks);
    - any other (answers to API commands, session states) at the end of the reactor's pass (when it
      next polls, blocking or not), as the agent's command window waits for the answers.
    The same lines in the same order; ExaBGP's 8 KiB pipe buffer writes itself out when full, and a
    shutdown flushes first (`Processes.terminate`). A flush that fails is retried at the next poll
    (ExaBGP: "the buffer should be flushed at the next attempt"); a pipe closed under us (its
    process ended) has nowhere to go."""
    from exabgp.reactor.api.processes import ProcessError, Processes
    from exabgp.reactor.loop import Reactor

    clock = time.monotonic

    def write(self: Processes, process: str, string: "str | None", neighbor: object = None) -> bool:  # type: ignore[no-untyped-def]
        if string is None:
            return True
        stdin = self._process[process].stdin
        while True:
            try:
                stdin.write(bytes(f"{string}\n", "ascii"))
            except OSError as exc:
                self._broken.append(process)
                if exc.errno == errno.EPIPE:
                    raise ProcessError from None
                continue  # interrupted: ExaBGP retries the same way
            break
        held = self.__dict__.get("_calico_held")
        if held is None:
            held = self._calico_held = {}
            self._calico_since = clock()
        held[process] = stdin
        if not self.__dict__.get("_calico_in_message"):
            self._calico_urgent = True
        if self.__dict__.get("_calico_eager"):
            flush(self)
        return True

    def flush(self: Processes) -> None:
        held = self.__dict__.pop("_calico_held", None)
        self._calico_urgent = False
        if not held:
            return
        again = {}
        for process, stdin in held.items():
            try:
                stdin.flush()
            except ValueError:  # closed: its process ended, nothing to deliver to
                continue
            except OSError:
                again[process] = stdin
        if again:
            self._calico_held = again
            self._calico_since = clock()

    message = Processes.message

    def message_held(self: Processes, *args: object) -> None:
        self._calico_in_message = True
        try:
            message(self, *args)
        finally:
            self._calico_in_message = False

    terminate = Processes.terminate

    def terminate_flushing(self: Processes):  # type: ignore[no-untyped-def]
        self._calico_eager = True
        flush(self)
        return terminate(self)

    Processes.write = write  # type: ignore[method-assign]
    Processes.message = message_held  # type: ignore[method-assign]
    Processes.terminate = terminate_flushing  # type: ignore[method-assign]

    wait = Reactor._wait_for_io

    def _wait_for_io(self: Reactor, sleeptime: int):  # type: ignore[no-untyped-def]
        processes = getattr(self, "processes", None)  # None until the reactor made them
        if processes is not None and processes.__dict__.get("_calico_held") and (
                sleeptime or processes.__dict__.get("_calico_urgent") or clock() - processes._calico_since >= most):
            flush(processes)
        return wait(self, sleeptime)

    Reactor._wait_for_io = _wait_for_io  # type: ignore[method-assign]
