"""Generated cases for the contract suite: adversarial postbacks, batch splits with redelivery,
and filters. The same case runs on the domain's reference and on Redis with its Lua scripts."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from hypothesis import strategies as st

from services.common.models import PostbackRecord

PARTITIONS = 2
DAY = 86_400_000
TID_RETENTION_MS = 30 * DAY
PROCESSED_AT = 1_764_547_200_123
# Edges of what postback.v1 and the ingress allow: 0, around the seconds/milliseconds switch
# (10^11), today, the year 2100, and Lua's exact-integer limit for the string compare.
TS_EDGES = [0, 1, 9, 10, 99, 100, 99_999_999_999, 100_000_000_000, 1_700_000_000_000, 1_764_547_200_000,
            4_102_444_800_000, 2**53 - 1]
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))  # install ids and tids: printable ASCII, no space
CODES = ["install", "reg", "dep", "dep", "dep", "promo", "Open_App", "dep_2"]  # dep_2: refused (derived)

install_ids = st.one_of(
    st.sampled_from(["a:b", "x:reg", "x", "a:reg", "a", "{tag}", "}{", "%s%d", "a:1:dep", ":", "{pbseg:p0}", "\\", '"q"']),
    st.text(PRINTABLE, min_size=1, max_size=8),
    st.text(PRINTABLE, min_size=120, max_size=128),
)
tids = st.one_of(st.none(), st.sampled_from(["T", "dep:T", "t:1", "{x}", "%"]), st.text(PRINTABLE, min_size=128, max_size=128))
timestamps = st.one_of(st.sampled_from(TS_EDGES), st.integers(0, 4_102_444_800_000))


@dataclass(frozen=True)
class Case:
    """Records per partition in offset order, and the batches (offset ranges, half-open) in which
    they are delivered: batches start at or before the first offset not yet applied, so they
    repeat earlier offsets (redelivery) and split the log at random places; now and then one
    starts past a hole (as after Redis lost writes) and must change nothing."""

    records: dict[int, list[PostbackRecord]]
    batches: list[tuple[int, int, int]]  # (partition, start, end)


def partition_of(account_id: int, install_id: str) -> int:
    return zlib.crc32(f"{account_id}:{install_id}".encode()) % PARTITIONS


@st.composite
def cases(draw) -> Case:
    pool = draw(st.lists(install_ids, min_size=1, max_size=6, unique=True))
    tid_pool = draw(st.lists(tids, min_size=1, max_size=4))
    n = draw(st.integers(1, 40))
    records: dict[int, list[PostbackRecord]] = {p: [] for p in range(PARTITIONS)}
    received = draw(st.integers(0, 2**40))
    for i in range(n):
        account = draw(st.sampled_from([1, 2, 2**53 + 1]))  # account ids beyond 2^53 stay exact
        install = draw(st.sampled_from(pool))
        # mostly small steps, sometimes past the tid retention (a tid may then count again)
        received += draw(st.sampled_from([0, 1, 1000, TID_RETENTION_MS - 1, TID_RETENTION_MS]))
        record = PostbackRecord(event_id=f"e{i}", account_id=account, install_id=install, event=draw(st.sampled_from(CODES)),
                                occurred_at=draw(timestamps), received_at=received, tid=draw(st.sampled_from(tid_pool)),
                                amount=draw(st.sampled_from([None, "19.99"])), currency=draw(st.sampled_from([None, "USD"])))
        records[partition_of(account, install)].append(record)
    batches = []
    for p, recs in records.items():
        applied = 0
        while applied < len(recs):
            if applied + 1 < len(recs) and draw(st.integers(0, 5)) == 0:  # a batch past a hole: refused
                hole = draw(st.integers(applied + 1, len(recs) - 1))
                batches.append((p, hole, draw(st.integers(hole + 1, len(recs)))))
            start = draw(st.integers(0, applied))
            end = draw(st.integers(applied + 1, len(recs)))
            batches.append((p, start, end))
            applied = end
        if recs and draw(st.booleans()):  # everything again, at the end
            batches.append((p, 0, len(recs)))
    order = draw(st.permutations(range(len(batches))))
    # keep each partition's batches in their order; interleave partitions at random
    by_partition = {p: [b for b in batches if b[0] == p] for p in records}
    merged, cursor = [], {p: 0 for p in records}
    for i in order:
        p = batches[i][0]
        merged.append(by_partition[p][cursor[p]])
        cursor[p] += 1
    return Case(records, merged)


@st.composite
def filters(draw, codes: list[str]):
    pool = sorted(set(codes) | {"never_seen"})
    include = draw(st.lists(st.sampled_from(pool), max_size=3))
    exclude = draw(st.lists(st.sampled_from(pool), max_size=3))
    return tuple(include), tuple(exclude), draw(st.sampled_from(["all", "any"]))
