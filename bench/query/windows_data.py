"""Synthetic facts for the windowed-query benchmark (bench/query/windows_bench.py) and their bulk
load into Redis in the processor's layout, windowed index included.

Facts: N devices (BENCH_WINDOWS_DEVICES, default 10M), 90 days of history ending at `now`, 50
event codes (install, reg, dep with its ordinals dep_2..dep_5, and 43 custom codes c_01..c_43).
Every device has `install` at its first postback t0 (uniform over the 90 days): 80% of the
devices' first postback is `reg` (install derived from it at the same instant, as the processor
does: in the install bitmap and in the windowed index, as an occurrence of its own), the other 20%
post `install` and never register; 8% deposit: 65% of them once, the rest 2-5 times, each after
t0 with an exponential delay (mean 10 days, truncated at now); custom events are sparse: 0.02
occurrences per device (popularity Zipf-like, c_01 the most common), a quarter of them repeated
later (counts >= 2). Posted occurrences: ~1.175 per device, 11.7M rows at 10M devices, as in the
issue.

Device numbers are handed out in first-seen order, as the processor's INCR does: device i
(0-based, in t0 order, install id `d<i>`) is number i // 8 + 1 of partition i % 8.

No occurrence lies in the hours where the workload's window edges (30 d and 7 d before now) may
fall while the bench runs (GUARD_HOURS from now on): the service's windows end at its own clock,
the reference's at `now`, and the answer must not move under the measurement.

Deterministic: the same (seed, N, now) give the same facts. numpy does the work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from services.common.keys import NAMES_BUCKET, PartitionKeys, devset_limit
from services.domain.codes import DEP, INSTALL, REG, deposit_code
from services.domain.conditions import CountBetween, Occurred, Window, parse_conditions
from services.domain.windows import DAY_MS, HOUR_MS, day_bucket, hour_bucket

SEED = 20261201
PARTITIONS = 8
HISTORY_DAYS = 90
CUSTOM = [f"c_{i:02d}" for i in range(1, 44)]
CODES = [INSTALL, REG, DEP, *CUSTOM]  # code id = position; with dep_2..dep_5: 50 codes
MAX_DEPOSITS = 5
REGISTERED = 0.80  # devices whose first postback is reg (the others post install and never register)
DEPOSITORS = 0.08
CUSTOM_PER_DEVICE = 0.02  # custom occurrences per device, a quarter more repeated later
DEPOSIT_MEAN_DAYS = 10.0  # deposits follow t0 with this mean delay (truncated at now)
GUARD_HOURS = 6  # the bench must end within this many hours of `now`
# The workload (the issue): reg within 30 d, dep not within 7 d, dep count >= 2.
CONDITIONS = [{"event": REG, "within": {"last": "30d"}},
              {"event": DEP, "occurred": False, "within": {"last": "7d"}},
              {"event": DEP, "count": {"gte": 2}}]
WINDOW_HOURS = (30 * 24, 7 * 24)  # the windows' lengths above: no data where their edges move
N_BITS = 24  # device numbers per partition < 2^24 (16M per partition, 134M devices)


@dataclass
class Facts:
    """Every occurrence, one row each: device (0-based, t0 order), code id (CODES), at (unix ms)."""

    seed: int
    now_ms: int
    n_devices: int
    device: np.ndarray  # int64
    code: np.ndarray  # int16
    at: np.ndarray  # int64
    posted: np.ndarray  # bool: False for the derived install of a device whose first postback was another code

    def partition_of(self, device: np.ndarray) -> np.ndarray:
        return device % PARTITIONS

    def number_of(self, device: np.ndarray) -> np.ndarray:
        return device // PARTITIONS + 1

    def devices_in(self, p: int) -> int:
        return self.n_devices // PARTITIONS + (1 if p < self.n_devices % PARTITIONS else 0)

    def deposit_counts(self) -> np.ndarray:
        return np.bincount(self.device[self.code == CODES.index(DEP)], minlength=self.n_devices)


def default_now_ms() -> int:
    return int(time.time() * 1000)


def _guard(at: np.ndarray, now_ms: int) -> np.ndarray:
    """Moves occurrences out of the guard hours (the GUARD_HOURS after each window's edge at
    `now`) by GUARD_HOURS, later; they stay in the past (the edges are days back)."""
    h0 = now_ms // HOUR_MS
    for length in WINDOW_HOURS:
        lo = (h0 - length) * HOUR_MS
        hi = lo + GUARD_HOURS * HOUR_MS
        inside = (at >= lo) & (at < hi)
        at = np.where(inside, at + GUARD_HOURS * HOUR_MS, at)
    return at


def generate(n_devices: int, now_ms: int, seed: int = SEED) -> Facts:
    rng = np.random.default_rng([seed, n_devices])
    start = now_ms - HISTORY_DAYS * DAY_MS
    t0 = np.sort(_guard(rng.integers(start, now_ms, n_devices, dtype=np.int64), now_ms))
    every = np.arange(n_devices, dtype=np.int64)
    registered = rng.random(n_devices) < REGISTERED
    reg = every[registered]
    # install at t0 on every device: posted by the devices that never register, derived from the
    # first postback (reg, at the same instant) on the others
    devs, codes, ats, posted = [every, reg], [np.zeros(n_devices, np.int16), np.full(len(reg), CODES.index(REG), np.int16)], \
        [t0, t0[reg]], [~registered, np.ones(len(reg), bool)]

    def later(d: np.ndarray, after: np.ndarray, mean_days: float | None = None) -> np.ndarray:
        """In [after, now): uniform, or exponential with this mean truncated at now; never before
        the device's first postback (after the guard)."""
        u, span = rng.random(len(d)), (now_ms - after).astype(np.float64)
        if mean_days is None:
            at = after + (u * span).astype(np.int64)
        else:
            scale = mean_days * DAY_MS
            at = after + (-scale * np.log1p(-u * -np.expm1(-span / scale))).astype(np.int64)
        return np.maximum(_guard(np.minimum(at, now_ms - 1), now_ms), t0[d])

    depositors = np.flatnonzero(rng.random(n_devices) < DEPOSITORS)
    k = np.where(rng.random(len(depositors)) < 0.65, 1, rng.integers(2, MAX_DEPOSITS + 1, len(depositors)))
    dep = np.repeat(depositors, k)
    devs.append(dep), codes.append(np.full(len(dep), CODES.index(DEP), np.int16))
    ats.append(later(dep, t0[dep], DEPOSIT_MEAN_DAYS)), posted.append(np.ones(len(dep), bool))

    base = int(round(n_devices * CUSTOM_PER_DEVICE))
    weights = 1.0 / np.arange(1, len(CUSTOM) + 1) ** 0.8
    c_code = (rng.choice(len(CUSTOM), base, p=weights / weights.sum()) + 3).astype(np.int16)
    c_dev = rng.integers(0, n_devices, base, dtype=np.int64)
    c_at = later(c_dev, t0[c_dev])
    again = np.flatnonzero(rng.random(base) < 0.25)
    devs += [c_dev, c_dev[again]]
    codes += [c_code, c_code[again]]
    ats += [c_at, later(c_dev[again], c_at[again])]
    posted += [np.ones(base + len(again), bool)]
    return Facts(seed, now_ms, n_devices, np.concatenate(devs), np.concatenate(codes), np.concatenate(ats),
                 np.concatenate(posted))


