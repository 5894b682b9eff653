"""The API bridge process and the Speaker's command side, with a fake ExaBGP / fake bridge."""
from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from calico_bgp.speaker import bridge
from calico_bgp.speaker.events import BridgeConnected, PeerState, Update
from calico_bgp.speaker.neighbor import Neighbor
from calico_bgp.speaker.reload import RELOADED
from calico_bgp.speaker.speaker import Speaker

A, B = "198.18.0.2", "198.18.0.3"
def bounded(seconds: float = 20):
    """A hung test fails after `seconds` instead of holding the whole run."""
    def wrap(fn):
        @functools.wraps(fn)
        async def run(*args, **kwargs):
            with trio.fail_after(seconds):
                return await fn(*args, **kwargs)
        return run
    return wrap


SLEEPER = [sys.executable, "-c", "import time; time.sleep(3600)"]  # stands in for ExaBGP


def nb(peer: str) -> Neighbor:
    return Neighbor(peer_address=peer, peer_as=65001, local_as=65000, local_address="198.18.0.1",
                    router_id="198.18.0.1")


def state_line(peer: str, state: str) -> str:
    return json.dumps({"exabgp": "5.0.0", "type": "state", "neighbor": {
        "address": {"local": "198.18.0.1", "peer": peer}, "asn": {"local": 65000, "peer": 65001}, "state": state}})


def update_line(peer: str, prefix: str) -> str:
    return json.dumps({"exabgp": "5.0.0", "type": "update", "neighbor": {
        "address": {"local": "198.18.0.1", "peer": peer}, "asn": {"local": 65000, "peer": 65001},
        "direction": "receive", "message": {"update": {"attribute": {"origin": "igp"},
                                                       "announce": {"ipv4 unicast": {peer: [{"nlri": prefix}]}}}}}})


def compiled_bridge() -> Path:
    """bridge.c built (as bootstrap.sh and the benches build it); the test skips without a C compiler."""
    import shutil
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("make and cc build the compiled bridge (bridge.c)")
    subprocess.run(["make", "-s", "-C", str(Path(bridge.__file__).parent)], check=True)
    return Path(bridge.__file__).with_name("calico-bgp-bridge")


@pytest.mark.parametrize("form", ["what ExaBGP runs", "by module name", "compiled"])
def test_bridge_drains_stdin_with_no_agent_and_relays_both_ways(tmp_path: Path, form: str):
    path = tmp_path / "api.sock"
    argv = bridge.command(path) if form == "what ExaBGP runs" else [
        sys.executable, "-m", "calico_bgp.speaker.bridge", "--socket", str(path)] if form == "by module name" else [
        str(compiled_bridge()), "--socket", str(path)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        # 2 MB of acks with nobody listening: ExaBGP would freeze if these were not read
        t0 = time.monotonic()
        proc.stdin.write(b"done\n" * 400_000)
        proc.stdin.flush()
        assert time.monotonic() - t0 < 10
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(path))
        srv.listen(1)
        srv.settimeout(10)
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        hello = f.readline()
        assert hello == f"bridge hello pid={proc.pid} exabgp={os.getpid()} dropped=0\n".encode()
        proc.stdin.write(b'{"type": "state"}\n')
        proc.stdin.flush()
        seen = 0
        while True:
            line = f.readline()
            if line == b"done\n":
                seen += 1
            else:
                assert line == b'{"type": "state"}\n'
                break
        assert seen == 400_000  # buffered while the agent was away, none lost below the bound
        f.write(b"announce route 198.19.0.0/24 next-hop self\n")
        f.flush()
        assert proc.stdout.readline() == b"announce route 198.19.0.0/24 next-hop self\n"
        # the agent goes away with commands unanswered: the bridge keeps draining and reconnects
        f.write(b"withdraw route 198.19.0.0/24\n")
        f.flush()
        assert proc.stdout.readline() == b"withdraw route 198.19.0.0/24\n"
        f.close()
        conn.close()
        # ExaBGP answers both old commands (one after the agent left): those acks are not for the next agent
        proc.stdin.write(b"done\n")
        proc.stdin.flush()
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        assert f.readline().startswith(b"bridge hello")
        proc.stdin.write(b"done\n")
        proc.stdin.flush()
        f.write(b"announce route 198.19.1.0/24 next-hop self\n")
        f.flush()
        assert proc.stdout.readline() == b"announce route 198.19.1.0/24 next-hop self\n"
        proc.stdin.write(b"error\n" + b'{"type": "state"}\n')
        proc.stdin.flush()
        assert f.readline() == b"error\n"  # the new command's answer, and only that
        assert f.readline() == b'{"type": "state"}\n'
        # ExaBGP exits (stdin EOF): the bridge flushes and exits
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        conn.close()
        srv.close()
    finally:
        proc.kill()
        proc.wait()


