"""The README's module map is the folders as they are: every package and module it names exists, and
every one that exists is named (package __init__ and __main__ aside)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("calico_bgp", "ipam", "dataplane", "lab")
_ENTRY = re.compile(r"^( *)(\S+?(?:/|\.py))(?:\s|$)")


def readme_map() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("The module map below is the folders", 1)[1].split("```", 2)[1]
    paths, stack = set(), []
    for line in block.splitlines():
        m = _ENTRY.match(line)
        if not m:
            continue  # a description's continuation line
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2)]
        paths.add("".join(stack).rstrip("/"))
    return paths


def folders() -> set[str]:
    found = set()
    for top in TOP:
        for p in (ROOT / top).rglob("*"):
            rel = p.relative_to(ROOT)
            if "__pycache__" in rel.parts or p.name in ("__init__.py", "__main__.py"):
                continue
            if p.is_dir() or p.suffix == ".py":
                found.add(rel.as_posix())
        found.add(top)
    return found


def test_the_readme_names_every_module_and_only_those():
    named, there = readme_map(), folders()
    assert sorted(named - there) == [], "named in the README's module map, not in the tree"
    assert sorted(there - named) == [], "in the tree, missing from the README's module map"


def test_no_module_outgrows_400_lines_without_saying_why():
    """A module over ~400 lines says in its docstring why it is one piece ("One piece: ...")."""
    big = []
    for top in TOP:
        for p in (ROOT / top).rglob("*.py"):
            text = p.read_text()
            if text.count("\n") > 420 and "One piece:" not in text.split('"""')[1 if text.startswith('"""') else 0]:
                big.append(f"{p.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert big == []
