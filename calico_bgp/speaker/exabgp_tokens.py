"""ExaBGP's configuration tokeniser, each distinct line cut once (a patch exabgp_run applies).

Every reload makes ExaBGP parse the whole file again, and about half of that parse is its tokeniser
(`exabgp/configuration/core/format.py: tokens`) walking each line a character at a time. A node
joining a mesh of 20 makes each of the 20 others reload 21 neighbours at the same moment, on the
same cores as the joiner's own start; a reflector reloads all its clients. The lines of one
neighbour are the lines of the next but for its address and name, and a reload repeats the file
it replaces, so nearly every line has been cut before.

ExaBGP's `tokens` cuts each line on its own: nothing carries from one line to the next (a line's
words and quotes must close on that line, or it raises). So what it yields for a line is a function
of the line's text and its number alone: the number is put back on every hit, and a line it
refuses is never cached: it is walked by ExaBGP's own code again, after as many empty lines as
came before it, so it yields and raises as it did, with the line's own number. The cache is
bounded (`LIMIT` lines, cleared when full).

Must import under Python 3.9 (PyPy's ExaBGP runs it).
"""
from __future__ import annotations

from itertools import chain, repeat
from typing import Callable, Dict, Iterable, Iterator, List, Tuple

LIMIT = 20_000  # distinct lines kept (~100 bytes each with their tokens: a 2 MB bound)

# one line's statements: each a list of (column, word); ExaBGP's tuples are (line, column, word)
Statements = Tuple[Tuple[Tuple[int, str], ...], ...]
Token = Tuple[int, int, str]


class LineTokens:
    """`tokens(stream)` as ExaBGP's `tokens` gives it, from a cache of what `original` cut each line into."""

    def __init__(self, original: Callable[[Iterable[str]], Iterator[List[Token]]], limit: int = LIMIT) -> None:
        self.original = original
        self.limit = limit
        self.cache: Dict[str, Statements] = {}
        self.hits = 0
        self.misses = 0

    def cut(self, line: str) -> Statements:
        """What ExaBGP yields for `line` (its line number left out); ValueError as ExaBGP raises it
        for a line alone (its message says line 1)."""
        found = self.cache.get(line)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        statements = tuple(tuple((col, word) for _, col, word in parsed) for parsed in self.original([line]))
        if len(self.cache) >= self.limit:
            self.cache.clear()
        self.cache[line] = statements
        return statements

    def tokens(self, stream: Iterable[str]) -> Iterator[List[Token]]:
        number = 0
        for line in stream:
            number += 1
            try:
                statements = self.cut(line)
            except ValueError:  # ExaBGP's own walk, for what it yields before it raises
                yield from self._refused(line, number)
                raise AssertionError("unreachable: the line was refused") from None
            for statement in statements:
                yield [(number, col, word) for col, word in statement]

    def _refused(self, line: str, number: int) -> Iterator[List[Token]]:
        """What ExaBGP yields for a line it refuses, up to its ValueError: its own walk of `number - 1`
        empty lines (which yield nothing) and then the line, so that it numbers the line itself, in
        the tokens it yields and in both forms of its message (the second lists tokens with their
        line numbers)."""
        yield from self.original(chain(repeat("", number - 1), (line,)))


def patch() -> LineTokens:
    """ExaBGP's tokeniser reads its configuration (a file or a text) through a LineTokens (returned,
    for its counters). An API command (`Tokeniser.set_api`: every route the agent announces) is cut
    by ExaBGP's own `tokens` as before: those lines are seldom the same twice, and caching them
    would only cost the send path."""
    from exabgp.configuration.core import format as exabgp_format
    from exabgp.configuration.core import tokeniser

    original = exabgp_format.tokens
    cached = LineTokens(original)
    tokeniser.tokens = cached.tokens  # the name Tokeniser._tokenise calls

    def _tokenise_plain(self: tokeniser.Tokeniser, iterator: Iterable[str]) -> Iterator[List[str]]:
        for parsed in original(iterator):  # Tokeniser._tokenise, with ExaBGP's tokens
            words = [word for _, _, word in parsed]
            self.line = "".join(words)
            yield words

    def set_api(self: tokeniser.Tokeniser, line: str) -> bool:
        return self._set(_tokenise_plain(self, iter([line])))

    tokeniser.Tokeniser.set_api = set_api  # type: ignore[method-assign]
    return cached
