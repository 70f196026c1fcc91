"""The bytes the ingress writes to Kafka, built without pydantic on the hot path.

`postback.v1` and `rejected-postback.v1` are defined by the pydantic models in
services/common/models.py; tests/unit/test_ingress_records.py validates every encoding here
against those models, so the two cannot drift apart.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

import orjson

from services.ingress.parsing import Postback, RejectedPostback

RAW_LIMIT = 1024  # RejectedPostbackRecord.raw max_length


def redact_query(raw_query: str) -> str:
    """The raw query with every `key` value replaced by `***`: the postback secret never
    reaches the rejected topic (accounts read that topic in the query UI)."""
    pairs = raw_query.split("&")
    for i, pair in enumerate(pairs):
        name, sep, _ = pair.partition("=")
        if sep and unquote_plus(name, errors="replace") == "key":
            pairs[i] = name + "=***"
    return "&".join(pairs)


def postback_key(account_id: int, install_id: str) -> bytes:
    """`{account}:{install id}`: one device's events stay in order on one partition."""
    return f"{account_id}:{install_id}".encode()


def postback_value(postback: Postback, event_id: str, received_at: int) -> bytes:
    record = {
        "schema": "postback.v1",
        "event_id": event_id,
        "account_id": postback.account_id,
        "install_id": postback.install_id,
        "event": postback.event,
        "occurred_at": postback.occurred_at,
        "received_at": received_at,
    }
    if postback.tid is not None:
        record["tid"] = postback.tid
    if postback.amount is not None:
        record["amount"] = postback.amount
    if postback.currency is not None:
        record["currency"] = postback.currency
    return orjson.dumps(record)


def rejected_key(account_id: int | None) -> bytes | None:
    return None if account_id is None else str(account_id).encode()


def rejected_value(rejection: RejectedPostback, raw_query: str, at: int) -> bytes:
    return orjson.dumps({
        "schema": "rejected-postback.v1",
        "stage": "ingress",
        "reason": rejection.error,
        "message": rejection.message,
        "account_id": rejection.account_id,
        "raw": redact_query(raw_query)[:RAW_LIMIT],
        "at": at,
    })
