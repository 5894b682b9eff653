"""Outgoing NAT (IPPool natOutgoing): traffic from a masquerading pool to an address in no pool leaves
with the node's address, in nftables or iptables + ipset.

    rules.py       NatSet: the pools that masquerade and every pool, per family (the one value)
    engine.py      NatEngine: the filters' netfilter mode, else nftables, else iptables; apply / remove
    nft.py         one nftables table of our own, compared and rewritten in one `nft -f` transaction
    ipt.py         felix's rule and ipsets under our names, for hosts without nftables
"""
