"""Per-account token bucket: off by default, burst then steady rate, accounts independent."""

from services.ingress.rate_limit import AccountRateLimit


def test_off_by_default():
    limit = AccountRateLimit(0)
    assert not limit.enabled
    assert all(limit.admit(1, 0) == 0 for _ in range(10_000))


def test_burst_then_rate():
    limit = AccountRateLimit(10, burst=5)
    assert [limit.admit(1, 1_000) for _ in range(6)] == [0, 0, 0, 0, 0, 1]
    assert limit.admit(1, 1_050) == 1        # half a token refilled: still waiting
    assert limit.admit(1, 1_100) == 0        # one token after 100 ms at 10/s
    assert limit.admit(1, 1_100) == 1


def test_accounts_are_independent():
    limit = AccountRateLimit(1, burst=1)
    assert limit.admit(1, 0) == 0 and limit.admit(1, 0) == 1
    assert limit.admit(2, 0) == 0


def test_retry_after_covers_the_wait():
    limit = AccountRateLimit(0.1, burst=1)   # one per 10 s
    assert limit.admit(1, 0) == 0
    assert limit.admit(1, 0) == 10
    assert limit.admit(1, 10_000) == 0
