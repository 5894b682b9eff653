"""EtcdClient against private etcd processes: failover, a restart under a live watch, auth, TLS."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time

import httpx
import pytest
import trio

from calico_bgp.datastore import AuthFailed, EtcdClient, EtcdUnavailable, Get, LeaseExpired, TLSConfig, WatchBatch
from lab.etcd import EtcdServer, free_port


class OwnEtcd(EtcdServer):
    """A private etcd: extra flags, https with a test CA, and halt()/start() on the same data dir and ports."""

    def __init__(self, *, extra: list[str] | None = None, tls: dict[str, str] | None = None) -> None:
        super().__init__()
        self.extra, self.tls = extra or [], tls
        if tls:
            self.url = self.url.replace("http://", "https://")

    def start(self) -> "OwnEtcd":
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log = open(os.path.join(self.data_dir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--name", "test", "--data-dir", os.path.join(self.data_dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--log-level", "warn", "--logger", "zap", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "ETCD_UNSUPPORTED_ARCH": "arm64"})
        verify: ssl.SSLContext | bool = True
        if self.tls:
            verify = ssl.create_default_context(cafile=self.tls["ca"])
            verify.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; log in {self.data_dir}/etcd.log")
            try:
                if b"true" in httpx.get(self.url + "/health", verify=verify, trust_env=False, timeout=1).content:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("etcd did not become healthy within 20 s")

    def halt(self) -> None:
        """Stop the process but keep its data, to start it again on the same ports."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def make_etcd():
    started: list[OwnEtcd] = []

    def make(**kwargs) -> OwnEtcd:
        server = OwnEtcd(**kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()  # kills the process and removes its data dir, also after a failed test


@pytest.fixture
def silent_endpoint():
    """Accepts TCP connections (kernel backlog) but never answers: a hung etcd."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def collect_events(watch, count: int, seconds: float = 15.0):
    events = []
    with trio.fail_after(seconds):
        while len(events) < count:
            item = await watch.__anext__()
            assert isinstance(item, WatchBatch), item
            events.extend(item.events)
    assert len(events) == count, events
    return events


# --- failover -------------------------------------------------------------------------------------

async def test_failover_past_a_dead_endpoint_and_stick_with_the_live_one(etcd_url, key_prefix):
    dead = dead_endpoint()
    async with EtcdClient([dead, etcd_url], timeout=2) as client:
        await client.put(f"{key_prefix}/a", "1")
        assert client.transport.endpoint == etcd_url
        ok, kv = await client.create(f"{key_prefix}/b", "2")
        assert ok and (await client.get(f"{key_prefix}/b")) == kv
        async with client.watch(f"{key_prefix}/", kv.mod_revision) as watch:
            (event,) = await collect_events(watch, 1)
        assert event.kv == kv


async def test_failover_past_a_hung_endpoint(etcd_url, key_prefix, silent_endpoint):
    async with EtcdClient([silent_endpoint, etcd_url], timeout=1) as client:
        t0 = trio.current_time()
        assert await client.get(f"{key_prefix}/none") is None
        assert trio.current_time() - t0 < 2.5
        assert client.transport.endpoint == etcd_url


async def test_read_only_txn_fails_over_past_a_hung_endpoint(etcd_url, key_prefix, silent_endpoint):
    async with EtcdClient([silent_endpoint, etcd_url], timeout=1) as client:
        res = await client.txn([], [Get(f"{key_prefix}/a"), Get(f"{key_prefix}/", prefix=True)], [])
        assert res.succeeded and res.responses == [[], []]


async def test_cas_on_a_hung_endpoint_is_not_retried_blindly(etcd_url, key_prefix, silent_endpoint):
    async with EtcdClient([silent_endpoint, etcd_url], timeout=1) as client:
        with pytest.raises(EtcdUnavailable, match="outcome unknown"):
            await client.create(f"{key_prefix}/k", "v")
        ok, _ = await client.create(f"{key_prefix}/k", "v")  # the next call starts at the next endpoint
        assert ok


async def test_all_endpoints_dead_fails_promptly_naming_each(key_prefix):
    dead = [dead_endpoint(), dead_endpoint()]
    async with EtcdClient(dead, timeout=2) as client:
        t0 = trio.current_time()
        with pytest.raises(EtcdUnavailable) as err:
            await client.get(f"{key_prefix}/a")
        assert trio.current_time() - t0 < 3
    assert str(err.value) == f"etcd unreachable at {dead[0]}: connection refused; {dead[1]}: connection refused"


def test_cli_exits_3_when_etcd_is_unreachable(capsys):
    from calico_bgp.cli.common import EXIT_UNAVAILABLE, run

    dead = dead_endpoint()

    async def read() -> None:
        async with EtcdClient([dead], timeout=1) as client:
            await client.get("/x")

    with pytest.raises(SystemExit) as exc:
        run(read)
    assert exc.value.code == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.strip() == f"error: etcd unreachable at {dead}: connection refused"


# --- a restart under a live watch -----------------------------------------------------------------

async def test_watch_resumes_across_an_etcd_restart_without_loss_or_duplicates(make_etcd):
    server = make_etcd()
    async with EtcdClient([server.url], timeout=2) as client:
        start = await client.put("/r/0", "0")
        seen = []
        async with client.watch("/r/", start) as watch:
            seen += await collect_events(watch, 1)
            await client.put("/r/1", "1")
            seen += await collect_events(watch, 1)
            await trio.to_thread.run_sync(server.halt)

            async def read_rest() -> None:
                nonlocal seen
                seen += await collect_events(watch, 4, seconds=30)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_rest)  # retries while etcd is down
                await trio.sleep(1)
                await trio.to_thread.run_sync(server.start)
                for i in range(2, 6):  # written before the watch has necessarily reconnected
                    await client.put(f"/r/{i}", str(i))
            with trio.move_on_after(0.5):
                extra = await watch.__anext__()
                pytest.fail(f"duplicate or unexpected item {extra}")
    assert [e.kv.value for e in seen] == [str(i).encode() for i in range(6)]
    revisions = [e.kv.mod_revision for e in seen]
    assert revisions == sorted(set(revisions))


async def test_keep_lease_alive_rides_out_a_short_outage_and_gives_up_after_the_ttl(make_etcd):
    server = make_etcd()
    ttl = 4
    async with EtcdClient([server.url], timeout=1) as client:
        lease = await client.lease_grant(ttl)
        await client.put("/status/n1", "up", lease=lease)
        long_outage_began = None
        with pytest.RaisesGroup(LeaseExpired):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.keep_lease_alive, lease, ttl)
                await trio.to_thread.run_sync(server.halt)  # a short outage: a restart
                await trio.to_thread.run_sync(server.start)
                await trio.sleep(1.5)
                assert (await client.get("/status/n1")).lease == lease
                await trio.to_thread.run_sync(server.halt)  # a long outage: the keeper must not pretend
                long_outage_began = trio.current_time()
                with trio.fail_after(3 * ttl):
                    await trio.sleep_forever()
        assert long_outage_began is not None, "LeaseExpired came during the short outage"
        assert trio.current_time() - long_outage_began < ttl + 2


# --- auth -----------------------------------------------------------------------------------------

async def test_auth_wrong_password_no_password_right_password_and_token_refresh(make_etcd):
    server = make_etcd()
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        for path, body in [("/v3/auth/user/add", {"name": "root", "password": "s3cret"}),
                           ("/v3/auth/role/add", {"name": "root"}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/enable", {})]:
            (await http.post(path, json=body)).raise_for_status()

    async with EtcdClient([server.url], username="root", password="wrong") as client:
        with pytest.raises(AuthFailed) as err:
            await client.get("/a")
        assert str(err.value) == f"etcd at {server.url} rejected user 'root': invalid user name or password"
    async with EtcdClient([server.url]) as client:
        with pytest.raises(AuthFailed, match="requires authentication"):
            await client.put("/a", "1")
    async with EtcdClient([server.url], username="root", password="s3cret") as client:
        rev = await client.put("/a", "1")
        ok, kv = await client.cas("/a", "2", rev)
        assert ok and (await client.get("/a")) == kv
        # a token etcd no longer accepts is replaced once, transparently
        client.transport._token = "stale.token"
        client.transport._headers["Authorization"] = "stale.token"
        assert (await client.get("/a")).value == b"2"
        client.transport._headers["Authorization"] = "stale.again"  # many tasks at once: one refresh serves all
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(client.get, "/a")
        async with client.watch("/", kv.mod_revision) as watch:
            (event,) = await collect_events(watch, 1)
        assert event.kv == kv


# --- TLS ------------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path):
    """A throwaway CA, a server cert for IP 127.0.0.1 and a client cert, all signed by it."""
    d = str(tmp_path)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=calico-bgp test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    # etcd's gateway dials its own gRPC port presenting the server cert, so that cert needs clientAuth too
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")]:
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (tmp_path / f"{name}.ext").write_text(ext)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)
    return {k: os.path.join(d, v) for k, v in [("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"),
                                              ("client_cert", "client.pem"), ("client_key", "client.key")]}


async def test_tls_with_client_certificates(make_etcd, pki):
    server = make_etcd(tls=pki, extra=["--cert-file", pki["cert"], "--key-file", pki["key"],
                                       "--trusted-ca-file", pki["ca"], "--client-cert-auth"])
    tls = TLSConfig(ca_cert=pki["ca"], cert=pki["client_cert"], key=pki["client_key"])
    async with EtcdClient([server.url], tls=tls) as client:
        rev = await client.put("/tls", "ok")
        assert (await client.get("/tls")).mod_revision == rev
    async with EtcdClient([server.url], timeout=2) as client:  # the system trust store does not know our CA
        with pytest.raises(EtcdUnavailable) as err:
            await client.get("/tls")
    assert f"etcd unreachable at {server.url}: TLS certificate verify failed" in str(err.value)
    async with EtcdClient([server.url], tls=TLSConfig(ca_cert=pki["ca"]), timeout=2) as client:
        with pytest.raises(EtcdUnavailable, match="client certificate"):  # etcd drops a client without one
            await client.get("/tls")
