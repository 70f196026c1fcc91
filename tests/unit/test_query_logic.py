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
from services.query.filters import Cursor, CursorError, decode_cursor


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


@given(st.integers(0, 1023), st.integers(0, 2**40), st.text("0123456789abcdef", min_size=12, max_size=12))
def test_cursor_round_trips(partition, position, fp):
    c = Cursor(partition, position, fp)
    assert decode_cursor(c.encode(), fp, 1024) == c


def test_cursor_is_refused_for_another_filter_or_layout():
    c = Cursor(3, 10, "aaaaaaaaaaaa").encode()
    with pytest.raises(CursorError, match="different filter"):
        decode_cursor(c, "bbbbbbbbbbbb", 8)
    with pytest.raises(CursorError):
        decode_cursor(c, "aaaaaaaaaaaa", 2)
    for junk in ("", "x", "!!!", "djI6MTox"):
        with pytest.raises(CursorError):
            decode_cursor(junk, "aaaaaaaaaaaa", 8)


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
