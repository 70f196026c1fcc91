"""The Redis key layout: the one place that spells key names (docs/architecture.md).

Everything one Kafka partition of the postbacks topic touches lives under the hash tag
`{<prefix>:p<partition>}`, so one Lua script per batch may touch all of it and the layout
works on Redis Cluster unchanged. Catalog keys (accounts, API keys, events) share the tag
`{<prefix>:cat}`.
"""

from __future__ import annotations

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

    def device(self, account_id: int, install_id: str) -> str:
        """Hash: '#' -> dense device number; '<event code>' -> 'first_ms:last_ms:count', or just
        'first_ms' while the event occurred once (compact form; `parse_event_value` reads both)."""
        return f"{self.tag}:d:{account_id}:{install_id}"

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


def parse_event_value(value: str | bytes) -> tuple[int, int, int]:
    """A device-hash event value -> (first_ms, last_ms, count). Raises ValueError when malformed."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split(":")
    if len(parts) == 1:
        first = int(parts[0])
        return first, first, 1
    if len(parts) == 3:
        return int(parts[0]), int(parts[1]), int(parts[2])
    raise ValueError(f"not a device event value: {text!r}")
