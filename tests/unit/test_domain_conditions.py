"""Time, count and money conditions (services/domain/conditions.py): the reference semantics and
the 422 messages of bad conditions."""

import re

import pytest

from services.domain.conditions import (AMOUNT_SCALE, HOUR_MS, MAX_CONDITIONS, ConditionError, CountBetween,
                                        DepositSum, Occurred, Occurrence, Window, all_hold, amount_units, holds,
                                        parse_conditions)

NOW = 1_767_225_600_000  # 2026-01-01T00:00Z, on an hour
DAY = 24 * HOUR_MS


def parse(*raw, now=NOW):
    return parse_conditions(list(raw), now)


def test_the_issue_example_parses_to_the_model():
    """The example of the issue: windows ending now, a half-open window, a count range, a deposit sum."""
    got = parse({"event": "reg", "occurred": True, "within": {"last": "24h"}},
                {"event": "dep", "occurred": False, "within": {"last": "7d"}},
                {"event": "dep", "count": {"gte": 2, "lte": 5}},
                {"event": "trial", "within": {"from": NOW - 30 * DAY, "to": NOW}},
                {"deposit_sum": {"currency": "usd", "gte": "100.00"}})
    assert got == (Occurred("reg", True, Window(NOW - DAY, NOW)), Occurred("dep", False, Window(NOW - 7 * DAY, NOW)),
                   CountBetween("dep", 2, 5), Occurred("trial", True, Window(NOW - 30 * DAY, NOW)),
                   DepositSum("USD", 100 * AMOUNT_SCALE, None))


def test_amounts_are_exact_to_the_tenth_decimal():
    """Units of 10^-10: no float ever (0.1 + 0.2 is exactly 0.3 here)."""
    assert amount_units("0.1") + amount_units("0.2") == amount_units("0.3")
    assert amount_units("19.99") == 199_900_000_000 and amount_units("5") == 5 * AMOUNT_SCALE
    assert amount_units("0.0000000001") == 1 and amount_units("9" * 20 + "." + "9" * 10) == 10 ** 30 - 1


def test_windows_have_hour_precision_never_more_than_an_hour_off():
    """[from, to) covers the whole hours it touches: an hour outside counts, two hours never do."""
    w = Window(NOW + 30 * 60_000, NOW + 5 * HOUR_MS + 1)  # 00:30 .. 05:00:00.001
    assert w.covers(NOW) and w.covers(NOW + 5 * HOUR_MS + 59 * 60_000)  # the touched hours, whole
    assert not w.covers(NOW - 1) and not w.covers(NOW + 6 * HOUR_MS)
    assert not w.covers(NOW - 2 * HOUR_MS) and not w.covers(NOW + 7 * HOUR_MS)


def test_occurred_count_and_sum_on_raw_occurrences():
    """The evaluator over one device's occurrences: windows, NOT within, lifetime counts, per-currency sums."""
    occ = [Occurrence("reg", NOW - 3 * DAY), Occurrence("dep", NOW - 2 * DAY, amount_units("60.00"), "USD"),
           Occurrence("dep", NOW - 10 * HOUR_MS, amount_units("40.00"), "USD"),
           Occurrence("dep", NOW - 9 * HOUR_MS, amount_units("1000"), "EUR")]
    last = lambda d: Window(NOW - d, NOW)  # noqa: E731
    assert holds(Occurred("reg", True, last(4 * DAY)), occ)
    assert not holds(Occurred("reg", True, last(DAY)), occ)
    assert holds(Occurred("reg", False, last(DAY)), occ) and not holds(Occurred("dep", False, last(DAY)), occ)
    assert holds(CountBetween("dep", 3, 3), occ) and holds(CountBetween("dep", 2, None, last(DAY)), occ)
    assert not holds(CountBetween("dep", None, 1, last(DAY)), occ)
    assert holds(DepositSum("USD", amount_units("100.00"), amount_units("100.00")), occ)
    assert not holds(DepositSum("USD", amount_units("100.0000000001")), occ)
    assert holds(DepositSum("GBP", None, 0), occ)  # no deposits in a currency: the sum is 0
    assert all_hold(parse({"event": "reg", "within": {"last": "4d"}}, {"event": "dep", "count": {"gte": 3}}), occ)
    assert all_hold((), [])  # no condition: every device


