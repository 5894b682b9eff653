"""The resources users apply, in Calico's projectcalico.org/v3 shape, and their store in etcd.

    model.py         what every resource shares: metadata, {metadata, spec} dicts and JSON <-> resources
    ippool.py        IPPool
    node.py          Node
    bgpconfig.py     BGPConfiguration
    bgppeer.py       BGPPeer
    bgpsession.py    what BGPConfiguration and BGPPeer both set on a session (timers, password, origin validation)
    bgpfilter.py     BGPFilter
    policyfilter.py  PolicyFilter
    bfdconfig.py     BFDConfiguration: BFD timers per interface for the nodes a selector picks
    kinds.py         the kinds by name: the Resource union, the aliases the CLI takes
    fields.py        the field parsers, and the errors that name a field
    durations.py     durations as Kubernetes/Go spell them (300ms, 1m30s), held in whole milliseconds
    selector.py      Calico's label selector language
    codec.py         attrs classes <-> compact JSON: the one codec for values stored in etcd
    documents.py     YAML documents <-> resources (apply -f, get -o yaml)
    consistency.py   checks across resources, over a snapshot (pure)
    store.py         the typed store in etcd: decoding reads, checked CAS-guarded writes
    view.py          the agent's view of the cluster: every resource and IPAM block, kept by one etcd watch
"""
