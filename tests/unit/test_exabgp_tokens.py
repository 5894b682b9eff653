"""ExaBGP's configuration tokeniser through the line cache: the same tokens, the same errors, and a
reload that parses the same neighbours while cutting each distinct line once."""
from __future__ import annotations

import subprocess
import sys

import pytest
from exabgp.configuration.core.format import tokens as exabgp_tokens

from calico_bgp.speaker.config import render_config
from calico_bgp.speaker.exabgp_tokens import LineTokens
from calico_bgp.speaker.neighbor import Neighbor


def mesh_config(peers: int) -> str:
    neighbors = [Neighbor(peer_address=f"198.18.0.{i}", peer_as=64512, local_as=64512, local_address="198.18.0.1",
                          router_id="198.18.0.1", description=f"n{i}", passive=i % 2 == 0)
                 for i in range(2, peers + 2)]
    return render_config(neighbors, ["/bin/true", "--socket", "/run/api.sock"])


ODD_LINES = [
    "", "   ", "# a comment", "neighbor 198.18.0.2 {", "\tdescription \"a quoted; {name}\";",
    "family { ipv4 unicast; ipv6 unicast; }", "processes [ a, b ];", "x 'single quoted' y;",
    "run /bin/echo a\\tb;", "unicode \\u0041;", "attribute [ 0x20 0xc0 0x0000 ] ; # trailing",
    "}", "local-as 65000; peer-as 65001;",
]


@pytest.mark.parametrize("lines", [mesh_config(21).split("\n"), ODD_LINES], ids=["mesh21", "odd"])
def test_the_tokens_are_exabgps_own_read_after_read(lines: list[str]) -> None:
    cached = LineTokens(exabgp_tokens)
    want = list(exabgp_tokens(lines))
    assert list(cached.tokens(lines)) == want
    misses = cached.misses
    assert list(cached.tokens(lines)) == want  # the second read comes from the cache, line numbers and all
    assert cached.misses == misses and cached.hits >= len([line for line in lines if line.strip()])


@pytest.mark.parametrize("bad", ["unfinished word", "a \"never closed;", "ends in a backslash\\"])
def test_a_refused_line_is_refused_as_exabgp_refuses_it_and_never_kept(bad: str) -> None:
    lines = ["first 1; second 2;", bad, "never reached;"]
    cached = LineTokens(exabgp_tokens)
    for _ in range(2):
        got, err = [], None
        try:
            for t in cached.tokens(lines):
                got.append(t)
        except ValueError as exc:
            err = str(exc)
        want, want_err = [], None
        try:
            for t in exabgp_tokens(lines):
                want.append(t)
        except ValueError as exc:
            want_err = str(exc)
        assert want_err is not None and err == want_err  # its message, its line number (2)
        assert got == want
        assert bad not in cached.cache


def test_the_cache_is_bounded() -> None:
    cached = LineTokens(exabgp_tokens, limit=3)
    lines = [f"word{i};" for i in range(10)]
    assert list(cached.tokens(lines)) == list(exabgp_tokens(lines))
    assert len(cached.cache) <= 3


# a fresh interpreter: the patch changes ExaBGP's module for good. Prints whether the neighbours parsed
# through the cache equal ExaBGP's own, how many lines the second reload had to cut, and whether an API
# command was cut as before and kept out of the cache.
RELOAD = """
import sys
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.configuration.configuration import Configuration
from calico_bgp.speaker import exabgp_tokens
plain = Configuration([sys.argv[1]])
assert plain.reload() is True
cached = exabgp_tokens.patch()
patched = Configuration([sys.argv[1]])
assert patched.reload() is True
first = cached.misses
assert patched.reload() is True
second = cached.misses - first
api = "route 198.19.0.0/26 next-hop 198.18.0.1 ;"
patched.tokeniser.set_api(api)
patched.tokeniser()
print(patched.neighbors == plain.neighbors, sorted(patched.neighbors) == sorted(plain.neighbors), first, second,
      patched.tokeniser.line == api.split(), api not in cached.cache)
"""


def test_a_reload_through_the_cache_parses_the_same_neighbours(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "exabgp.conf"
    conf.write_text(mesh_config(21))
    out = subprocess.run([sys.executable, "-c", RELOAD, str(conf)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    same, same_keys, first, second, api_words, api_not_kept = out.stdout.split()
    assert (same, same_keys) == ("True", "True")
    assert 0 < int(first) < 100  # 21 neighbours, a few dozen distinct lines
    assert second == "0"  # a reload of the same file cuts nothing again
    assert (api_words, api_not_kept) == ("True", "True")  # the send path's commands: ExaBGP's own tokens, not kept


@pytest.mark.parametrize("lines", [["a b;", 'c "d"'], ["a b;", "x;", "", 'ok; c "d"']], ids=["second", "fourth"])
def test_a_refused_line_whose_message_lists_its_tokens_names_its_own_line_in_each(lines: list[str]) -> None:
    """ExaBGP's second refusal (words left without a closing `;`) puts the tokens, each with its line
    number, in the message: every number in it is the line's, as ExaBGP writes them."""
    def refusal(tokens) -> tuple[list, str]:
        got = []
        try:
            for t in tokens(lines):
                got.append(t)
        except ValueError as exc:
            return got, str(exc)
        raise AssertionError("not refused")

    want = refusal(exabgp_tokens)
    assert f"({len(lines)}, " in want[1]  # ExaBGP's own numbering, in the tokens it lists
    assert refusal(LineTokens(exabgp_tokens).tokens) == want
