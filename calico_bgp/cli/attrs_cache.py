"""`node run`: the methods attrs generates for our classes kept as bytecode between starts, the way
Python keeps a module's, instead of compiled again at every start.

attrs writes each class's methods (__init__, __eq__, __hash__, __repr__, ...) as Python source when
the class is defined and compiles it, in every process: about 220 scripts and 0.1 s of CPU, a
fifth of the agent's imports, on the way to its first session. Here attrs' `compile` is wrapped: a
script compiled before (same text, same file name; the cache file is per interpreter and
optimisation level) gets its code object from `attrs-methods.*.marshal` in our `__pycache__`,
written once the agent's modules are imported when anything new was compiled, and then let go (by `node run`, or
by bootstrap.sh and the benches ahead of it: `prime()`).

cattrs does the same for the codec (resources/codec.py): a structure and an unstructure function
per class, written as source and compiled the first time a class is decoded or encoded, which in
the agent is its first sync (~160 scripts, ~60 ms of CPU to compile, on the way to its first
session). Its `compile` goes through the same cache, so `node run` keeps the cache until its first
sync is done (`finish()` after the agent is ready). A hit is keyed by the whole script and its file
name: the same code, whatever generated it.

A class's __hash__ starts from hash() of a string (attrs' `type_hash`), which differs in every
process (hash randomisation): that number is left out of the key, and the cached code gets this
process's value back in place of the one it was compiled with (the only constant that differs).
Only `node run` uses it; nothing else changes in what attrs builds (tests/unit/test_attrs_cache.py).

The code objects are run as they are loaded, often as root: a cache file is read only when it is a
regular file (not a link) owned by this process's user and writable by no one else, and it is
written to a new file (O_EXCL, never through a link, mode 0o644) renamed over it; a crashed
writer's file left at that name is removed when it is a regular file of ours. Its name carries
the interpreter's cache tag and bytecode magic number and the optimisation level.
A failed write is a logged warning (`finish_logged`): the cache only ever saves time.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import marshal
import os
import re
import stat
import sys
import types
from pathlib import Path
from typing import Any

# attrs' __hash__ script: `hash((` then `type_hash,` on the next line (attr/_make.py _make_hash_script)
_TYPE_HASH = re.compile(r"hash\(\(\n\s+(-?\d+),\n")
_PLACEHOLDER = "TYPE_HASH"

Key = bytes  # a digest of the file name and the script with its type hash taken out


def split_type_hash(source: str) -> tuple[str, int | None]:
    """The script with its __hash__'s per-process number replaced by a placeholder, and that number
    (None when the script has no __hash__)."""
    m = _TYPE_HASH.search(source)
    if m is None:
        return source, None
    return source[:m.start(1)] + _PLACEHOLDER + source[m.end(1):], int(m.group(1))


def with_constant(code: types.CodeType, old: int, new: int) -> types.CodeType:
    """`code` (and the functions inside it) with the int constant `old` replaced by `new`."""
    consts = tuple(new if type(c) is int and c == old else
                   with_constant(c, old, new) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_consts=consts)


def cache_path(root: Path | None = None) -> Path:
    """Per interpreter (cache tag and bytecode magic number) and optimisation level. Not per attrs
    version: a hit is keyed by the whole script, and the same text compiles to the same code whatever
    made it (and a save keeps only what that process used). `attr.__version__` is read through
    importlib.metadata, which cost every agent ~20 ms of CPU on its way to its first session."""
    root = Path(__file__).resolve().parents[1] if root is None else root
    magic = importlib.util.MAGIC_NUMBER.hex()  # bytecode can change within one cache tag
    tag = f"{sys.implementation.cache_tag}-{magic}-O{sys.flags.optimize}"
    return root / "__pycache__" / f"attrs-methods.{tag}.marshal"


class MethodCache:
    """Code objects of attrs' scripts by a digest of their file name and text (without the type hash),
    each with the type hash it was compiled with: what was loaded (each kept marshalled until a
    class asks for it: the whole table decoded at once left the agent ~1 MB larger), what this
    process used, and whether it compiled anything new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: dict[Key, tuple[bytes, int | None]] = {}
        self.used: dict[Key, tuple[types.CodeType, int | None]] = {}
        self.compiled = 0
        try:
            data = _read_own(path)
            loaded = marshal.loads(data) if data is not None else None
            if isinstance(loaded, dict):
                self.known = loaded
        except (OSError, ValueError, EOFError, TypeError):
            pass  # none yet, or unreadable: compiled as attrs does, and written again

    def _cached(self, key: Key, type_hash: int | None) -> types.CodeType | None:
        hit = self.known.pop(key, None)
        if hit is None or (hit[1] is None) != (type_hash is None):
            return None
        try:
            code = marshal.loads(hit[0])
        except (ValueError, EOFError, TypeError):
            return None
        if not isinstance(code, types.CodeType):
            return None
        if type_hash is not None and hit[1] != type_hash:
            code = with_constant(code, hit[1], type_hash)  # type: ignore[arg-type]
        return code

    def compile(self, source: Any, filename: Any, mode: Any, *args: Any, **kwargs: Any) -> Any:
        """attrs' `compile(script, filename, "exec")`; anything else goes to the built-in as given."""
        if args or kwargs or mode != "exec" or not isinstance(source, str) or not isinstance(filename, str):
            return compile(source, filename, mode, *args, **kwargs)
        text, type_hash = split_type_hash(source)
        key = hashlib.blake2b(f"{filename}\0{text}".encode(), digest_size=20).digest()
        again = self.used.get(key)  # the same script twice in one process (cattrs makes some hooks twice)
        code = again[0] if again is not None and again[1] == type_hash else self._cached(key, type_hash)
        if code is None:
            code = compile(source, filename, mode)
            self.compiled += 1
        self.used[key] = (code, type_hash)
        return code

    def save(self) -> bool:
        """Write what this process used, when it compiled anything; False when it did not (or could not)."""
        if not self.compiled:
            return False
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        data = marshal.dumps({k: (marshal.dumps(c), h) for k, (c, h) in self.used.items()})
        try:
            self.path.parent.mkdir(exist_ok=True)
            fd = _create(tmp)
        except FileExistsError:
            if not _stale_own_file(tmp):
                return False  # a link, or someone else's file, at the name: left as it is
            try:  # no live process but this one has our pid: a crashed writer's leftover
                tmp.unlink()
                fd = _create(tmp)
            except OSError:
                return False
        except OSError:
            return False
        try:
            with open(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        self.compiled = 0
        return True


def _create(tmp: Path) -> int:
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def _stale_own_file(tmp: Path) -> bool:
    """A regular file of this process's user at the temporary name (a link is never one)."""
    try:
        st = os.lstat(tmp)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def _read_own(path: Path) -> bytes | None:
    """The file's bytes when it is a regular file, not a link, owned by this process's user and
    writable by no one else; None otherwise (OSError when there is none)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        return f.read()


_installed: MethodCache | None = None


def _compilers() -> list[types.ModuleType]:
    """The modules whose `compile` goes through the cache: attrs' (methods) and cattrs' (the codec's hooks)."""
    from attr import _make
    from cattrs import gen

    return [_make, gen]


def install(path: Path | None = None) -> MethodCache:
    """Make attrs and cattrs compile through the cache from now on (classes defined and hooks made
    before keep their code)."""
    global _installed
    _installed = MethodCache(cache_path() if path is None else path)
    for module in _compilers():
        module.compile = _installed.compile  # type: ignore[attr-defined]  # a module global ahead of the built-in
    return _installed


def use_for_node_run() -> None:
    """In `node run` only: attrs' methods from the cache (before the CLI defines any class)."""
    from calico_bgp.cli.system_malloc import is_node_run

    if is_node_run(sys.orig_argv):
        install()


def finish() -> bool:
    """After the agent's first sync: write the cache when this process compiled anything new, then let
    it go (attrs and cattrs compile as before from now on, also when the write raised; the scripts
    and code held for the cache, ~2 MB, are freed). Returns whether it was written."""
    global _installed
    installed, _installed = _installed, None
    if installed is None:
        return False
    try:
        return installed.save()
    finally:
        for module in _compilers():
            if getattr(module, "compile", None) == installed.compile:
                del module.compile  # type: ignore[attr-defined]  # the built-in again


def finish_logged() -> bool:
    """finish(), for `node run`'s task group: any failure is a warning, never the agent's end."""
    try:
        return finish()
    except Exception as exc:  # noqa: BLE001  (a speed-only step)
        from dataplane.logfmt import event

        event(logging.getLogger(__name__), "attrs_cache_not_written", logging.WARNING, error=repr(exc))
        return False


def codec_hooks() -> int:
    """The codec's structure and unstructure functions for every stored kind and the classes inside
    them (what an agent's first sync makes); returns how many classes."""
    import typing

    import attrs

    from calico_bgp.resources import codec, kinds

    seen: set[type] = set()
    todo = [k for k in typing.get_args(kinds.Resource)]
    while todo:
        cls = todo.pop()
        if cls in seen or not (isinstance(cls, type) and attrs.has(cls)):
            continue
        seen.add(cls)
        codec.converter.get_structure_hook(cls)
        codec.converter.get_unstructure_hook(cls)
        for field in attrs.fields(attrs.resolve_types(cls)):
            todo += [field.type, *_inner_types(field.type)]
    return len(seen)


def _inner_types(t: Any) -> list[Any]:
    import typing

    out = []
    for arg in typing.get_args(t):
        out += [arg, *_inner_types(arg)]
    return out


def prime() -> bool:
    """Import what `node run` imports with the cache on, make the codec's hooks, and write it
    (bootstrap.sh, the benches)."""
    install()
    import calico_bgp.agent.node  # noqa: F401
    import calico_bgp.cli.common  # noqa: F401
    import calico_bgp.datastore.client  # noqa: F401
    codec_hooks()
    return finish()
