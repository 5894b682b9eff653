"""The skeleton every plugin here runs in: environment and stdin in, one JSON document out.

Follows containernetworking/cni pkg/skel/skel.go: CNI_COMMAND picks the handler; VERSION needs
nothing else; every other command gets its environment and network config checked (env.py,
netconf.py, spec.py) before its handler runs; ADD prints its result in the config's version,
the other commands print nothing; any failure prints the spec's error JSON on stdout and exits
1. Logs go to the config's log_file_path, else stderr; never stdout (while a handler runs,
sys.stdout is stderr, so a stray print cannot corrupt the result).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import IO, Any, Callable, Mapping, NamedTuple

from calico_bgp.cni import env, netconf, spec
from calico_bgp.cni.error import INTERNAL, IO_FAILURE, CNIError
from calico_bgp.cni.result import Result, to_json
from dataplane.logfmt import event

log = logging.getLogger("cni")


class Request(NamedTuple):
    """One invocation, checked: what the handler works from."""
    invocation: env.Invocation
    conf: netconf.NetConf
    stdin: bytes
    environ: Mapping[str, str] = os.environ  # the whole environment: what a delegated plugin is given

    @property
    def command(self) -> str:
        return self.invocation.command


Handler = Callable[[Request], "Result | None"]


def run(plugin: str, handlers: Mapping[str, Handler], *, environ: Mapping[str, str] | None = None,
        stdin: IO[bytes] | None = None, stdout: IO[str] | None = None) -> int:
    """Run one invocation; returns the exit code (0, or 1 with the error JSON printed)."""
    environ = os.environ if environ is None else environ
    stdin = sys.stdin.buffer if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    version = spec.LATEST  # the version an error is written in until the config names one
    saved = sys.stdout
    try:
        command = env.command_of(environ)
        if command == "VERSION":  # by hand from a terminal, stdin holds nothing to wait for
            asked = b"" if _is_tty(stdin) else _read(stdin)
            _write(stdout, spec.version_result(_requested_version(asked)))
            return 0
        invocation = env.parse(environ)
        data = _read(stdin)
        version = _requested_version(data) or version
        conf = netconf.parse(data)
        version = conf.cni_version
        spec.check_command(command, version)
        configure_logging(plugin, conf.log_level, conf.log_file_path, invocation.container_id)
        if conf.ignored:
            event(log, "cni_fields_ignored", fields=",".join(conf.ignored), why="Calico fields with no meaning here")
        handler = handlers.get(command)
        if handler is None:
            return 0  # a command this plugin has nothing to do for (its resources need no check, say)
        sys.stdout = sys.stderr
        result = handler(Request(invocation, conf, data, environ))
        if command == "ADD":
            if result is None:
                raise CNIError(INTERNAL, f"{plugin}: ADD produced no result")
            _write(stdout, to_json(result, version))
        return 0
    except CNIError as exc:
        _configure_default(plugin)
        event(log, "cni_failed", logging.ERROR, command=environ.get("CNI_COMMAND"),
              container=environ.get("CNI_CONTAINERID"), code=exc.code, error=str(exc))
        _write(stdout, exc.to_json(version))
        return 1
    except Exception as exc:  # noqa: BLE001 - the boundary: the runtime must get the spec's JSON
        _configure_default(plugin)
        event(log, "cni_internal_error", logging.ERROR, exc_info=True, command=environ.get("CNI_COMMAND"))
        _write(stdout, CNIError(INTERNAL, f"{plugin}: internal error: {exc!r}").to_json(version))
        return 1
    finally:
        sys.stdout = saved


def main(plugin: str, handlers: Mapping[str, Handler]) -> None:
    """A plugin's console-script entry point."""
    if not os.environ.get("CNI_COMMAND") and sys.stdin.isatty():
        print(f"{plugin}: a CNI plugin (CNI spec {', '.join(spec.SUPPORTED_VERSIONS)}); a container runtime runs it "
              "with CNI_COMMAND and the network config on stdin", file=sys.stderr)
    sys.exit(run(plugin, handlers))


def configure_logging(plugin: str, level: int, path: str | None, container_id: str = "") -> None:
    """Log lines to `path` (appended; its directory made) or, without one or when it cannot be
    opened, to stderr."""
    handler: logging.Handler
    problem = None
    if path:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            problem = f"{path}: {exc.strerror or exc}"
            handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
    who = f" container={container_id}" if container_id else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {plugin}[%(process)d]{who} %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    if problem:
        event(log, "cni_log_file_unusable", logging.WARNING, path=path, error=problem, using="stderr")


def _configure_default(plugin: str) -> None:
    if not logging.getLogger().handlers:
        configure_logging(plugin, logging.INFO, None)


def _read(stdin: IO[bytes]) -> bytes:
    try:
        return stdin.read()
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"stdin: cannot be read: {exc.strerror or exc}") from None


def _is_tty(stdin: IO[bytes]) -> bool:
    try:
        return stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _requested_version(data: bytes) -> str | None:
    """The cniVersion a document asks for, when it is readable and one we speak (for VERSION and errors)."""
    try:
        v = json.loads(data).get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return v if v in spec.SUPPORTED_VERSIONS else None


def _write(stdout: IO[str], doc: dict[str, Any]) -> None:
    stdout.write(json.dumps(doc) + "\n")
    stdout.flush()
