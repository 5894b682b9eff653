"""The pool as IPAM sees it: a CIDR cut into blocks. Callers decide which pools a node may use."""
from __future__ import annotations

import functools
import ipaddress
import zlib
from typing import Iterator

import attrs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}


def _check_block_size(inst: "Pool", attribute: attrs.Attribute, value: int) -> None:
    net = ipaddress.ip_network(inst.cidr, strict=True)
    lo, hi = BLOCK_SIZE_RANGE[net.version]
    if not lo <= value <= hi:
        raise ValueError(f"pool {inst.name}: blockSize {value} out of range {lo}..{hi} for IPv{net.version}")
    if value < net.prefixlen:
        raise ValueError(f"pool {inst.name}: blockSize {value} is larger than the pool {inst.cidr}")


@attrs.frozen
class Pool:
    name: str
    cidr: str
    block_size: int = attrs.field(validator=_check_block_size)
    disabled: bool = False

    @property
    def network(self) -> IPNetwork:
        return _network(self.cidr)

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def size(self) -> int:
        return self.network.num_addresses

    def contains(self, cidr_or_ip: str) -> bool:
        return _contains(self.cidr, cidr_or_ip)

    def block_count(self) -> int:
        return 1 << (self.block_size - self.network.prefixlen)

    def block_cidrs(self, node: str = "") -> Iterator[str]:
        """Every block CIDR of the pool, starting at an offset derived from the node name so
        nodes claiming at the same moment rarely race for the same block."""
        n = self.block_count()
        start = zlib.crc32(node.encode()) % n if node else 0
        base = int(self.network.network_address)
        step = 1 << (self.network.max_prefixlen - self.block_size)
        cls = type(self.network)
        for i in range(n):
            j = (start + i) % n
            yield str(cls((base + j * step, self.block_size)))


@functools.lru_cache(maxsize=4096)
def _network(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr)


@functools.lru_cache(maxsize=65536)
def _contains(pool_cidr: str, cidr_or_ip: str) -> bool:
    try:
        net = ipaddress.ip_network(cidr_or_ip, strict=False)
    except ValueError:
        return False
    pool = _network(pool_cidr)
    return net.version == pool.version and net.subnet_of(pool)  # type: ignore[arg-type]


def pool_for(pools: list[Pool], cidr_or_ip: str) -> Pool | None:
    for p in pools:
        if p.contains(cidr_or_ip):
            return p
    return None