def test_what_exabgp_runs_is_this_file_isolated_and_without_site(tmp_path: Path):
    argv = bridge.command(tmp_path / "api.sock")
    assert argv[:3] == [sys.executable, "-I", "-S"]
    assert Path(argv[3]) == Path(bridge.__file__).resolve() and argv[4:] == ["--socket", str(tmp_path / "api.sock")]
    # what it loads: the standard library only, no site, no argparse, no logging, nothing of ours
    code = ("import runpy, sys; sys.argv = ['bridge', '--help']\n"
            "try:\n    runpy.run_path(sys.argv_path, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m in ('site', 'argparse', 'logging') or m.startswith('calico_bgp')))")
    code = code.replace("sys.argv_path", repr(argv[3]))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_the_bridge_command_line_is_checked():
    assert bridge.socket_argument(["--socket", "/run/a.sock"]) == "/run/a.sock"
    assert bridge.socket_argument(["--socket=/run/a.sock"]) == "/run/a.sock"
    for bad, why in ((["--sock", "x"], "expected --socket PATH, got --sock x"), ([], "got nothing"),
                     (["--socket="], "an empty path")):
        try:
            bridge.socket_argument(bad)
        except ValueError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")
    out = subprocess.run(bridge.command("x")[:4], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "bridge: error: expected --socket PATH, got nothing" in out.stderr


def test_the_compiled_bridge_checks_its_command_line_as_bridge_py_does(tmp_path: Path):
    binary = str(compiled_bridge())
    for bad, why in ((["--sock", "x"], "expected --socket PATH"), ([], "expected --socket PATH"),
                     (["--socket="], "an empty path"), (["--socket", "/" + "x" * 200], "longer than a unix socket")):
        out = subprocess.run([binary, *bad], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert out.returncode == 2 and "bridge: error: " in out.stderr and why in out.stderr, (bad, out.stderr)
    # stdin at EOF and nobody listening: nothing to relay, it exits at once
    done = subprocess.run([binary, f"--socket={tmp_path / 'none.sock'}"], stdin=subprocess.DEVNULL, timeout=10)
    assert done.returncode == 0


def test_the_speaker_runs_the_compiled_bridge_when_built_else_bridge_py(tmp_path: Path):
    from calico_bgp.speaker.speaker import bridge_command
    sock, built, absent = tmp_path / "api.sock", compiled_bridge(), tmp_path / "not-built"
    assert bridge_command(sock, {}, built) == [str(built), "--socket", str(sock)]
    assert bridge_command(sock, {"CALICO_BGP_BRIDGE": "python"}, built) == bridge.command(sock)
    assert bridge_command(sock, {}, absent) == bridge.command(sock)
    with pytest.raises(FileNotFoundError, match="CALICO_BGP_BRIDGE=c but .*not-built is not built"):
        bridge_command(sock, {"CALICO_BGP_BRIDGE": "c"}, absent)
    with pytest.raises(ValueError, match="CALICO_BGP_BRIDGE='rust': one of auto, c, python"):
        bridge_command(sock, {"CALICO_BGP_BRIDGE": "rust"}, built)


class FakeBridge:
    def __init__(self, stream: trio.SocketStream, speaker: Speaker | None = None) -> None:
        self.stream = stream
        self.buf = b""
        self.speaker = speaker  # told ExaBGP's "loaded" log line for each reload, as ExaBGP would log it

    async def send(self, *lines: str) -> None:
        await self.stream.send_all("".join(line + "\n" for line in lines).encode())

    async def command(self, timeout: float = 5) -> str:
        with trio.fail_after(timeout):
            while b"\n" not in self.buf:
                data = await self.stream.receive_some(65536)
                assert data, "speaker closed the bridge"
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        if line == b"reload" and self.speaker is not None:
            self.speaker.reloader.on_log(f"reactor         {RELOADED}")
        return line.decode()

    async def no_command(self, wait: float = 0.3) -> None:
        with trio.move_on_after(wait):
            data = await self.stream.receive_some(65536)
            raise AssertionError(f"unexpected command {data!r}")


async def started(speaker: Speaker) -> None:
    with trio.fail_after(5):
        while speaker.process is None:
            await trio.sleep(0.01)


async def connect(speaker: Speaker, exabgp_pid: int = 4242) -> FakeBridge:
    stream = await trio.open_unix_socket(str(speaker.socket_path))
    bridge = FakeBridge(stream, speaker)
    await bridge.send(f"bridge hello pid=1 exabgp={exabgp_pid} dropped=0")
    return bridge


@bounded()
async def test_speaker_reloads_batches_acks_and_replays_on_up(tmp_path: Path, nursery):
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER, max_in_flight=2)
    await nursery.start(speaker.run)
    await started(speaker)
    await speaker.set_neighbors([nb(A), nb(B)])  # no bridge yet: only the file changes
    assert "neighbor 198.18.0.3 {" in speaker.config_path.read_text()
    bridge = await connect(speaker)
    assert await bridge.command() == "reload"  # config changed while "ExaBGP" was starting
    await bridge.send("reload in progress", "done")

    async def announce():
        await speaker.announce(None, ["198.19.0.0/26", "198.19.0.64/26"], wait=True)
    nursery.start_soon(announce)
    cmd = await bridge.command()
    assert cmd == (f"neighbor {A} , neighbor {B} announce attributes next-hop self origin igp "
                   "nlri 198.19.0.0/26 198.19.0.64/26")
    await bridge.send("done")

    # window of 2: the third distinct command waits for an ack
    async def many():
        for i in range(3):
            await speaker.announce([A], [f"198.19.{10 + i}.0/24"], local_pref=100 + i)
    nursery.start_soon(many)
    first, second = await bridge.command(), await bridge.command()
    assert "local-preference 100" in first and "local-preference 101" in second
    await bridge.no_command()
    await bridge.send("done")
    assert "local-preference 102" in await bridge.command()
    await bridge.send("done", "done")

    # B comes up: everything it should have is replayed
    await bridge.send(state_line(B, "connected"), state_line(B, "up"))
    replay = await bridge.command()
    assert replay == f"neighbor {B} announce attributes next-hop self origin igp nlri 198.19.0.0/26 198.19.0.64/26"
    await bridge.send("done")
    assert (await speaker.wait_state(B, "up")).peer == B

    # malformed lines are counted, not fatal; updates become events
    await bridge.send("{broken", update_line(A, "198.19.77.0/24"))
    got = []
    with trio.fail_after(5):
        async for ev in speaker.events:
            got.append(ev)
            if isinstance(ev, Update):
                break
    assert isinstance(got[0], BridgeConnected)
    assert any(isinstance(e, PeerState) and e.state == "up" for e in got)
    assert got[-1].announced["198.19.77.0/24"].next_hop == A
    assert speaker.stats["malformed"] == 1
    assert speaker.window.errors == 0

    # removing a neighbor that is up: polite teardown, then reload
    async def remove():
        await speaker.set_neighbors([nb(A)], teardown_wait=5)
    nursery.start_soon(remove)
    assert await bridge.command() == f"neighbor {B} teardown 2"
    await bridge.send("done", state_line(B, "down"))
    assert await bridge.command() == "reload"
    await bridge.send("done")


@bounded()
async def test_same_exabgp_new_bridge_replays_everyone_up(tmp_path: Path, nursery):
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER)
    await nursery.start(speaker.run)
    await started(speaker)
    await speaker.set_neighbors([nb(A)])
    bridge = await connect(speaker, exabgp_pid=77)
    assert await bridge.command() == "reload"
    await bridge.send("done", state_line(A, "up"))
    await speaker.wait_state(A, "up")
    await trio.testing.wait_all_tasks_blocked()  # the (empty) replay for A is done
    await speaker.announce(None, ["198.19.1.0/24"])
    assert await bridge.command() == f"neighbor {A} announce attributes next-hop self origin igp nlri 198.19.1.0/24"
    await bridge.send("done")
    # ExaBGP replaced its API process (SIGUSR2, or the bridge died): no `up` will come, so replay now
    await bridge.stream.aclose()
    bridge = await connect(speaker, exabgp_pid=77)
    assert await bridge.command() == f"neighbor {A} announce attributes next-hop self origin igp nlri 198.19.1.0/24"
    await bridge.send("done")


