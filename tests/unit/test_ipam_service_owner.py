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

from calico_bgp.agent import ipam_service
from calico_bgp.agent.ipam_service import IpamServiceOwner
from calico_bgp.cni import service, warm
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


async def test_a_second_owner_serves_nothing_while_the_first_serves_and_takes_over_when_it_goes(sock, caplog):
    """An agent started while the old one is in its stop (it holds the socket's lock) serves once it is gone."""
    first = IpamServiceOwner()
    async with trio.open_nursery() as n:
        first_scope = trio.CancelScope()

        async def serve_first(task_status=trio.TASK_STATUS_IGNORED):
            with first_scope:
                await first.run(task_status=task_status)

        await n.start(serve_first)
        other = IpamServiceOwner(recheck=0.05)
        with trio.fail_after(5):
            await n.start(other.run)  # started: the first holds the socket
        await trio.sleep(0.3)  # several rechecks
        assert "event=ipam_service_not_served" in caplog.text and os.path.exists(sock)
        assert other.path is None and first.path == sock and first.starts == 0
        assert caplog.text.count("event=ipam_service_not_served") == 1  # once per outage, not every recheck
        first_scope.cancel()
        with trio.fail_after(5):
            while other.path != sock:
                await trio.sleep(0.02)
        served_by(await ask())
        assert other.starts == 1
        n.cancel_scope.cancel()


async def test_an_unreadable_package_or_a_failed_start_does_not_end_the_agent(tmp_path, monkeypatch, caplog):
    """Mid-upgrade pip moves the package aside (socket_path's stat raises) and the interpreter may be
    gone (Popen raises): the owner logs, backs off and serves again; nothing leaves run()."""
    path = str(tmp_path / "run" / "ipam.sock")
    calls = []

    def socket_path():
        calls.append(1)
        if len(calls) == 2:
            raise FileNotFoundError(2, "No such file or directory")
        return path

    monkeypatch.setattr(service, "socket_path", socket_path)
    owner = IpamServiceOwner(idle=60, recheck=0.05, backoff=Backoff(first=0.1, cap=0.1))
    real_popen = ipam_service.subprocess.Popen
    failing = [True]

    def popen(*args, **kwargs):
        if failing:
            failing.pop()
            raise OSError(24, "Too many open files")
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(ipam_service.subprocess, "Popen", popen)
    async with trio.open_nursery() as n:
        await n.start(owner.run)
        with trio.fail_after(10):
            while len(calls) < 4:  # past the failing look at the code
                await trio.sleep(0.02)
            assert await ask() is None  # the start failed: turned away during the back-off
            while (reply := await ask()) is None:
                await trio.sleep(0.05)
        assert served_by(reply) == owner.pid and owner.failures == 1 and owner.path == path
        n.cancel_scope.cancel()
    assert "event=ipam_service_code_unreadable" in caplog.text and "event=ipam_service_start_failed" in caplog.text


def test_pidfd_open_failing_kills_and_reaps_the_started_process(sock, monkeypatch):
    """A process started but not watchable (pidfd_open raises) is killed and waited for: a failure, no zombie."""
    started = []
    real_popen = ipam_service.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def no_pidfd(pid):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(ipam_service.subprocess, "Popen", popen)
    monkeypatch.setattr(ipam_service.os, "pidfd_open", no_pidfd)
    server, lock = warm.bind(sock)
    try:
        code = trio.run(IpamServiceOwner(idle=60)._serve_once, server)
    finally:
        warm.unbind(sock, server, lock)
    assert code == ipam_service.START_FAILED and started[0].returncode == -9
    assert not os.path.exists(f"/proc/{started[0].pid}")


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
