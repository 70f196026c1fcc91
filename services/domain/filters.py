"""Segment filters: which devices a push task selects, and why a device is or is not selected.

A filter names included and excluded event codes; `include_match` says whether a device needs
all or any of the included ones; an empty include list means every device of the account (the
`install` event). The evaluator works on a device's set of codes; the Redis scripts answer the
same question over bitmaps (tests/contract/ checks they agree).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Literal

from services.domain.codes import INSTALL, is_event_code, is_known_code
from services.domain.conditions import (DEFAULT_WINDOW_RETENTION_DAYS, compile_conditions, describe_step,
                                        parse_conditions)

MAX_CODES = 64  # per list (included, excluded)
Match = Literal["all", "any"]


@dataclass(frozen=True)
class SegmentFilter:
    event_include: tuple[str, ...] = ()
    event_exclude: tuple[str, ...] = ()
    include_match: Match = "all"
    # Codes that must all have occurred, whatever include_match says: what the filter's
    # conditions compile to (services/domain/conditions.py `as_codes`).
    require: tuple[str, ...] = ()
    # Steps over the windowed, count and sum indexes, ANDed (conditions.py `compile_conditions`):
    # `selects` / `verdict` judge the code lists only; the indexes answer the steps.
    steps: tuple = ()
    # The conditions as the caller wrote them (canonical JSON): what the cursor fingerprint names,
    # so a `last` window's page walk survives the hour turning (its steps' buckets move).
    conditions_spec: str = ""

    def codes(self) -> list[str]:
        return [*self.event_include, *self.event_exclude, *self.require,
                *(s.event for s in self.steps if hasattr(s, "event"))]

    def included(self) -> tuple[str, ...]:
        """The codes a device must have (all or any): `install` when none are named."""
        return self.event_include or (INSTALL,)

    def normalized(self) -> "SegmentFilter":
        """Duplicates removed and order fixed: the same set of devices, a canonical spelling."""
        return SegmentFilter(tuple(sorted(set(self.event_include))), tuple(sorted(set(self.event_exclude))),
                             self.include_match, tuple(sorted(set(self.require))), tuple(sorted(set(self.steps), key=repr)),
                             self.conditions_spec)

    def fingerprint(self) -> str:
        """12 hex characters naming the set of devices this filter selects (cursors carry it)."""
        n = self.normalized()
        parts = [list(n.event_include), list(n.event_exclude), n.include_match] + ([list(n.require)] if n.require else [])
        if n.conditions_spec:
            parts.append(n.conditions_spec)
        raw = json.dumps(parts, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Verdict:
    selected: bool
    reasons: tuple[str, ...] = field(default=())  # why not, in words; empty when selected


def selects(f: SegmentFilter, codes: Iterable[str]) -> bool:
    """Whether the filter selects a device on which exactly `codes` occurred."""
    return verdict(f, codes).selected


def verdict(f: SegmentFilter, codes: Iterable[str], step_hits: Iterable[bool] = ()) -> Verdict:
    """Whether the filter selects the device, and if not, why. `step_hits`: for each of the
    filter's index steps, whether the index holds the device (SegmentIndex.step_hits)."""
    have = set(codes)
    include = f.included()
    missing = [c for c in include if c not in have]
    excluded = [c for c in f.event_exclude if c in have]
    unmet = [c for c in f.require if c not in have]
    included = not missing if f.include_match == "all" else len(missing) < len(include)
    reasons = []
    if not included:
        reasons.append(f"{', '.join(missing)} did not occur" if f.include_match == "all"
                       else f"none of {', '.join(include)} occurred")
    if unmet:
        reasons.append(f"{', '.join(unmet)} did not occur")
    if excluded:
        reasons.append(f"{', '.join(excluded)} occurred")
    failed = [describe_step(s) for s, hit in zip(f.steps, step_hits) if hit == s.negate]
    reasons += failed
    return Verdict(included and not unmet and not excluded and not failed, tuple(reasons))


def filter_of(body: dict, now_ms: int, retention_days: int = DEFAULT_WINDOW_RETENTION_DAYS) -> SegmentFilter:
    """The filter a segments API filter body (`event_include`, `event_exclude`, `include_match`,
    `conditions`) selects with, at `now_ms` (windows ending now). Raises ConditionError /
    UnsupportedCondition for a condition it cannot answer."""
    conditions = body.get("conditions") or []
    c = compile_conditions(parse_conditions(conditions, now_ms, retention_days))
    spec = json.dumps(conditions, sort_keys=True, separators=(",", ":")) if c.steps else ""
    return SegmentFilter(tuple(body.get("event_include") or ()), tuple(body.get("event_exclude") or ()) + c.exclude,
                         body.get("include_match") or "all", c.require, c.steps, spec)


def invalid_codes(codes: Iterable[str]) -> list[str]:
    """Codes that cannot be event codes at all, in the order given, once each."""
    return list(dict.fromkeys(c for c in codes if not is_event_code(c)))


def unknown_codes(codes: Iterable[str], custom_codes: set[str] | frozenset[str]) -> list[str]:
    """Codes that are neither system codes, deposit ordinals nor custom codes of the account
    (active or inactive), in the order given, once each."""
    return list(dict.fromkeys(c for c in codes if not is_known_code(c, custom_codes)))
