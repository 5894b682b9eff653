"""etcd v3 through its JSON gateway, natively under trio (httpx). Imports nothing else of calico_bgp.

Error types are mapped to CLI exit codes in calico_bgp.cli_common, not here, to keep that direction.
"""
from calico_bgp.datastore import codec
from calico_bgp.datastore.client import EtcdClient
from calico_bgp.datastore.errors import AuthFailed, Compacted, DatastoreError, EtcdError, EtcdUnavailable, LeaseExpired
from calico_bgp.datastore.keys import Keys
from calico_bgp.datastore.types import (Compare, Delete, Get, KeyValue, Put, RangeResult, Resync, TLSConfig,
                                        TxnResult, WatchBatch, WatchEvent)
from calico_bgp.datastore.watch import Watch

__all__ = ["EtcdClient", "TLSConfig", "KeyValue", "RangeResult", "TxnResult", "Compare", "Put", "Delete", "Get",
           "WatchBatch", "WatchEvent", "Resync", "Watch", "DatastoreError", "EtcdUnavailable", "EtcdError",
           "AuthFailed", "LeaseExpired", "Compacted", "Keys", "codec"]
