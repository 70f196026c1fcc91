"""The Redis key layout: the one place that spells key names (docs/architecture.md).

Everything one Kafka partition of the postbacks topic touches lives under the hash tag
`{<prefix>:p<partition>}`, so one Lua script per batch may touch all of it and the layout
works on Redis Cluster unchanged. Catalog keys (accounts, API keys, events) share the tag
`{<prefix>:cat}`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass


def partition_tag(prefix: str, partition: int) -> str:
    """The hash tag of every key of one partition: `{<prefix>:p<partition>}`."""
    return "{" + f"{prefix}:p{partition}" + "}"


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

    def saved_segments(self, account_id: int) -> str:
        """Hash: saved segment id -> JSON {id, name, filter, version, created_at, updated_at} (the current version)."""
        return f"{self.tag}:saved_segments:{account_id}"

    def saved_segment_versions(self, account_id: int, segment_id: int) -> str:
        """List, oldest first: every version of a saved segment, as JSON like the current one."""
        return f"{self.tag}:saved_segment_versions:{account_id}:{segment_id}"

    @property
    def deleted_events(self) -> str:
        """Set: ids of deleted custom events (their allocation records are not lost entities)."""
        return f"{self.tag}:deleted_events"

    @property
    def event_seq(self) -> str:
        return f"{self.tag}:event_seq"

    @property
    def version(self) -> str:
        """Counter bumped on every catalog change; caches poll it to reload."""
        return f"{self.tag}:version"

    def triggers(self, account_id: int) -> str:
        """Hash: trigger id -> JSON of its current version (services/domain/triggers.py TriggerVersion)."""
        return f"{self.tag}:triggers:{account_id}"

    def trigger_versions(self, trigger_id: int) -> str:
        """List, oldest first: every version of a trigger (deletion included), kept for good: the
        processor decides replayed fires with the version in force at their time."""
        return f"{self.tag}:trigger_versions:{trigger_id}"

    @property
    def trigger_accounts(self) -> str:
        """Hash: trigger id -> account id, every trigger ever created (deleted ones too)."""
        return f"{self.tag}:trigger_accounts"

    @property
    def triggers_version(self) -> str:
        """Counter bumped on every trigger change; the processor polls it to reload its book."""
        return f"{self.tag}:triggers_version"

    @property
    def cursor_secret(self) -> str:
        """String: the deployment's HMAC key for device-page cursors when QUERY_CURSOR_SECRET is
        unset (random, created once with SET NX by the first query process that needs it)."""
        return f"{self.tag}:cursor_secret"


# Every key of one partition, after its hash tag: the template of each, by name. The Python
# methods below and the Lua scripts (through `lua_header`) both build keys from this table.
PARTITION_KEYS: dict[str, str] = {
    "applied_offset": "applied:{topic}",
    # Hash {topic_id, partitions, layout}: the log this partition's state was built from
    # (services/domain/identity.py); it shares the tag, so it rolls back with the watermark.
    "identity": "identity:{topic}",
    # String: unix ms before which every record of the partition was applied (freshness, `as_of`).
    "applied_as_of": "as_of:{topic}",
    "device_index": "i:{account}:{bucket}",
    "device_states": "v:{account}:{bucket}",
    "device_seq": "seq:{account}",
    "device_names": "n:{account}:{bucket}",
    "segment": "s:{account}:{code}",
    "device_counts": "cnt:{account}",
    "segment_codes": "codes:{account}",
    # The install id is length-prefixed: install ids and tids may contain ':', codes never do,
    # so no two (install id, code, tid) share a key.
    # Windowed index (services/domain/windows.py): the devices on which a code occurred in one UTC
    # hour (bucket "h<unix ms // 3600000>") or day ("d<unix ms // 86400000>"), as a "device set"
    # (services/processor/devset.lua): a Set of decimal device numbers while small, a bitmap once it
    # holds more than devset_limit(devices, bucket); never both. TTL: the bucket's
    # end + the window retention (PBSEG_WINDOW_RETENTION_DAYS).
    "window_set": "ws:{account}:{code}:{bucket}",
    "window_bits": "wb:{account}:{code}:{bucket}",
    # Sorted set: device number -> lifetime count of the code, for devices where it is >= 2 (codes
    # other than dep, whose counts are the dep_<n> bitmaps).
    "count_rank": "kc:{account}:{code}",
    # Sorted set, every score 0, ordered by member: "<sum zero-padded to SUM_DIGITS>:<device number>",
    # the lifetime sum of `dep` amounts in one currency (10^-10 units), one member per device.
    "deposit_sums": "ds:{account}:{currency}",
    # Hash: "<device number % NAMES_BUCKET>:<currency>" -> that device's sum (units, decimal), for
    # device numbers in bucket number // NAMES_BUCKET.
    "deposit_sum_of": "dsum:{account}:{bucket}",
    "tid": "t:{account}:{install_len}:{install_id}:{code}:{tid}",
    "outbox": "outbox",
    "scratch": "scratch:{token}",
    # Timers of event-triggered tasks (services/domain/triggers.py, docs/decisions/0022): pending
    # fires in hashes, one per (trigger, activation epoch, due minute): field = the due second
    # within the minute, value = entries "<device number>|<cause event id>|<due ms within the
    # second>" joined by ","; the sorted set names the non-empty hashes ("<trigger>:<epoch>:<minute>"),
    # scored by their earliest due ms (never later than it).
    "timer_due": "tq",
    "timer_list": "tl:{trigger}:{epoch}:{minute}",
    # Hash per trigger: f (fired), c (cancelled), l (skipped late), p<epoch> (pending filed under
    # the epoch): this partition's share of GET /triggers/{id}/stats.
    "trigger_stats": "tc:{trigger}",
    # List, newest first, capped: this partition's recent fires of a trigger, as fire lines.
    "trigger_recent": "tr:{trigger}",
}


@dataclass(frozen=True)
class PartitionKeys:
    """Keys owned by one partition of the postbacks topic."""

    prefix: str
    partition: int

    @property
    def tag(self) -> str:
        return partition_tag(self.prefix, self.partition)

    def _key(self, name: str, **parts) -> str:
        return f"{self.tag}:" + PARTITION_KEYS[name].format(**parts)

    def applied_offset(self, topic: str) -> str:
        """String: the highest offset of `topic`/partition whose effects are in Redis."""
        return self._key("applied_offset", topic=topic)

    def identity(self, topic: str) -> str:
        """Hash: the identity of the log (topic id, partition count, LAYOUT_VERSION) the state was built from."""
        return self._key("identity", topic=topic)

    def applied_as_of(self, topic: str) -> str:
        """String: unix ms T such that every record of `topic`/partition appended before T is
        applied (services/processor/freshness.py); only moves forward."""
        return self._key("applied_as_of", topic=topic)

    def device_index(self, account_id: int, bucket: int) -> str:
        """Hash (forward map): install id -> dense device number, for the install ids whose
        `device_index_bucket` is `bucket` (DEVICE_INDEX_BUCKETS buckets per account and partition)."""
        return self._key("device_index", account=account_id, bucket=bucket)

    def device_index_of(self, account_id: int, install_id: str) -> str:
        """The forward-map bucket key holding `install_id`."""
        return self.device_index(account_id, device_index_bucket(install_id))

    def device_states(self, account_id: int, bucket: int) -> str:
        """Hash: device number % NAMES_BUCKET -> the device's packed state
        (services/domain/device_state.py), for device numbers in bucket number // NAMES_BUCKET."""
        return self._key("device_states", account=account_id, bucket=bucket)

    def device_seq(self, account_id: int) -> str:
        """Counter: the last dense device number handed out in this account and partition."""
        return self._key("device_seq", account=account_id)

    def device_names(self, account_id: int, bucket: int) -> str:
        """Hash: device number % NAMES_BUCKET -> install id (the reverse map)."""
        return self._key("device_names", account=account_id, bucket=bucket)

    def segment(self, account_id: int, code: str) -> str:
        """Bitmap over dense device numbers: bit n set when the event occurred on device n."""
        return self._key("segment", account=account_id, code=code)

    def device_counts(self, account_id: int) -> str:
        """Hash: event code -> devices of the account in this partition on which it occurred
        (= BITCOUNT of the code's bitmap; maintained by the apply script with the bit)."""
        return self._key("device_counts", account=account_id)

    def segment_codes(self, account_id: int) -> str:
        """Set: every event code with a segment bitmap in this account and partition."""
        return self._key("segment_codes", account=account_id)

    def window_set(self, account_id: int, code: str, bucket: str) -> str:
        """Set (device set, sparse form): device numbers on which `code` occurred in `bucket`."""
        return self._key("window_set", account=account_id, code=code, bucket=bucket)

    def window_bits(self, account_id: int, code: str, bucket: str) -> str:
        """Bitmap (device set, dense form) of the same bucket; exists only instead of the set."""
        return self._key("window_bits", account=account_id, code=code, bucket=bucket)

    def count_rank(self, account_id: int, code: str) -> str:
        """Sorted set: device number -> lifetime count of `code`, for counts >= 2."""
        return self._key("count_rank", account=account_id, code=code)

    def deposit_sums(self, account_id: int, currency: str) -> str:
        """Sorted set by member: `sum_member(units, number)` per device with deposits in `currency`."""
        return self._key("deposit_sums", account=account_id, currency=currency)

    def deposit_sum_of(self, account_id: int, bucket: int) -> str:
        """Hash: "<number % NAMES_BUCKET>:<currency>" -> the device's deposit sum in units."""
        return self._key("deposit_sum_of", account=account_id, bucket=bucket)

    def tid(self, account_id: int, install_id: str, code: str, tid: str) -> str:
        """String with TTL: a recorded transaction id (dedupe window); the value is the ingress
        receive time of its first sighting."""
        return self._key("tid", account=account_id, install_len=len(install_id), install_id=install_id, code=code, tid=tid)

    @property
    def outbox(self) -> str:
        """Stream: enriched device-event records waiting to be published to Kafka."""
        return self._key("outbox")

    @property
    def timer_due(self) -> str:
        """Sorted set: the non-empty timer hashes, "<trigger>:<epoch>:<minute>", scored by their earliest due ms."""
        return self._key("timer_due")

    def timer_list(self, member: str) -> str:
        """Hash: the pending fires of one (trigger, epoch, due minute), a `timer_due` member."""
        trigger, epoch, minute = member.split(":")
        return self._key("timer_list", trigger=trigger, epoch=epoch, minute=minute)

    def trigger_stats(self, trigger_id: int) -> str:
        """Hash: this partition's fired / cancelled / skipped-late / pending counts of a trigger."""
        return self._key("trigger_stats", trigger=trigger_id)

    def trigger_recent(self, trigger_id: int) -> str:
        """List, newest first (at most RECENT_FIRES): this partition's recent fire lines of a trigger."""
        return self._key("trigger_recent", trigger=trigger_id)

    def scratch(self, token: str) -> str:
        """A query's short-lived scratch bitmap (deleted by the script that made it)."""
        return self._key("scratch", token=token)

    def device_location(self, number: int) -> tuple[int, int]:
        """(bucket, field) of a device number in the reverse map and the state hashes."""
        return divmod(number, NAMES_BUCKET)


