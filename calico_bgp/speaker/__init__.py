"""The BGP speaker: ExaBGP 5 run as a supervised child and driven through its process API.

    neighbor.py  Neighbor: one session, a frozen validated value
    config.py    render_config(): ExaBGP configuration text (pure, deterministic)
    bridge.py    the API process ExaBGP runs; relays to the agent over a unix socket, always drains acks
    parse.py     ExaBGP JSON lines -> events.py values (pure)
    commands.py  RouteSpec and command batching (pure)
    intent.py    RouteIntent: the routes each neighbor should have, for diffs and replay (no I/O)
    channel.py   the agent's end of the bridge: line reader and the ack-matched command window
    process.py   ExaBGP child process: PDEATHSIG, pid file, leftover kill, restart backoff
    speaker.py   Speaker: the trio object the agent uses
"""
from calico_bgp.speaker.commands import RouteSpec
from calico_bgp.speaker.errors import (
    InvalidNeighbor, InvalidRoute, MalformedMessage, SpeakerError,
)
from calico_bgp.speaker.events import (
    BridgeConnected, BridgeLost, EndOfRib, Event, ExaBGPShutdown, Notification, PathAttributes, PeerState, Update,
)
from calico_bgp.speaker.neighbor import IPV4_UNICAST, IPV6_UNICAST, Neighbor
from calico_bgp.speaker.speaker import Speaker

__all__ = [
    "BridgeConnected", "BridgeLost", "EndOfRib", "Event", "ExaBGPShutdown",
    "IPV4_UNICAST", "IPV6_UNICAST", "InvalidNeighbor", "InvalidRoute", "MalformedMessage", "Neighbor",
    "Notification", "PathAttributes", "PeerState", "RouteSpec", "Speaker", "SpeakerError", "Update",
]
