"""BPF object files opened, loaded and pinned through libbpf (Debian's libbpf1: libbpf.so.1) via ctypes.

libbpf reads the ELF and its BTF-defined maps, creates the maps (or re-uses the fds it is given),
relocates the programs to them and loads them; this module only calls it, checks every return code
and names the call that failed, with its errno, in a LibbpfError. What libbpf prints goes to this
module's logger as `event=libbpf` lines instead of to stderr, and what it printed during the failed
call into the error; a program the verifier refuses adds the tail of the verifier's log.

    with BpfObject(path) as obj:         # bpf_object__open_file
        obj.reuse_map("cb_v4", fd)       # bpf_map__reuse_fd: load() will not create this one
        obj.load()                       # bpf_object__load
        obj.pin_map("cb_v4", path)       # bpf_map__pin
        fd = obj.program_fd("cbf_...")   # closed with the object: dup it to keep it
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from pathlib import Path
from typing import Any

import attrs

from dataplane.logfmt import event

log = logging.getLogger(__name__)

LIBRARY = "libbpf.so.1"
_KEEP_LINES = 10           # libbpf lines kept for an error message
_VERIFIER_LOG = 1 << 20    # bytes of verifier log per program; the kernel keeps the tail when it is full
_VERIFIER_TAIL = 2000      # characters of it in an error message


class LibbpfError(OSError):
    """A libbpf call failed: the message names the call, the object and the errno."""


@attrs.frozen
class MapDef:
    """A map as the object defines it: what a pinned map must match to be re-used."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@attrs.frozen
class ObjectSpec:
    """What an object file holds, read without loading it."""

    program: str                 # the name of the program in the section asked for
    maps: tuple[MapDef, ...]     # the object's own maps (not libbpf's .data/.rodata/.bss ones)


# -- the library ---------------------------------------------------------------------------------

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_recent = threading.local()    # the lines libbpf printed during this thread's current call (.lines)
_lib: ctypes.CDLL | None = None
_lock = threading.Lock()
_libc = ctypes.CDLL(None)   # no use_errno: formatting inside a libbpf call must not touch its errno
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


@_PRINT_FN
def _print(level: int, fmt: bytes, args: int) -> int:
    # va_list reaches us as a pointer (x86-64 and arm64 alike pass it by reference): vsnprintf formats it
    if level == 2:
        return 0   # debug: libbpf's step-by-step narration
    buf = ctypes.create_string_buffer(16384)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace").rstrip("\n").removeprefix("libbpf: ")
    lines = _recent.__dict__.setdefault("lines", [])
    lines.extend(text.splitlines())
    del lines[:-_KEEP_LINES]
    event(log, "libbpf", _LEVELS.get(level, logging.DEBUG), message=text)
    return 0


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "bpf_object__open_file": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
    "bpf_object__load": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_object__close": (None, [ctypes.c_void_p]),
    "bpf_object__next_map": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]),
    "bpf_object__next_program": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]),
    "bpf_object__find_map_by_name": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "bpf_object__find_program_by_name": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "bpf_program__name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "bpf_program__section_name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "bpf_program__fd": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_program__pin": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "bpf_program__set_log_buf": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
    "bpf_map__name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "bpf_map__type": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_map__key_size": (ctypes.c_uint32, [ctypes.c_void_p]),
    "bpf_map__value_size": (ctypes.c_uint32, [ctypes.c_void_p]),
    "bpf_map__max_entries": (ctypes.c_uint32, [ctypes.c_void_p]),
    "bpf_map__map_flags": (ctypes.c_uint32, [ctypes.c_void_p]),
    "bpf_map__is_internal": (ctypes.c_bool, [ctypes.c_void_p]),
    "bpf_map__fd": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_map__reuse_fd": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "bpf_map__pin": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "libbpf_set_print": (ctypes.c_void_p, [_PRINT_FN]),
}


def library() -> ctypes.CDLL:
    """libbpf.so.1, its functions typed, its printing routed to our log; loaded on first use."""
    global _lib
    with _lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL(LIBRARY, use_errno=True)
            except OSError as exc:
                raise LibbpfError(errno.ENOENT, f"{LIBRARY} cannot be loaded ({exc}): install libbpf1") from None
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
            lib.libbpf_set_print(_print)
            _lib = lib
        return _lib


def _call(fn: Any, *args: Any) -> Any:
    """Call a libbpf function, remembering only what libbpf prints during this call."""
    _recent.lines = []
    return fn(*args)


def _error(err: int, what: str, extra: str = "") -> LibbpfError:
    said = _recent.__dict__.get("lines") or []
    text = f"{what}: {os.strerror(err)}"
    if said:
        text += f"; libbpf: {' | '.join(said)}"
    return LibbpfError(err, text + extra)


def _check(ret: int, what: str) -> int:
    """The result of an int-returning _call: negative is -errno (libbpf 1.x)."""
    if ret < 0:
        raise _error(-ret, what)
    return ret


