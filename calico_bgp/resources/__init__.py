"""The resources users apply, in Calico's projectcalico.org/v3 shape, and their store in etcd.

    model.py     IPPool, Node, BGPConfiguration, BGPPeer, BGPFilter, PolicyFilter: attrs values, validated
    fields.py    the field parsers, and the errors that name a field
    selector.py  Calico's label selector language
    codec.py     attrs classes <-> compact JSON: the one codec for values stored in etcd
    store.py     YAML documents <-> resources, cross-resource checks, the typed store in etcd
    view.py      the agent's view of the cluster: every resource and IPAM block, kept by one etcd watch
"""