REJECTED_LIST = "list:{account}"


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
        return f"{self.tag}:" + REJECTED_LIST.format(account=account_id)

    def applied_offset(self, topic: str, partition: int) -> str:
        """String: highest offset of the rejected topic/partition already in the lists."""
        return f"{self.tag}:applied:{topic}:{partition}"


# The version of this key layout, recorded with each partition's state: 2 since the tid key
# length-prefixes the install id (docs/decisions/0019). A different stored version is refused.
LAYOUT_VERSION = 3  # 3: windowed index, count ranks, deposit sums (docs/decisions/0021)
NAMES_BUCKET = 512
# Device sets (windowed buckets): a set becomes a bitmap once it holds more than
# devset_limit(devices of the account in the partition, bucket) members. A query unions a bitmap
# with one BITOP (~50 us per 156 KB here) but a set member by member (~1 us each), so day buckets,
# which every window longer than a day reads, turn into bitmaps early (devices / 4096: a bitmap at
# most 128x the set's memory); hour buckets, read only at a window's edges, late (devices / 256:
# at most 8x). A set of at most DEVSET_SET_MIN members stays one; none holds more than
# DEVSET_SET_MAX: Redis keeps a set of integers compact (intset, 4 B a member) only up to
# `set-max-intset-entries`, which the project's Redis runs with (REDIS_ENCODING_ARGS).
DEVSET_SET_MIN = 64
DEVSET_HOUR_DENSITY = 256
DEVSET_DAY_DENSITY = 4096
DEVSET_SET_MAX = 16_384


