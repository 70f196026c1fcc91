"""Postback parsing: the PushExpress status format and the catalog checks."""

from services.common.catalog import AccountEntry, CatalogSnapshot, SYSTEM_EVENTS
from services.ingress.parsing import Postback, RejectedPostback, parse_postback

CATALOG = CatalogSnapshot(version=1, accounts={
    42: AccountEntry(42, "acme", None, frozenset({*SYSTEM_EVENTS, "first_open"}), frozenset({"old"})),
})


def test_status_splits_at_last_underscore():
    assert parse_postback("id=d1&status=first_open_42", CATALOG) == Postback(42, "d1", "first_open")


def test_unknown_account_is_404():
    r = parse_postback("id=d1&status=reg_7", CATALOG)
    assert isinstance(r, RejectedPostback) and (r.status, r.error) == (404, "unknown_account")


def test_inactive_event_is_422():
    r = parse_postback("id=d1&status=old_42", CATALOG)
    assert isinstance(r, RejectedPostback) and (r.status, r.error) == (422, "event_inactive")


def test_missing_id_is_400():
    r = parse_postback("status=reg_42", CATALOG)
    assert isinstance(r, RejectedPostback) and r.status == 400
