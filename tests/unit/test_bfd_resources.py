"""BFDConfiguration and BGPPeer failureDetectionMode as resources: Calico Enterprise's defaults and
ranges (docs.tigera.io/calico-enterprise/latest/reference/resources/bfdconfig), the durations and
interface patterns they take, the errors that name the field, and how they are keyed and stored."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calico_bgp.datastore import Keys
from calico_bgp.resources import model
from calico_bgp.resources.bfdconfig import (
    MAX_INTERVAL_MS,
    BFDConfiguration,
    BFDConfigurationSpec,
    BFDInterface,
    interface_pattern,
)
from calico_bgp.resources.bgppeer import BGPPeerSpec
from calico_bgp.resources.documents import load_documents
from calico_bgp.resources.durations import format_ms, go_duration_ns, milliseconds
from calico_bgp.resources.fields import InvalidField, InvalidResource
from calico_bgp.resources.kinds import resolve_kind
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.store import ResourceStore
from calico_bgp.resources.view import ClusterView
from calico_bgp.datastore.types import KeyValue

interval = milliseconds(1, MAX_INTERVAL_MS)


# --- durations ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ms", [
    ("10ms", 10), ("100ms", 100), ("1m", 60_000), ("1m30s", 90_000), ("1.5s", 1500), ("1h", 3_600_000),
    ("1000us", 1), ("1000\u00b5s", 1), ("2000000ns", 2), (".5s", 500), ("+300ms", 300), (" 300ms ", 300),
    ("1h11m34s967ms", MAX_INTERVAL_MS),
])
def test_go_durations_in_whole_milliseconds(text, ms):
    assert interval(text) == ms


@pytest.mark.parametrize("value, reason", [
    ("0", "must be greater than 0"), ("0s", "must be greater than 0"), ("-1ms", "must be greater than 0"),
    ("1.5ms", "whole number of milliseconds"), ("10us", "whole number of milliseconds"),
    ("soon", "expected a duration like '300ms'"), ("", "expected a duration"), ("1 s", "expected a duration"),
    ("5", "expected a duration"), ("1.5.3s", "expected a duration"), ("ms", "expected a duration"),
    (300, "a bare number has no unit"), (True, "a bare number has no unit"), (None, "a bare number"),
    ("1h11m34s968ms", "out of range 1ms..1h11m34s967ms"),
])
def test_durations_refused_with_the_reason(value, reason):
    with pytest.raises(ValueError, match=reason.replace(".", r"\.").replace("(", r"\(")):
        interval(value)


def test_go_duration_ns_is_exact():
    assert go_duration_ns("1.000000001s") == 1_000_000_001
    assert go_duration_ns("0.5ns") * 2 == 1 and go_duration_ns("-2m") == -120 * 10**9


@given(st.integers(0, 10**10))
def test_property_format_ms_parses_back(ms):
    text = format_ms(ms)
    assert go_duration_ns(text) == ms * 10**6
    if 1 <= ms <= MAX_INTERVAL_MS:
        assert interval(text) == ms


def test_format_ms_reads_as_written():
    assert [format_ms(m) for m in (0, 10, 1000, 60_000, 90_500, 3_600_000)] == \
        ["0s", "10ms", "1s", "1m", "1m30s500ms", "1h"]


# --- interface patterns ---------------------------------------------------------------------------

@pytest.mark.parametrize("ok", ["*", "eth0", "eth*", "ens1f0np0", "e*", "bond0.100", "x" * 15, "x" * 15 + "*",
                                "veth-a_b@c"])
def test_patterns_accepted(ok):
    assert interface_pattern(ok) == ok


@pytest.mark.parametrize("bad", ["**", "e*0", "*eth", "eth**", "x" * 16, "a/b", "eth0:1", "eth 0", ".", "..",
                                 "*.", "", None, 3, "eth?"])
def test_patterns_refused_saying_what_is_accepted(bad):
    if bad == "eth?":  # '?' is an ordinary (if unusual) character in a Linux name: an exact name, not a glob
        assert interface_pattern(bad) == bad
        return
    with pytest.raises(ValueError, match=r"expected an interface name .* a name prefix ending in '\*'"):
        interface_pattern(bad)


def test_match_and_specificity():
    exact, prefix, longer, star = BFDInterface("eth0"), BFDInterface("eth*"), BFDInterface("eth0*"), BFDInterface()
    assert star.match_pattern == "*" and BFDInterface("").match_pattern == "*"  # Enterprise's default
    assert exact.matches("eth0") and not exact.matches("eth01")
    assert prefix.matches("eth0") and prefix.matches("eth") and not prefix.matches("ens1")
    assert star.matches("anything")
    assert sorted([star, prefix, exact, longer], key=lambda e: e.specificity) == [star, prefix, longer, exact]


_pattern = st.one_of(st.just("*"), st.from_regex(r"[a-z]{1,5}\*?", fullmatch=True))


@given(st.lists(_pattern, unique=True, max_size=6), st.from_regex(r"[a-z]{1,6}", fullmatch=True))
def test_property_entry_for_is_the_unique_most_specific_match(patterns, name):
    spec = BFDConfigurationSpec(interfaces=tuple(BFDInterface(p) for p in patterns))
    got = spec.entry_for(name)
    matching = [e for e in spec.interfaces if e.matches(name)]
    if not matching:
        assert got is None
        return
    assert got in matching
    assert all(e.specificity < got.specificity for e in matching if e is not got)  # never a tie
    reversed_spec = BFDConfigurationSpec(interfaces=tuple(reversed(spec.interfaces)))
    assert reversed_spec.entry_for(name) == got


# --- the resource ---------------------------------------------------------------------------------

def test_defaults_are_calico_enterprises_and_left_out_values_are_not_stored():
    entry = BFDInterface("eth0")
    assert (entry.min_rx_ms, entry.min_tx_ms, entry.idle_tx_ms, entry.detect_multiplier) == (10, 100, 60_000, 5)
    cfg = BFDConfiguration(Metadata("c"), BFDConfigurationSpec(interfaces=(entry,)))
    assert model.to_dict(cfg) == {"metadata": {"name": "c"}, "spec": {"interfaces": [{"matchPattern": "eth0"}]}}
    assert cfg.spec.selects({"any": "labels"})  # no selector: every node


def test_values_are_stored_as_duration_text_and_decode_back():
    (cfg,) = load_documents("apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {name: c}\n"
                            "spec:\n  nodeSelector: rack == 'r1'\n  interfaces:\n"
                            "  - {matchPattern: 'eth*', minimumRecvInterval: 1.5s, idleSendInterval: 90s, "
                            "multiplier: 255}\n")
    raw = model.encode(cfg)
    assert b'"minimumRecvInterval":"1s500ms"' in raw and b'"idleSendInterval":"1m30s"' in raw
    assert model.decode(BFDConfiguration, raw, where="k") == cfg
    assert cfg.spec.selects({"rack": "r1"}) and not cfg.spec.selects({"rack": "r2"})


def test_an_empty_configuration_is_accepted_as_enterprise_does():
    (cfg,) = load_documents("apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {name: no-bfd}\n")
    assert cfg.spec == BFDConfigurationSpec()


@pytest.mark.parametrize("interfaces, message", [
    ("[{multiplier: 0}]", "spec.interfaces[0].multiplier: out of range 1..255 (got 0)"),
    ("[{multiplier: 2.5}]", "spec.interfaces[0].multiplier: expected an integer (got 2.5)"),
    ("[{minimumRecvInterval: 0ms}]", "spec.interfaces[0].minimumRecvInterval: must be greater than 0 (got '0ms')"),
    ("[{matchPattern: 'a*b'}]", "spec.interfaces[0].matchPattern: expected an interface name"),
    ("[{matchPattern: eth0}, {matchPattern: 'eth*'}, {matchPattern: eth0}]",
     "spec.interfaces[2].matchPattern: the same pattern as interfaces[0]; each pattern once (got 'eth0')"),
    ("[{}, {matchPattern: '*'}]", "spec.interfaces[1].matchPattern: the same pattern as interfaces[0]"),
    ("eth0", "spec.interfaces"),
])
def test_bad_configurations_name_the_field(interfaces, message):
    text = f"apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {{name: c}}\nspec: {{interfaces: {interfaces}}}\n"
    with pytest.raises(InvalidResource) as err:
        load_documents(text)
    assert message in str(err.value)
    assert "document 1 (BFDConfiguration 'c')" in str(err.value)


def test_failure_detection_mode_on_a_bgppeer():
    spec = dict(peer_ip="198.18.1.1", as_number=65101)
    assert BGPPeerSpec(**spec).failure_detection_mode == "None"
    assert BGPPeerSpec(**spec, failure_detection_mode="").failure_detection_mode == "None"
    assert BGPPeerSpec(**spec, failure_detection_mode="BFDIfDirectlyConnected").failure_detection_mode == \
        "BFDIfDirectlyConnected"
    with pytest.raises(InvalidField, match="failureDetectionMode: expected one of None, BFDIfDirectlyConnected"):
        BGPPeerSpec(**spec, failure_detection_mode="BFD")


# --- kinds, keys, the view ------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["bfdconfiguration", "bfdconfigurations", "bfdconfig", "bfdconfigs", "bfdc",
                                   "BFDConfiguration", "BFDConfig"])
def test_cli_aliases(alias):
    assert resolve_kind(alias) is BFDConfiguration


def test_keys_and_the_cluster_view_carry_bfd_configurations():
    keys = Keys("/t/calico-bgp/v1")
    store = ResourceStore(None, keys)
    assert store.key("bfdconfig", "rack") == "/t/calico-bgp/v1/bfdconfigs/rack"
    assert store.kind_for_key("/t/calico-bgp/v1/bfdconfigs/rack") == (BFDConfiguration, "rack")
    view = ClusterView(None, keys)
    cfg = BFDConfiguration(Metadata("rack"), BFDConfigurationSpec(interfaces=(BFDInterface("eth0", "20ms"),)))
    view._load([KeyValue(store.key(BFDConfiguration, "rack"), model.encode(cfg), 1, 1, 1),
                KeyValue(store.key(BFDConfiguration, "bad"), b'{"metadata":{"name":"bad"},"spec":{"interfaces":'
                         b'[{"multiplier":0}]}}', 1, 1, 1)], 1)
    snap = view.snapshot()
    assert snap.bfd_configs == {"rack": cfg}
    assert "multiplier" in snap.corrupt[store.key(BFDConfiguration, "bad")]


def test_enterprise_dual_tor_peer_fields_we_lack_are_named_not_supported():
    # the BGPPeer of Calico Enterprise's dual-ToR guide: failureDetectionMode is taken, the rest named
    text = ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: ra1}\nspec:\n"
            "  nodeSelector: rack == 'ra'\n  peerIP: 198.18.11.1\n  asNumber: 65001\n  sourceAddress: None\n"
            "  failureDetectionMode: BFDIfDirectlyConnected\n  restartMode: LongLivedGracefulRestart\n"
            "  birdGatewayMode: DirectIfDirectlyConnected\n")
    with pytest.raises(InvalidResource) as err:
        load_documents(text)
    assert "spec.birdGatewayMode: field not supported by calico-bgp" in str(err.value)
    assert "spec.restartMode: field not supported by calico-bgp" in str(err.value)
    assert "failureDetectionMode" not in str(err.value)