def devset_limit(devices: int, bucket: str) -> int:
    """A device set of bucket "h<hour>" / "d<day>" of an account with `devices` devices in the
    partition is a bitmap once it holds more than this many members (apply_batch.lua computes
    the same from the constants)."""
    density = DEVSET_HOUR_DENSITY if bucket.startswith("h") else DEVSET_DAY_DENSITY
    return max(DEVSET_SET_MIN, min(devices // density, DEVSET_SET_MAX))


RECENT_FIRES = 20  # per trigger and partition (trigger_recent)
SUM_DIGITS = 48  # deposit sums in 10^-10 units, zero-padded in the sorted set's members
# The encodings the layout is sized for; every Redis the project starts gets them (devstack,
# benches; deploy/compose.yaml spells them, tests/unit/test_lua_layout.py checks): a state /
# reverse-map bucket of NAMES_BUCKET fields stays listpack, a device set up to DEVSET_SET_MAX an intset.
REDIS_ENCODING_ARGS = ["--hash-max-listpack-entries", str(NAMES_BUCKET), "--hash-max-listpack-value", "160",
                       "--set-max-intset-entries", str(DEVSET_SET_MAX)]


def sum_member(units: int, number: int) -> str:
    """The deposit_sums member of a device: lexicographic order = numeric order of the sum."""
    return f"{units:0{SUM_DIGITS}d}:{number}"
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


# ------------------------------------------------------------------ the Lua scripts' header
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _lua_key_function(name: str, template: str) -> str:
    """`local function key_<name>(tag, <parts>) return tag .. ':<...>' .. part ... end`."""
    pieces = _PLACEHOLDER.split(template)  # text, name, text, name, ..., text
    params = pieces[1::2]
    exprs = []
    for i, piece in enumerate(pieces):
        if i % 2:
            exprs.append(piece)
        elif piece or i == 0:
            exprs.append(repr(":" + piece if i == 0 else piece))
    body = " .. ".join(["tag", *[e for e in exprs if e != "''"]])
    return f"local function key_{name}({', '.join(['tag', *params])}) return {body} end"


def lua_header() -> str:
    """The Lua prelude every script of the partition layout is loaded with: the layout's
    constants and one function per key (`key_segment(tag, account, code)`, ...), generated from
    PARTITION_KEYS, so the scripts never spell a key or a constant (a unit test checks)."""
    lines = ["-- generated by services/common/keys.py (lua_header): the key layout; do not edit",
             f"local NAMES_BUCKET = {NAMES_BUCKET}", f"local DEVICE_INDEX_BUCKETS = {DEVICE_INDEX_BUCKETS}",
             f"local DEVSET_SET_MIN = {DEVSET_SET_MIN}", f"local DEVSET_HOUR_DENSITY = {DEVSET_HOUR_DENSITY}",
             f"local DEVSET_DAY_DENSITY = {DEVSET_DAY_DENSITY}",
             f"local DEVSET_SET_MAX = {DEVSET_SET_MAX}",
             f"local SUM_DIGITS = {SUM_DIGITS}", f"local RECENT_FIRES = {RECENT_FIRES}"]
    lines += [_lua_key_function(name, template) for name, template in PARTITION_KEYS.items()]
    lines.append(_lua_key_function("rejected_list", REJECTED_LIST))
    return "\n".join(lines) + "\n"
