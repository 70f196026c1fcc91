"""Time buckets of the windowed index: which UTC hour and day an occurrence lands in, and which
buckets answer a window exactly at its precision (services/domain/conditions.py `Window.covers`:
the whole hours the window touches).

An occurrence at event time `at` (unix ms) is in hour bucket "h<at // 1 h>" and day bucket
"d<at // 1 d>". A window [start, end) covers the hours [floor(start / 1 h), ceil(end / 1 h));
its buckets are the whole UTC days inside that range plus the hours at either edge, so a window
costs at most 46 hour buckets and one per day, whatever its length.

Pure: imports nothing outside the standard library."""

from __future__ import annotations

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HOURS_PER_DAY = 24


def hour_bucket(hour: int) -> str:
    return f"h{hour}"


def day_bucket(day: int) -> str:
    return f"d{day}"


def occurrence_buckets(at: int) -> tuple[str, str]:
    """The hour and day buckets of an occurrence at `at`."""
    return hour_bucket(at // HOUR_MS), day_bucket(at // DAY_MS)


def covered_hours(start: int, end: int) -> tuple[int, int]:
    """[first hour, end hour) a window [start, end) touches."""
    return start // HOUR_MS, -(-end // HOUR_MS)


def window_buckets(start: int, end: int) -> list[str]:
    """The buckets whose union is exactly the occurrences in the hours the window touches."""
    h0, h1 = covered_hours(start, end)
    d0, d1 = -(-h0 // HOURS_PER_DAY), h1 // HOURS_PER_DAY  # whole days inside [h0, h1)
    if d0 >= d1:
        return [hour_bucket(h) for h in range(h0, h1)]
    return ([hour_bucket(h) for h in range(h0, d0 * HOURS_PER_DAY)] + [day_bucket(d) for d in range(d0, d1)]
            + [hour_bucket(h) for h in range(d1 * HOURS_PER_DAY, h1)])


def bucket_end_ms(bucket: str) -> int:
    """Unix ms at which a bucket's time range ends."""
    n = int(bucket[1:])
    return (n + 1) * (HOUR_MS if bucket[0] == "h" else DAY_MS)


def day_start_ms(day: int) -> int:
    return day * DAY_MS