# ------------------------------------------------------------------ the reference answer
def workload_conditions(now_ms: int):
    return parse_conditions(CONDITIONS, now_ms)


def covered_range(w: Window) -> tuple[int, int]:
    """[from, to) in unix ms of the whole hours a window touches (Window.covers)."""
    return (w.start // HOUR_MS) * HOUR_MS, -(-w.end // HOUR_MS) * HOUR_MS


def reference_count(facts: Facts, now_ms: int, conditions: list[dict] = CONDITIONS) -> int:
    """Devices meeting every condition (services/domain/conditions.py `holds`, vectorized);
    every device has install, the base of an empty include list."""
    ok = np.ones(facts.n_devices, bool)
    for c in parse_conditions(conditions, now_ms):
        sel = facts.code == CODES.index(c.event)
        if c.window is not None:
            lo, hi = covered_range(c.window)
            sel &= (facts.at >= lo) & (facts.at < hi)
        n = np.bincount(facts.device[sel], minlength=facts.n_devices)
        if isinstance(c, Occurred):
            ok &= (n > 0) == c.occurred
        elif isinstance(c, CountBetween):
            ok &= ((c.gte is None) | (n >= (c.gte or 0))) & ((c.lte is None) | (n <= (c.lte or 0)))
        else:
            raise ValueError(f"not in the bench's workload: {c}")
    return int(ok.sum())


def reference_daily(facts: Facts, code: str, days: int, now_ms: int) -> dict[int, int]:
    """Devices per UTC day (day number -> count) on which `code` occurred, for the `days` days
    ending today (today included)."""
    first = now_ms // DAY_MS - days + 1
    sel = facts.code == CODES.index(code)
    day = facts.at[sel] // DAY_MS
    recent = day >= first
    pairs = np.unique(((day[recent] - first) << 40) | facts.device[sel][recent])
    counts = np.bincount(pairs >> 40, minlength=days)
    return {first + i: int(counts[i]) for i in range(days)}


# ------------------------------------------------------------------ device sets, grouped
@dataclass
class DeviceSets:
    """Unique device numbers per (partition, code id, bucket), in key order."""

    keys: np.ndarray  # (partition, code id, bucket number) per group, shape (g, 3)
    starts: np.ndarray  # group i is members[starts[i]:starts[i+1]]
    members: np.ndarray  # uint32 device numbers

    def __len__(self) -> int:
        return len(self.keys)

    def group(self, i: int) -> np.ndarray:
        return self.members[self.starts[i]:self.starts[i + 1]]


def group_sets(part: np.ndarray, code: np.ndarray, bucket: np.ndarray, number: np.ndarray) -> DeviceSets:
    b0 = int(bucket.min()) if len(bucket) else 0
    span = int(bucket.max()) - b0 + 1 if len(bucket) else 1
    key = (code.astype(np.int64) * PARTITIONS + part) * span + (bucket - b0)
    u = np.unique((key << N_BITS) | number)
    gkey = u >> N_BITS
    starts = np.concatenate([[0], np.flatnonzero(np.diff(gkey)) + 1, [len(u)]])
    g = gkey[starts[:-1]]
    cp, b = np.divmod(g, span)
    c, p = np.divmod(cp, PARTITIONS)
    return DeviceSets(np.stack([p, c, b + b0], axis=1), starts, (u & ((1 << N_BITS) - 1)).astype(np.uint32))


def bitmap_of(numbers: np.ndarray) -> bytes:
    """Redis bitmap bytes (bit n = MSB-first bit of byte n // 8, as SETBIT), as long as SETBIT
    of the highest number makes it."""
    bits = np.zeros(int(numbers.max()) + 1, bool)
    bits[numbers] = True
    return np.packbits(bits, bitorder="big").tobytes()


def devset_threshold(devices_in_partition: int, kind: str) -> int:
    """A device set of an hour ("h") or day ("d") bucket is a bitmap once it holds more than this
    many members (keys.py)."""
    return devset_limit(devices_in_partition, kind)


# ------------------------------------------------------------------ the Redis bulk load
@dataclass
class LoadStats:
    memory: dict[str, int] = field(default_factory=dict)  # phase -> used_memory after it
    window_sets: int = 0
    window_set_members: int = 0
    window_bitmaps: int = 0
    count_rank_keys: int = 0
    count_rank_members: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class Loader:
    """Writes the facts in the processor's layout (services/common/keys.py), in bulk, with
    progress bars; keeps the device sets of `keep` codes (for the in-process engines)."""

    def __init__(self, r, facts: Facts, prefix: str, account: int, keep=(REG, DEP), progress=None):
        self.r, self.f, self.prefix, self.account = r, facts, prefix, account
        self.keep = {CODES.index(c) for c in keep}
        self.kept: dict[tuple[int, str, str], np.ndarray] = {}  # (partition, code, bucket) -> numbers
        self.segments: dict[tuple[int, str], np.ndarray] = {}  # (partition, code) -> numbers (kept codes, dep_<k>)
        self.stats = LoadStats()
        self.window_keys_p0: list[tuple[str, str]] = []  # (key, code): partition 0's window keys
        self.progress = progress or (lambda it, **kw: it)
        self.part = facts.partition_of(facts.device)
        self.number = facts.number_of(facts.device)

    def keys(self, p: int) -> PartitionKeys:
        return PartitionKeys(self.prefix, p)

    def _mark(self, phase: str, t0: float) -> None:
        self.stats.memory[phase] = self.r.info("memory")["used_memory"]
        self.stats.seconds[phase] = time.perf_counter() - t0

    def base_layout(self) -> None:
        """Segment bitmaps (dep_<k> from the deposit counts), codes sets, device counters,
        sequences and the reverse map: what the existing query bench writes."""
        t0, f, acct = time.perf_counter(), self.f, self.account
        sets = group_sets(self.part, f.code.astype(np.int64), np.zeros(len(f.code), np.int64), self.number)
        deposits = f.deposit_counts()
        per_code: dict[int, dict[str, np.ndarray]] = {p: {} for p in range(PARTITIONS)}
        for i in range(len(sets)):
            p, c, _ = (int(x) for x in sets.keys[i])
            per_code[p][CODES[c]] = sets.group(i)
        for k in range(2, MAX_DEPOSITS + 1):
            d = np.flatnonzero(deposits >= k)
            for p in range(PARTITIONS):
                mine = d[d % PARTITIONS == p]
                if len(mine):
                    per_code[p][deposit_code(k)] = (mine // PARTITIONS + 1).astype(np.uint32)
        pipe = self.r.pipeline(transaction=False)
        for p in self.progress(range(PARTITIONS), desc="segments + reverse map", unit="partition"):
            keys, n, codes = self.keys(p), f.devices_in(p), per_code[p]
            if not n:
                continue
            pipe.set(keys.device_seq(acct), n)
            for code, numbers in codes.items():
                pipe.set(keys.segment(acct, code), bitmap_of(numbers))
                if code in (REG, DEP) or code.startswith(DEP + "_"):
                    self.segments[(p, code)] = numbers
            pipe.sadd(keys.segment_codes(acct), *codes)
            pipe.hset(keys.device_counts(acct), mapping={c: len(v) for c, v in codes.items()})
            pipe.execute()
            for b in range(0, n // NAMES_BUCKET + 1):  # device number k of partition p is d<(k-1)*8+p>
                lo, hi = max(1, b * NAMES_BUCKET), min(n, (b + 1) * NAMES_BUCKET - 1)
                if lo <= hi:
                    pipe.hset(keys.device_names(acct, b),
                              mapping={k % NAMES_BUCKET: f"d{(k - 1) * PARTITIONS + p}" for k in range(lo, hi + 1)})
                if b % 200 == 199:
                    pipe.execute()
            pipe.execute()
        self._mark("base", t0)

    def windows(self, kind: str) -> None:
        """The hour ("h") or day ("d") buckets of every occurrence (a new device's derived install
        included, as the processor windows it), each a device set: a Set of
        decimal device numbers, or a bitmap when its final size passes the partition's threshold."""
        t0, f, acct = time.perf_counter(), self.f, self.account
        sel = np.ones(len(f.posted), bool)  # the processor windows the derived install too
        bucket = f.at[sel] // (HOUR_MS if kind == "h" else DAY_MS)
        name = hour_bucket if kind == "h" else day_bucket
        sets = group_sets(self.part[sel], f.code[sel].astype(np.int64), bucket, self.number[sel])
        thresholds = [devset_threshold(f.devices_in(p), kind) for p in range(PARTITIONS)]
        pipe, pending = self.r.pipeline(transaction=False), 0
        for i in self.progress(range(len(sets)), desc=f"{'hour' if kind == 'h' else 'day'} buckets", unit="key",
                               mininterval=1, miniters=2000):
            p, c, b = (int(x) for x in sets.keys[i])
            numbers, code, bname = sets.group(i), CODES[c], name(b)
            keys = self.keys(p)
            if len(numbers) > thresholds[p]:
                pipe.set(keys.window_bits(acct, code, bname), bitmap_of(numbers))
                self.stats.window_bitmaps += 1
                pending += len(numbers) // 64 + 1
            else:
                pipe.sadd(keys.window_set(acct, code, bname), *numbers.tolist())
                self.stats.window_sets += 1
                self.stats.window_set_members += len(numbers)
                pending += len(numbers) + 1
            if c in self.keep:
                self.kept[(p, code, bname)] = numbers
            if p == 0:
                self.window_keys_p0.append((keys.window_bits(acct, code, bname) if len(numbers) > thresholds[p]
                                            else keys.window_set(acct, code, bname), code))
            if pending > 200_000:
                pipe.execute()
                pending = 0
        pipe.execute()
        self._mark("hour buckets" if kind == "h" else "day buckets", t0)

    def count_ranks(self) -> None:
        """Lifetime counts >= 2 of every code but dep (whose counts are the dep_<k> bitmaps)."""
        t0, f, acct = time.perf_counter(), self.f, self.account
        sel = f.code != CODES.index(DEP)
        key = ((f.code[sel].astype(np.int64) * PARTITIONS + self.part[sel]) << N_BITS) | self.number[sel]
        u, n = np.unique(key, return_counts=True)
        u, n = u[n >= 2], n[n >= 2]
        g = u >> N_BITS
        starts = np.concatenate([[0], np.flatnonzero(np.diff(g)) + 1, [len(u)]]) if len(u) else np.array([0])
        pipe = self.r.pipeline(transaction=False)
        for i in range(len(starts) - 1):
            lo, hi = starts[i], starts[i + 1]
            c, p = divmod(int(g[lo]), PARTITIONS)
            numbers = (u[lo:hi] & ((1 << N_BITS) - 1)).tolist()
            counts = n[lo:hi].tolist()
            for j in range(0, len(numbers), 50_000):
                pipe.zadd(self.keys(p).count_rank(acct, CODES[c]),
                          dict(zip(map(str, numbers[j:j + 50_000]), counts[j:j + 50_000])))
            self.stats.count_rank_keys += 1
            self.stats.count_rank_members += hi - lo
        pipe.execute()
        self._mark("count ranks", t0)
