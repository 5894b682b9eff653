"""Block IPAM: pools cut into blocks affine to nodes, allocation by compare-and-swap in etcd.

Knows nothing of BGP; reaches etcd only through `calico_bgp.datastore`.
"""
from ipam.block import Allocated, AllocationAttribute, Block, InUse, Released
from ipam.errors import (
                         BlockConflict,
                         CASRetriesExhausted,
                         CorruptBlock,
                         InvalidAddress,
                         IPAMError,
                         NoEligiblePool,
                         NotAllocated,
                         PoolExhausted,
                         StaleRelease,
)
from ipam.pool import Pool
from ipam.records import Affinity, Handle

__all__ = ["Allocated", "AllocationAttribute", "Block", "InUse", "Released", "BlockConflict",
           "CASRetriesExhausted", "CorruptBlock", "InvalidAddress", "IPAMError", "NoEligiblePool",
           "NotAllocated", "PoolExhausted", "StaleRelease", "Pool", "Affinity", "Handle"]
