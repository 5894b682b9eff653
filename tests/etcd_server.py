"""The tests' etcd: the class lives in lab.etcd so the demo and the tests start etcd the same way."""
from lab.etcd import EtcdServer, find_etcd, free_port

__all__ = ["EtcdServer", "find_etcd", "free_port"]
