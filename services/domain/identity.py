"""Whose state is this? The rule that keeps Redis state and the Kafka log it was built from together.

Redis stores, next to each partition's watermark, the identity of the log it applied: the
topic's id (Kafka's topic UUID, new whenever the topic is recreated), its partition count and the
key-layout version. A worker may continue a partition's state only from the same log: after a
recreated topic the offsets start again at 0, and every postback at or below the old watermark
would be skipped as "already applied" - silently. So a mismatch stops the service and says what
to do; it never skips.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogIdentity:
    topic_id: str
    partitions: int
    layout: int


@dataclass(frozen=True)
class PartitionState:
    """What Redis holds for one partition: its stored identity (None = none yet) and watermark."""

    identity: LogIdentity | None
    watermark: int  # -1: nothing applied


@dataclass(frozen=True)
class Judgement:
    ok: bool
    claim: tuple[int, ...] = ()  # partitions whose identity is to be recorded now
    problem: str = ""  # what happened and what to do, for the operator


def judge(topic: str, actual: LogIdentity, states: dict[int, PartitionState], log_ends: dict[int, int]) -> Judgement:
    """May a worker continue these partitions' state on this log? `log_ends`: next offset per partition."""
    problems, claim = [], []
    for p in sorted(states):
        state = states[p]
        stored = state.identity
        if stored is None:
            # Fresh state (or state written before identities were recorded): it belongs to this log
            # as long as its watermark fits in it.
            claim.append(p)
        elif stored.topic_id != actual.topic_id:
            problems.append(f"partition {p}: Redis holds the state of topic id {stored.topic_id}, but {topic!r} now has "
                            f"id {actual.topic_id} (the topic was deleted and recreated, or Kafka's data was lost)")
            continue
        elif stored.partitions != actual.partitions:
            problems.append(f"{topic!r} has {actual.partitions} partitions, the state in Redis was built with "
                            f"{stored.partitions}: devices would move to other partitions and count twice")
            break
        elif stored.layout != actual.layout:
            problems.append(f"partition {p}: the state in Redis has key layout {stored.layout}, this version uses "
                            f"{actual.layout}")
            continue
        end = log_ends.get(p, 0)
        if state.watermark >= end:
            problems.append(f"partition {p}: Redis has applied up to offset {state.watermark}, but the log ends before "
                            f"offset {end}: this state was not built from this log")
    if problems:
        return Judgement(False, problem="; ".join(problems) + ". Nothing was changed. If the log is the truth, rebuild "
                         "Redis from it: stop every processor, then `pbseg rebuild --yes` (docs/architecture.md, "
                         "\"Failure modes\"); if Redis is the truth, restore the topic it was built from.")
    return Judgement(True, tuple(claim))
