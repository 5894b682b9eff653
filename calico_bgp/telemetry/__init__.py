"""What an agent tells about itself: Prometheus metrics, peer stability, churn and the event log.

    metrics.py    the Prometheus metrics of one agent
    stability.py  peer stability and route churn bookkeeping (pure)
    eventlog.py   the per-node event ring in etcd (`calico-bgp events`)
    bursts.py     bursts of one kind of event for one peer, summarised (pure)
"""
