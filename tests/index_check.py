"""The windowed index, count ranks and deposit sums in Redis against a reference's published
occurrences (tests/reference_book.py): every bucket holds exactly the devices whose occurrences
fall in it, every count >= 2 is ranked with its count, every sum is exact and indexed once."""

from __future__ import annotations

from collections import Counter, defaultdict

from services.common.keys import SUM_DIGITS, PartitionKeys, sum_member
from services.domain.codes import deposit_ordinal
from services.domain.conditions import amount_units
from services.domain.windows import occurrence_buckets


async def check_indexes(redis, prefix: str, partitions: int, published, located: dict) -> dict:
    """`published`: the reference's DeviceEvents (one per applied occurrence, in order);
    `located`: (account, install id) -> (partition, device number). Returns what it compared."""
    buckets: dict[tuple, set[int]] = defaultdict(set)
    counts: Counter = Counter()
    sums: Counter = Counter()
    for e in published:
        if deposit_ordinal(e.event) is not None:
            continue  # derived ordinals have no windowed buckets
        p, num = located[(e.account_id, e.install_id)]
        for b in occurrence_buckets(e.occurred_at):
            buckets[(p, e.account_id, e.event, b)].add(num)
        counts[(p, e.account_id, e.event, num)] += 1
        if e.event == "dep" and e.amount and e.currency:
            sums[(p, e.account_id, e.currency, num)] += amount_units(e.amount)
    for (p, account, code, bucket), want in buckets.items():
        keys = PartitionKeys(prefix, p)
        bits, members = keys.window_bits(account, code, bucket), keys.window_set(account, code, bucket)
        assert not (await redis.exists(bits) and await redis.exists(members)), ("both forms", bucket)
        raw = await redis.get(bits)
        got = ({i * 8 + k for i, byte in enumerate(raw) for k in range(8) if byte & (0x80 >> k)} if raw
               else {int(m) for m in await redis.smembers(members)})
        assert got == want, (p, account, code, bucket)
    ranked: dict[tuple, dict[int, int]] = defaultdict(dict)
    for (p, account, code, num), n in counts.items():
        if n >= 2 and code != "dep":
            ranked[(p, account, code)][num] = n
    for (p, account, code), want in ranked.items():
        got = {int(m): int(s) for m, s in await redis.zrange(PartitionKeys(prefix, p).count_rank(account, code), 0, -1,
                                                               withscores=True)}
        assert got == want, (p, account, code)
    by_currency: dict[tuple, set[str]] = defaultdict(set)
    for (p, account, currency, num), units in sums.items():
        keys = PartitionKeys(prefix, p)
        bucket, field = keys.device_location(num)
        assert int(await redis.hget(keys.deposit_sum_of(account, bucket), f"{field}:{currency}")) == units
        by_currency[(p, account, currency)].add(sum_member(units, num))
    for (p, account, currency), want in by_currency.items():
        got = {m.decode() for m in await redis.zrange(PartitionKeys(prefix, p).deposit_sums(account, currency), 0, -1)}
        assert got == want and all(len(m.split(":")[0]) == SUM_DIGITS for m in got), (p, account, currency)
    return {"buckets": len(buckets), "ranked": sum(map(len, ranked.values())), "sums": len(sums)}
