"""Pure parsing and validation of postback requests: no Kafka, Redis or HTTP here.

`parse_postback(query, catalog, now_ms, rules)` turns the raw query string of
`/api/postback/` into either a `Postback` (ready to become a `postback.v1` record) or a
`RejectedPostback` (HTTP status, machine code, a message telling the sender how to fix it).
The checks run in this order, so a sender learns about the first problem it can fix and an
unauthenticated caller cannot probe an account's event catalog:

1. size and syntax (400/414), every parameter's format (400);
2. the account exists (404 unknown_account);
3. the postback secret, when the account enabled one (403 missing_key / wrong_key);
4. the code is not a derived deposit ordinal `dep_<n>` (422 derived_event: the system numbers
   deposits itself), the event exists (404 unknown_event) and is active (422 event_inactive).

`currency` is the one format check answered with 422 (`invalid_currency`), as the query side
answers a well-formed but unacceptable value; every other format error is 400.

The exact input rules are documented in docs/architecture.md ("Ingress").
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from services.common.catalog import CatalogSnapshot
from services.domain.codes import EVENT_CODE_RE, SYSTEM_EVENTS, TOKEN_RE, is_postable
from services.ingress.query_params import DuplicateParameter, split_query

_EVENT_CODE = EVENT_CODE_RE
# Install ids and transaction ids, after URL-decoding: 1-128 printable ASCII characters
# without spaces (0x21 '!' .. 0x7E '~').
_TOKEN = TOKEN_RE
_ACCOUNT_ID = re.compile(r"[0-9]{1,18}")
_AMOUNT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,10})?")
# ISO 4217 shape: exactly three ASCII letters (which codes exist is not checked).
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_TS = re.compile(r"([0-9]{1,13})(\.[0-9]{1,6})?")

# `ts` below this is unix seconds, at or above it unix milliseconds: 10^11 seconds is the
# year 5138, 10^11 milliseconds is 1973, so no real event time is ambiguous.
TS_MS_THRESHOLD = 100_000_000_000
# Earliest accepted event time: 2000-01-01T00:00:00Z. Earlier values are almost always a
# sender bug (a zero or a day count), and would poison "first seen" times.
TS_MIN_MS = 946_684_800_000


@dataclass(frozen=True, slots=True)
class PostbackRules:
    """Configurable limits of the parser (from IngressSettings)."""

    max_query_bytes: int = 4096
    max_future_skew_ms: int = 300_000


@dataclass(frozen=True, slots=True)
class Postback:
    account_id: int
    install_id: str
    event: str
    occurred_at: int
    tid: str | None = None
    amount: str | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class RejectedPostback:
    status: int
    error: str
    message: str
    account_id: int | None = None


def _show(value: str, limit: int = 40) -> str:
    """A value quoted for an error message, cut so a message stays small."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)


def _bad(error: str, message: str) -> RejectedPostback:
    return RejectedPostback(400, error, message)


def _parse_ts(raw: str, now_ms: int, rules: PostbackRules) -> int | RejectedPostback:
    match = _TS.fullmatch(raw)
    if match is None:
        return _bad("invalid_ts", f"`ts` {_show(raw)} must be a unix time in seconds (e.g. 1700000000 or 1700000000.25) or milliseconds (e.g. 1700000000000)")
    whole, fraction = match.group(1), match.group(2)
    value = int(whole)
    if value < TS_MS_THRESHOLD:
        millis = value * 1000 + (int((fraction[1:] + "000")[:3]) if fraction else 0)
    elif fraction:
        return _bad("invalid_ts", f"`ts` {_show(raw)} looks like milliseconds; milliseconds take no fraction")
    else:
        millis = value
    if millis < TS_MIN_MS:
        return _bad("invalid_ts", f"`ts` {_show(raw)} is before 2000-01-01; send unix seconds or milliseconds")
    if millis > now_ms + rules.max_future_skew_ms:
        return _bad("ts_in_future", f"`ts` {_show(raw)} is {(millis - now_ms) // 1000} s in the future; at most {rules.max_future_skew_ms // 1000} s is allowed (check the sender's clock and unit)")
    return millis


