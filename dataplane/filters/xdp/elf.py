"""Just enough of ELF64 (little-endian, as clang -target bpf writes it) to load filter.o ourselves.

What it reads: the program section's instructions, the legacy "maps" section (one `struct map_def`
of five u32 per symbol), the license, and the program section's map relocations. Anything the
object needs beyond that (BTF maps, .rodata, calls across sections) is refused, not half-done.
"""
from __future__ import annotations

import struct

import attrs

R_BPF_64_64 = 1
_SHT_SYMTAB = 2
_SHT_REL = 9


class ElfError(ValueError):
    """The object is not one this loader understands."""


@attrs.frozen
class MapDef:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@attrs.frozen
class Relocation:
    insn_offset: int  # byte offset of the ld_imm64 in the program section
    map_name: str


@attrs.frozen
class BpfObject:
    program: bytes
    program_name: str
    license: str
    maps: tuple[MapDef, ...]
    relocations: tuple[Relocation, ...]


@attrs.frozen
class _Section:
    name: str
    type: int
    offset: int
    size: int
    link: int
    info: int


def parse(data: bytes, section: str = "xdp") -> BpfObject:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF object")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = raw[shstrndx][4]

    def cstr(off: int) -> str:
        end = data.index(b"\0", off)
        return data[off:end].decode()

    sections = [_Section(cstr(strtab_off + r[0]), r[1], r[4], r[5], r[6], r[7]) for r in raw]
    by_name = {s.name: (i, s) for i, s in enumerate(sections)}
    if section not in by_name:
        raise ElfError(f"no section {section!r}")
    prog_idx, prog = by_name[section]
    maps_idx, maps_sec = by_name.get("maps", (-1, None))
    lic = by_name.get("license")
    license = data[lic[1].offset:lic[1].offset + lic[1].size].split(b"\0")[0].decode() if lic else "GPL"

    symtab = next((s for s in sections if s.type == _SHT_SYMTAB), None)
    if symtab is None:
        raise ElfError("no symbol table")
    sym_strs = sections[symtab.link].offset
    symbols = []
    for off in range(symtab.offset, symtab.offset + symtab.size, 24):
        st_name, st_info, _other, st_shndx, st_value, _size = struct.unpack_from("<IBBHQQ", data, off)
        symbols.append((cstr(sym_strs + st_name), st_info, st_shndx, st_value))

    maps: list[MapDef] = []
    map_at: dict[int, str] = {}
    if maps_sec is not None:
        for name, _info, shndx, value in symbols:
            if shndx == maps_idx and name:
                fields = struct.unpack_from("<IIIII", data, maps_sec.offset + value)
                maps.append(MapDef(name, *fields))
                map_at[value] = name
    prog_name = next((n for n, info, shndx, _v in symbols if shndx == prog_idx and info & 0xF == 2), section)

    relocs: list[Relocation] = []
    for s in sections:
        if s.type != _SHT_REL or s.info != prog_idx:
            continue
        for off in range(s.offset, s.offset + s.size, 16):
            r_offset, r_info = struct.unpack_from("<QQ", data, off)
            sym, rtype = r_info >> 32, r_info & 0xFFFFFFFF
            name, _info, shndx, value = symbols[sym]
            if rtype != R_BPF_64_64 or shndx != maps_idx:
                raise ElfError(f"unsupported relocation at {r_offset:#x} to {name!r} (section {shndx})")
            relocs.append(Relocation(r_offset, map_at[value]))
    code = data[prog.offset:prog.offset + prog.size]
    return BpfObject(code, prog_name, license, tuple(maps), tuple(relocs))


def relocate(obj: BpfObject, map_fds: dict[str, int]) -> bytes:
    """The program with each map reference turned into a BPF_PSEUDO_MAP_FD load of that map's fd."""
    code = bytearray(obj.program)
    for r in obj.relocations:
        opcode = code[r.insn_offset]
        if opcode != 0x18:  # BPF_LD | BPF_IMM | BPF_DW
            raise ElfError(f"relocation at {r.insn_offset:#x} is not a 64-bit immediate load")
        code[r.insn_offset + 1] = (code[r.insn_offset + 1] & 0x0F) | (1 << 4)  # src_reg = PSEUDO_MAP_FD
        struct.pack_into("<i", code, r.insn_offset + 4, map_fds[r.map_name])
    return bytes(code)
