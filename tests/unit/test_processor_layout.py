"""The device layout's pure parts: the forward-map bucket hash (services/common/keys.py) and the
packed device state (services/domain/device_state.py). No network."""

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.keys import DEVICE_INDEX_BUCKETS, bucket_hash, device_index_bucket
from services.domain.device_state import (EventStat, format_device_state, format_event_value, parse_device_state,
                                          parse_event_value)

# SHA-1 test vectors: the bucket is part of the stored layout (changing it needs `pbseg rebuild`).
VECTORS = json.loads((Path(__file__).parent / "device_bucket_vectors.json").read_text())


def test_bucket_hash_matches_the_published_sha1_and_the_shared_vectors():
    assert bucket_hash(b"abc") == 0xA9993E36  # SHA-1("abc") = a9993e36 4706816a ... (FIPS 180)
    assert [bucket_hash(v["input"].encode()) for v in VECTORS] == [v["sha1_32"] for v in VECTORS]
    assert [device_index_bucket(v["input"]) for v in VECTORS] == [v["bucket"] for v in VECTORS]
    assert all(0 <= v["bucket"] < DEVICE_INDEX_BUCKETS for v in VECTORS)


def test_install_ids_spread_evenly_over_the_buckets():
    """No bucket is far above the mean (what keeps them listpack-sized at 10M devices per account:
    ~305 per bucket on average over 8 partitions, docs/architecture.md); sequential and random ids alike."""
    rng = random.Random(7)
    for ids in ([f"{rng.getrandbits(64):016x}" for _ in range(200_000)], [f"device-{i}" for i in range(200_000)]):
        sizes = [0] * DEVICE_INDEX_BUCKETS
        for install_id in ids:
            sizes[device_index_bucket(install_id)] += 1
        mean = len(ids) / DEVICE_INDEX_BUCKETS
        assert max(sizes) <= mean + 6 * mean ** 0.5 and min(sizes) >= mean - 6 * mean ** 0.5, (min(sizes), max(sizes))


def test_packed_state_round_trips_in_order():
    state = "install=1700000000000;reg=1700000000001:1700000000009:3;dep=5;dep_2=6"
    parsed = parse_device_state(state)
    assert list(parsed) == ["install", "reg", "dep", "dep_2"]
    assert parsed["reg"] == (1_700_000_000_001, 1_700_000_000_009, 3)
    assert format_device_state(parsed) == state
    assert parse_device_state(b"install=1") == {"install": EventStat(1, 1, 1)}
    assert parse_device_state("") == {}


@pytest.mark.parametrize("bad", ["install", "install=", "=5", "a=1;;b=2", "a=1;b", "a=1:2", "a=x"])
def test_malformed_packed_state_is_refused(bad):
    with pytest.raises(ValueError):
        parse_device_state(bad)


@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True),
                       st.tuples(st.integers(0, 2**53), st.integers(0, 2**53), st.integers(1, 10**6)), max_size=20))
def test_any_state_round_trips(events):
    stats = {code: EventStat(min(a, b), max(a, b), n) for code, (a, b, n) in events.items()}
    assert parse_device_state(format_device_state(stats)) == stats
    for stat in stats.values():
        assert parse_event_value(format_event_value(stat)) == stat
