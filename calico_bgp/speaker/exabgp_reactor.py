"""ExaBGP's reactor loop: when a reload is carried out (patched into ExaBGP by exabgp_run, as its
other mends are; see the README's "ExaBGP patches").

Must import under Python 3.9 (PyPy's ExaBGP runs it).
"""
from __future__ import annotations


def _reload_past_sessions_not_up() -> None:
    """ExaBGP carries out a reload only once no peer has routes queued ("did we complete the run of
    updates caused by the last SIGUSR1/SIGUSR2?", Reactor.run), and counted every peer it dials, up
    or not. A peer that is not Established sends nothing, so its queue stays until the session is
    up or the connection fails: a peer whose TCP connect hangs (SYNs unanswered, about 2 minutes)
    held back every reload that long, the one that would have fixed its address among them (the
    rack lab's nodes first dialled their ToRs from the loopback address, before the agent registered
    its link addresses). Only Established peers' queues count now; what is queued for another is
    kept by its RIB as before and sent when it comes up (Peer.reconfigure updates the RIB of a peer
    that is not Established directly)."""
    from exabgp.reactor.loop import Reactor
    from exabgp.reactor.peer import FSM

    def _pending_adjribout(self: Reactor) -> bool:  # type: ignore[no-untyped-def]
        for key in self.active_peers():
            peer = self._peers[key]
            if peer.fsm == FSM.ESTABLISHED and peer.neighbor.rib.outgoing.pending():
                return True
        return False

    Reactor._pending_adjribout = _pending_adjribout  # type: ignore[method-assign]


def patch() -> None:
    _reload_past_sessions_not_up()
