import attrs
import pytest

from calico_bgp.resources import codec


@attrs.frozen
class Sample:
    cidr: str
    block_size: int = 26
    peer_ip: str = ""


def test_round_trip_uses_camel_case_and_omits_defaults():
    raw = codec.encode(Sample("198.18.0.0/24", 27))
    assert raw == b'{"blockSize":27,"cidr":"198.18.0.0/24"}'
    assert codec.decode(Sample, raw) == Sample("198.18.0.0/24", 27)
    assert codec.encode(Sample("x", peer_ip="198.18.0.1")) == b'{"cidr":"x","peerIP":"198.18.0.1"}'


@pytest.mark.parametrize("raw, fragment", [
    (b'{"cidr":"a","blockSz":26}', "blockSz"),
    (b'{"cidr":"a","blockSize":"x"}', "block_size"),
    (b'{}', "cidr"),
    (b'{bad', "not valid JSON"),
])
def test_bad_values_name_the_key_and_field(raw, fragment):
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(Sample, raw, where="/k/block")
    assert str(err.value).startswith("/k/block: ")
    assert fragment in str(err.value)


@attrs.frozen
class Flagged:
    disabled: bool = False


def test_bools_are_strict():
    assert codec.decode(Flagged, b'{"disabled":true}') == Flagged(True)
    with pytest.raises(codec.DecodeError, match="expected bool @ disabled"):
        codec.decode(Flagged, b'{"disabled":"false"}')
