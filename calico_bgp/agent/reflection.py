"""As a route reflector, what changed in the RIB re-announced to the iBGP neighbours it concerns
(routing/reflection decides how each prefix is reflected, through the neighbours' export filters:
routing/reflection_export; the speaker sends it, one command line for all the neighbours a route
goes to)."""
from __future__ import annotations

from calico_bgp.agent.state import AgentState
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection import reflections
from calico_bgp.speaker.speaker import Speaker


async def reflect(state: AgentState, speaker: Speaker, changed: set[Prefix] | None) -> None:
    """`changed` None: everything (a neighbour just added needs every reflected route)."""
    if state.local is None or not state.local.is_reflector or state.rib is None:
        return
    out = reflections(state.local, state.rib, list(state.rib_peers.values()), changed, state.reflection_export)
    await speaker.reflect({str(p): r for p, r in sorted(out.items())}, complete=changed is None)
