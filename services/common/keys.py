"""The Redis key layout: the one place that spells key names (docs/architecture.md).

Everything one Kafka partition of the postbacks topic touches lives under the hash tag
`{<prefix>:p<partition>}`, so one Lua script per batch may touch all of it and the layout
works on Redis Cluster unchanged. Catalog keys (accounts, API keys, events) share the tag
`{<prefix>:cat}`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogKeys:
    prefix: str

    @property
    def tag(self) -> str:
        return "{" + self.prefix + ":cat}"

    @property
    def account_seq(self) -> str:
        return f"{self.tag}:account_seq"

    @property
    def accounts(self) -> str:
        """Hash: account id -> JSON {name, created_at, secret}."""
        return f"{self.tag}:accounts"

    @property
    def api_keys(self) -> str:
        """Hash: sha256(api key) hex -> JSON {account_id, key_id, created_at}."""
        return f"{self.tag}:api_keys"

    def events(self, account_id: int) -> str:
        """Hash: custom event id -> JSON {id, name, code, status, created_at}."""
        return f"{self.tag}:events:{account_id}"

    def event_codes(self, account_id: int) -> str:
        """Hash: custom event code -> event id (uniqueness of codes)."""
        return f"{self.tag}:event_codes:{account_id}"

    @property
    def event_seq(self) -> str:
        return f"{self.tag}:event_seq"

    @property
    def version(self) -> str:
        """Counter bumped on every catalog change; caches poll it to reload."""
        return f"{self.tag}:version"


@dataclass(frozen=True)
class PartitionKeys:
    """Keys owned by one partition of the postbacks topic."""

    prefix: str
    partition: int

    @property
    def tag(self) -> str:
        return "{" + f"{self.prefix}:p{self.partition}" + "}"

    def applied_offset(self, topic: str) -> str:
        """String: the highest offset of `topic`/partition whose effects are in Redis."""
        return f"{self.tag}:applied:{topic}"

    def device_index(self, account_id: int, bucket: int) -> str:
        """Hash (forward map): install id -> dense device number, for the install ids whose
        `device_index_bucket` is `bucket` (DEVICE_INDEX_BUCKETS buckets per account and partition)."""
        return f"{self.tag}:i:{account_id}:{bucket}"

    def device_index_of(self, account_id: int, install_id: str) -> str:
        """The forward-map bucket key holding `install_id`."""
        return self.device_index(account_id, device_index_bucket(install_id))

    def device_states(self, account_id: int, bucket: int) -> str:
        """Hash: device number % 512 -> the device's packed state (`format_device_state`), for
        device numbers in bucket number // 512 (like the reverse map)."""
        return f"{self.tag}:v:{account_id}:{bucket}"

    def device_seq(self, account_id: int) -> str:
        """Counter: the last dense device number handed out in this account and partition."""
        return f"{self.tag}:seq:{account_id}"

    def device_names(self, account_id: int, bucket: int) -> str:
        """Hash: device number (within bucket of 512) -> install id (the reverse map)."""
        return f"{self.tag}:n:{account_id}:{bucket}"

    def segment(self, account_id: int, code: str) -> str:
        """Bitmap over dense device numbers: bit n set when the event occurred on device n."""
        return f"{self.tag}:s:{account_id}:{code}"

    def device_counts(self, account_id: int) -> str:
        """Hash: event code -> devices of the account in this partition on which it occurred
        (= BITCOUNT of the code's bitmap; maintained by the apply script with the bit)."""
        return f"{self.tag}:cnt:{account_id}"

    def segment_codes(self, account_id: int) -> str:
        """Set: every event code with a segment bitmap in this account and partition."""
        return f"{self.tag}:codes:{account_id}"

    def tid(self, account_id: int, install_id: str, code: str, tid: str) -> str:
        """String with TTL: a recorded transaction id (dedupe window)."""
        return f"{self.tag}:t:{account_id}:{install_id}:{code}:{tid}"

    @property
    def outbox(self) -> str:
        """Stream: enriched device-event records waiting to be published to Kafka."""
        return f"{self.tag}:outbox"


@dataclass(frozen=True)
class RejectedKeys:
    """Recent rejected postbacks per account, fed by the query service from the rejected topic
    (hash tag `{<prefix>:rej}`)."""

    prefix: str

    @property
    def tag(self) -> str:
        return "{" + self.prefix + ":rej}"

    def recent(self, account_id: int) -> str:
        """List, newest first: JSON rejected-postback.v1 records of the account (bounded)."""
        return f"{self.tag}:list:{account_id}"

    def applied_offset(self, topic: str, partition: int) -> str:
        """String: highest offset of the rejected topic/partition already in the lists."""
        return f"{self.tag}:applied:{topic}:{partition}"


NAMES_BUCKET = 512
# Forward-map buckets per account and partition. Chosen so a bucket stays listpack-encoded
# (hash-max-listpack-entries 512) up to ~1.5M devices of one account in one partition - 10M
# devices per account over 8 partitions average ~305 per bucket (Poisson max over 4,096 buckets
# ~380); beyond that buckets turn into hash tables: still correct, more memory. Changing it
# moves every install id to another bucket: only together with `pbseg rebuild`.
DEVICE_INDEX_BUCKETS = 4096  # device_index_bucket reads 12 bits: change both together


def bucket_hash(data: bytes) -> int:
    """The first 32 bits of SHA-1 (big-endian); test vectors in tests/unit/device_bucket_vectors.json.
    The processor passes the bucket to its apply script with each record (planning.py)."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "big")


def device_index_bucket(install_id: str, _sha1=hashlib.sha1) -> int:
    """The forward-map bucket of an install id (`bucket_hash` of its UTF-8 bytes mod DEVICE_INDEX_BUCKETS,
    i.e. the low 12 bits of SHA-1's first 32: read off the digest, 40% cheaper; the processor runs it
    per postback)."""
    digest = _sha1(install_id.encode()).digest()
    return ((digest[2] & 0x0F) << 8) | digest[3]


def parse_device_state(value: str | bytes) -> dict[str, str]:
    """A packed device state `code=value;code=value;...` -> {code: value} in stored order
    (values as `parse_event_value` reads them). Raises ValueError when malformed."""
    text = value.decode() if isinstance(value, bytes) else value
    out: dict[str, str] = {}
    if not text:
        return out
    for part in text.split(";"):
        code, sep, event_value = part.partition("=")
        if not sep or not code or not event_value:
            raise ValueError(f"not a packed device state: {text!r}")
        out[code] = event_value
    return out


def format_device_state(events: dict[str, str]) -> str:
    """{code: value} -> the packed form apply_batch.lua stores (codes never contain '=' or ';')."""
    return ";".join(f"{code}={value}" for code, value in events.items())


def format_event_value(first: int, last: int, count: int) -> str:
    """(first_ms, last_ms, count) -> the stored value: `first_ms` alone while count is 1."""
    return str(first) if count == 1 and first == last else f"{first}:{last}:{count}"


def parse_event_value(value: str | bytes) -> tuple[int, int, int]:
    """One event's value in a packed device state -> (first_ms, last_ms, count). Raises ValueError when malformed."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split(":")
    if len(parts) == 1:
        first = int(parts[0])
        return first, first, 1
    if len(parts) == 3:
        return int(parts[0]), int(parts[1]), int(parts[2])
    raise ValueError(f"not a device event value: {text!r}")
