"""Shared fixtures: one real etcd per test session, a fresh key prefix per test."""
from __future__ import annotations

import itertools
import os

import pytest

from tests.etcd_server import EtcdServer

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def etcd_server():
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_url(etcd_server) -> str:
    return etcd_server.url


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test uses, so tests share one etcd without seeing each other's keys."""
    return f"/t{os.getpid()}-{next(_prefixes)}/calico-bgp/v1"


def needs_root():
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")
