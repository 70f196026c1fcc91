"""The contract: the domain's reference and Redis with its Lua scripts agree on every generated
case - device states, dense numbers, bitmaps and their counters, published device-events (in
order, with ordinals and first-occurrence flags), the apply script's replies, and which devices
every filter selects (count and the paged walk). Hypothesis runs derandomized (tests/conftest.py);
a failure prints its reproduction blob."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cases import Case, cases, filters, partition_of
from engines import RedisEngine, ReferenceEngine
from services.common.models import PostbackRecord
from services.domain.filters import SegmentFilter

pytestmark = pytest.mark.integration

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


def _record(i, install, event, tid):
    return PostbackRecord(event_id=f"e{i}", account_id=1, install_id=install, event=event, occurred_at=1_000 + i,
                          received_at=1_000 + i, tid=tid)


def _case(*records: PostbackRecord) -> Case:
    by_partition: dict[int, list] = {0: [], 1: []}
    for r in records:
        by_partition[partition_of(r.account_id, r.install_id)].append(r)
    return Case(by_partition, [(p, 0, len(rs)) for p, rs in by_partition.items() if rs])


# Two different (device, code, tid) whose parts glued with ':' read the same (install ids and
# tids may hold ':'); the tid key once collided and the second postback was dropped as a duplicate.
COLLIDING_TIDS = _case(_record(0, "a:reg", "dep", "T"), _record(1, "a", "reg", "dep:T"))  # one partition


async def _agree(reference: ReferenceEngine, real: RedisEngine, case: Case) -> dict:
    for engine in (reference, real):
        await engine.apply(case)
    want, got = await reference.snapshot(), await real.snapshot()
    assert got["devices"] == want["devices"]
    assert got["bits"] == want["bits"]
    assert got["published"] == want["published"]
    assert got["replies"] == want["replies"]
    return want


@SETTINGS
@example(case=COLLIDING_TIDS)
@given(case=cases())
async def test_apply_agrees_with_the_reference(redis_client, key_prefix, case):
    real = RedisEngine(redis_client, key_prefix)
    try:
        await _agree(ReferenceEngine(), real, case)
    finally:
        await real.wipe()


@SETTINGS
@given(case=cases(), data=st.data())
async def test_filters_select_what_the_reference_selects(redis_client, key_prefix, case, data):
    reference, real = ReferenceEngine(), RedisEngine(redis_client, key_prefix)
    try:
        want = await _agree(reference, real, case)
        codes = sorted({c for _, _, events in want["devices"].values() for c in events})
        for account in sorted(real.accounts):
            for _ in range(4):
                include, exclude, match = data.draw(filters(codes))
                # what conditions compile to: codes required whatever `match` says
                require = tuple(data.draw(st.lists(st.sampled_from(codes or ["install"]), max_size=2)))
                f = SegmentFilter(include, exclude, match, require).normalized()
                assert await real.select(account, f) == await reference.select(account, f), (account, f)
    finally:
        await real.wipe()