@bounded()
async def test_commands_without_a_bridge_are_dropped_not_blocking(tmp_path: Path, nursery):
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER)
    await nursery.start(speaker.run)
    await speaker.set_neighbors([nb(A)])
    with trio.fail_after(2):
        await speaker.announce(None, ["198.19.1.0/24"], wait=True)
    assert speaker.stats["dropped_commands"] == 1
    assert speaker.intent.routes_for(A)  # kept: replayed once the session is up


@bounded()
async def test_leftover_exabgp_from_pidfile_is_killed(tmp_path: Path, nursery):
    state = tmp_path / "s"
    state.mkdir()
    # something that looks like a leftover ExaBGP (its command line says so)
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", "exabgp"])
    (state / "exabgp.pid").write_text(f"{leftover.pid}\n")
    try:
        speaker = Speaker(state, exabgp_cmd=SLEEPER)
        await nursery.start(speaker.run)
        assert leftover.wait(timeout=5) is not None
        await started(speaker)
        assert int((state / "exabgp.pid").read_text()) == speaker.process.pid != leftover.pid
    finally:
        leftover.kill()
        leftover.wait()


@bounded()
async def test_crashed_exabgp_is_restarted(tmp_path: Path, nursery):
    from calico_bgp.speaker.process import Backoff
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER, backoff=Backoff(first=0.05))
    await nursery.start(speaker.run)
    with trio.fail_after(5):
        while speaker.process is None:
            await trio.sleep(0.01)
    first = speaker.process.pid
    os.kill(first, 9)
    with trio.fail_after(5):
        while speaker.process is None or speaker.process.pid == first:
            await trio.sleep(0.02)
    assert speaker.stats["restarts"] == 1


