import pytest
from hypothesis import given
from hypothesis import strategies as st

from calico_bgp.resources import selector as sel
from calico_bgp.resources.selector import SelectorError, parse

LABELS = {"rack": "r1", "role": "route-reflector", "zone": "a", "tier": "db-primary"}


@pytest.mark.parametrize("text, expected", [
    ("", True),
    ("   ", True),
    ("all()", True),
    ("has(rack)", True),
    ("!has(rack)", False),
    ("has(missing)", False),
    ("rack == 'r1'", True),
    ('rack == "r2"', False),
    ("rack != 'r2'", True),
    ("missing != 'x'", True),            # Calico: != matches when the label is absent
    ("zone in {'a', 'b'}", True),
    ("zone in {'b'}", False),
    ("missing in {'a'}", False),
    ("zone not in {'b','c'}", True),
    ("missing not in {'a'}", True),
    ("zone in {}", False),
    ("rack == 'r1' && zone == 'b'", False),
    ("rack == 'r1' || zone == 'b'", True),
    ("!(rack == 'r1' && zone == 'b')", True),
    ("!!has(rack)", True),
    ("has(role) && (zone == 'b' || rack == 'r1')", True),
    ("has(role) && zone == 'b' || rack == 'r1'", True),   # && binds tighter than ||
    ("tier contains 'prim'", True),
    ("tier starts with 'db'", True),
    ("tier ends with 'db'", False),
    ("kubernetes.io/hostname == 'node-1'", False),
])
def test_matches(text, expected):
    assert parse(text).matches(LABELS) is expected


@pytest.mark.parametrize("text, canonical", [
    ("", "all()"),
    ("  has( rack )  ", "has(rack)"),
    ("rack=='r1'", 'rack == "r1"'),
    ("a == 'x\"y'", "a == 'x\"y'"),
    ("z in {'b','a','b'}", 'z in {"a", "b"}'),
    ("(a == 'x' && b == 'y') && c == 'z'", 'a == "x" && b == "y" && c == "z"'),
    ("(a == 'x' || b == 'y') && c == 'z'", '(a == "x" || b == "y") && c == "z"'),
    ("!(has(a) || has(b))", "!(has(a) || has(b))"),
    ("!!has(a)", "has(a)"),
])
def test_canonical_text(text, canonical):
    assert str(parse(text)) == canonical
    assert parse(canonical) == parse(text)


@pytest.mark.parametrize("text, position, expected", [
    ("rack ==", 8, "a quoted string"),
    ("rack == r1", 9, "a quoted string"),
    ("rack = 'r1'", 6, "an operator"),
    ("has(rack", 9, "')'"),
    ("(has(a)", 8, "')'"),
    ("has(a) &&", 10, "an expression"),
    ("has(a) has(b)", 8, "'&&', '||' or end"),
    ("a in {'x' 'y'}", 11, "',' or '}'"),
    ("a in 'x'", 6, "'{'"),
    ("a == 'x", 6, "a closing '"),
    ("a not 'x'", 7, "'in' after 'not'"),
    ("&& has(a)", 1, "a label name"),
])
def test_errors_name_position_and_expectation(text, position, expected):
    with pytest.raises(SelectorError) as err:
        parse(text)
    msg = str(err.value)
    assert repr(text) in msg
    assert f"at position {position}" in msg
    assert expected in msg
    assert err.value.pos == position - 1


def test_parse_is_idempotent_on_values_and_hashable():
    s = parse("has(a)")
    assert parse(s) is s
    assert parse(None) == sel.ALL and parse("").is_all
    assert len({parse("a == 'x'"), parse('a=="x"')}) == 1


# --- property: canonical text round-trips and keeps meaning ------------------------------------

keys = st.sampled_from(["a", "b", "rack", "kubernetes.io/hostname", "x-y_z"])
values = st.text(alphabet="abc xy-'", max_size=4) | st.text(alphabet='abc"', max_size=3)
leaves = st.one_of(
    st.just(sel.All()),
    keys.map(sel.Has),
    st.builds(sel.Eq, keys, values),
    st.builds(sel.Ne, keys, values),
    st.builds(sel.Contains, keys, values),
    st.builds(sel.StartsWith, keys, values),
    st.builds(sel.EndsWith, keys, values),
    st.builds(sel.In, keys, st.lists(values, max_size=3)),
    st.builds(sel.NotIn, keys, st.lists(values, max_size=3)),
)


def _exprs():
    return st.recursive(leaves, lambda inner: st.one_of(
        inner.filter(lambda e: not isinstance(e, sel.Not)).map(sel.Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda ts: sel._join(sel.And, ts)),
        st.lists(inner, min_size=2, max_size=3).map(lambda ts: sel._join(sel.Or, ts)),
    ), max_leaves=8)


label_maps = st.dictionaries(keys, st.text(alphabet="abc xy-'\"", max_size=3), max_size=4)


@given(_exprs(), label_maps)
def test_round_trip_property(expr, labels):
    s = sel.Selector(expr)
    text = str(s)
    again = parse(text)
    assert again == s
    assert str(again) == text
    assert again.matches(labels) == s.matches(labels)


def test_global_is_everything_and_a_double_negation_prints_back_as_itself():
    from calico_bgp.resources.selector import parse
    assert parse("global()").matches({}) and parse("global() && rack == 'a'").matches({"rack": "a"})
    twice = parse("!(!has(a))")
    assert parse(str(twice)) == twice and twice.matches({"a": "1"}) and not twice.matches({})
