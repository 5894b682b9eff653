"""The BGP speaker: ExaBGP 5 run as a supervised child and driven through its process API.

    neighbor.py  Neighbor: one session, a frozen validated value
    config.py    render_config(): ExaBGP configuration text (pure, deterministic)
    bridge.py    the API process ExaBGP runs; relays to the agent over a unix socket, always drains acks
    parse.py     ExaBGP JSON lines -> events.py values (pure)
    commands.py  command lines: attributes to send, checked and rendered; batching (pure)
    intent.py    RouteIntent: the routes each neighbor should have, for diffs and replay (no I/O)
    channel.py   the agent's end of the bridge: line reader and the ack-matched command window
    process.py   ExaBGP child process: PDEATHSIG, pid file, leftover kill, restart backoff
    exabgp_run.py  ExaBGP's entry point with our patches (see the README's "ExaBGP patches")
    speaker.py   Speaker: the trio object the agent uses

The package exports nothing: import from the module that holds a name, so the pure modules load
without trio.
"""
