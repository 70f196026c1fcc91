"""Device-page cursors: where the next page starts, signed so that only cursors this API
issued are followed. Pure (stdlib only): the HMAC key comes from services/query/cursor_secret.py.

A cursor is urlsafe base64 (no padding) of `mac(16 bytes) || "v2:<partition>:<position>:<fingerprint>"`,
75-80 characters. The MAC is HMAC-SHA256 truncated to 128 bits over the account id and the
payload, so a cursor is good only for the account and the filter it was issued for. Anything
else - an edited field, a position nobody issued, another account's cursor, the unsigned `v1:`
cursors of earlier versions, a cursor signed with a secret since replaced - is refused alike
with CursorError, before anything reaches Redis.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

VERSION = "v2"
MAC_BYTES = 16
# Device numbers are dense per account and partition and fit in 2^53 (exact in a Lua number);
# a cursor beyond that cannot have been issued, even with the right MAC.
MAX_POSITION = 2**53
_PAYLOAD = re.compile(r"v2:(0|[1-9][0-9]{0,5}):(0|[1-9][0-9]{0,15}):([0-9a-f]{12})")

FORGED = ("the cursor is not one this API issued to this account, or it was changed (cursors issued before "
          "cursors were signed are refused too); start again without a cursor")
OTHER_FILTER = "the cursor belongs to a different filter; send the same filter with its cursor, or start again without a cursor"


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: partition, device number, and the filter it belongs to."""

    partition: int
    position: int
    fingerprint: str


class CursorError(ValueError):
    pass


def _mac(key: bytes, account_id: int, payload: bytes) -> bytes:
    return hmac.new(key, str(account_id).encode() + b"|" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def encode_cursor(cursor: Cursor, key: bytes, account_id: int) -> str:
    """The opaque, signed text of `cursor` for `account_id`."""
    payload = f"{VERSION}:{cursor.partition}:{cursor.position}:{cursor.fingerprint}".encode()
    return base64.urlsafe_b64encode(_mac(key, account_id, payload) + payload).decode().rstrip("=")


def decode_cursor(text: str, key: bytes, account_id: int, fingerprint: str, partitions: int) -> Cursor:
    """The cursor `text` stands for. Raises CursorError (message for the caller) when it was
    not issued with `key` to `account_id`, lies outside the layout (partition, MAX_POSITION),
    or belongs to another filter than `fingerprint`."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text
        raise CursorError(FORGED) from exc
    mac, payload = raw[:MAC_BYTES], raw[MAC_BYTES:]
    if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, _mac(key, account_id, payload)):
        raise CursorError(FORGED)
    match = _PAYLOAD.fullmatch(payload.decode("ascii", "replace"))
    if match is None:
        raise CursorError(FORGED)
    cursor = Cursor(int(match.group(1)), int(match.group(2)), match.group(3))
    if cursor.partition >= partitions or cursor.position > MAX_POSITION:
        raise CursorError(FORGED)
    if cursor.fingerprint != fingerprint:
        raise CursorError(OTHER_FILTER)
    return cursor
