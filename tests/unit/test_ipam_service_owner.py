"""The agent's warm IPAM process (calico_bgp/agent/ipam_service.py): started on the first connection to
the socket the agent binds, its output in the agent's log, restarted when it dies (connections
turned away meanwhile, so the executables run their operations themselves), gone when idle until
the next connection, stopped with the agent, its socket root-only and removed."""
from __future__ import annotations

import logging
import os
import re
import stat

import pytest
import trio

from calico_bgp.agent.ipam_service import IpamServiceOwner
from calico_bgp.cni import service
from calico_bgp.speaker.process import Backoff

BAD_ADD = ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}, b"not json")


def served_by(reply) -> int:
    """The pid that answered: the plugin's log lines name it, calico-bgp-ipam[pid]."""
    code, out, err = reply
    assert code == 1 and b'"code": 6' in out.replace(b'"code":6', b'"code": 6'), (out, err)  # stdin is not JSON
    return int(re.search(rb"calico-bgp-ipam\[(\d+)\]", err).group(1))


@pytest.fixture
def sock(tmp_path, monkeypatch):
    path = str(tmp_path / "run" / "ipam.sock")
    monkeypatch.setattr(service, "socket_path", lambda: path)
    return path


async def ask(*request):
    return await trio.to_thread.run_sync(service.ask, *(request or BAD_ADD))


async def test_started_on_first_use_logged_restarted_and_stopped_with_the_agent(sock, caplog):
    caplog.set_level(logging.INFO, "calico_bgp.agent.ipam_service")
    owner = IpamServiceOwner(idle=60, backoff=Backoff(first=0.3, cap=0.3))
    async with trio.open_nursery() as n:
        await n.start(owner.run)
        mode = os.stat(sock).st_mode
        assert stat.S_IMODE(mode) == 0o600 and stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
        assert owner.pid is None and owner.starts == 0  # nothing runs until a plugin asks
        first = served_by(await ask())
        assert first == owner.pid != os.getpid() and owner.starts == 1
        assert served_by(await ask()) == first  # warm: the same process answers the next one
        os.kill(first, 9)
        with trio.fail_after(20):
            while owner.failures == 0:
                await trio.sleep(0.02)
            assert await ask() is None  # during the back-off: turned away, the executable does it itself
            while (reply := await ask()) is None:
                await trio.sleep(0.05)
        second = served_by(reply)
        assert second != first and owner.starts == 2
        n.cancel_scope.cancel()
    assert owner.pid is None and not os.path.exists(f"/proc/{second}") and os.listdir(os.path.dirname(sock)) == []
    assert await ask() is None  # no agent: nothing answers, the plugin runs in its own process
    logged = caplog.text
    assert f"event=ipam_service_started pid={first}" in logged and f"event=ipam_service_started pid={second}" in logged
    assert "event=ipam_service_exited" in logged and "code=-9" in logged
    assert re.search(rf"event=ipam_service_log pid={first} line=.*calico-bgp-ipam\[{first}\]", logged)


async def test_an_idle_process_leaves_and_the_next_connection_starts_another(sock):
    owner = IpamServiceOwner(idle=0.3)
    async with trio.open_nursery() as n:
        await n.start(owner.run)
        first = served_by(await ask())
        with trio.fail_after(20):
            while owner.pid is not None:
                await trio.sleep(0.02)
        assert owner.failures == 0 and os.path.exists(sock)  # an idle exit is no failure; the socket stays
        second = served_by(await ask())
        assert second != first and owner.starts == 2
        n.cancel_scope.cancel()


async def test_a_second_owner_of_the_same_socket_serves_nothing(sock, caplog):
    first = IpamServiceOwner()
    async with trio.open_nursery() as n:
        await n.start(first.run)
        other = IpamServiceOwner()
        with trio.fail_after(5):
            await other.run()  # returns at once: the first holds the socket
        assert "event=ipam_service_not_served" in caplog.text and os.path.exists(sock)
        assert first.starts == 0
        n.cancel_scope.cancel()


async def test_when_the_code_on_disk_changes_the_agent_serves_the_new_socket(tmp_path, monkeypatch):
    """An upgrade renames the socket the plugins look for (service.socket_path keys the modules' stamps):
    the agent moves there, and the old socket and its process go."""
    names = [str(tmp_path / "run" / "old.sock")]
    monkeypatch.setattr(service, "socket_path", lambda: names[-1])
    owner = IpamServiceOwner(idle=60, recheck=0.05)
    async with trio.open_nursery() as n:
        await n.start(owner.run)
        old_pid = served_by(await ask())
        names.append(str(tmp_path / "run" / "new.sock"))
        with trio.fail_after(10):
            while owner.path != names[-1]:
                await trio.sleep(0.02)
        assert not os.path.exists(names[0]) and not os.path.exists(f"/proc/{old_pid}")
        assert served_by(await ask()) not in (old_pid, os.getpid())
        n.cancel_scope.cancel()


async def test_an_invocation_runs_in_the_executables_working_directory(sock, tmp_path, monkeypatch):
    """A relative log_file_path means what it meant to the executable, not the agent's directory."""
    import json

    monkeypatch.chdir(tmp_path)
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "calico-bgp-ipam", "nodename": "n1",
            "etcd_endpoints": f"unix://{tmp_path}/no-etcd.sock:2379", "log_file_path": "cni.log"}
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    owner = IpamServiceOwner(idle=60)
    async with trio.open_nursery() as n:
        await n.start(owner.run)
        code, out, _ = await ask(env, json.dumps(conf).encode())
        n.cancel_scope.cancel()
    assert code == 1 and json.loads(out)["code"] == 11  # etcd unreachable: logged
    assert "event=cni_failed" in (tmp_path / "cni.log").read_text()


def test_the_config_can_keep_every_invocation_in_its_own_process():
    assert service.wanted(b'{"ipam_service": false}') is False and service.wanted(b'{"ipam_service": 0}') is False
    for on in (b"{}", b'{"ipam_service": true}', b'{"ipam_service": 60}', b"not json"):
        assert service.wanted(on) is True
    assert service.wanted(b'{"ipam_service" :\n false, "mtu": 1500}') is False  # read without JSON
    assert service.wanted(b'{"ipam": {"ipam_service": true}, "ipam_service": false}') is False  # the top level's
