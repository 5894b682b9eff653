"""attrs' generated methods kept as bytecode between `node run` starts (calico_bgp/cli/attrs_cache.py):
the cached code behaves as freshly compiled code, under another hash seed too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

from calico_bgp.cli.attrs_cache import MethodCache, cache_path, split_type_hash, with_constant

CLASSES = '''
import attrs

@attrs.frozen
class Point:
    x: int
    label: str = "a"

@attrs.define
class Box:
    items: list = attrs.field(factory=list)
'''

RUN = '''
import json, sys
from pathlib import Path
from calico_bgp.cli import attrs_cache
cache = attrs_cache.install(Path(sys.argv[1])) if sys.argv[1] != "-" else None
sys.path.insert(0, sys.argv[2])
import shapes
p, q = shapes.Point(1, "b"), shapes.Point(1, "b")
expected = hash((hash(f"<attrs generated hash {shapes.Point.__module__}.{shapes.Point.__qualname__}>"), 1, "b"))
print(json.dumps({"compiled": cache.compiled if cache else None, "saved": cache.save() if cache else None,
                  "hash": hash(p), "expected": expected, "eq": p == q, "repr": repr(p),
                  "box": repr(shapes.Box()), "frozen": not hasattr(p, "__dict__")}))
'''


def run(cache: str, modules: Path, seed: int) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    out = subprocess.run([sys.executable, "-c", RUN, cache, str(modules)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_cached_methods_behave_as_compiled_ones_under_another_hash_seed(tmp_path: Path):
    (tmp_path / "shapes.py").write_text(CLASSES)
    path = tmp_path / "cache.marshal"
    first = run(str(path), tmp_path, seed=1)
    assert first["compiled"] > 0 and first["saved"] and path.exists()
    cached, plain = run(str(path), tmp_path, seed=2), run("-", tmp_path, seed=2)
    assert cached["compiled"] == 0 and cached["saved"] is False  # every script from the cache, nothing to write
    assert cached["hash"] == cached["expected"] == plain["hash"]  # this process's type hash, not the first one's
    for k in ("eq", "repr", "box", "frozen"):
        assert cached[k] == plain[k] == first[k]
    assert cached["repr"] == "Point(x=1, label='b')" and cached["eq"] and cached["frozen"]


def test_an_unreadable_cache_is_compiled_around_and_written_again(tmp_path: Path):
    (tmp_path / "shapes.py").write_text(CLASSES)
    path = tmp_path / "cache.marshal"
    path.write_bytes(b"not marshal")
    again = run(str(path), tmp_path, seed=3)
    assert again["compiled"] > 0 and again["saved"] and again["hash"] == again["expected"]
    assert run(str(path), tmp_path, seed=4)["compiled"] == 0


def test_the_type_hash_is_left_out_of_the_key_and_put_back_in_the_code():
    script = "def __hash__(self):\n    return hash((\n        -1234567,\n        self.x,\n    ))"
    text, number = split_type_hash(script)
    assert number == -1234567 and "-1234567" not in text and "TYPE_HASH" in text
    assert split_type_hash("def __eq__(self, other):\n    return True") == ("def __eq__(self, other):\n    return True", None)
    code = compile(script, "<s>", "exec")
    swapped = with_constant(code, -1234567, 42)
    ns: dict = {}
    exec(swapped, ns)
    assert ns["__hash__"](types.SimpleNamespace(x=5)) == hash((42, 5))


def test_finish_writes_what_was_new_and_gives_attrs_its_compile_back(tmp_path: Path):
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from attr import _make\n"
            "from calico_bgp.cli import attrs_cache\n"
            "attrs_cache.install(Path(sys.argv[1]))\n"
            "import attrs\n"
            "C = attrs.make_class('C', ['a'])\n"
            "print(attrs_cache.finish(), 'compile' in vars(_make), attrs_cache.finish(), C(1) == C(1))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.marshal")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "False", "False", "True"] and (tmp_path / "c.marshal").exists()


def test_other_compile_calls_pass_through(tmp_path: Path):
    cache = MethodCache(tmp_path / "none.marshal")
    assert cache.compile("1 + 1", "<e>", "eval") is not None and cache.compiled == 0
    assert cache.save() is False and not (tmp_path / "none.marshal").exists()


CODEC = '''
import json, sys
from pathlib import Path
from calico_bgp.cli import attrs_cache
cache = attrs_cache.install(Path(sys.argv[1])) if sys.argv[1] != "-" else None
from calico_bgp.resources import codec
from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.codec import DecodeError
stored = {"metadata": {"name": "p1"}, "spec": {"peerIP": "198.18.0.9", "asNumber": 64512, "keepOriginalNextHop": True}}
peer = codec.from_dict(BGPPeer, stored, where="peer")
try:
    codec.from_dict(BGPPeer, {"metadata": {"name": "p2"}, "spec": {"peerIP": "198.18.0.9", "asNumbr": 1}}, where="bad")
    error = None
except DecodeError as exc:
    error = str(exc)
print(json.dumps({"compiled": cache.compiled if cache else None, "saved": cache.save() if cache else None,
                  "encoded": codec.encode(peer).decode(), "error": error}))
'''


def test_the_codecs_hooks_from_the_cache_decode_encode_and_refuse_as_compiled_ones(tmp_path: Path):
    """cattrs' structure and unstructure functions go through the cache too (`node run` keeps it until
    its first sync): the same values, the same encoded JSON, the same error naming the bad key."""
    path = tmp_path / "cache.marshal"

    def run_codec(cache: str) -> dict:
        out = subprocess.run([sys.executable, "-c", CODEC, cache], capture_output=True, text=True, check=True).stdout
        return json.loads(out.splitlines()[-1])

    first = run_codec(str(path))
    assert first["compiled"] > 0 and first["saved"]
    cached, plain = run_codec(str(path)), run_codec("-")
    assert cached["compiled"] == 0  # the codec's hooks (and attrs' methods) all came from the cache
    assert cached["encoded"] == plain["encoded"] == first["encoded"] and '"peerIP":"198.18.0.9"' in plain["encoded"]
    assert cached["error"] == plain["error"] and "asNumbr" in plain["error"]


def test_a_script_compiled_twice_in_one_process_is_compiled_once_and_cached(tmp_path: Path):
    """cattrs makes some hooks twice (the same script, the same file name): the second takes the first's
    code, so a start whose every script is in the cache compiles nothing and writes nothing."""
    script = "def structure_X(o):\n    return o + 1\n"
    cache = MethodCache(tmp_path / "c.marshal")
    first, second = cache.compile(script, "<cattrs generated structure X>", "exec"), \
        cache.compile(script, "<cattrs generated structure X>", "exec")
    assert first is second and cache.compiled == 1 and cache.save()
    again = MethodCache(tmp_path / "c.marshal")
    for _ in range(2):
        ns: dict = {}
        exec(again.compile(script, "<cattrs generated structure X>", "exec"), ns)
        assert ns["structure_X"](1) == 2
    assert again.compiled == 0 and again.save() is False


def _written(path: Path) -> MethodCache:
    cache = MethodCache(path)
    cache.compile("def f():\n    return 1\n", "<attrs generated f>", "exec")
    assert cache.save() and path.exists()
    return cache


def test_the_cache_file_is_per_bytecode_version():
    """Python's bytecode magic number is in the name: two builds of one Python version whose
    bytecode differs never read each other's code objects."""
    import importlib.util

    assert importlib.util.MAGIC_NUMBER.hex() in cache_path(Path("/nonexistent")).name


