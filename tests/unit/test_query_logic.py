"""Pure logic of the query service and the domain rules it uses: codes, filters, cursors, event
views, pagination, the device document."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from services.common.catalog import CustomEvent
from services.domain.codes import deposit_code, deposit_ordinal, is_postable, is_reserved_code
from services.domain.device_state import EventStat, parse_device_state
from services.domain.filters import SegmentFilter, unknown_codes, verdict
from services.query import event_views as views
from services.query.device_state import device_view
from services.query.cursors import FORGED, Cursor, CursorError, decode_cursor, encode_cursor


def test_reserved_codes():
    for code in ("install", "reg", "dep", "dep_2", "dep_10", "DEP", "Reg", "dep_0"):
        assert is_reserved_code(code), code
    for code in ("deposit", "dep_", "dep_x", "registration", "promo", "dep2"):
        assert not is_reserved_code(code), code


def test_deposit_ordinals_are_dep_2_and_up_without_leading_zeros():
    assert [deposit_ordinal(c) for c in ("dep_2", "dep_17", "dep_1", "dep_0", "dep_02", "dep", "x_2")] == \
        [2, 17, None, None, None, None, None]
    assert [deposit_code(n) for n in (1, 2, 17)] == ["dep", "dep_2", "dep_17"]
    assert all(deposit_ordinal(deposit_code(n)) == n for n in range(2, 200))


def test_only_the_system_codes_themselves_may_be_posted():
    assert all(is_postable(c) for c in ("install", "reg", "dep", "promo", "deposit", "dep_x"))
    assert not any(is_postable(c) for c in ("dep_2", "dep_0", "DEP", "Reg", "dep_02"))


def test_unknown_codes_keeps_order_and_names_each_once():
    assert unknown_codes(["reg", "zz", "promo", "zz", "dep_3", "dep_1", "aa"], {"promo"}) == ["zz", "dep_1", "aa"]


KEY = b"k" * 32
FP = "aaaaaaaaaaaa"


@given(st.integers(0, 1023), st.integers(0, 2**53), st.text("0123456789abcdef", min_size=12, max_size=12),
       st.integers(1, 10**18))
def test_cursor_round_trips_opaque_urlsafe_and_short(partition, position, fp, account):
    c = Cursor(partition, position, fp)
    text = encode_cursor(c, KEY, account)
    assert decode_cursor(text, KEY, account, fp, 1024) == c
    assert len(text) <= 200 and set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursor_is_refused_for_another_filter_or_layout():
    c = encode_cursor(Cursor(3, 10, FP), KEY, 7)
    with pytest.raises(CursorError, match="different filter"):
        decode_cursor(c, KEY, 7, "bbbbbbbbbbbb", 8)
    with pytest.raises(CursorError, match="start again without a cursor"):
        decode_cursor(c, KEY, 7, FP, 2)
    for junk in ("", "x", "!!!", "djI6MTox", "éé", c + "!", c[:-1]):
        with pytest.raises(CursorError, match="start again without a cursor"):
            decode_cursor(junk, KEY, 7, FP, 8)


def _payload_cursor(payload: str, key: bytes = KEY, account: int = 7) -> str:
    """A cursor around any payload, with a MAC made by someone who knows `key`."""
    import base64
    import hashlib
    import hmac
    mac = hmac.new(key, f"{account}|{payload}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac + payload.encode()).decode().rstrip("=")


def test_forged_edited_foreign_and_unsigned_cursors_are_refused_alike():
    """An edited byte, a 20-digit position, another account's or another key's cursor and the
    unsigned v1 cursors of earlier versions all get the same refusal."""
    import base64
    good = encode_cursor(Cursor(1, 5, FP), KEY, 7)
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[-14] ^= 1  # a digit of the payload
    edited = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    unsigned_v1 = base64.urlsafe_b64encode(f"v1:0:{10**19}:{FP}".encode()).decode().rstrip("=")
    forged = base64.urlsafe_b64encode(b"\0" * 16 + f"v2:0:{10**19}:{FP}".encode()).decode().rstrip("=")
    for text, account, key in ((edited, 7, KEY), (good, 8, KEY), (good, 7, b"other" * 8), (unsigned_v1, 7, KEY),
                               (forged, 7, KEY)):
        with pytest.raises(CursorError) as err:
            decode_cursor(text, key, account, FP, 8)
        assert str(err.value) == FORGED
    # Even correctly signed, a position beyond 2^53 or a non-canonical number is refused.
    for payload in (f"v2:0:{2**53 + 1}:{FP}", f"v2:0:{10**19}:{FP}", f"v2:0:+5:{FP}", f"v2:0:05:{FP}", f"v1:0:5:{FP}"):
        with pytest.raises(CursorError, match="start again"):
            decode_cursor(_payload_cursor(payload), KEY, 7, FP, 8)
    assert decode_cursor(_payload_cursor(f"v2:0:{2**53}:{FP}"), KEY, 7, FP, 8).position == 2**53


def test_fingerprint_ignores_order_and_duplicates_but_not_meaning():
    a = SegmentFilter(("reg", "dep"), ("x",))
    assert a.fingerprint() == SegmentFilter(("dep", "reg", "dep"), ("x",)).fingerprint()
    assert a.fingerprint() != SegmentFilter(("reg", "dep"), ("x",), "any").fingerprint()
    assert a.fingerprint() != SegmentFilter(("reg",), ("dep", "x")).fingerprint()
    # the spelling cursors already carry: sha256 of the normalized lists as compact JSON
    assert SegmentFilter(("reg",)).fingerprint() == SegmentFilter(("reg", "reg")).fingerprint()


def test_verdict_says_why_a_device_is_not_selected():
    f = SegmentFilter(("reg", "dep"), ("promo",))
    assert verdict(f, {"install", "reg", "dep"}).selected
    assert verdict(f, {"install", "reg", "promo"}).reasons == ("dep did not occur", "promo occurred")
    assert verdict(SegmentFilter(("reg", "dep"), (), "any"), {"install"}).reasons == ("none of reg, dep occurred",)
    assert verdict(SegmentFilter(), {"install"}).selected and not verdict(SegmentFilter(), set()).selected


def test_pagination_math_and_offset_cap():
    p = views.page_of(3, 10, 25)
    assert (p.offset, p.total_pages, p.as_dict()) == (20, 3, {"page": 3, "per_page": 10, "total_pages": 3, "total_count": 25})
    assert views.page_of(101, 100, 0).offset == 10_000
    with pytest.raises(views.PaginationError, match="10000"):
        views.page_of(102, 100, 0)
    assert views.page_of(1, 20, 0).total_pages == 0


def test_overview_order():
    custom = [CustomEvent(105, "b", "b", 0, 0, 0), CustomEvent(101, "a", "a", 1, 0, 0)]
    rows = views.overview_rows(sorted(custom, key=lambda e: e.id), 4)
    assert [r.code for r in rows] == ["install", "reg", "dep", "dep_2", "dep_3", "dep_4", "a", "b"]
    assert [r.status for r in rows][-2:] == [1, 0]
    assert [r.code for r in views.overview_rows([], 1)] == ["install", "reg", "dep"]


def test_postback_url_with_and_without_secret():
    """PushExpress's placeholder verbatim; the secret URL-encoded; no URL for derived ordinals."""
    assert views.postback_url("https://x.io/", "promo", 7, None) == \
        "https://x.io/api/postback/?id={your installation id}&status=promo_7"
    assert views.postback_url("https://x.io", "dep", 7, "a b&c").endswith("status=dep_7&key=a%20b%26c")
    assert [views.postback_url("https://x.io", c, 7, "s") for c in ("dep_2", "dep_17")] == [None, None]


def test_device_view_orders_events():
    state = parse_device_state("zeta=1;dep_2=3;dep=2:3:2;install=1;alpha=2;dep_10=9")
    view = device_view("d", state)
    assert [e["code"] for e in view["events"]] == ["install", "dep", "dep_2", "dep_10", "alpha", "zeta"]
    assert view["events"][1] == {"code": "dep", "first_at": 2, "last_at": 3, "occurrences": 2}
    assert view["deposit_count"] == 2
    assert device_view("d", {"install": EventStat(1, 1, 1)})["deposit_count"] == 0
