"""What an agent tells about itself: Prometheus metrics, peer stability, churn and the event log.

    metrics.py    the Prometheus registry of one agent and its node-wide event counters
    collector.py  per-peer and per-node figures read from the agent at scrape time
    stability.py  peer stability and route churn bookkeeping (pure)
    eventlog.py   the per-node event ring in etcd (`calico-bgp events`)
    bursts.py     bursts of one kind of event for one peer, summarised (pure)
"""
