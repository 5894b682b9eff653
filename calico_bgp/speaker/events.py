"""What ExaBGP tells the agent, as typed values. Peers are named by their address as ExaBGP prints it.
The values an UPDATE carries (path attributes, malformations) are the routing core's own."""
from __future__ import annotations

from typing import Mapping, Union

import attrs

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.backoff import EXABGP_EXITED as EXABGP_EXITED  # a PeerState's reason: ExaBGP went away
from calico_bgp.routing.malformed import Malformation


@attrs.frozen(slots=True)
class Update:
    """One family of one UPDATE: prefixes announced (with their attributes) and withdrawn, and what
    was wrong with the UPDATE's attributes (the same for every family it carried). `path_ids`: the
    add-path identifier (RFC 7911) of each announced prefix that came with one."""

    peer: str
    family: str
    announced: Mapping[str, PathAttributes] = attrs.field(factory=dict, hash=False)
    withdrawn: tuple[str, ...] = ()
    malformed: tuple[Malformation, ...] = ()
    path_ids: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen(slots=True)
class EndOfRib:
    peer: str
    family: str


@attrs.frozen(slots=True)
class PeerState:
    """`connected` (TCP up), `up` (Established) or `down` (with ExaBGP's reason, or EXABGP_EXITED)."""

    peer: str
    state: str
    reason: str = ""
    local_address: str = ""
    local_as: int = 0
    peer_as: int = 0
    at: float = 0.0  # unix time of the change, as ExaBGP stamped it


@attrs.frozen(slots=True)
class PeerOpen:
    """The OPEN a peer sent: what of it the agent uses. Its graceful-restart capability (RFC 4724):
    the restart time (None: no capability), the families it lists (only routes of those are kept
    while it restarts; BIRD's and FRR's default "aware"/helper mode lists none) and of those, the
    ones whose forwarding state it kept (F bit: after a restart, stale routes of the others go at once)."""

    peer: str
    graceful_restart: int | None = None
    graceful_families: tuple[str, ...] = ()   # "ipv4 unicast", ...
    forwarding_kept: tuple[str, ...] = ()
    route_refresh: bool = False  # it advertised ROUTE-REFRESH (RFC 2918): it resends its routes when asked


@attrs.frozen(slots=True)
class Notification:
    """A BGP NOTIFICATION sent or received on a session."""

    peer: str
    direction: str
    code: int
    subcode: int
    data: str = ""


@attrs.frozen(slots=True)
class ExaBGPShutdown:
    """ExaBGP announced that it is exiting."""


@attrs.frozen(slots=True)
class BridgeConnected:
    """A (new) API bridge connected: ExaBGP (re)started or replaced its API process."""


@attrs.frozen(slots=True)
class BridgeLost:
    """The API bridge went away; ExaBGP is restarting or gone."""


Event = Union[Update, EndOfRib, PeerState, PeerOpen, Notification, ExaBGPShutdown, BridgeConnected, BridgeLost]


@attrs.frozen(slots=True)
class Ack:
    """ExaBGP's answer to one command: `done` (ok) or `error`."""

    ok: bool


@attrs.frozen(slots=True)
class Text:
    """A plain text line ExaBGP wrote to the API process (e.g. `reload in progress`)."""

    text: str


@attrs.frozen(slots=True)
class Ignored:
    """A well-formed message of a kind the speaker does not use (open, keepalive, fsm, ...)."""

    kind: str
