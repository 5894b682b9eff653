"""Running another plugin (an IPAM plugin) the way libcni's pkg/invoke does.

Follows containernetworking/cni pkg/invoke (find.go, delegate.go, raw_exec.go): the plugin is
looked up by its `type` in CNI_PATH's directories; it runs with our environment and CNI_COMMAND
set to the command it is asked to do, the network config on stdin, its stderr passed through
(its logs join ours); exit 0 is success (ADD: its stdout is a result), anything else is the
error JSON on its stdout, raised here with the delegate's own code. An exec that hits ETXTBSY
(the binary being written) is retried, as raw_exec.go does.

This package's own IPAM plugin, once found in CNI_PATH, runs in this process instead (the same
skeleton, environment, stdin and JSON): a second interpreter and its imports would double an
ADD's cost. CALICO_BGP_CNI_EXEC_DELEGATES=1 in the environment execs it like any other.
"""
from __future__ import annotations

import errno
import json
import os
import time
from typing import Mapping

from calico_bgp.cni.error import DECODE_FAILURE, INVALID_CONFIG, IO_FAILURE, CNIError
from calico_bgp.cni.result import Result, from_json

_ETXTBSY_TRIES = 5
IN_PROCESS = {"calico-bgp-ipam": "calico_bgp.cni.ipam_plugin"}  # plugin type -> module with PLUGIN, HANDLERS
# the invocation's deadline (monotonic ns) while the warm process runs one (cni/service.py handle): an
# exec'd delegate is given what is left of it, so a hung one never outlives its executable's wait
DEADLINE_NS: int | None = None


def find(plugin_type: str, path: tuple[str, ...] | list[str]) -> str:
    """The executable for `plugin_type` in the first directory of `path` that has it."""
    if not plugin_type or "/" in plugin_type:
        raise CNIError(INVALID_CONFIG, f"plugin type {plugin_type!r}: must be a plain executable name")
    if not path:
        raise CNIError(INVALID_CONFIG, f"plugin {plugin_type!r}: CNI_PATH is empty, nowhere to look for it")
    for d in path:
        candidate = os.path.join(d, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(INVALID_CONFIG, f"plugin {plugin_type!r}: not found in CNI_PATH {':'.join(path)}")


def delegate(command: str, plugin_type: str, netconf: bytes, environ: Mapping[str, str],
             timeout: float | None = None) -> Result | None:
    """Run `plugin_type` for `command` (ADD returns its result; the others return None)."""
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    exe = find(plugin_type, path)
    env = dict(environ)
    env["CNI_COMMAND"] = command
    if plugin_type in IN_PROCESS and env.get("CALICO_BGP_CNI_EXEC_DELEGATES") != "1":
        out = run_here(IN_PROCESS[plugin_type], netconf, env)
    else:
        if DEADLINE_NS is not None:
            left = max((DEADLINE_NS - time.monotonic_ns()) / 1e9, 0.001)
            timeout = left if timeout is None else min(timeout, left)
        out = run(exe, netconf, env, timeout)
    if command != "ADD":
        return None
    try:
        return from_json(json.loads(out))
    except ValueError:
        raise CNIError(DECODE_FAILURE, f"plugin {plugin_type} ADD: its output is not JSON: {out[:200]!r}") from None


def run_here(module: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
    """One of this package's plugins in this process: its stdout on success, its error otherwise.
    calico-bgp-ipam goes to the node agent's warm process, as its executable would
    (calico_bgp/cni/service.py), and runs here when that does not answer or the config says
    `ipam_service: false`, or when this is the warm process (calico-bgp-cni served there), or when
    this process already waited on it in vain (service.UNANSWERED: not a second wait)."""
    import importlib
    import io
    import logging
    import sys

    from calico_bgp.cni import service, skel

    if module == IN_PROCESS["calico-bgp-ipam"] and not service.SERVING and not service.UNANSWERED \
            and service.wanted(stdin):
        reply = service.ask(dict(env), stdin)
        if reply is not None:
            code, out, err = reply
            sys.stderr.buffer.write(err)
            sys.stderr.flush()
            if code == 0:
                return out
            raise CNIError.from_json(json.loads(out or b"{}"))
    plugin = importlib.import_module(module)
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = skel.run(plugin.PLUGIN, plugin.HANDLERS, environ=env, stdin=io.BytesIO(stdin), stdout=out)
    finally:  # its skeleton set up its own log lines: the caller's lines keep the caller's name
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    if code == 0:
        return out.getvalue().encode()
    raise CNIError.from_json(json.loads(out.getvalue()))


def run(exe: str, stdin: bytes, env: Mapping[str, str], timeout: float | None = None) -> bytes:
    """Exec one plugin; its stdout on success, its error (as CNIError) otherwise. Its stderr is ours:
    inherited, or, where ours is no file (the warm process runs an invocation with its stderr in
    memory, for the executable to print), read and written there."""
    import subprocess
    import sys

    try:
        sys.stderr.fileno()
        err = None
    except (AttributeError, ValueError):  # io.UnsupportedOperation is a ValueError
        err = subprocess.PIPE
    for attempt in range(_ETXTBSY_TRIES):
        try:
            proc = subprocess.run([exe], input=stdin, env=dict(env), stdout=subprocess.PIPE, stderr=err,
                                  timeout=timeout)
            break
        except OSError as exc:
            if exc.errno == errno.ETXTBSY and attempt + 1 < _ETXTBSY_TRIES:
                time.sleep(1)
                continue
            raise CNIError(IO_FAILURE, f"plugin {exe}: cannot be run: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise CNIError(IO_FAILURE, f"plugin {exe}: no answer within {timeout} s") from None
    if proc.stderr:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
    if proc.returncode == 0:
        return proc.stdout
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise CNIError(IO_FAILURE, f"plugin {exe} failed (exit {proc.returncode}) without the spec's error JSON",
                       proc.stdout[:300].decode(errors="replace")) from None
    raise CNIError.from_json(data)