@bounded()
async def test_a_command_left_unanswered_is_reported_as_a_stall(tmp_path: Path, nursery):
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER, stall_after=0.2)
    await nursery.start(speaker.run)
    await started(speaker)
    await speaker.set_neighbors([nb(A)])
    bridge = await connect(speaker)
    assert await bridge.command() == "reload"  # never answered
    with trio.fail_after(5):
        while speaker.stats["stalls"] == 0:
            await trio.sleep(0.05)
    await bridge.send("done")


@bounded()
async def test_an_unconfirmed_reload_is_sent_again_only_once_exabgp_has_read_it(tmp_path: Path, nursery,
                                                                                 monkeypatch):
    """A reload ExaBGP has not answered yet is not lost: no copy is queued behind it (each would be
    one more parse of every neighbour, sessions held back meanwhile). One it answered and did not
    carry out (routes still queued) is sent again."""
    from calico_bgp.speaker import reload as reload_mod
    monkeypatch.setattr(reload_mod, "RELOAD_CONFIRM", 0.2)
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER)
    await nursery.start(speaker.run)
    await started(speaker)
    bridge = await connect(speaker)
    bridge.speaker = None  # this "ExaBGP" logs no "loaded" line unless told
    await speaker.wait_connected()
    nursery.start_soon(speaker.set_neighbors, [nb(A)])
    assert await bridge.command() == "reload"
    await bridge.no_command(1.0)  # five confirmation windows, and ExaBGP has not read it: no copy
    await bridge.send("reload in progress", "done")  # read, and dropped (routes still queued)
    assert await bridge.command() == "reload"  # so sent again
    speaker.reloader.on_log(f"reactor         {RELOADED}")
    await bridge.send("reload in progress", "done")
    await bridge.no_command(0.6)


@bounded()
async def test_an_exabgp_that_cannot_start_is_retried_not_fatal(tmp_path: Path, nursery):
    from calico_bgp.speaker.process import Backoff
    speaker = Speaker(tmp_path / "s", exabgp_cmd=[str(tmp_path / "no-such-exabgp")], backoff=Backoff(first=0.01))
    await nursery.start(speaker.run)
    await trio.sleep(0.2)
    assert speaker.process is None
    speaker.exabgp_cmd = SLEEPER  # e.g. the package got installed
    await started(speaker)


@bounded()
async def test_a_client_that_is_not_a_bridge_does_not_replace_the_bridge(tmp_path: Path, nursery):
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER)
    await nursery.start(speaker.run)
    await started(speaker)
    bridge = await connect(speaker)
    await speaker.wait_connected()
    intruder = await trio.open_unix_socket(str(speaker.socket_path))
    await intruder.send_all(b"hello, who is this?\n")
    with trio.fail_after(5):
        assert await intruder.receive_some(100) == b""  # closed on it
    nursery.start_soon(speaker.set_neighbors, [nb(A)])
    assert await bridge.command() == "reload"
    await bridge.send("done")


