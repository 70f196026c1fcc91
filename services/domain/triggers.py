"""Event-triggered tasks (issue 14): "on reg, wait 2 hours, push unless dep".

A trigger belongs to an account: `on` an event (its `first` occurrence on a device, or `every`
applied occurrence; a repeated tid is not an occurrence), a `delay`, and a segment `filter`
(services/domain/filters.py, conditions included). When the `on` event is applied, a fire is
scheduled at the occurrence's event time + delay; at the due time the filter is evaluated on the
device's state then: it holds -> one task-trigger.v1 record, else the fire is cancelled.

The rules here are the pure ones:

- the delay's spelling (`parse_delay`: PushExpress's `5d10h30m`, plus seconds) and its limit;
- which version of a trigger is in force at an instant (`TriggerBook`): every change is a new
  version stamped `valid_from`; the history is kept, so replaying the log decides as live did;
- which occurrences schedule fires (`TriggerBook.schedules`): those *received* at or after the
  trigger's version that activated it (no backfill);
- the lateness rule (`late`): a fire more than `max_lateness_ms` past its due time is skipped and
  counted, not sent (a reminder hours late is worse than none);
- the fire's identity and record (`fire_id`, `fire_record`): the same (trigger, cause occurrence)
  always gives the same fire_id and the same bytes.

Activation epochs: deactivating a trigger cancels its pending fires. Fires are filed under the
trigger's epoch (the number of times it was activated); one filed under an older epoch than the
one in force at its due time, or under an inactive or deleted trigger, is cancelled.

Pure: imports nothing outside the standard library and this package."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field, replace
from typing import Iterable

SCHEMA = "task-trigger.v1"
FIRST, EVERY = "first", "every"
OCCURRENCES = (FIRST, EVERY)
SECOND_MS = 1_000
DAY_MS = 86_400_000
MAX_DELAY_MS = 90 * DAY_MS  # pending fires are kept in Redis until due: bounded
MAX_TRIGGERS_PER_ACCOUNT = 100
MAX_NAME = 100
DEFAULT_MAX_LATENESS_MS = 6 * 3_600_000
_DELAY = re.compile(r"(?:([0-9]{1,3})d)?(?:([0-9]{1,4})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,8})s)?")
_UNIT_MS = (DAY_MS, 3_600_000, 60_000, SECOND_MS)


class TriggerError(ValueError):
    """A trigger the API refuses (422); the message says what to change. `field` names the part."""

    def __init__(self, message: str, field_: str):
        super().__init__(message)
        self.field = field_


def parse_delay(text: object) -> int:
    """`5d10h30m`, `2h`, `30s`, `0s`: days, hours, minutes, seconds, each optional, in that order,
    at least one; from 0 up to MAX_DELAY_MS. Returns milliseconds."""
    m = _DELAY.fullmatch(text) if isinstance(text, str) and text else None
    if m is None:
        raise TriggerError(f"`delay` {text!r} is not a delay: write days, hours, minutes and seconds in that order, "
                           "each optional, e.g. \"2h\", \"5d10h30m\", \"30s\" (\"0s\" fires at once)", "delay")
    ms = sum(int(v) * unit for v, unit in zip(m.groups(), _UNIT_MS) if v)
    if ms > MAX_DELAY_MS:
        raise TriggerError(f"`delay` {text!r} is longer than the maximum of {MAX_DELAY_MS // DAY_MS}d", "delay")
    return ms


@dataclass(frozen=True)
class TriggerVersion:
    """One version of a trigger, in force from `valid_from` (unix ms, the registry's clock) until
    the next version's. `filter` is the segments API's filter body, as the caller wrote it."""

    id: int
    account_id: int
    version: int
    valid_from: int
    name: str
    on_event: str
    occurrence: str
    delay: str
    delay_ms: int
    filter: dict
    active: bool
    epoch: int  # how many times the trigger was activated, this version's activation included
    created_at: int
    deleted: bool = False

    def as_dict(self) -> dict:
        return {"id": self.id, "account_id": self.account_id, "version": self.version, "valid_from": self.valid_from,
                "name": self.name, "on_event": self.on_event, "occurrence": self.occurrence, "delay": self.delay,
                "delay_ms": self.delay_ms, "filter": self.filter, "active": self.active, "epoch": self.epoch,
                "created_at": self.created_at, "deleted": self.deleted}

    @classmethod
    def from_dict(cls, d: dict) -> "TriggerVersion":
        return cls(**d)

    @property
    def live(self) -> bool:
        return self.active and not self.deleted

    def changed(self, stamp: int, **changes) -> "TriggerVersion":
        """The next version, in force from `stamp`. Activating an inactive trigger opens a new epoch."""
        new = replace(self, version=self.version + 1, valid_from=stamp, **changes)
        if new.active and not self.active:
            new = replace(new, epoch=self.epoch + 1)
        return new


@dataclass(frozen=True)
class Schedule:
    """A fire to schedule for an applied occurrence (apply_batch.lua, the event's trigger field)."""

    trigger_id: int
    epoch: int
    occurrence: str
    delay_ms: int

    def token(self) -> str:
        """`<trigger>:<epoch>:<f|e>:<delay ms>`: what the apply script reads."""
        return f"{self.trigger_id}:{self.epoch}:{self.occurrence[0]}:{self.delay_ms}"


@dataclass
class TriggerBook:
    """Every version of every trigger, as the processor holds them: which schedule an
    occurrence, and which is in force when a fire falls due."""

    versions: dict[int, list[TriggerVersion]] = field(default_factory=dict)  # id -> by valid_from
    _by_account: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, versions: Iterable[TriggerVersion]) -> "TriggerBook":
        book = cls()
        for v in sorted(versions, key=lambda v: (v.id, v.valid_from, v.version)):
            book.versions.setdefault(v.id, []).append(v)
        for tid, vs in book.versions.items():
            book._by_account.setdefault(vs[0].account_id, []).append(tid)
        return book

    def has_account(self, account_id: int) -> bool:
        return account_id in self._by_account

    def at(self, trigger_id: int, t: int) -> TriggerVersion | None:
        """The version in force at unix ms `t` (None: not created yet, or unknown)."""
        vs = self.versions.get(trigger_id)
        if not vs:
            return None
        i = bisect.bisect_right([v.valid_from for v in vs], t) - 1
        return vs[i] if i >= 0 else None

    def schedules(self, account_id: int, code: str, received_at: int) -> list[Schedule]:
        """The fires an occurrence of `code` received at `received_at` schedules (no backfill: a
        trigger applies to occurrences received while a live version of it is in force)."""
        out = []
        for tid in self._by_account.get(account_id, ()):
            v = self.at(tid, received_at)
            if v is not None and v.live and v.on_event == code:
                out.append(Schedule(tid, v.epoch, v.occurrence, v.delay_ms))
        return out

    def in_force(self, trigger_id: int, epoch: int, t: int) -> TriggerVersion | None:
        """The version fires filed under `epoch` are decided with at `t`; None: they are cancelled
        (the trigger is inactive or deleted at `t`, or was deactivated since they were filed)."""
        v = self.at(trigger_id, t)
        return v if v is not None and v.live and v.epoch == epoch else None


_TIMER_SAFE = re.compile(r"[^,|\t\n]{1,80}")


def schedulable_event_id(event_id: str) -> bool:
    """Whether a cause's event id fits a timer entry and a fire line (the ingress mints hex ids; a
    record written by another producer with ",", "|", a tab or a newline in its id schedules no fire,
    logged and counted by the processor)."""
    return _TIMER_SAFE.fullmatch(event_id) is not None


def late(due_at: int, at: int, max_lateness_ms: int) -> bool:
    """A fire decided at `at` is skipped (counted, not sent) when its due time is further back."""
    return at - due_at > max_lateness_ms


def fire_id(trigger_id: int, cause_event_id: str) -> str:
    """The identity of the fire of `trigger_id` caused by one occurrence (its device-event id)."""
    return f"t{trigger_id}-{cause_event_id}"


def fire_record(trigger_id: int, version: int, account_id: int, install_id: str, cause_event_id: str,
                due_at: int, fired_at: int) -> dict:
    """The task-trigger.v1 record, fields in the published order."""
    return {"schema": SCHEMA, "fire_id": fire_id(trigger_id, cause_event_id), "trigger_id": trigger_id,
            "trigger_version": version, "account_id": account_id, "install_id": install_id,
            "cause_event_id": cause_event_id, "due_at": due_at, "fired_at": fired_at}


def fire_line_record(line: str) -> dict:
    """The record of a fire line as the apply script writes it (outbox entry `f`, recent fires):
    "<account>\t<install id>\t<trigger>\t<version>\t<cause event id>\t<due>\t<decided at>"."""
    account, install_id, trigger, version, cause, due, at = line.split("\t")
    return fire_record(int(trigger), int(version), int(account), install_id, cause, int(due), int(at))


# --- the tick: a record the processor appends to a postbacks partition that has fires due ----
TICK_SCHEMA = "tick.v1"
TICK_PREFIX = b'{"schema":"tick.v1"'


def tick_value(at: int, due: list[str], budget: int) -> bytes:
    """A tick: decide the fires of the listed timer hashes (`<trigger>:<epoch>:<minute>`) due at or
    before `at`, at most `budget` of them. Ticks are in the log, so every decision sits at a log
    position: replaying the log (a restart, a Redis rollback, `pbseg rebuild`) decides the same."""
    return json.dumps({"schema": TICK_SCHEMA, "at": at, "due": due, "budget": budget},
                      separators=(",", ":")).encode()


@dataclass(frozen=True)
class Tick:
    at: int
    due: tuple[str, ...]
    budget: int


def parse_tick(value: bytes) -> Tick | None:
    """The tick in a postbacks record, or None when the record is not a tick."""
    if not value.startswith(TICK_PREFIX):
        return None
    d = json.loads(value)
    return Tick(int(d["at"]), tuple(str(x) for x in d["due"]), int(d["budget"]))


def timer_list(member: str) -> tuple[int, int, int]:
    """(trigger id, epoch, due minute) of a timer hash's name `<trigger>:<epoch>:<minute>`."""
    t, e, s = member.split(":")
    return int(t), int(e), int(s)
