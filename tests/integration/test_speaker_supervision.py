"""ExaBGP as the agent's child: no orphan when the agent is SIGKILLed, restart after a crash."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

AGENT = textwrap.dedent("""
    import sys, trio
    from calico_bgp.speaker.speaker import Speaker
    async def main():
        speaker = Speaker(sys.argv[1])
        async with trio.open_nursery() as n:
            await n.start(speaker.run)
            await speaker.wait_connected()
            print("connected", speaker.process.pid, flush=True)
            await trio.sleep_forever()
    trio.run(main)
""")


def readline(proc, timeout: float = 30) -> str:
    import select
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no line from pid {proc.pid} within {timeout}s")
    return proc.stdout.readline()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_exabgp_and_bridge_die_with_a_killed_agent_and_a_new_agent_replaces_leftovers(tmp_path: Path):
    state = tmp_path / "state"
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        line = readline(agent)
        assert line.startswith("connected"), line
        exabgp = int(line.split()[1])
        bridges = children_of(exabgp)
        assert bridges, "the bridge runs as ExaBGP's child"
        assert int((state / "exabgp.pid").read_text()) == exabgp
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 10
        while (alive(exabgp) or any(alive(b) for b in bridges)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(exabgp), "ExaBGP outlived its agent"
        assert not any(alive(b) for b in bridges), "the bridge outlived ExaBGP"
    finally:
        agent.kill()
        agent.wait()


def test_restarted_agent_kills_the_exabgp_a_previous_one_left(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    exabgp = Path(sys.executable).with_name("exabgp")
    conf = state / "old.conf"
    conf.write_text("")
    env = dict(os.environ, exabgp_daemon_user="root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
               exabgp_api_cli="false", exabgp_tcp_bind="")
    # started without PDEATHSIG: as if it survived an agent (e.g. started by an older version)
    old = subprocess.Popen([str(exabgp), str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (state / "exabgp.pid").write_text(f"{old.pid}\n")
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        line = readline(agent)
        assert line.startswith("connected"), line
        assert old.wait(timeout=10) is not None
        assert int(line.split()[1]) != old.pid
    finally:
        agent.kill()
        agent.wait()
        old.kill()
        old.wait()


FALLBACK_AGENT = textwrap.dedent("""
    import sys, trio
    from pathlib import Path
    from calico_bgp.speaker import process
    from calico_bgp.speaker.process import Backoff
    from calico_bgp.speaker.speaker import Speaker
    process.PYPY_VENV = Path(sys.argv[2])
    async def main():
        speaker = Speaker(sys.argv[1], backoff=Backoff(first=0.1))
        first = speaker.runtime.name
        async with trio.open_nursery() as n:
            await n.start(speaker.run)
            await speaker.wait_connected()
            print("connected", first, speaker.runtime.name, speaker.stats["restarts"],
                  Path(f"/proc/{speaker.process.pid}/cmdline").read_bytes().split(b"\\0")[0].decode(), flush=True)
            n.cancel_scope.cancel()
    trio.run(main)
""")


def test_a_pypy_exabgp_that_cannot_start_gives_way_to_cpython(tmp_path: Path):
    """A PyPy venv that looks ready but whose ExaBGP exits before its API process connects (a moved
    checkout, a broken install): the speaker starts ExaBGP under the agent's CPython from then on."""
    venv = tmp_path / ".venv-exabgp-pypy"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\necho 'ModuleNotFoundError: calico_bgp' >&2\nexit 1\n")
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".stamp-0123456789ab").touch()
    env = {**os.environ, "CALICO_BGP_EXABGP_RUNTIME": "auto"}
    agent = subprocess.Popen([sys.executable, "-c", FALLBACK_AGENT, str(tmp_path / "state"), str(venv)],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = readline(agent)
        assert line.split() == ["connected", "pypy", "cpython", "1", sys.executable], line
    finally:
        agent.kill()
        agent.wait()


EARLY_AGENT = textwrap.dedent("""
    import sys, trio
    from calico_bgp.speaker.speaker import Speaker
    speaker = Speaker(sys.argv[1])
    early = speaker.start_exabgp()  # before trio runs, as `node run` does
    async def main():
        async with trio.open_nursery() as n:
            await n.start(speaker.run)
            await speaker.wait_connected()
            print("connected", early.pid, speaker.process.pid, speaker.stats["restarts"], flush=True)
            await trio.sleep_forever()
    trio.run(main)
""")


def test_an_exabgp_started_before_the_speaker_runs_is_taken_over_and_dies_with_the_agent(tmp_path: Path):
    """`node run` starts ExaBGP before the agent's modules load: a leftover goes first, run() takes
    the early one over (its bridge connects, no second ExaBGP), and it still dies with the agent."""
    state = tmp_path / "state"
    state.mkdir()
    env = dict(os.environ, exabgp_daemon_user="root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
               exabgp_api_cli="false", exabgp_tcp_bind="")
    (state / "old.conf").write_text("")
    old = subprocess.Popen([str(Path(sys.executable).with_name("exabgp")), str(state / "old.conf")], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (state / "exabgp.pid").write_text(f"{old.pid}\n")
    agent = subprocess.Popen([sys.executable, "-c", EARLY_AGENT, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        line = readline(agent)
        assert line.startswith("connected"), line
        _, early, running, restarts = line.split()
        assert early == running and restarts == "0"
        assert old.wait(timeout=10) is not None, "the leftover ExaBGP was not killed"
        exabgp = int(running)
        assert int((state / "exabgp.pid").read_text()) == exabgp
        assert children_of(exabgp), "the bridge runs as ExaBGP's child"
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 10
        while alive(exabgp) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(exabgp), "ExaBGP outlived its agent"
    finally:
        agent.kill()
        agent.wait()
        old.kill()
        old.wait()


def test_an_early_start_that_fails_is_logged_and_left_to_the_supervisor(tmp_path: Path, caplog):
    import trio

    from calico_bgp.speaker.process import Backoff
    from calico_bgp.speaker.speaker import Speaker

    speaker = Speaker(tmp_path / "state", exabgp_cmd=[str(tmp_path / "no-such-exabgp")], backoff=Backoff(first=0.05))
    assert speaker.start_exabgp() is None
    assert speaker.process is None and "exabgp_start_failed" in caplog.text

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(speaker.run)
            with trio.move_on_after(0.5):
                await speaker.wait_connected()
            n.cancel_scope.cancel()

    caplog.clear()
    trio.run(main)
    assert caplog.text.count("exabgp_start_failed") >= 2  # run() kept trying, with its back-off
