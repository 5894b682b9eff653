"""The benchmark commands the README and the benches' docstrings show run as written: each is
`python -m bench.NAME` from the repository's root (no path to a file, no sys.path tricks), the module
starts, and its argument parser takes the arguments shown."""
from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"python -m (bench\.\w+)([^\n#`]*)")
FILE_SPELLING = re.compile(r"python\S*\s+bench/\w+\.py")


def texts() -> dict[str, str]:
    """The README, and each bench module's docstring, by where they come from."""
    out = {"README.md": (ROOT / "README.md").read_text()}
    for p in sorted((ROOT / "bench").glob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text()))
        if doc:
            out[f"bench/{p.name}"] = doc
    return out


def commands() -> list[tuple[str, str, list[str]]]:
    """(where, module, arguments) of every `python -m bench.X ...` shown; `[--flag V]` counts as given."""
    out = []
    for where, text in texts().items():
        for m in COMMAND.finditer(text):
            args = m.group(2).replace("[", " ").replace("]", " ")
            out.append((where, m.group(1), shlex.split(args)))
    return out


def test_every_bench_is_shown_as_a_module_run():
    shown = {module for _, module, _ in commands()}
    benches = {f"bench.{p.stem}" for p in (ROOT / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text()}
    assert benches - shown == set(), "benches with no `python -m bench.X` example"
    for where, text in texts().items():
        assert not FILE_SPELLING.search(text), f"{where} shows a bench run by its file path"


@pytest.mark.parametrize("where,module,args", commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_a_shown_command_parses(where, module, args):
    res = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, f"{where}: python -m {module} --help: {res.stderr}"
    for flag in (a for a in args if a.startswith("--")):
        assert flag.split("=")[0] in res.stdout, f"{where}: {module} has no {flag}"
    parser = getattr(importlib.import_module(module), "parser", None)
    if parser is not None and not any("|" in a for a in args):
        parser().parse_args(args)  # exits (failing the test) on an argument it does not take


def test_no_bench_imports_from_tests_or_edits_sys_path():
    for p in sorted((ROOT / "bench").glob("*.py")):
        text = p.read_text()
        assert not re.search(r"^\s*(from|import) tests\b", text, re.M), f"{p.name} imports from tests/"
        assert "sys.path" not in text, f"{p.name} edits sys.path"
