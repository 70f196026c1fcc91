"""Postback parsing: the PushExpress format, optional parameters, the checks and their order."""

import pytest
from hypothesis import given, settings, strategies as st

from services.common.catalog import AccountEntry, CatalogSnapshot
from services.domain.codes import SYSTEM_EVENTS
from services.ingress.parsing import TS_MIN_MS, Postback, PostbackRules, RejectedPostback, parse_postback

NOW = 1_700_000_000_000
CATALOG = CatalogSnapshot(version=1, accounts={
    42: AccountEntry(42, "acme", None, frozenset({*SYSTEM_EVENTS, "first_open"}), frozenset({"old"})),
    7: AccountEntry(7, "locked", "s3cr3t-Key", frozenset(SYSTEM_EVENTS), frozenset()),
})


def parse(query: str, rules: PostbackRules = PostbackRules()):
    return parse_postback(query, CATALOG, NOW, rules)


def rejected(query: str, **kw) -> tuple[int, str]:
    result = parse(query, **kw)
    assert isinstance(result, RejectedPostback), result
    assert result.message
    return result.status, result.error


def test_status_splits_at_last_underscore():
    assert parse("id=d1&status=first_open_42") == Postback(42, "d1", "first_open", NOW)


def test_system_events_always_exist():
    for code in SYSTEM_EVENTS:
        assert parse(f"id=d1&status={code}_42").event == code


def test_optional_parameters_are_carried():
    got = parse("id=d1&status=dep_42&tid=tx-9&amount=19.99&currency=usd&ts=1699999999")
    assert got == Postback(42, "d1", "dep", 1_699_999_999_000, "tx-9", "19.99", "USD")


def test_unknown_parameters_are_ignored_even_if_repeated():
    assert parse("click=1&id=d1&click=2&status=reg_42&utm_source=x%ZZ").install_id == "d1"


def test_url_decoding_applies_to_values():
    assert parse("id=a%2Fb%3Dc&status=reg_42").install_id == "a/b=c"


@pytest.mark.parametrize("raw, millis", [
    ("1699999999", 1_699_999_999_000),          # seconds
    ("1699999999.5", 1_699_999_999_500),        # seconds with a fraction
    ("1699999999123", 1_699_999_999_123),       # milliseconds
    (str(NOW + 300_000), NOW + 300_000),        # exactly the allowed skew
])
def test_ts_in_seconds_or_milliseconds(raw, millis):
    assert parse(f"id=d1&status=reg_42&ts={raw}").occurred_at == millis