def test_the_temporary_file_is_created_never_followed(tmp_path: Path):
    """The temporary name is predictable: a link planted there is not written through (it would
    let another user overwrite any file as root); the cache is not written this time."""
    path = tmp_path / "c.marshal"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    cache = MethodCache(path)
    cache.compile("x = 1\n", "<attrs generated x>", "exec")
    (tmp_path / f"{path.name}.{os.getpid()}.tmp").symlink_to(victim)
    assert cache.save() is False
    assert victim.read_bytes() == b"keep" and not path.exists()
    assert (tmp_path / f"{path.name}.{os.getpid()}.tmp").is_symlink()  # another's file: not removed either
    (tmp_path / f"{path.name}.{os.getpid()}.tmp").unlink()
    assert cache.save() and path.stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_a_crashed_writers_temporary_file_at_our_pid_is_replaced(tmp_path: Path):
    """A writer killed between create and rename leaves its temporary file; a later process with the
    same pid found the name taken and never wrote the cache again. Our own regular file there is a
    leftover (no other live process has our pid): removed, and the cache written."""
    path = tmp_path / "c.marshal"
    cache = MethodCache(path)
    cache.compile("x = 1\n", "<attrs generated x>", "exec")
    stale = tmp_path / f"{path.name}.{os.getpid()}.tmp"
    stale.write_bytes(b"half a cache")
    assert cache.save() and not stale.exists()
    again = MethodCache(path)
    again.compile("x = 1\n", "<attrs generated x>", "exec")
    assert again.compiled == 0  # read from the file just written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_cache_file_another_user_could_have_written_is_not_loaded(tmp_path: Path):
    """Code objects are run as they are: a cache file writable by group or others, owned by another
    user, or reached through a link is compiled around, as an unreadable one is."""
    path = tmp_path / "c.marshal"
    _written(path)
    assert MethodCache(path).known
    path.chmod(0o666)
    assert MethodCache(path).known == {}
    path.chmod(0o644)
    link = tmp_path / "link.marshal"
    link.symlink_to(path)
    assert MethodCache(link).known == {}
    if os.geteuid() == 0:
        os.chown(path, 65534, -1)
        assert MethodCache(path).known == {}


def test_finish_after_a_failed_write_logs_it_and_gives_attrs_its_compile_back(tmp_path: Path, monkeypatch, caplog):
    """`node run` calls finish() inside the agent's task group: a write that fails in any way is a
    warning (the cache is a speed-only step), never the agent's end."""
    from attr import _make

    from calico_bgp.cli import attrs_cache

    def broken(self: MethodCache) -> bool:
        raise RuntimeError("unmarshallable")

    attrs_cache.install(tmp_path / "c.marshal")
    monkeypatch.setattr(MethodCache, "save", broken)
    with caplog.at_level("WARNING"):
        assert attrs_cache.finish_logged() is False
    assert "compile" not in vars(_make)
    assert "attrs_cache_not_written" in caplog.text and "unmarshallable" in caplog.text
