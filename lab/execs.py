"""A node's `exec` commands, as the lab runs them. Pure.

containerlab runs each command with `docker exec` inside the container. The lab runs it inside the
node's network namespace, with three translations so the same file drives both worlds:

- a command that starts the node agent (`calico-bgp ... node run ...`, also inside `sh -c '... &'`
  or behind `nohup`) becomes an `AgentStart`: the lab runs the agent itself, as a process it owns,
  with its own etcd endpoint, state directory and log;
- paths inside the container that a bind maps (`/etc/calico-bgp/resources.yaml`) become the bind's
  source on this machine;
- `vtysh` and `birdc` get the control sockets of the daemons the lab started; `vtysh -b` (apply
  frr.conf) is already done when the lab starts FRR and is skipped.
"""
from __future__ import annotations

import re
import shlex
from typing import Sequence

import attrs

from lab.clab import Bind

SHELLS = ("sh", "bash", "/bin/sh", "/bin/bash", "ash", "/bin/ash")
SEPARATORS = (";", "&&", "||", "&", "|", "\n")
AGENT_FLAGS_WITH_VALUE = ("--name", "--ip", "--ip6", "--ip-autodetect", "--table", "--protocol", "--metrics-port",
                          "--state-dir", "--grace", "--log-level")
GLOBAL_FLAGS_WITH_VALUE = ("--etcd-endpoints", "--prefix", "--etcd-ca-cert", "--etcd-cert", "--etcd-key",
                           "--etcd-username", "--etcd-password")


class ExecError(ValueError):
    pass


@attrs.frozen
class AgentStart:
    """`calico-bgp node run` found in an exec command: the options the lab passes on."""

    name: str
    options: tuple[str, ...]          # node-run flags other than --state-dir, in order
    command: str                       # the original text, for messages

    def option(self, flag: str) -> str | None:
        opts = list(self.options)
        for i, o in enumerate(opts):
            if o == flag and i + 1 < len(opts):
                return opts[i + 1]
            if o.startswith(flag + "="):
                return o.split("=", 1)[1]
        return None


@attrs.frozen
class Shell:
    """A command run as `sh -c TEXT` in the node's namespace."""

    text: str
    original: str


@attrs.frozen
class Skip:
    reason: str
    original: str


Step = AgentStart | Shell | Skip


def plan(node: str, commands: Sequence[str], binds: Sequence[Bind], role: str) -> list[Step]:
    """The steps for a node's exec list, in order."""
    out: list[Step] = []
    for cmd in commands:
        out.extend(_one(node, cmd, binds, role))
    return out


def _one(node: str, cmd: str, binds: Sequence[Bind], role: str) -> list[Step]:
    words = _split(cmd)
    if not words:
        return []
    inner = _unwrap_shell(words)
    if inner is not None:
        simple = _simple_commands(inner)
        agent = [c for c in simple if _agent_args(c) is not None]
        if agent:
            rest = [c for c in simple if c not in agent]
            steps: list[Step] = [_shell(" ".join(shlex.quote(w) for w in c), cmd, binds, role) for c in rest]
            return steps + [_agent(node, agent[0], cmd)]
        return [_shell(inner, cmd, binds, role)]
    if _agent_args(words) is not None:
        return [_agent(node, words, cmd)]
    if role == "frr" and words[0] == "vtysh" and "-b" in words:
        return [Skip("the lab applies frr.conf when it starts FRR", cmd)]
    return [_shell(cmd, cmd, binds, role)]


def _split(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError as exc:
        raise ExecError(f"exec {cmd!r}: {exc}") from None


def _unwrap_shell(words: list[str]) -> str | None:
    if len(words) >= 3 and words[0] in SHELLS and words[1] == "-c":
        return words[2]
    return None


def _tokens(script: str) -> list[str]:
    lex = shlex.shlex(script, posix=True, punctuation_chars=";&|<>")
    lex.whitespace_split = True
    lex.whitespace = " \t\r"
    out = []
    for tok in lex:
        out.append(tok)
    return out


_REDIRECT = re.compile(r"(^|\s)\d?(?:>>|>&|&>|>|<)\s*[^\s;&|]+")


def _simple_commands(script: str) -> list[list[str]]:
    """Split a shell script into simple commands (redirections dropped); loops and ifs stay whole."""
    if any(k in script.split() for k in ("until", "while", "for", "if", "case")):
        return [["sh", "-c", script]]
    cmds: list[list[str]] = []
    cur: list[str] = []
    for t in _tokens(_REDIRECT.sub(" ", script).replace("\n", " ; ")):
        if t in SEPARATORS:
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        cmds.append(cur)
    return cmds


def _agent_args(words: Sequence[str]) -> list[str] | None:
    """The arguments after `node run` when `words` starts the agent, else None."""
    w = list(words)
    while w and w[0] in ("nohup", "exec", "setsid", "env"):
        w = w[1:]
    if not w:
        return None
    prog = w[0].rsplit("/", 1)[-1]
    if prog == "calico-bgp":
        rest = w[1:]
    elif prog.startswith("python") and len(w) >= 3 and w[1] == "-m" and w[2] == "calico_bgp":
        rest = w[3:]
    else:
        return None
    i = 0
    while i < len(rest) and rest[i].startswith("-"):  # global options before the command
        i += 2 if rest[i] in GLOBAL_FLAGS_WITH_VALUE else 1
    if rest[i:i + 2] != ["node", "run"]:
        return None
    return rest[i + 2:]


def _agent(node: str, words: list[str], original: str) -> AgentStart:
    args = _agent_args(words) or []
    opts: list[str] = []
    name = node
    i = 0
    while i < len(args):
        a = args[i]
        flag, eq, val = a.partition("=")
        if flag in AGENT_FLAGS_WITH_VALUE:
            if not eq:
                if i + 1 >= len(args):
                    raise ExecError(f"exec {original!r}: {flag} needs a value")
                val = args[i + 1]
                i += 1
            if flag == "--name":
                name = val
            elif flag != "--state-dir":
                opts += [flag, val]
        elif a.startswith("-"):
            raise ExecError(f"exec {original!r}: unknown node run option {a}")
        i += 1
    return AgentStart(name=name, options=tuple(opts), command=original)


def map_paths(text: str, binds: Sequence[Bind]) -> str:
    """Container paths that a bind maps, replaced by the bind's source (longest target first)."""
    for b in sorted(binds, key=lambda b: -len(b.target)):
        text = text.replace(b.target, b.source)
    return text


def _shell(text: str, original: str, binds: Sequence[Bind], role: str) -> Shell:  # noqa: ARG001
    return Shell(map_paths(text, binds), original)
