"""As a route reflector, what changed in the RIB re-announced to the iBGP neighbours it concerns
(rib.reflections decides what each neighbour gets; this sends it, grouped by attributes)."""
from __future__ import annotations

from calico_bgp.agent.state import AgentState
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection import reflections
from calico_bgp.speaker.speaker import Speaker


async def reflect(state: AgentState, speaker: Speaker, changed: set[Prefix] | None) -> None:
    """`changed` None: everything (a neighbour just added needs every reflected route)."""
    if state.local is None or not state.local.is_reflector or state.rib is None:
        return
    neighbors = [p for p in state.rib_peers.values() if p.ibgp]
    out = reflections(state.local, state.rib, neighbors, changed)
    for neighbor, per_prefix in out.items():
        withdraw = [str(p) for p, a in per_prefix.items() if a is None]
        if withdraw:
            await speaker.withdraw([neighbor], withdraw)
        groups: dict[PathAttributes, list[str]] = {}
        for p, a in per_prefix.items():
            if a is not None:
                groups.setdefault(a, []).append(str(p))
        for a, prefixes in groups.items():
            await speaker.announce([neighbor], prefixes, attributes=a)
