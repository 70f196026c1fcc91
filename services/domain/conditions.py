"""Time, count and money conditions of a segment filter (issue 13): the model, its validation
with messages a person can act on, and the reference evaluator over a device's raw occurrences.

A filter's `conditions` are ANDed with its event_include / event_exclude part
(services/domain/filters.py). Each condition is one of:

- `{"event", "occurred": true|false, "within"?}`: at least one / no occurrence of the event
  (in the window, when given);
- `{"event", "count": {"gte"?, "lte"?}, "within"?}`: the number of occurrences (for `dep` the
  deposit count) between the bounds, inclusive;
- `{"deposit_sum": {"currency", "gte"?, "lte"?}}`: the sum of the `amount` of `dep`
  occurrences in that currency, over the device's lifetime.

Windows: `{"last": "<n>m|h|d"}` ends now; `{"from", "to"}` is unix ms, half-open. Precision is one
hour: a window covers the whole hours it touches, [floor(start / 1 h), ceil(end / 1 h)), so an
occurrence up to an hour outside the given bounds may count; never one further away.

Money is exact: an amount (at most 20 digits before the dot and 10 after, as the ingress accepts)
is an integer number of 10^-10 units of its currency (`amount_units`).

Pure: imports nothing outside the standard library."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Sequence

from services.domain.codes import EVENT_CODE_RE, deposit_ordinal
from services.domain.windows import window_buckets

HOUR_MS = 3_600_000
MAX_CONDITIONS = 20
DEFAULT_WINDOW_RETENTION_DAYS = 400
AMOUNT_SCALE = 10 ** 10  # units per 1.0 of a currency: the ingress accepts 10 decimals
_DURATION = re.compile(r"([1-9][0-9]{0,5})([mhd])")
_DURATION_MS = {"m": 60_000, "h": HOUR_MS, "d": 24 * HOUR_MS}
_AMOUNT = re.compile(r"([0-9]{1,20})(?:\.([0-9]{1,10}))?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


class ConditionError(ValueError):
    """A condition the API refuses (422); the message says what to change."""


@dataclass(frozen=True)
class Window:
    start: int  # unix ms, inclusive
    end: int  # unix ms, exclusive

    def covers(self, at: int) -> bool:
        """Hour precision: the whole hours the window touches."""
        return (self.start // HOUR_MS) * HOUR_MS <= at < -(-self.end // HOUR_MS) * HOUR_MS


@dataclass(frozen=True)
class Occurrence:
    """One applied occurrence of a device: its code, event time (ts, else received), and for
    deposits the amount in units (amount_units) and the currency."""

    event: str
    at: int
    amount: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Occurred:
    event: str
    occurred: bool = True
    window: Window | None = None


@dataclass(frozen=True)
class CountBetween:
    event: str
    gte: int | None = None
    lte: int | None = None
    window: Window | None = None


@dataclass(frozen=True)
class DepositSum:
    currency: str
    gte: int | None = None  # units
    lte: int | None = None


Condition = Occurred | CountBetween | DepositSum


def amount_units(text: str) -> int:
    """"19.99" -> 199_900_000_000 (10^-10 units). Raises ConditionError for anything the ingress
    would not accept as an amount."""
    m = _AMOUNT.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ConditionError(f"{text!r} is not an amount: write a non-negative decimal with a dot, e.g. \"100.00\" "
                             "(at most 20 digits before and 10 after the dot)")
    return int(m.group(1)) * AMOUNT_SCALE + int((m.group(2) or "").ljust(10, "0"))


def parse_duration(text: object) -> int:
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ConditionError(f"`within.last` {text!r} is not a duration: write a number and m, h or d, e.g. "
                             "\"30m\", \"24h\", \"7d\"")
    return int(m.group(1)) * _DURATION_MS[m.group(2)]


def parse_window(raw: object, now_ms: int, retention_days: int) -> Window:
    if not isinstance(raw, dict) or not raw:
        raise ConditionError("`within` is {\"last\": \"7d\"} or {\"from\": <unix ms>, \"to\": <unix ms>}")
    if set(raw) == {"last"}:
        window = Window(now_ms - parse_duration(raw["last"]), now_ms)
    elif set(raw) == {"from", "to"}:
        start, end = raw["from"], raw["to"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 53 for v in (start, end)):
            raise ConditionError("`within.from` and `within.to` are unix milliseconds (integers)")
        if end <= start:
            raise ConditionError(f"`within.to` ({end}) must be after `within.from` ({start}): the window is half-open, "
                                 "[from, to)")
        window = Window(start, end)
    else:
        raise ConditionError(f"`within` takes either `last` or both `from` and `to`, not {sorted(raw)}")
    oldest = now_ms - retention_days * 24 * HOUR_MS
    if window.start < oldest:
        raise ConditionError(f"the window starts more than {retention_days} days ago: windowed indexes are kept "
                             f"{retention_days} days (PBSEG_WINDOW_RETENTION_DAYS); use a later start, or a "
                             "condition without `within` for the whole history")
    return window


def _bounds(raw: object, what: str, parse) -> tuple:
    if not isinstance(raw, dict) or not raw or not set(raw) <= {"gte", "lte"} | ({"currency"} if what == "deposit_sum" else set()):
        keys = "`currency` and `gte` and/or `lte`" if what == "deposit_sum" else "`gte` and/or `lte`"
        raise ConditionError(f"`{what}` takes {keys}, e.g. {{\"gte\": 2}}")
    gte, lte = (parse(raw[k]) if k in raw else None for k in ("gte", "lte"))
    if gte is None and lte is None:
        raise ConditionError(f"`{what}` needs `gte`, `lte` or both")
    if gte is not None and lte is not None and lte < gte:
        raise ConditionError(f"`{what}.lte` ({raw['lte']}) is below `{what}.gte` ({raw['gte']}): nothing could match")
    return gte, lte


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 31:
        raise ConditionError(f"a count bound is a whole number from 0, not {value!r}")
    return value


def _event(raw: dict) -> str:
    event = raw.get("event")
    if not isinstance(event, str) or EVENT_CODE_RE.fullmatch(event) is None:
        raise ConditionError(f"`event` {event!r} is not an event code (letters, digits and _, at most 64)")
    return event


def parse_condition(raw: object, now_ms: int, retention_days: int = DEFAULT_WINDOW_RETENTION_DAYS) -> Condition:
    if not isinstance(raw, dict):
        raise ConditionError("a condition is an object: {\"event\": ..., \"occurred\"|\"count\": ..., \"within\"?} or "
                             "{\"deposit_sum\": {...}}")
    if "deposit_sum" in raw:
        if set(raw) != {"deposit_sum"}:
            raise ConditionError("`deposit_sum` stands alone in its condition (it is about `dep`, over the lifetime)")
        body = raw["deposit_sum"]
        currency = body.get("currency") if isinstance(body, dict) else None
        if not isinstance(currency, str) or _CURRENCY.fullmatch(currency) is None:
            raise ConditionError(f"`deposit_sum.currency` {currency!r} is not a currency code: three letters, e.g. \"USD\"")
        gte, lte = _bounds(body, "deposit_sum", amount_units)
        return DepositSum(currency.upper(), gte, lte)
    unknown = set(raw) - {"event", "occurred", "count", "within"}
    if unknown:
        raise ConditionError(f"unknown condition fields {sorted(unknown)}: a condition has `event`, `occurred` or "
                             "`count`, and `within`; or `deposit_sum`")
    event = _event(raw)
    window = parse_window(raw["within"], now_ms, retention_days) if "within" in raw else None
    if "count" in raw:
        if "occurred" in raw:
            raise ConditionError("a condition has `occurred` or `count`, not both (count {\"gte\": 1} means occurred)")
        gte, lte = _bounds(raw["count"], "count", _count)
        return CountBetween(event, gte, lte, window)
    occurred = raw.get("occurred", True)
    if not isinstance(occurred, bool):
        raise ConditionError(f"`occurred` is true or false, not {occurred!r}")
    return Occurred(event, occurred, window)


def parse_conditions(raw: object, now_ms: int, retention_days: int = DEFAULT_WINDOW_RETENTION_DAYS) -> tuple[Condition, ...]:
    """The conditions of a request; ConditionError names the failing one by its position."""
    if not isinstance(raw, list):
        raise ConditionError("`conditions` is a list")
    if len(raw) > MAX_CONDITIONS:
        raise ConditionError(f"at most {MAX_CONDITIONS} conditions per filter ({len(raw)} given)")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(parse_condition(item, now_ms, retention_days))
        except ConditionError as exc:
            raise ConditionError(f"conditions[{i}]: {exc}") from None
    return tuple(out)


def holds(condition: Condition, occurrences: Iterable[Occurrence]) -> bool:
    """Whether one device, with these applied occurrences, meets the condition (the reference)."""
    if isinstance(condition, DepositSum):
        total = sum(o.amount or 0 for o in occurrences if o.event == "dep" and o.currency == condition.currency)
        return _between(total, condition.gte, condition.lte)
    matching = [o for o in occurrences if o.event == condition.event
                and (condition.window is None or condition.window.covers(o.at))]
    if isinstance(condition, Occurred):
        return bool(matching) == condition.occurred
    return _between(len(matching), condition.gte, condition.lte)


def all_hold(conditions: Sequence[Condition], occurrences: Sequence[Occurrence]) -> bool:
    return all(holds(c, occurrences) for c in conditions)


def _between(value: int, gte: int | None, lte: int | None) -> bool:
    return (gte is None or value >= gte) and (lte is None or value <= lte)


class UnsupportedCondition(ConditionError):
    """A valid condition the indexes cannot answer exactly (422 `unsupported_condition`)."""


@dataclass(frozen=True)
class InWindow:
    """Devices on which `event` occurred in the window: the union of its windowed buckets
    (services/domain/windows.py); `negate` keeps the devices outside it."""

    event: str
    buckets: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class CountRank:
    """Devices whose lifetime count of `event` is in [lo, hi] (hi None = no bound), lo >= 2:
    a range of the count rank (a code other than dep); `negate` keeps the others."""

    event: str
    lo: int
    hi: int | None = None
    negate: bool = False


@dataclass(frozen=True)
class SumRange:
    """Devices whose lifetime deposit sum in `currency` is in [lo, hi] units (hi None = no
    bound), lo >= 1: a range of the deposit sums; `negate` keeps the others (sum 0 included)."""

    currency: str
    lo: int
    hi: int | None = None
    negate: bool = False


Step = InWindow | CountRank | SumRange


@dataclass(frozen=True)
class Compiled:
    """What the indexes answer a filter's conditions with: codes whose bitmap must / must not
    hold the device, and steps over the windowed, count and sum indexes, all ANDed."""

    require: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()


def compile_conditions(conditions: Sequence[Condition]) -> Compiled:
    """The conditions as codes and index steps, exactly equal to `all_hold` over the devices'
    occurrences (tests/integration/test_query_windows.py checks it against the evaluator):

    - `occurred` without `within`: the event's bitmap; with `within`: the window's buckets;
    - `count` of `dep`: the deposit ordinals dep_<n> ("at least n" is dep_n, "at most m" is not
      dep_<m+1>); of another event: "at least 1" is its bitmap, "at least n >= 2" and "at most m"
      are ranges of its count rank;
    - `deposit_sum`: a range of the currency's deposit sums ("at most m" alone keeps the devices
      without deposits in it: their sum is 0).

    Raises UnsupportedCondition, saying which and why, for `count` with `within` (no windowed
    count is kept: never approximated) and windows or counts of a deposit ordinal dep_<n>."""
    require: list[str] = []
    exclude: list[str] = []
    steps: list[Step] = []
    for i, c in enumerate(conditions):
        if isinstance(c, DepositSum):
            lo, hi = c.gte or 0, c.lte
            if lo >= 1:
                steps.append(SumRange(c.currency, lo, hi))
            elif hi is not None:
                steps.append(SumRange(c.currency, hi + 1, None, negate=True))
            continue
        if deposit_ordinal(c.event) is not None and (c.window is not None or isinstance(c, CountBetween)):
            raise UnsupportedCondition(f"conditions[{i}]: `{c.event}` is a deposit ordinal: windows and counts are "
                                       "kept for `dep` itself; write {\"event\": \"dep\", \"count\": {\"gte\": n}}")
        if isinstance(c, Occurred):
            if c.window is None:
                (require if c.occurred else exclude).append(c.event)
            else:
                steps.append(InWindow(c.event, tuple(window_buckets(c.window.start, c.window.end)), not c.occurred))
            continue
        if c.window is not None:
            raise UnsupportedCondition(f"conditions[{i}]: `count` together with `within` is not supported: no "
                                       "windowed count is kept, and counts are never approximated; use `occurred` "
                                       "with `within`, or `count` over the whole history")
        gte, lte = c.gte or 0, c.lte
        if lte is not None and lte < gte:
            raise ConditionError(f"conditions[{i}]: `count.lte` is below `count.gte`")
        if c.event == "dep":
            if gte >= 1:
                require.append(_deposit_code(gte))
            if lte is not None:
                exclude.append(_deposit_code(lte + 1))
            continue
        if gte == 1:
            require.append(c.event)
        elif gte >= 2:
            steps.append(CountRank(c.event, gte, lte))
            continue
        if lte == 0:
            exclude.append(c.event)
        elif lte is not None:
            steps.append(CountRank(c.event, lte + 1, None, negate=True))
    return Compiled(tuple(require), tuple(exclude), tuple(steps))


def describe_step(step: Step) -> str:
    """Why a device fails an index step, in words (the device lookup's verdict)."""
    if isinstance(step, InWindow):
        first, last = step.buckets[0], step.buckets[-1]
        span = f"the window ({_bucket_words(first)} to the end of {_bucket_words(last)})"
        return f"{step.event} occurred in {span}" if step.negate else f"{step.event} did not occur in {span}"
    if isinstance(step, CountRank):
        rng = f"at least {step.lo}" + ("" if step.hi is None else f" and at most {step.hi}")
        return f"{step.event} occurred {rng} times" if step.negate else f"{step.event} did not occur {rng} times"
    rng = f"at least {_units_words(step.lo)}" + ("" if step.hi is None else f" and at most {_units_words(step.hi)}")
    return (f"the deposit sum in {step.currency} is {rng}" if step.negate
            else f"the deposit sum in {step.currency} is not {rng}")


def _bucket_words(bucket: str) -> str:
    n = int(bucket[1:])
    at = datetime.fromtimestamp(n * (3600 if bucket[0] == "h" else 86_400), timezone.utc)
    return at.strftime("%Y-%m-%d %H:00 UTC") if bucket[0] == "h" else at.strftime("%Y-%m-%d")


def _units_words(units: int) -> str:
    whole, frac = divmod(units, AMOUNT_SCALE)
    return f"{whole}.{frac:010d}".rstrip("0").rstrip(".")


def _deposit_code(n: int) -> str:
    return "dep" if n == 1 else f"dep_{n}"
