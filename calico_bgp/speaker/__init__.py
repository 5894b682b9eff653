"""The BGP speaker: ExaBGP 5 run as a supervised child and driven through its process API.

    neighbor.py  Neighbor: one session, a frozen validated value
    config.py    render_config(): ExaBGP configuration text (pure, deterministic)
    bridge.py    the API process ExaBGP runs; relays to the agent over a unix socket, always drains acks
    parse.py     ExaBGP JSON lines -> events.py values (pure)
    commands.py  command lines: attributes to send, checked and rendered; batching (pure)
    intent.py    RouteIntent: the routes each neighbor should have, for diffs and replay (no I/O)
    channel.py   the agent's end of the bridge: line reader, the ack-matched command window, the sender
    connection.py  the bridge's connection: its hello, one at a time, a newer one replaces the older
    process.py   ExaBGP child process: PDEATHSIG, pid file, leftover kill, restart backoff
    supervisor.py  ExaBGP kept running: restarted with back-off, watched for stalls
    replay.py    what a session is owed when it comes up (typed work items), and the task that sends it
    reload.py    the configuration file, reloads confirmed by ExaBGP's log, neighbour changes
    exabgp_run.py  ExaBGP's entry point with our patches (see the README's "ExaBGP patches")
    exabgp_fastpath.py  ExaBGP's API send path made linear in its neighbours (applied by exabgp_run)
    speaker.py   Speaker: the trio object the agent uses; wires the parts above

The package exports nothing: import from the module that holds a name, so the pure modules load
without trio.
"""
