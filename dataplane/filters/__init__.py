"""Policy filters (PolicyFilter: deny/allow CIDR sets per interface), enforced at XDP or in netfilter.

    rules.py       the semantics, decided once and purely for every mode: rules -> a compiled FilterSet
    engine.py      FilterEngine: picks XDP, else nftables, else iptables + ipset, and applies a FilterSet
    xdp/           the XDP program (filter.c), loaded through libbpf, and the map encoder (enforce.py)
    nft.py         one nftables table of our own, every change one `nft -f` transaction
    ipt.py         iptables + ipset in the raw table, for hosts without nftables
"""
