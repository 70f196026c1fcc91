"""The two implementations the contract suite compares, behind one small interface: apply a
case's batches, then report the same plain snapshot (devices, numbers, counts, bitmaps as sets
of device numbers, published device-events in order, per-batch replies) and answer filters.

- ReferenceEngine: services/domain (process_postback, the filter evaluator).
- RedisEngine: the processor's store and apply_batch.lua, the query service's SegmentIndex and
  its Lua filter scripts, on the real Redis."""

from __future__ import annotations

import orjson

from cases import PARTITIONS, PROCESSED_AT, TID_RETENTION_MS, Case
from reference_book import postback_of
from services.common.keys import PartitionKeys
from services.domain.codes import is_postable
from services.domain.device_event import DeviceEvent
from services.domain.device_state import parse_device_state
from services.domain.filters import SegmentFilter, selects
from services.domain.postback import Applied, DeviceBook, RecordMeta, process_postback
from services.processor.planning import plan_partition_batch
from services.processor.store import DeviceStateStore
from services.query.segments import SegmentIndex

TOPIC = "contract"


class ReferenceEngine:
    def __init__(self):
        self.book = DeviceBook(TID_RETENTION_MS)
        self.published: dict[int, list[DeviceEvent]] = {p: [] for p in range(PARTITIONS)}
        self.replies: list[tuple[int, int, int, int]] = []  # (applied, redelivered, duplicate tids, gap) per batch

    async def apply(self, case: Case) -> None:
        for p, start, end in case.batches:
            applied = redelivered = dups = gap = 0
            for offset in range(start, end):
                record = case.records[p][offset]
                result = process_postback(self.book, postback_of(record), RecordMeta(p, offset), PROCESSED_AT)
                if isinstance(result, Applied):
                    self.published[p].extend(result.events)
                    # the script counts skipped offsets among the records it is given: refused
                    # ones never reach it (planning.py keeps them out, in the watermark only)
                    redelivered += result.redelivered and is_postable(record.event)
                    gap = gap or (offset == start and result.gap)
                    dups += result.duplicate_tid
                    applied += bool(result.events)
            self.replies.append((applied, redelivered, dups, int(gap)))

    async def snapshot(self) -> dict:
        devices = {(a, i): (d.partition, d.number, dict(d.events)) for (a, i), d in self.book.devices.items()}
        bits: dict[tuple[int, int, str], set[int]] = {}
        for (account, _), (p, number, events) in devices.items():
            for code in events:
                bits.setdefault((p, account, code), set()).add(number)
        return {"devices": devices, "bits": bits, "published": self.published, "replies": self.replies}

    async def select(self, account: int, f: SegmentFilter) -> list[str]:
        chosen = [(d.partition, d.number, i) for i, d in self.book.devices_of(account).items() if selects(f, d.events)]
        return [i for _, _, i in sorted(chosen)]


class RedisEngine:
    def __init__(self, redis, prefix: str):
        self.redis, self.prefix = redis, prefix
        self.store = DeviceStateStore(redis, prefix, TOPIC, TID_RETENTION_MS)
        self.index = SegmentIndex(redis, prefix, PARTITIONS)
        self.replies: list[tuple[int, int, int, int]] = []
        self.accounts: set[int] = set()

    async def apply(self, case: Case) -> None:
        for p, start, end in case.batches:
            recs = case.records[p]
            self.accounts |= {r.account_id for r in recs}
            messages = [(o, recs[o].model_dump_json(by_alias=True).encode()) for o in range(start, end)]
            [result] = await self.store.apply_batches([plan_partition_batch(p, messages, PROCESSED_AT)])
            self.replies.append((result.applied, result.skipped_offsets, result.duplicate_tids, result.gap))

    async def snapshot(self) -> dict:
        r = self.redis
        devices, bits = {}, {}
        published: dict[int, list[DeviceEvent]] = {}
        for p in range(PARTITIONS):
            keys = PartitionKeys(self.prefix, p)
            for account in self.accounts:
                async for key in r.scan_iter(match=_glob(keys.device_index(account, 0)[:-1]) + "*", count=1000):
                    for install, num in (await r.hgetall(key)).items():
                        install, num = install.decode(), int(num)
                        bucket, field = keys.device_location(num)
                        state = await r.hget(keys.device_states(account, bucket), field)
                        assert (await r.hget(keys.device_names(account, bucket), field)).decode() == install
                        assert (account, install) not in devices, "a device on two partitions"
                        devices[(account, install)] = (p, num, parse_device_state(state))
                codes = [c.decode() for c in await r.smembers(keys.segment_codes(account))]
                counts = {c.decode(): int(n) for c, n in (await r.hgetall(keys.device_counts(account))).items()}
                for code in codes:
                    raw = await r.get(keys.segment(account, code)) or b""
                    numbers = {i * 8 + b for i, byte in enumerate(raw) for b in range(8) if byte & (0x80 >> b)}
                    assert counts.get(code, 0) == len(numbers), (p, account, code)  # counter = BITCOUNT
                    bits[(p, account, code)] = numbers
            entries = await self.store.read_outboxes([p], 10_000)
            published[p] = [DeviceEvent.from_record(orjson.loads(value)) for e in entries[p] for _, value in e.records()]
        return {"devices": devices, "bits": bits, "published": published, "replies": self.replies}

    async def select(self, account: int, f: SegmentFilter) -> list[str]:
        out = []
        async for page in self.index.walk(account, f, page_size=3):  # small pages: the cursor carries across partitions
            out.extend(page)
        assert len(out) == await self.index.count(account, f)
        return out

    async def wipe(self) -> None:
        for p in range(PARTITIONS):
            await self.store.wipe_partition(p)


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\{}" else c for c in text)