@bounded()
async def test_a_withdraw_never_overtakes_a_replay_in_progress(tmp_path: Path, nursery):
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER, max_in_flight=1)
    await nursery.start(speaker.run)
    await started(speaker)
    await speaker.set_neighbors([nb(A)])
    bridge = await connect(speaker)
    assert await bridge.command() == "reload"
    await bridge.send("done")
    async def two():
        await speaker.announce(None, ["198.19.1.0/24"])
        await speaker.announce(None, ["198.19.2.0/24"], local_pref=50)
    nursery.start_soon(two)
    # the window holds one command: the first announce; the second waits
    got = [await bridge.command()]
    await bridge.send("done")
    got.append(await bridge.command())
    await bridge.send("done")
    await bridge.send(state_line(A, "up"))  # replay: two lines, one at a time
    first = await bridge.command()
    nursery.start_soon(speaker.withdraw, None, ["198.19.2.0/24"])
    await trio.testing.wait_all_tasks_blocked()
    await bridge.send("done")
    second = await bridge.command()
    await bridge.send("done")
    third = await bridge.command()
    await bridge.send("done")
    assert "announce" in first and "announce" in second and "198.19.2.0/24" in first + second
    assert third.startswith(f"neighbor {A} withdraw") and "198.19.2.0/24" in third


@bounded()
async def test_sessions_that_come_up_together_are_replayed_in_shared_lines(tmp_path: Path, nursery):
    """While one replay is being sent, the sessions that come up meanwhile wait, then are replayed
    together: a route they all get is one command line for all of them (a rack's bring-up)."""
    C = "198.18.0.4"
    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER, max_in_flight=1)
    await nursery.start(speaker.run)
    await started(speaker)
    await speaker.set_neighbors([nb(A), nb(B), nb(C)])
    bridge = await connect(speaker)
    assert await bridge.command() == "reload"
    await bridge.send("done")
    nursery.start_soon(functools.partial(speaker.announce, None, ["198.19.0.0/26"], wait=True))
    assert (await bridge.command()).endswith("nlri 198.19.0.0/26")
    await bridge.send("done")
    await bridge.send(state_line(A, "up"))
    assert await bridge.command() == f"neighbor {A} announce attributes next-hop self origin igp nlri 198.19.0.0/26"
    await bridge.send(state_line(B, "up"), state_line(C, "up"))  # while A's replay awaits its ack
    await trio.testing.wait_all_tasks_blocked()
    await bridge.send("done")
    assert await bridge.command() == (f"neighbor {B} , neighbor {C} announce attributes next-hop self origin igp "
                                      "nlri 198.19.0.0/26")
    await bridge.send("done")
    await bridge.no_command()
    assert speaker.stats["replays"] == 3 and speaker.stats["replayed_routes"] == 3


@bounded()
async def test_a_reflected_path_no_command_can_carry_is_skipped_and_the_rest_sent(tmp_path: Path, nursery):
    from calico_bgp.routing.attributes import PathAttributes
    from calico_bgp.routing.reflection import Reflected

    speaker = Speaker(tmp_path / "s", exabgp_cmd=SLEEPER, max_in_flight=4)
    await nursery.start(speaker.run)
    await started(speaker)
    await speaker.set_neighbors([nb(A), nb(B)])
    bridge = await connect(speaker)
    assert await bridge.command() == "reload"
    await bridge.send("done")
    good = PathAttributes("198.18.0.9", originator_id="198.18.0.9", cluster_list=("198.18.0.100",), local_pref=100)
    bad = PathAttributes("198.18.0.9", originator_id="198.18.0.9", cluster_list=("2001:db8::1",), local_pref=100)
    await speaker.reflect({"198.19.1.0/26": Reflected(good, frozenset({A, B})),
                           "198.19.2.0/26": Reflected(bad, frozenset({A, B}))})
    line = await bridge.command()
    assert line.startswith(f"neighbor {A} , neighbor {B} announce attributes next-hop 198.18.0.9") and \
        line.endswith("nlri 198.19.1.0/26")
    await bridge.send("done")
    await bridge.no_command()
    assert speaker.intent.routes_for(A) == {"198.19.1.0/26": good}