@pytest.mark.parametrize("raw, says", [
    ({"event": "reg", "within": {"last": "24 hours"}}, "not a duration"),
    ({"event": "reg", "within": {"last": "0d"}}, "not a duration"),
    ({"event": "reg", "within": {"from": NOW, "to": NOW}}, "must be after"),
    ({"event": "reg", "within": {"from": NOW - DAY}}, "either `last` or both"),
    ({"event": "reg", "within": {"last": "401d"}}, "more than 400 days ago"),
    ({"event": "dep", "count": {"gte": 5, "lte": 2}}, "below `count.gte`"),
    ({"event": "dep", "count": {}}, "takes `gte` and/or `lte`"),
    ({"event": "dep", "count": {"gte": -1}}, "whole number"),
    ({"event": "dep", "count": {"gte": 1}, "occurred": True}, "not both"),
    ({"event": "no such", "occurred": True}, "not an event code"),
    ({"event": "reg", "occured": True}, "unknown condition fields"),
    ({"event": "reg", "occurred": "yes"}, "true or false"),
    ({"deposit_sum": {"currency": "US", "gte": "1"}}, "three letters"),
    ({"deposit_sum": {"currency": "USD", "gte": "1,5"}}, "not an amount"),
    ({"deposit_sum": {"currency": "USD", "gte": "10", "lte": "9.99"}}, "below `deposit_sum.gte`"),
    ({"deposit_sum": {"currency": "USD"}}, "needs `gte`, `lte` or both"),
    ({"deposit_sum": {"currency": "USD", "gte": "1"}, "event": "dep"}, "stands alone"),
    ("reg", "a condition is an object"),
])
def test_bad_conditions_say_what_to_change(raw, says):
    with pytest.raises(ConditionError) as caught:
        parse({"event": "reg"}, raw)
    assert str(caught.value).startswith("conditions[1]: ") and says in str(caught.value)


def test_too_many_conditions_are_refused_with_the_limit():
    with pytest.raises(ConditionError, match=f"at most {MAX_CONDITIONS} conditions"):
        parse(*[{"event": "reg"}] * (MAX_CONDITIONS + 1))


def _codes(conditions):
    from services.domain.conditions import compile_conditions
    c = compile_conditions(conditions)
    assert not c.steps
    return c.require, c.exclude


def test_conditions_the_bitmaps_answer_compile_to_codes():
    """occurred / not occurred; dep counts as deposit ordinals; at least 1 / at most 0 for any code."""
    assert _codes(parse({"event": "reg"}, {"event": "promo", "occurred": False})) == (("reg",), ("promo",))
    assert _codes(parse({"event": "dep", "count": {"gte": 2, "lte": 5}})) == (("dep_2",), ("dep_6",))
    assert _codes(parse({"event": "dep", "count": {"gte": 1}})) == (("dep",), ())
    assert _codes(parse({"event": "dep", "count": {"lte": 0}})) == ((), ("dep",))
    assert _codes(parse({"event": "dep", "count": {"gte": 0}})) == ((), ())
    assert _codes(parse({"event": "promo", "count": {"gte": 1}}, {"event": "trial", "count": {"lte": 0}})) == \
        (("promo",), ("trial",))


def test_windows_counts_and_sums_compile_to_index_steps():
    from services.domain.conditions import CountRank, InWindow, SumRange, compile_conditions
    h = NOW // HOUR_MS
    c = compile_conditions(parse({"event": "reg", "within": {"from": NOW + 10 * HOUR_MS, "to": NOW + 12 * HOUR_MS}},
                                 {"event": "promo", "count": {"gte": 2, "lte": 4}},
                                 {"event": "trial", "count": {"lte": 3}},
                                 {"deposit_sum": {"currency": "usd", "gte": "1", "lte": "2"}},
                                 {"deposit_sum": {"currency": "EUR", "lte": "5"}}))
    assert c.steps == (InWindow("reg", (f"h{h + 10}", f"h{h + 11}")), CountRank("promo", 2, 4), CountRank("trial", 4, None, True),
                       SumRange("USD", 10 ** 10, 2 * 10 ** 10), SumRange("EUR", 5 * 10 ** 10 + 1, None, True))


@pytest.mark.parametrize("raw, says", [
    ({"event": "reg", "count": {"gte": 2}, "within": {"last": "7d"}}, "`count` together with `within` is not supported"),
    ({"event": "dep_2", "within": {"last": "7d"}}, "`dep_2` is a deposit ordinal"),
    ({"event": "dep_3", "count": {"gte": 1}}, "`dep_3` is a deposit ordinal"),
])
def test_conditions_without_an_exact_index_are_refused_saying_so(raw, says):
    from services.domain.conditions import UnsupportedCondition, compile_conditions
    with pytest.raises(UnsupportedCondition, match=re.escape(says)):
        compile_conditions(parse({"event": "reg"}, raw))


