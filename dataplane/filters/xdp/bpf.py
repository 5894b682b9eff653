"""The bpf() system call through ctypes, for what the filter does after loading. No policy here.

Loading (maps created, programs relocated and verified, first pins) is libbpf's job (libbpf.py). Here:
opening and pinning objects by path, element lookup/update/delete/iterate on open map fds (the hot
path of every filter update), the ids/names/tags that tell our program from someone else's, and
BPF_PROG_TEST_RUN for tests and the bench.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

import attrs

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351, "riscv64": 280}

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15

BPF_ANY = 0

_ATTR_SIZE = 128
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf() call failed; errno and the command name say which and why."""


def _nr() -> int:
    try:
        return _SYS_BPF[platform.machine()]
    except KeyError:
        raise BpfError(errno.ENOSYS, f"bpf(): unsupported architecture {platform.machine()}") from None


def _call(cmd: int, attr: ctypes.Array, what: str) -> int:
    ret = _libc.syscall(_nr(), cmd, attr, _ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf({what}): {os.strerror(err)}")
    return ret


def _attr() -> ctypes.Array:
    return ctypes.create_string_buffer(_ATTR_SIZE)


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def possible_cpus() -> int:
    """Per-CPU map values are sized by the possible CPUs, not the online ones."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(path.encode())
    a = _attr()
    struct.pack_into("<QI", a, 0, _addr(p), fd)
    _call(BPF_OBJ_PIN, a, f"OBJ_PIN {path}")


def obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(path.encode())
    a = _attr()
    struct.pack_into("<QI", a, 0, _addr(p), 0)
    return _call(BPF_OBJ_GET, a, f"OBJ_GET {path}")


def prog_fd_by_id(prog_id: int) -> int:
    a = _attr()
    struct.pack_into("<I", a, 0, prog_id)
    return _call(BPF_PROG_GET_FD_BY_ID, a, f"PROG_GET_FD_BY_ID {prog_id}")


@attrs.frozen
class ProgInfo:
    id: int
    type: int
    tag: str
    name: str
    map_ids: tuple[int, ...]


@attrs.frozen
class MapInfo:
    id: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def _info(fd: int, size: int) -> ctypes.Array:
    info = ctypes.create_string_buffer(size)
    a = _attr()
    struct.pack_into("<IIQ", a, 0, fd, size, _addr(info))
    _call(BPF_OBJ_GET_INFO_BY_FD, a, "OBJ_GET_INFO_BY_FD")
    return info


def prog_info(fd: int) -> ProgInfo:
    # first pass learns nr_map_ids, second fetches them
    info = _info(fd, 96)
    nr_maps = struct.unpack_from("<I", info, 52)[0]
    ids = (ctypes.c_uint32 * max(nr_maps, 1))()
    buf = ctypes.create_string_buffer(96)
    struct.pack_into("<I", buf, 52, nr_maps)
    struct.pack_into("<Q", buf, 56, ctypes.addressof(ids))
    a = _attr()
    struct.pack_into("<IIQ", a, 0, fd, 96, _addr(buf))
    _call(BPF_OBJ_GET_INFO_BY_FD, a, "OBJ_GET_INFO_BY_FD")
    ptype, pid = struct.unpack_from("<II", buf, 0)
    tag = bytes(buf.raw[8:16]).hex()
    name = buf.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return ProgInfo(pid, ptype, tag, name, tuple(ids[:nr_maps]))


def map_info(fd: int) -> MapInfo:
    info = _info(fd, 80)
    mtype, mid, ks, vs, me, fl = struct.unpack_from("<IIIIII", info, 0)
    name = info.raw[24:40].split(b"\0", 1)[0].decode(errors="replace")
    return MapInfo(mid, mtype, ks, vs, me, fl, name)


def _elem(cmd: int, fd: int, key: bytes | None, value: ctypes.Array | None, flags: int, what: str) -> int:
    kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    a = _attr()
    struct.pack_into("<IIQQQ", a, 0, fd, 0, _addr(kbuf), _addr(value), flags)
    return _call(cmd, a, what)


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    vbuf = ctypes.create_string_buffer(value, len(value))
    _elem(BPF_MAP_UPDATE_ELEM, fd, key, vbuf, flags, "MAP_UPDATE_ELEM")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    vbuf = ctypes.create_string_buffer(value_size)
    try:
        _elem(BPF_MAP_LOOKUP_ELEM, fd, key, vbuf, 0, "MAP_LOOKUP_ELEM")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return vbuf.raw


def map_delete(fd: int, key: bytes) -> bool:
    """True when the key was there."""
    try:
        _elem(BPF_MAP_DELETE_ELEM, fd, key, None, 0, "MAP_DELETE_ELEM")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key, by GET_NEXT_KEY from no key (which the kernel reads as 'the first')."""
    keys: list[bytes] = []
    key: bytes | None = None
    nbuf = ctypes.create_string_buffer(key_size)
    while True:
        try:
            _elem(BPF_MAP_GET_NEXT_KEY, fd, key, nbuf, 0, "MAP_GET_NEXT_KEY")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return keys
            raise
        key = nbuf.raw
        keys.append(key)


def prog_test_run(fd: int, packet: bytes, repeat: int = 1) -> tuple[int, int]:
    """Run a program on one packet in the kernel (BPF_PROG_TEST_RUN): (return code, ns per run)."""
    data = ctypes.create_string_buffer(packet, len(packet))
    a = _attr()
    struct.pack_into("<IIIIQQII", a, 0, fd, 0, len(packet), 0, _addr(data), 0, repeat, 0)
    _call(BPF_PROG_TEST_RUN, a, "PROG_TEST_RUN")
    retval, duration = struct.unpack_from("<I", a, 4)[0], struct.unpack_from("<I", a, 36)[0]
    return retval, duration