@pytest.mark.parametrize("raw, error", [
    (str(NOW + 300_001), "ts_in_future"),
    (str(NOW // 1000 + 3600), "ts_in_future"),
    ("12", "invalid_ts"),                        # before 2000
    (str(TS_MIN_MS - 1), "invalid_ts"),
    ("1699999999123.5", "invalid_ts"),           # a fraction on milliseconds
    ("-1", "invalid_ts"),
    ("abc", "invalid_ts"),
    ("1e9", "invalid_ts"),
])
def test_bad_ts(raw, error):
    assert rejected(f"id=d1&status=reg_42&ts={raw}") == (400, error)


def test_future_skew_is_configurable():
    q = f"id=d1&status=reg_42&ts={NOW + 10_000}"
    assert rejected(q, rules=PostbackRules(max_future_skew_ms=5_000)) == (400, "ts_in_future")
    assert parse(q, rules=PostbackRules(max_future_skew_ms=10_000)).occurred_at == NOW + 10_000


def test_empty_optional_parameters_count_as_absent():
    assert parse("id=d1&status=reg_42&tid=&amount=&currency=&ts=") == Postback(42, "d1", "reg", NOW)


@pytest.mark.parametrize("query, expected", [
    ("status=reg_42", (400, "missing_id")),
    ("id=&status=reg_42", (400, "missing_id")),
    ("id=a+b&status=reg_42", (400, "invalid_id")),
    ("id=a%20b&status=reg_42", (400, "invalid_id")),
    ("id=" + "x" * 129 + "&status=reg_42", (400, "invalid_id")),
    ("id=caf%C3%A9&status=reg_42", (400, "invalid_id")),
    ("id=%FF&status=reg_42", (400, "malformed_query")),
    ("id=d1", (400, "missing_status")),
    ("id=d1&status=reg", (400, "invalid_status")),
    ("id=d1&status=reg_", (400, "invalid_status")),
    ("id=d1&status=_42", (400, "invalid_status")),
    ("id=d1&status=reg_4x", (400, "invalid_status")),
    ("id=d1&status=re-g_42", (400, "invalid_event_code")),
    ("id=d1&status=" + "a" * 65 + "_42", (400, "invalid_event_code")),
    ("id=d1&id=d2&status=reg_42", (400, "duplicate_parameter")),
    ("id=d1&status=dep_42&amount=1,5", (400, "invalid_amount")),
    ("id=d1&status=dep_42&amount=-3", (400, "invalid_amount")),
    ("id=d1&status=dep_42&currency=US", (422, "invalid_currency")),
    ("id=d1&status=dep_42&currency=USDT", (422, "invalid_currency")),
    ("id=d1&status=dep_42&currency=U1D", (422, "invalid_currency")),
    ("id=d1&status=dep_42&currency=%C3%9CSD", (422, "invalid_currency")),  # non-ASCII letter
    ("id=d1&status=dep_2_42", (422, "derived_event")),
    ("id=d1&status=dep_17_42", (422, "derived_event")),
    ("id=d1&status=Dep_0_42", (422, "derived_event")),
    ("id=d1&status=dep_42&tid=a%20b", (400, "invalid_tid")),
    ("id=d1&status=reg_43", (404, "unknown_account")),
    ("id=d1&status=nope_42", (404, "unknown_event")),
    ("id=d1&status=old_42", (422, "event_inactive")),
])
def test_rejections(query, expected):
    assert rejected(query) == expected


def test_currency_is_three_letters_upper_cased():
    assert [parse(f"id=d1&status=dep_42&currency={c}").currency for c in ("usd", "Eur", "GBP")] == ["USD", "EUR", "GBP"]


def test_a_derived_deposit_ordinal_says_to_send_dep():
    """dep_<n> is numbered by the system: the reply says so, names `dep` and carries the account."""
    result = parse("id=d1&status=dep_2_42")
    assert isinstance(result, RejectedPostback) and result.account_id == 42
    assert "numbers deposits itself" in result.message and "status=dep_42" in result.message
    assert rejected("id=d1&status=dep_2_7") == (403, "missing_key")  # the secret still comes first


def test_install_id_rule_boundaries():
    assert parse("id=" + "x" * 128 + "&status=reg_42").install_id == "x" * 128
    printable = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "&=+%#")
    assert parse(f"id={printable}&status=reg_42").install_id == printable


def test_query_longer_than_limit_is_414():
    long_query = "id=d1&status=reg_42&pad=" + "x" * 4096
    assert rejected(long_query) == (414, "query_too_long")


def test_secret_is_required_and_checked():
    assert rejected("id=d1&status=reg_7") == (403, "missing_key")
    assert rejected("id=d1&status=reg_7&key=wrong") == (403, "wrong_key")
    assert rejected("id=d1&status=reg_7&key=s3cr3t-key") == (403, "wrong_key")  # case matters
    assert parse("id=d1&status=reg_7&key=s3cr3t-Key").account_id == 7


def test_key_is_checked_before_the_event_catalog():
    """Without the secret nobody learns which events an account has."""
    assert rejected("id=d1&status=nope_7") == (403, "missing_key")


def test_key_is_ignored_without_a_secret():
    assert parse("id=d1&status=reg_42&key=anything").account_id == 42


def test_rejections_after_the_account_carry_it():
    assert parse("id=d1&status=nope_42").account_id == 42
    assert parse("id=d1&status=reg_43").account_id is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_judged_without_raising(query):
    result = parse(query)
    if isinstance(result, RejectedPostback):
        assert 400 <= result.status < 500 and result.error and result.message
    else:
        assert result.account_id == 42


_pieces = st.sampled_from(["id=", "status=", "tid=", "ts=", "amount=", "currency=", "key=", "&", "=", "_", "42",
                           "7", "reg", "dep", "%", "%2", "%FF", "%C3%A9", "+", "d1", "1700000000", ".", "-", "\x00"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_pieces, max_size=30).map("".join))
def test_near_valid_garbage_is_judged_without_raising(query):
    result = parse(query)
    if isinstance(result, RejectedPostback):
        assert 400 <= result.status < 500 and result.error and result.message