def parse_postback(query: str, catalog: CatalogSnapshot, now_ms: int, rules: PostbackRules = PostbackRules()) -> Postback | RejectedPostback:
    """Judge one postback. Pure and total: returns, never raises, for any `query` string."""
    if len(query) > rules.max_query_bytes:
        return RejectedPostback(414, "query_too_long", f"the query string is {len(query)} bytes; at most {rules.max_query_bytes} are accepted")
    try:
        params = split_query(query)
    except DuplicateParameter as exc:
        return _bad("duplicate_parameter", f"`{exc.name}` appears more than once; send each parameter once")
    except UnicodeDecodeError:
        return _bad("malformed_query", "the query string has a %-escape that is not valid UTF-8")

    install_id = params.get("id", "")
    if not install_id:
        return _bad("missing_id", "the `id` parameter (the device's install id) is required: ?id=<install id>&status=<event code>_<account id>")
    if _TOKEN.fullmatch(install_id) is None:
        return _bad("invalid_id", f"`id` {_show(install_id)} must be 1-128 printable ASCII characters without spaces (after URL-decoding)")

    status = params.get("status", "")
    if not status:
        return _bad("missing_status", "the `status` parameter is required: status=<event code>_<account id>, e.g. status=dep_42")
    code, sep, account = status.rpartition("_")
    if not sep or not code or _ACCOUNT_ID.fullmatch(account) is None:
        return _bad("invalid_status", f"`status` {_show(status)} must be <event code>_<account id>, e.g. status=dep_42 (the account id is the digits after the last '_')")
    if _EVENT_CODE.fullmatch(code) is None:
        return _bad("invalid_event_code", f"event code {_show(code)} must be 1-64 characters of A-Z, a-z, 0-9 and _")

    occurred_at = now_ms
    raw_ts = params.get("ts")
    if raw_ts:
        ts = _parse_ts(raw_ts, now_ms, rules)
        if isinstance(ts, RejectedPostback):
            return ts
        occurred_at = ts

    tid = params.get("tid") or None
    if tid is not None and _TOKEN.fullmatch(tid) is None:
        return _bad("invalid_tid", f"`tid` {_show(tid)} must be 1-128 printable ASCII characters without spaces")
    amount = params.get("amount") or None
    if amount is not None and _AMOUNT.fullmatch(amount) is None:
        return _bad("invalid_amount", f"`amount` {_show(amount)} must be a non-negative decimal number with a dot, e.g. 19.99 (at most 20 digits before and 10 after the dot)")
    currency = params.get("currency") or None
    if currency is not None:
        if _CURRENCY.fullmatch(currency) is None:
            return RejectedPostback(422, "invalid_currency", f"`currency` {_show(currency)} must be an ISO 4217 currency code: exactly three letters, e.g. USD or eur")
        currency = currency.upper()

    account_id = int(account)
    entry = catalog.accounts.get(account_id)
    if entry is None:
        return RejectedPostback(404, "unknown_account", f"account {account_id} does not exist; check the number after the last '_' in `status`")
    if entry.secret is not None:
        key = params.get("key", "")
        if not key:
            return RejectedPostback(403, "missing_key", f"account {account_id} requires its postback secret: add key=<secret> to the URL", account_id)
        if not hmac.compare_digest(key.encode(), entry.secret.encode()):
            return RejectedPostback(403, "wrong_key", f"`key` is not account {account_id}'s postback secret; copy the URL again from the Segments page", account_id)
    if not is_postable(code) and code.lower() not in SYSTEM_EVENTS:  # dep_<digits>, any case
        return RejectedPostback(422, "derived_event", f"`{code}` is derived: the system numbers deposits itself (the 2nd `dep` of a device becomes dep_2, ...); send status=dep_{account_id} for every deposit", account_id)
    if code not in entry.active_codes:
        if code in entry.inactive_codes:
            return RejectedPostback(422, "event_inactive", f"event `{code}` is inactive in account {account_id}; activate it on the Segments page to accept it", account_id)
        return RejectedPostback(404, "unknown_event", f"event `{code}` does not exist in account {account_id}; create it first (install, reg and dep always exist)", account_id)
    return Postback(account_id, install_id, code, occurred_at, tid, amount, currency)
