"""Triggers in the processor: what planning tells the apply script about them.

`TriggerPlan` wraps the registry's book (services/domain/triggers.py) as of a Redis time:
- per applied record, the fires its occurrence schedules (`schedules`: the apply script's event
  fields [11] for the record's code, [12] for the derived install of a new device);
- per tick, the timer hashes to decide and, for each, the trigger version in force at the tick
  (`tick_arg`, ARGV[11]): a per-device program of its filter (`device_program`), or "cancel".

`BookCache` keeps the plan fresh: a poll is planned only with a book read at a Redis time after
every record and tick in it (`ensure`), so a trigger created before a postback was received is in
force for it, and one deactivated before a tick is not (docs/decisions/0022)."""

from __future__ import annotations

import orjson
import structlog

from services.common.keys import SUM_DIGITS
from services.common.trigger_registry import Snapshot, TriggerRegistry
from services.domain.conditions import ConditionError, CountRank, InWindow, SumRange
from services.domain.codes import INSTALL
from services.domain.filters import SegmentFilter, filter_of
from services.domain.triggers import Tick, TriggerBook, TriggerVersion, schedulable_event_id, timer_list
from services.processor import metrics

log = structlog.get_logger("processor.triggers")
CANCEL, DECIDE = 0, 1


def device_program(f: SegmentFilter) -> dict:
    """The filter as apply_batch.lua's fire step evaluates it for one device: the codes its packed
    state must / must not hold, and the index steps (the same lookups as the query's verdict,
    services/query/segments.py `step_hits`)."""
    steps = []
    for s in f.steps:
        neg = int(s.negate)
        if isinstance(s, InWindow):
            steps.append(["w", neg, s.event, list(s.buckets)])
        elif isinstance(s, CountRank):
            steps.append(["k", neg, s.event, s.lo, -1 if s.hi is None else s.hi])
        elif isinstance(s, SumRange):
            steps.append(["s", neg, s.currency, f"{s.lo:0{SUM_DIGITS}d}", "" if s.hi is None else f"{s.hi:0{SUM_DIGITS}d}"])
        else:
            raise TypeError(f"not an index step: {s!r}")
    return {"inc": list(f.included()), "any": int(f.include_match == "any"), "exc": list(f.event_exclude),
            "req": list(f.require), "steps": steps}


class TriggerPlan:
    def __init__(self, book: TriggerBook, max_lateness_ms: int, budget: int, retention_days: int):
        self.book = book
        self.max_lateness_ms = max_lateness_ms
        self.budget = budget
        self.retention_days = retention_days

    def schedules(self, account_id: int, code: str, received_at: int, event_id: str) -> tuple[str, str]:
        """(fires of `code`, fires of the derived install), each as ";"-joined Schedule tokens."""
        if not self.book.has_account(account_id):
            return "", ""
        if not schedulable_event_id(event_id):
            metrics.UNSCHEDULABLE.inc()
            log.warning("cause_not_schedulable", account_id=account_id, event_id=event_id[:100],
                        message="an event id with ',', '|', a tab or a newline schedules no trigger fire")
            return "", ""
        return (";".join(s.token() for s in self.book.schedules(account_id, code, received_at)),
                "" if code == INSTALL else ";".join(s.token() for s in self.book.schedules(account_id, INSTALL, received_at)))

    def tick_arg(self, tick: Tick, offset: int) -> bytes:
        """ARGV[11] of the batch the tick ends: {o: its offset, at, lat, budget, lists: [[list,
        action, program index, trigger, version, account]], programs}."""
        lists, programs, index = [], [], {}
        for member in tick.due:
            trigger_id, epoch, _ = timer_list(member)
            v = self.book.in_force(trigger_id, epoch, tick.at)
            program = self._program(v, tick.at) if v is not None else None
            if program is None:
                lists.append([member, CANCEL, 0, trigger_id, 0, "0"])
                continue
            key = (v.id, v.version)
            if key not in index:
                index[key] = len(programs)
                programs.append(program)
            lists.append([member, DECIDE, index[key] + 1, trigger_id, v.version, str(v.account_id)])
        return orjson.dumps({"o": offset, "at": tick.at, "lat": self.max_lateness_ms, "budget": tick.budget,
                             "lists": lists, "programs": programs})

    def _program(self, v: TriggerVersion, at: int) -> dict | None:
        try:
            return device_program(filter_of(v.filter, at, self.retention_days))
        except ConditionError as exc:  # e.g. a from/to window now older than the retention
            log.warning("trigger_filter_unanswerable", trigger_id=v.id, version=v.version, error=str(exc),
                        message="its due fires are cancelled")
            return None


class BookCache:
    """The processor's copy of the registry, refreshed when a poll holds records newer than it."""

    def __init__(self, registry: TriggerRegistry, max_lateness_ms: int, budget: int, retention_days: int):
        self.registry = registry
        self.max_lateness_ms, self.budget, self.retention_days = max_lateness_ms, budget, retention_days
        self.snapshot: Snapshot | None = None
        self.plan: TriggerPlan | None = None

    async def ensure(self, newest_ms: int) -> TriggerPlan:
        """The plan from a book read after `newest_ms` (the newest receive or tick time of the poll)."""
        if self.snapshot is None or self.snapshot.read_at < newest_ms:
            before = self.snapshot
            self.snapshot = await self.registry.snapshot(before)
            if before is None or self.snapshot.book is not before.book:
                self.plan = TriggerPlan(self.snapshot.book, self.max_lateness_ms, self.budget, self.retention_days)
        return self.plan
