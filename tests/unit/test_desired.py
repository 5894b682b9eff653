import ipaddress

from calico_bgp import desired, model
from ipam.block import Block


def pool(name, cidr, **kw):
    return model.IPPool(model.Metadata(name), model.IPPoolSpec(cidr=cidr, **kw))


def test_announcements_blocks_borrowed_and_no_export_pools():
    mine = Block.new("198.19.0.0/26", "a")
    theirs, got_ips = Block.new("198.19.0.64/26", "b").allocate(2, "h", node="a")
    hidden = Block.new("198.18.128.0/26", "a")
    blocks = {b.cidr: b for b in (mine, theirs, hidden)}
    pools = [pool("p", "198.19.0.0/16"), pool("q", "198.18.128.0/24", disable_bgp_export=True)]
    got = desired.announcements("a", blocks, pools)
    assert ipaddress.ip_network("198.19.0.0/26") in got
    assert ipaddress.ip_network("198.18.128.0/26") not in got
    assert {str(p) for p in got if p.prefixlen == 32} == {f"{a.ip}/32" for a in got_ips}
    usage, borrowed = desired.pool_usage("a", blocks, pools)
    assert borrowed == 2 and usage["p"] == (2 / 65536, 2)
