"""etcd v3 through its JSON gateway, natively under trio (httpx). Imports nothing else of calico_bgp.

Error types are mapped to CLI exit codes in calico_bgp.cli.common, not here, to keep that direction.
The values, keys and errors are plain imports; the client and the watch (httpx, trio) load on first
use, so a module that only needs a key or an error type stays free of I/O. The codec for stored
values is calico_bgp.resources.codec.
"""
from calico_bgp.datastore.errors import AuthFailed, Compacted, DatastoreError, EtcdError, EtcdUnavailable, LeaseExpired
from calico_bgp.datastore.keys import Keys
from calico_bgp.datastore.types import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Put,
    RangeResult,
    Resync,
    TLSConfig,
    TxnResult,
    WatchBatch,
    WatchEvent,
)

__all__ = ["EtcdClient", "TLSConfig", "KeyValue", "RangeResult", "TxnResult", "Compare", "Put", "Delete", "Get",
           "WatchBatch", "WatchEvent", "Resync", "Watch", "DatastoreError", "EtcdUnavailable", "EtcdError",
           "AuthFailed", "LeaseExpired", "Compacted", "Keys"]


def __getattr__(name: str) -> object:
    """The I/O half (PEP 562): `from calico_bgp.datastore import EtcdClient` loads httpx then."""
    if name == "EtcdClient":
        from calico_bgp.datastore.client import EtcdClient
        return EtcdClient
    if name == "Watch":
        from calico_bgp.datastore.watch import Watch
        return Watch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
