"""The device-event.v1 record and the outbox entry that carries it, as a codec.

A device-event is one applied occurrence. The processor publishes it from the outbox: the apply
script stores, per applied batch, ONE entry: `h` = the records' heads, one line each, and `t` =
one token per record, joined by ",". A head line is `<Kafka key>\t<head>`, where head is the
record's JSON without `deposit_ordinal`, `first_occurrence` and the closing brace (rendered
before the script runs); the token holds what only the script knows:
  `-`                      nothing to publish (offset already applied, or a repeated tid);
  `[+]<ordinal>:<1|0>`     ordinal empty unless the code is `dep`; 1/0 = first occurrence on
                           the device; a leading `+` = the device is new, and its `install`
                           record (event id `<event_id>:install`) is published first.
`entry_records` turns an entry into the records. It is pure: the same entry always yields the
same bytes, so a record published twice (at-least-once) is byte-identical.

The JSON encoder and decoder are passed in (the processor passes orjson's; the standard
library's `json_dumps` below yields the same bytes for these records).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from services.domain.codes import INSTALL

SCHEMA = "device-event.v1"
SKIPPED = "-"
NEW_DEVICE = "+"
Dumps = Callable[[object], bytes]
Loads = Callable[[bytes], object]


def json_dumps(value: object) -> bytes:
    """Compact JSON, byte-identical to orjson.dumps for device-event records."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class DeviceEvent:
    """One applied occurrence, as downstream consumers read it."""

    event_id: str
    account_id: int
    install_id: str
    event: str
    deposit_ordinal: int | None
    first_occurrence: bool
    occurred_at: int
    processed_at: int
    tid: str | None = None
    amount: str | None = None
    currency: str | None = None

    def as_record(self) -> dict:
        """The device-event.v1 JSON object, fields in the published order."""
        return {"schema": SCHEMA, "event_id": self.event_id, "account_id": self.account_id,
                "install_id": self.install_id, "event": self.event, "occurred_at": self.occurred_at,
                "processed_at": self.processed_at, "tid": self.tid, "amount": self.amount, "currency": self.currency,
                "deposit_ordinal": self.deposit_ordinal, "first_occurrence": self.first_occurrence}

    @classmethod
    def from_record(cls, d: dict) -> "DeviceEvent":
        return cls(d["event_id"], d["account_id"], d["install_id"], d["event"], d["deposit_ordinal"],
                   d["first_occurrence"], d["occurred_at"], d["processed_at"], d.get("tid"), d.get("amount"),
                   d.get("currency"))


def record_key(account_id: int | str, install_id: str) -> str:
    """The Kafka key of a device's records on every topic: `<account>:<install id>`."""
    return f"{account_id}:{install_id}"


def install_event_id(event_id: str) -> str:
    """The event id of the install record a device's first postback brings along."""
    return f"{event_id}:install"


def head(event_id: str, account_id: int, install_id: str, event: str, occurred_at: int, processed_at: int,
         tid: str | None, amount: str | None, currency: str | None) -> dict:
    """A record's fields known before the apply script runs, in the published order."""
    return {"schema": SCHEMA, "event_id": event_id, "account_id": account_id, "install_id": install_id,
            "event": event, "occurred_at": occurred_at, "processed_at": processed_at, "tid": tid, "amount": amount,
            "currency": currency}


def head_line(key: str, head_json: bytes) -> str:
    """One line of an entry's `h`: the Kafka key, a tab, the head without its closing brace
    (install ids and keys never hold a tab; JSON never a raw newline)."""
    return f"{key}\t{head_json[:-1].decode()}"


def token(ordinal: int | None, first: bool, new_device: bool) -> str:
    """The token of an applied record (what the apply script writes)."""
    return f"{NEW_DEVICE if new_device else ''}{'' if ordinal is None else ordinal}:{1 if first else 0}"


_FLAG = {b"1": b',"first_occurrence":true}', b"0": b',"first_occurrence":false}'}


def entry_records(heads: bytes, tokens: bytes, loads: Loads, dumps: Dumps) -> list[tuple[bytes, bytes]]:
    """(Kafka key, value) of each record of one outbox entry, in the order they were applied."""
    out = []
    append = out.append
    for line, tok in zip(heads.split(b"\n"), tokens.split(b",")):
        if tok == b"-":
            continue
        key, head_json = line.split(b"\t", 1)
        if tok[0] == 43:  # b"+": the device's install record first
            tok = tok[1:]
            source = loads(head_json + b"}")
            append((key, dumps(install_record(source))))
        ordinal, _, first = tok.partition(b":")
        append((key, b"".join((head_json, b',"deposit_ordinal":', ordinal or b"null", _FLAG[first]))))
    return out


def install_record(source: dict) -> dict:
    """The install record of a new device, derived from the head of its first postback."""
    return DeviceEvent(install_event_id(source["event_id"]), source["account_id"], source["install_id"], INSTALL,
                       None, True, source["occurred_at"], source["processed_at"]).as_record()