# -- objects -------------------------------------------------------------------------------------

class BpfObject:
    """One object file opened by libbpf; load() puts its maps and programs in the kernel.

    Close it (or use `with`): libbpf closes every fd the object holds; pins stay."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lib = library()
        self._logs: dict[str, ctypes.Array] = {}
        ptr = _call(self._lib.bpf_object__open_file, str(self.path).encode(), None)
        if not ptr:
            raise _error(ctypes.get_errno() or errno.EINVAL, f"bpf_object__open_file {self.path}")
        self._obj: int | None = ptr

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None
        self._logs = {}

    def _handle(self) -> int:
        if self._obj is None:
            raise LibbpfError(errno.EBADF, f"{self.path} is closed")
        return self._obj

    # -- what it holds -------------------------------------------------------------------------

    def spec(self, section: str) -> ObjectSpec:
        """The name of the program in `section` and the definitions of the object's maps."""
        lib, obj = self._lib, self._handle()
        programs: list[str] = []
        prog = lib.bpf_object__next_program(obj, None)
        while prog:
            if lib.bpf_program__section_name(prog).decode() == section:
                programs.append(lib.bpf_program__name(prog).decode())
            prog = lib.bpf_object__next_program(obj, prog)
        if len(programs) != 1:
            raise LibbpfError(errno.ENOENT, f"{self.path}: {len(programs)} programs in section {section!r}, not 1")
        maps: list[MapDef] = []
        m = lib.bpf_object__next_map(obj, None)
        while m:
            if not lib.bpf_map__is_internal(m):
                maps.append(MapDef(lib.bpf_map__name(m).decode(), lib.bpf_map__type(m), lib.bpf_map__key_size(m),
                                   lib.bpf_map__value_size(m), lib.bpf_map__max_entries(m),
                                   lib.bpf_map__map_flags(m)))
            m = lib.bpf_object__next_map(obj, m)
        return ObjectSpec(programs[0], tuple(maps))

    def _map(self, name: str) -> int:
        m = self._lib.bpf_object__find_map_by_name(self._handle(), name.encode())
        if not m:
            raise LibbpfError(errno.ENOENT, f"bpf_object__find_map_by_name {name}: no such map in {self.path}")
        return m

    def _program(self, name: str) -> int:
        p = self._lib.bpf_object__find_program_by_name(self._handle(), name.encode())
        if not p:
            raise LibbpfError(errno.ENOENT, f"bpf_object__find_program_by_name {name}: no such program in {self.path}")
        return p

    # -- loading -------------------------------------------------------------------------------

    def reuse_map(self, name: str, fd: int) -> None:
        """Make load() use the existing map `fd` (libbpf dups it) instead of creating `name`."""
        _check(_call(self._lib.bpf_map__reuse_fd, self._map(name), fd), f"bpf_map__reuse_fd {name} of {self.path}")

    def load(self) -> None:
        """Create the maps not re-used, relocate and load every program (the verifier runs here)."""
        lib, obj = self._lib, self._handle()
        prog = lib.bpf_object__next_program(obj, None)
        while prog:
            # libbpf asks for a log only when a load fails, then retries into this buffer
            buf = self._logs[lib.bpf_program__name(prog).decode()] = ctypes.create_string_buffer(_VERIFIER_LOG)
            _check(_call(lib.bpf_program__set_log_buf, prog, buf, len(buf)), f"bpf_program__set_log_buf of {self.path}")
            prog = lib.bpf_object__next_program(obj, prog)
        ret = _call(lib.bpf_object__load, obj)
        if ret < 0:
            logs = [f"{name}: {buf.value.decode(errors='replace')[-_VERIFIER_TAIL:]}"
                    for name, buf in self._logs.items() if buf.value]
            raise _error(-ret, f"bpf_object__load {self.path}", "".join(f"; verifier log of {t}" for t in logs))

    def map_fd(self, name: str) -> int:
        return _check(_call(self._lib.bpf_map__fd, self._map(name)), f"bpf_map__fd {name} of {self.path}")

    def program_fd(self, name: str) -> int:
        return _check(_call(self._lib.bpf_program__fd, self._program(name)), f"bpf_program__fd {name} of {self.path}")

    def pin_map(self, name: str, path: Path) -> None:
        _check(_call(self._lib.bpf_map__pin, self._map(name), str(path).encode()), f"bpf_map__pin {name} at {path}")

    def pin_program(self, name: str, path: Path) -> None:
        _check(_call(self._lib.bpf_program__pin, self._program(name), str(path).encode()),
               f"bpf_program__pin {name} at {path}")


def inspect(path: Path, section: str = "xdp") -> ObjectSpec:
    """The program and map definitions of the object at `path` (opened, read, closed; nothing loaded)."""
    with BpfObject(path) as obj:
        return obj.spec(section)
