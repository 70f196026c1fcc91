"""The trigger rules (services/domain/triggers.py): delays, versions in force, schedules, epochs,
lateness, fire identity and the tick record."""

from __future__ import annotations

import pytest

from services.domain.triggers import (MAX_DELAY_MS, Schedule, TriggerBook, TriggerError, TriggerVersion,
                                      fire_id, fire_line_record, fire_record, late, parse_delay, parse_tick,
                                      tick_value, timer_list)


@pytest.mark.parametrize("text, ms", [("2h", 7_200_000), ("5d10h30m", (5 * 24 * 60 + 10 * 60 + 30) * 60_000),
                                      ("30s", 30_000), ("0s", 0), ("1d1s", 86_401_000), ("90d", MAX_DELAY_MS)])
def test_delays_in_pushexpress_form_plus_seconds(text, ms):
    assert parse_delay(text) == ms


@pytest.mark.parametrize("text", ["", "2x", "h", "30m2h", "1.5h", " 2h", "91d", "-1s", None, 5])
def test_bad_delays_say_how_to_write_one(text):
    with pytest.raises(TriggerError) as exc:
        parse_delay(text)
    assert exc.value.field == "delay" and ("e.g." in str(exc.value) or "maximum" in str(exc.value))


def v(version: int, valid_from: int, **kw) -> TriggerVersion:
    base = dict(id=7, account_id=3, version=version, valid_from=valid_from, name="n", on_event="reg",
                occurrence="first", delay="2h", delay_ms=7_200_000, filter={}, active=True, epoch=1, created_at=100)
    return TriggerVersion(**(base | kw))


def test_the_version_in_force_and_what_it_schedules():
    """No backfill: an occurrence received before the trigger existed schedules nothing; after a
    deactivation nothing; after re-activation, fires under the new epoch."""
    book = TriggerBook.of([v(1, 100), v(2, 200, active=False), v(3, 300, epoch=2)])
    assert book.at(7, 99) is None and book.at(7, 100).version == 1 and book.at(7, 250).version == 2
    assert book.schedules(3, "reg", 99) == [] and book.schedules(3, "dep", 150) == []
    assert book.schedules(3, "reg", 150) == [Schedule(7, 1, "first", 7_200_000)]
    assert book.schedules(3, "reg", 250) == [] and book.schedules(4, "reg", 150) == []
    assert book.schedules(3, "reg", 300) == [Schedule(7, 2, "first", 7_200_000)]
    assert Schedule(7, 2, "every", 5).token() == "7:2:e:5"


def test_fires_of_an_earlier_epoch_or_an_inactive_trigger_are_cancelled():
    book = TriggerBook.of([v(1, 100), v(2, 200, active=False), v(3, 300, epoch=2), v(4, 400, filter={"x": 1}, epoch=2),
                           v(5, 500, active=False, deleted=True, epoch=2)])
    assert book.in_force(7, 1, 150).version == 1
    assert book.in_force(7, 1, 250) is None  # deactivated meanwhile
    assert book.in_force(7, 1, 350) is None  # active again, but a new epoch: the old fires stay cancelled
    assert book.in_force(7, 2, 450).version == 4  # a changed filter decides the pending fires
    assert book.in_force(7, 2, 550) is None  # deleted


def test_changed_opens_an_epoch_only_on_activation():
    first = v(1, 100)
    off = first.changed(200, active=False)
    on = off.changed(300, active=True)
    renamed = on.changed(400, name="m")
    assert [(x.version, x.epoch, x.active) for x in (off, on, renamed)] == [(2, 1, False), (3, 2, True), (4, 2, True)]


def test_lateness_fire_identity_and_records():
    assert not late(1000, 1000 + 60_000, 60_000) and late(1000, 1001 + 60_000, 60_000)
    assert fire_id(7, "abc") == "t7-abc"
    record = fire_record(7, 2, 3, 'we"ird', "abc:install", 10, 20)
    assert list(record) == ["schema", "fire_id", "trigger_id", "trigger_version", "account_id", "install_id",
                            "cause_event_id", "due_at", "fired_at"]
    assert fire_line_record('3\twe"ird\t7\t2\tabc:install\t10\t20') == record


def test_the_tick_record_round_trips_and_is_told_apart():
    value = tick_value(1_764_000_000_123, ["7:1:1764000000", "8:2:1763999999"], 5000)
    tick = parse_tick(value)
    assert (tick.at, tick.due, tick.budget) == (1_764_000_000_123, ("7:1:1764000000", "8:2:1763999999"), 5000)
    assert parse_tick(b'{"schema":"postback.v1","event_id":"x"}') is None
    assert timer_list("7:1:1764000000") == (7, 1, 1_764_000_000)


def test_a_cause_event_id_must_fit_a_timer_entry():
    from services.domain.triggers import schedulable_event_id

    assert schedulable_event_id("0192ab34cd56ef7890123456789abcdef") and schedulable_event_id("ev1:install")
    assert not any(schedulable_event_id(x) for x in ("a,b", "a|b", "a\tb", "a\nb", "", "x" * 81))
