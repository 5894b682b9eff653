"""ExaBGP's reactor loop: when a reload is carried out, and how lines reach the API process (patched
into ExaBGP by exabgp_run, as its other mends are; see the README's "ExaBGP patches").

Must import under Python 3.9 (PyPy's ExaBGP runs it).
"""
from __future__ import annotations


def _batched_api_writes() -> None:
    """ExaBGP flushed its pipe to the API process after every line it wrote: one write(2) per UPDATE
    it reports and per answer, which was a quarter of its CPU under steady churn (1,000 one-prefix
    UPDATEs a second; py-spy on bench/churn.py). Lines now stay in the pipe's buffer (8 KiB; a full
    buffer goes out by itself) until the reactor is about to wait for its sockets, once per pass of
    its loop: the same lines in the same order, a pass later at most, which is before the reactor
    could do anything else. A shutdown still writes at once."""
    import errno

    from exabgp.reactor.api.processes import ProcessError, Processes
    from exabgp.reactor.loop import Reactor

    def write(self: Processes, process: str, string: str | None, neighbor: object = None) -> bool:  # type: ignore[no-untyped-def]
        if string is None:
            return True
        while True:
            try:
                self._process[process].stdin.write(bytes(f"{string}\n", "ascii"))
            except OSError as exc:
                self._broken.append(process)
                if exc.errno == errno.EPIPE:
                    raise ProcessError from None
                continue  # interrupted: ExaBGP retries the same way
            break
        self.__dict__.setdefault("_calico_unflushed", set()).add(process)
        if getattr(self, "_calico_eager", False):
            _flush(self)
        return True

    def _flush(self: Processes) -> None:
        for process in self.__dict__.pop("_calico_unflushed", ()):
            proc = self._process.get(process)
            if proc is None:  # gone (terminated, replaced): nothing to flush into
                continue
            try:
                proc.stdin.flush()
            except OSError:  # as ExaBGP: a failed flush is retried with the next one
                self.__dict__.setdefault("_calico_unflushed", set()).add(process)

    terminate = Processes.terminate

    def terminate_flushing(self: Processes):  # type: ignore[no-untyped-def]
        self._calico_eager = True
        _flush(self)
        return terminate(self)

    Processes.write = write  # type: ignore[method-assign]
    Processes.terminate = terminate_flushing  # type: ignore[method-assign]

    wait = Reactor._wait_for_io

    def _wait_for_io(self: Reactor, sleeptime: int):  # type: ignore[no-untyped-def]
        processes = getattr(self, "processes", None)  # None until the reactor made them
        if processes is not None and processes.__dict__.get("_calico_unflushed"):
            _flush(processes)
        return wait(self, sleeptime)

    Reactor._wait_for_io = _wait_for_io  # type: ignore[method-assign]


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
    _batched_api_writes()
