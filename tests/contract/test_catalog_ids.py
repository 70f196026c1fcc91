"""The id log's contract, on the Kafka adapter and its in-memory reference alike
(services/common/catalog_ids.py): ids are distinct, increasing per kind, above `above`, and every
allocation record can be read back (fillers are not)."""

from __future__ import annotations

import pytest

from services.common.catalog_ids import KafkaIdLog, MemoryIdLog
from services.common.topics import TopicSpec, ensure_topics
from services.domain.catalog_ids import ACCOUNT, EVENT, SEGMENT
from services.domain.codes import FIRST_CUSTOM_ID


@pytest.fixture(params=["memory", "kafka"])
async def id_log(request, unique, infra, delete_own_topics):
    if request.param == "memory":
        log = MemoryIdLog()
    else:
        # The topic exists with 2 partitions, as made before saved segments had ids: the log adds the third.
        topic = f"catalog-ids-{unique}"
        await ensure_topics(infra.kafka, {topic: TopicSpec(2, {"retention.ms": "-1"})})
        log = KafkaIdLog(infra.kafka, topic, TopicSpec(3, {"retention.ms": "-1"}), timeout_s=20)
    yield log
    await log.close()


async def test_a_fresh_log_counts_each_kind_from_its_first_id(id_log):
    """Accounts 1, 2, 3, events 101, 102 and segments 1, 2, interleaved: the kinds do not share a sequence."""
    kinds = [ACCOUNT, EVENT, SEGMENT, ACCOUNT, EVENT, ACCOUNT, SEGMENT]
    got = [await id_log.allocate(kind, {"n": i}) for i, kind in enumerate(kinds)]
    assert got == [1, FIRST_CUSTOM_ID, 1, 2, FIRST_CUSTOM_ID + 1, 3, 2]


async def test_an_allocation_is_above_the_highest_id_the_catalog_holds(id_log):
    """above=40 on a log at 1: the next id is 41, the one after 42, and nothing in between is listed."""
    assert await id_log.allocate(ACCOUNT, {"n": 0}) == 1
    assert await id_log.allocate(ACCOUNT, {"n": 1}, above=40) == 41
    assert await id_log.allocate(ACCOUNT, {"n": 2}) == 42
    assert await id_log.allocate(ACCOUNT, {"n": 3}, above=5) == 43  # already above: no filler
    listed = await id_log.allocations(ACCOUNT)
    assert [(i, e["n"]) for i, e in listed if e["n"] != 1] == [(1, 0), (42, 2), (43, 3)]
    # n=1 was written at id 2 first, then superseded by 41 (a filler run between): both listed
    assert [i for i, e in listed if e["n"] == 1] in ([2, 41], [41])


async def test_allocation_records_carry_their_entity(id_log):
    """What was allocated is what allocations() returns, per kind, oldest first."""
    await id_log.allocate(EVENT, {"account_id": 7, "code": "promo"})
    await id_log.allocate(ACCOUNT, {"name": "a"})
    await id_log.allocate(EVENT, {"account_id": 7, "code": "trial"})
    assert await id_log.allocations(EVENT) == [(FIRST_CUSTOM_ID, {"account_id": 7, "code": "promo"}),
                                               (FIRST_CUSTOM_ID + 1, {"account_id": 7, "code": "trial"})]
    assert await id_log.allocations(ACCOUNT) == [(1, {"name": "a"})]