def test_window_buckets_are_whole_days_inside_and_hours_at_the_edges():
    from services.domain.windows import window_buckets
    day = 24 * HOUR_MS
    assert window_buckets(3 * day + 5 * HOUR_MS + 1, 5 * day + 2 * HOUR_MS) == \
        [f"h{h}" for h in range(77, 96)] + ["d4"] + ["h120", "h121"]
    assert window_buckets(3 * day, 4 * day) == ["d3"]
    assert window_buckets(3 * day + 1, 3 * day + 2) == ["h72"]  # touches one hour: covers it


def _steps_hold(compiled, occurrences) -> bool:
    """The index steps' meaning, over raw occurrences (what the Redis scripts compute)."""
    from services.domain.conditions import CountRank, InWindow
    from services.domain.windows import occurrence_buckets
    have = {o.event for o in occurrences} | {"install"}
    deps = sum(o.event == "dep" for o in occurrences)
    have |= {f"dep_{n}" for n in range(2, deps + 1)}
    if not set(compiled.require) <= have or set(compiled.exclude) & have:
        return False
    for s in compiled.steps:
        if isinstance(s, InWindow):
            hit = any(o.event == s.event and set(occurrence_buckets(o.at)) & set(s.buckets) for o in occurrences)
        elif isinstance(s, CountRank):
            n = sum(o.event == s.event for o in occurrences)
            hit = n >= 2 and s.lo <= n and (s.hi is None or n <= s.hi)
        else:
            total = sum(o.amount or 0 for o in occurrences if o.event == "dep" and o.currency == s.currency)
            hit = total >= s.lo and (s.hi is None or total <= s.hi)
        if hit == s.negate:
            return False
    return True


def test_compiled_conditions_select_what_the_evaluator_selects():
    """Random devices (seed printed) and random conditions of every kind: the compiled codes and
    index steps hold exactly when the reference evaluator says the conditions hold."""
    import random
    from services.domain.conditions import compile_conditions
    seed = 13013
    print("seed", seed)
    rng = random.Random(seed)
    events = ["reg", "dep", "promo"]
    for _ in range(3000):
        occ = [Occurrence(e, NOW - rng.randrange(0, 60 * 24 * HOUR_MS),
                          rng.choice([10 ** 10, 25 * 10 ** 9]) if e == "dep" else None, "USD" if e == "dep" else None)
               for e in rng.choices(events, k=rng.randrange(0, 7))]
        raw = []
        for _ in range(rng.randrange(1, 3)):
            kind = rng.randrange(3)
            if kind == 0:
                cond = {"event": rng.choice(events), "occurred": rng.random() < 0.6}
                if rng.random() < 0.8:
                    cond["within"] = ({"last": f"{rng.randrange(1, 60)}d"} if rng.random() < 0.5 else
                                      {"from": NOW - rng.randrange(1, 59 * 24) * HOUR_MS - rng.randrange(HOUR_MS),
                                       "to": NOW - rng.randrange(0, 24) * HOUR_MS})
                    if cond["within"].get("to", NOW) <= cond["within"].get("from", 0):
                        cond["within"]["to"] = cond["within"]["from"] + HOUR_MS
            elif kind == 1:
                cond = {"event": rng.choice(events), "count": {k: v for k, v in (
                    ("gte", rng.choice([None, 0, 1, 2, 3])), ("lte", rng.choice([None, 0, 1, 2, 4]))) if v is not None}}
                if not cond["count"] or cond["count"].get("lte", 9) < cond["count"].get("gte", 0):
                    cond["count"] = {"gte": 2}
            else:
                cond = {"deposit_sum": {"currency": "USD", **{k: v for k, v in (
                    ("gte", rng.choice([None, "0", "1", "2.5", "3.5"])), ("lte", rng.choice([None, "0", "2", "5"])))
                    if v is not None}}}
                b = cond["deposit_sum"]
                if "gte" not in b and "lte" not in b or float(b.get("lte", 99)) < float(b.get("gte", 0)):
                    b.update(gte="1")
                    b.pop("lte", None)
            raw.append(cond)
        conditions = parse(*raw)
        assert _steps_hold(compile_conditions(conditions), occ) == all_hold(conditions, occ), (raw, occ)
