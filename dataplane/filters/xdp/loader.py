"""Load filter.o, pin it, attach it to interfaces, and never touch an XDP program that is not ours.

Layout under the pin root (a bpffs this module mounts if needed, outside /sys because `ip netns
exec` remounts /sys):

    <root>/v1/<ifname>/prog          the program attached to <ifname>
    <root>/v1/<ifname>/cb_v4 ...     its maps (one set per interface: verdicts differ per interface)

A program is "ours" when its id is the id of our pinned program for that interface; one named
cbf_* (ours, from a lost pin or another build) may be replaced atomically, anyone else's never. Attach and
detach go through netlink with IFLA_XDP_EXPECTED_FD, so the kernel itself refuses to replace or
remove a program that was swapped in behind our back between our check and our change.
A restart opens the pins and finds the attached id equal to the pinned one: nothing is reloaded,
nothing is detached, no packet sees a gap. A program of another name (filter.c's is cbf_<build id>)
is another build: it is loaded by libbpf against the pinned maps and swapped in.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import attrs

from dataplane.filters.xdp import bpf, libbpf
from dataplane.logfmt import event

if TYPE_CHECKING:  # pyroute2 is loaded when an interface is first looked up, not with the agent
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)

ABI = "v1"
PROG_PREFIX = "cbf_"   # our programs are named cbf_<build id> (filter.c): ownership and version in one
SECTION = "xdp"
BPF_FS_MAGIC = 0xCAFE4A11
DEFAULT_OBJECT = Path(__file__).with_name("filter.o")
DEFAULT_PIN_ROOT = Path("/run/calico-bgp/bpf")

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
_ATTACHED_MODE_FLAGS = {1: XDP_FLAGS_DRV_MODE, 2: XDP_FLAGS_SKB_MODE}
MODE_NAMES = {1: "native", 2: "generic"}


class XdpError(Exception):
    """XDP could not be set up here (object missing, load refused, attach refused)."""


class ObjectMissing(XdpError):
    pass


class ForeignProgram(XdpError):
    """Another XDP program is attached to the interface: we neither replace nor remove it."""


class NoSuchInterface(XdpError):
    pass


@attrs.frozen
class Attachment:
    ifname: str
    ifindex: int
    prog_id: int
    mode: str  # "native" | "generic"


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 120)]


def _fs_type(path: Path) -> int:
    buf = _Statfs()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(str(path).encode(), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return buf.f_type & 0xFFFFFFFF


def ensure_bpffs(root: Path) -> bool:
    """Mount a bpffs at `root` unless one is there already; True when this call mounted it."""
    root.mkdir(parents=True, exist_ok=True)
    if _fs_type(root) == BPF_FS_MAGIC:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(root).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise XdpError(f"mount -t bpf {root}: {os.strerror(err)}")
    event(log, "bpffs_mounted", path=root)
    return True


def unmount_bpffs(root: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(str(root).encode(), 0) != 0:
        err = ctypes.get_errno()
        raise XdpError(f"umount {root}: {os.strerror(err)}")


@attrs.define
class PinnedFilter:
    """Our program and its maps for one interface, as open fds. Close it when done."""

    ifname: str
    directory: Path
    prog_fd: int
    prog_id: int
    maps: dict[str, int]
    map_defs: dict[str, libbpf.MapDef]

    def close(self) -> None:
        for fd in (self.prog_fd, *self.maps.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.maps = {}
        self.prog_fd = -1


class XdpLoader:
    """Loads/pins per interface and attaches through netlink in the given namespace (None: ours)."""

    def __init__(self, pin_root: Path = DEFAULT_PIN_ROOT, obj_path: Path = DEFAULT_OBJECT,
                 netns: str | None = None) -> None:
        self.pin_root = Path(pin_root)
        self.obj_path = Path(obj_path)
        self.netns = netns
        self._spec: libbpf.ObjectSpec | None = None

    # -- object and pins ---------------------------------------------------------------------

    def object(self) -> libbpf.ObjectSpec:
        """The object's program name and map definitions, read once."""
        if self._spec is None:
            if not self.obj_path.is_file():
                raise ObjectMissing(f"{self.obj_path} is missing: run `make -C dataplane/filters/xdp`")
            try:
                self._spec = libbpf.inspect(self.obj_path, SECTION)
            except libbpf.LibbpfError as exc:
                raise XdpError(f"reading {self.obj_path}: {exc}") from exc
        return self._spec

    def _dir(self, ifname: str) -> Path:
        return self.pin_root / ABI / ifname

    def pinned_interfaces(self) -> list[str]:
        base = self.pin_root / ABI
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "prog").exists())

    def open_or_load(self, ifname: str) -> PinnedFilter:
        """Our pinned program for `ifname`, re-used when pinned already, else loaded and pinned.

        When the pinned program was built from another filter.o (an upgrade), the new program is
        loaded against the same pinned maps and pinned in its place; `attach` then swaps it in
        atomically: no packet sees empty maps or no program."""
        spec = self.object()
        ensure_bpffs(self.pin_root)
        d = self._dir(ifname)
        defs = {m.name: m for m in spec.maps}
        if (d / "prog").exists():
            pinned = self._open(ifname, d, defs)
            if pinned is not None:
                if bpf.prog_info(pinned.prog_fd).name == spec.program:
                    return pinned
                return self._reload(pinned, spec)
        return self._load(ifname, d, spec, defs)

    def _reload(self, pinned: PinnedFilter, spec: libbpf.ObjectSpec) -> PinnedFilter:
        old_id = pinned.prog_id
        try:
            with libbpf.BpfObject(self.obj_path) as obj:
                for name, fd in pinned.maps.items():
                    obj.reuse_map(name, fd)
                obj.load()
                os.unlink(pinned.directory / "prog")
                obj.pin_program(spec.program, pinned.directory / "prog")
                prog_fd = os.dup(obj.program_fd(spec.program))
        except libbpf.LibbpfError as exc:
            pinned.close()
            raise XdpError(f"loading {self.obj_path} for {pinned.ifname}: {exc}") from exc
        os.close(pinned.prog_fd)
        pinned.prog_fd, pinned.prog_id = prog_fd, bpf.prog_info(prog_fd).id
        event(log, "xdp_upgraded", interface=pinned.ifname, old_prog_id=old_id, prog_id=pinned.prog_id,
              program=spec.program)
        return pinned

    def open_existing(self, ifname: str) -> PinnedFilter | None:
        d = self._dir(ifname)
        if not (d / "prog").exists():
            return None
        return self._open(ifname, d, {m.name: m for m in self.object().maps})

    def _open(self, ifname: str, d: Path, defs: dict[str, libbpf.MapDef]) -> PinnedFilter | None:
        fds: dict[str, int] = {}
        try:
            for name, mdef in defs.items():
                fd = fds[name] = bpf.obj_get(str(d / name))
                info = bpf.map_info(fd)
                if (info.type, info.key_size, info.value_size, info.max_entries) != (
                        mdef.type, mdef.key_size, mdef.value_size, mdef.max_entries):
                    raise XdpError(f"pinned map {d / name} does not match {self.obj_path}")
            prog_fd = bpf.obj_get(str(d / "prog"))
        except bpf.BpfError as exc:
            for fd in fds.values():
                os.close(fd)
            if exc.errno == errno.ENOENT:
                return None
            raise
        info = bpf.prog_info(prog_fd)
        event(log, "xdp_pins_reused", interface=ifname, prog_id=info.id, dir=d)
        return PinnedFilter(ifname, d, prog_fd, info.id, fds, defs)

    def _load(self, ifname: str, d: Path, spec: libbpf.ObjectSpec, defs: dict[str, libbpf.MapDef]) -> PinnedFilter:
        d.mkdir(parents=True, exist_ok=True)
        try:
            with libbpf.BpfObject(self.obj_path) as obj:
                obj.load()
                # maps first, program last: a directory with `prog` is always complete
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(d / "prog")
                for name in defs:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(d / name)
                    obj.pin_map(name, d / name)
                obj.pin_program(spec.program, d / "prog")
                # the object closes its fds: keep copies
                fds = {name: os.dup(obj.map_fd(name)) for name in defs}
                prog_fd = os.dup(obj.program_fd(spec.program))
        except libbpf.LibbpfError as exc:
            raise XdpError(f"loading {self.obj_path} for {ifname}: {exc}") from exc
        info = bpf.prog_info(prog_fd)
        event(log, "xdp_loaded", interface=ifname, prog_id=info.id, tag=info.tag, dir=d)
        return PinnedFilter(ifname, d, prog_fd, info.id, fds, defs)

    def unpin(self, ifname: str) -> None:
        d = self._dir(ifname)
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            event(log, "xdp_unpinned", interface=ifname, dir=d)

    # -- netlink -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _ipr(self) -> Iterator[IPRoute]:
        from pyroute2 import IPRoute

        ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()

    def _link(self, ipr: IPRoute, ifname: str) -> tuple[int, int, int]:
        """(ifindex, attached prog id or 0, attach mode code) of `ifname`."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            link = ipr.link("get", ifname=ifname)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise NoSuchInterface(f"no interface {ifname!r}") from None
            raise
        xdp = link.get("xdp")
        prog_id, mode = 0, 0
        if xdp is not None:
            mode = xdp.get("IFLA_XDP_ATTACHED") or 0
            if isinstance(mode, str):
                mode = {"xdp": 1, "xdpgeneric": 2, "xdpoffload": 3, "xdpmulti": 4}.get(mode, 0)
            prog_id = xdp.get("IFLA_XDP_PROG_ID") or xdp.get("IFLA_XDP_DRV_PROG_ID") or xdp.get("IFLA_XDP_SKB_PROG_ID") or 0
        return link["index"], prog_id, mode

    def interface_exists(self, ifname: str) -> bool:
        with self._ipr() as ipr:
            try:
                self._link(ipr, ifname)
            except NoSuchInterface:
                return False
        return True

    def attached(self, ifname: str) -> Attachment | None:
        with self._ipr() as ipr:
            idx, prog_id, mode = self._link(ipr, ifname)
        return Attachment(ifname, idx, prog_id, MODE_NAMES.get(mode, str(mode))) if prog_id else None

    def attach(self, pinned: PinnedFilter, prefer: str = "native") -> Attachment:
        """Attach our program; a no-op when it is attached already; ForeignProgram if another is."""
        from pyroute2.netlink.exceptions import NetlinkError

        with self._ipr() as ipr:
            idx, cur, mode = self._link(ipr, pinned.ifname)
            if cur == pinned.prog_id:
                return Attachment(pinned.ifname, idx, cur, MODE_NAMES.get(mode, str(mode)))
            expected: int | None = None
            if cur:
                # an older program of ours (pins lost) may be replaced; anyone else's never
                try:
                    fd = bpf.prog_fd_by_id(cur)
                except bpf.BpfError:
                    fd = -1
                try:
                    name = bpf.prog_info(fd).name if fd >= 0 else "?"
                    if not name.startswith(PROG_PREFIX):
                        raise ForeignProgram(f"{pinned.ifname}: XDP program id={cur} name={name!r} is not ours")
                    self._set_xdp(ipr, idx, pinned.prog_fd, _ATTACHED_MODE_FLAGS.get(mode, 0) | XDP_FLAGS_REPLACE, fd)
                    expected = cur
                finally:
                    if fd >= 0:
                        os.close(fd)
                event(log, "xdp_replaced", interface=pinned.ifname, old_prog_id=expected, prog_id=pinned.prog_id)
                return self.attached(pinned.ifname) or Attachment(pinned.ifname, idx, pinned.prog_id, "?")
            order = [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] if prefer == "native" else [XDP_FLAGS_SKB_MODE]
            last: Exception | None = None
            for flags in order:
                try:
                    self._set_xdp(ipr, idx, pinned.prog_fd, flags | XDP_FLAGS_UPDATE_IF_NOEXIST, None)
                except NetlinkError as exc:
                    if exc.code == errno.EBUSY:
                        raise ForeignProgram(f"{pinned.ifname}: another XDP program was attached meanwhile") from None
                    last = exc
                    continue
                name = "native" if flags == XDP_FLAGS_DRV_MODE else "generic"
                event(log, "xdp_attached", interface=pinned.ifname, ifindex=idx, prog_id=pinned.prog_id, mode=name)
                return Attachment(pinned.ifname, idx, pinned.prog_id, name)
            raise XdpError(f"{pinned.ifname}: XDP attach refused: {last}")

    def detach(self, pinned: PinnedFilter) -> bool:
        """Detach our program if (and only if) it is the one attached; True when it was."""
        with self._ipr() as ipr:
            try:
                idx, cur, mode = self._link(ipr, pinned.ifname)
            except NoSuchInterface:
                return False
            if cur != pinned.prog_id:
                if cur:
                    event(log, "xdp_detach_skipped", logging.WARNING, interface=pinned.ifname, attached_prog_id=cur,
                          ours=pinned.prog_id)
                return False
            self._set_xdp(ipr, idx, -1, _ATTACHED_MODE_FLAGS.get(mode, 0) | XDP_FLAGS_REPLACE, pinned.prog_fd)
        event(log, "xdp_detached", interface=pinned.ifname, prog_id=pinned.prog_id)
        return True

    @staticmethod
    def _set_xdp(ipr: IPRoute, idx: int, fd: int, flags: int, expected_fd: int | None) -> None:
        attrs_ = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
        if expected_fd is not None:
            attrs_.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
        ipr.link("set", index=idx, xdp={"attrs": attrs_})
