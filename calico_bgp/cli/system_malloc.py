"""`node run` on the C library's malloc: the command re-executes itself with PYTHONMALLOC=malloc
before the CLI imports anything heavy (os and sys only, not even typing: it runs in every `node run`
twice, once before the re-execution).

pymalloc frees an arena only when every object in it is gone: after 200k rejected routes came and
went, a few survivors per arena kept the agent 65 MB above where it started; with malloc (and
malloc_trim when a large table left) it came back within 1 MB (bench/memory.py). Only for this
program's own `node run` command line (`python -m calico_bgp ...` or the `calico-bgp` script),
never inside another program. The re-exec comes before the imports: done after them (as it once
was), every agent paid for its imports twice, about half a second of CPU at start.
"""
from __future__ import annotations

import os
import sys

REEXEC = "CALICO_BGP_SYSTEM_MALLOC"  # set across the re-exec
_TAKES_VALUE = ("-W", "-X", "--check-hash-based-pycs")  # the interpreter's options with a separate value


def command_args(argv: list[str] | tuple[str, ...]) -> list[str] | None:
    """The arguments after the program in an interpreter's command line (`sys.orig_argv`) when the
    program is this CLI (`-m calico_bgp`, or a script named calico-bgp); None for any other program."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return list(argv[i + 2:]) if argv[i + 1:i + 2] == ["calico_bgp"] else None
        if arg == "-c" or arg == "-":
            return None
        if not arg.startswith("-"):  # the script
            return list(argv[i + 1:]) if os.path.basename(arg) == "calico-bgp" else None
        i += 2 if arg in _TAKES_VALUE else 1
    return None


def is_node_run(argv: list[str] | tuple[str, ...]) -> bool:
    """Whether an interpreter's command line runs this CLI's `node run`."""
    args = command_args(argv)
    return args is not None and "node" in args and "run" in args[args.index("node"):]


def use_system_malloc() -> None:
    """Re-execute a `node run` with PYTHONMALLOC=malloc unless it is set; in the re-executed process,
    clear it again so ExaBGP and the bridge keep Python's own (faster) allocator."""
    if os.environ.pop(REEXEC, None) is not None:
        os.environ.pop("PYTHONMALLOC", None)
        return
    if os.environ.get("PYTHONMALLOC") or not is_node_run(sys.orig_argv):
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    os.environ[REEXEC] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
