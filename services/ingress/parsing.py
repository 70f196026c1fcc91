"""Pure parsing and validation of postback requests: no Kafka, Redis or HTTP here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from services.common.catalog import CatalogSnapshot

_EVENT_CODE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_INSTALL_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_ACCOUNT_ID = re.compile(r"^[0-9]{1,18}$")


@dataclass(frozen=True)
class Postback:
    account_id: int
    install_id: str
    event: str


@dataclass(frozen=True)
class RejectedPostback:
    status: int
    error: str
    message: str
    account_id: int | None = None


def parse_postback(query: str, catalog: CatalogSnapshot) -> Postback | RejectedPostback:
    params = parse_qs(query, keep_blank_values=True)
    install_id = (params.get("id") or [""])[0]
    status = (params.get("status") or [""])[0]
    if not install_id:
        return RejectedPostback(400, "missing_id", "the `id` parameter (installation id) is required")
    if not _INSTALL_ID.match(install_id):
        return RejectedPostback(400, "invalid_id", "`id` must be 1-128 printable ASCII characters without spaces")
    code, sep, account = status.rpartition("_")
    if not sep or not code or not _ACCOUNT_ID.match(account):
        return RejectedPostback(400, "invalid_status", "`status` must be <event code>_<account id>, e.g. status=dep_42")
    if not _EVENT_CODE.match(code):
        return RejectedPostback(400, "invalid_event_code", "event codes use 1-64 of A-Z, a-z, 0-9 and _")
    account_id = int(account)
    entry = catalog.accounts.get(account_id)
    if entry is None:
        return RejectedPostback(404, "unknown_account", f"account {account_id} does not exist; check the number after the last '_' in `status`")
    if code not in entry.active_codes:
        if code in entry.inactive_codes:
            return RejectedPostback(422, "event_inactive", f"event `{code}` is inactive in account {account_id}; activate it first", account_id)
        return RejectedPostback(404, "unknown_event", f"event `{code}` does not exist in account {account_id}; create it first", account_id)
    return Postback(account_id=account_id, install_id=install_id, event=code)
