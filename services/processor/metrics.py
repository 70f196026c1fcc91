"""Prometheus metrics of the processor (served on /metrics by web.py)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

EVENTS_APPLIED = Counter("pbseg_processor_events_applied_total", "Postbacks applied to Redis", registry=REGISTRY)
EVENTS_PER_SECOND = Gauge("pbseg_processor_events_applied_per_second",
                          "Postbacks applied per second over the last ~10 s", registry=REGISTRY)
BATCH_SIZE = Histogram("pbseg_processor_batch_size", "Records per partition batch (one Lua call)",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000), registry=REGISTRY)
APPLY_SECONDS = Histogram("pbseg_processor_apply_seconds", "Time to apply one poll's batches (one pipelined round trip)",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5), registry=REGISTRY)
LAG = Gauge("pbseg_processor_lag", "Records not yet applied, per partition (high watermark - position)",
            ["partition"], registry=REGISTRY)
DUPLICATES = Counter("pbseg_processor_duplicates_skipped_total",
                     "Records that changed nothing: kind=offset (redelivered) or tid (same transaction id)",
                     ["kind"], registry=REGISTRY)
REJECTIONS = Counter("pbseg_processor_rejections_total", "Records sent to the rejected topic", ["reason"], registry=REGISTRY)
OUTBOX_PUBLISHED = Counter("pbseg_processor_outbox_published_total", "Device-event records published to Kafka",
                           registry=REGISTRY)
OUTBOX_BACKLOG = Gauge("pbseg_processor_outbox_backlog", "Device-event records waiting in the outbox, per partition",
                       ["partition"], registry=REGISTRY)
WATERMARK_REGRESSIONS = Counter("pbseg_processor_watermark_regressions_total",
                                "Batches refused because Redis' watermark went back (rollback, failover): re-read from there",
                                ["partition"], registry=REGISTRY)
PAUSED = Gauge("pbseg_processor_paused", "1 while a part (pipeline, outbox) waits out a failed dependency",
               ["part"], registry=REGISTRY)
OUTBOX_FULL = Gauge("pbseg_processor_outbox_full",
                    "1 while consumption is paused because an outbox passed PROCESSOR_OUTBOX_MAX_ENTRIES",
                    registry=REGISTRY)
TICKS = Counter("pbseg_processor_ticks_total", "Ticks appended to postbacks partitions with due fires",
                registry=REGISTRY)
FIRES = Counter("pbseg_processor_fires_total", "Trigger fires decided by ticks, by outcome (sent: in the outbox)",
                ["outcome"], registry=REGISTRY)
UNSCHEDULABLE = Counter("pbseg_processor_unschedulable_causes_total",
                        "Occurrences whose event id cannot be filed as a trigger cause (no fire scheduled)",
                        registry=REGISTRY)
FIRES_PUBLISHED = Counter("pbseg_processor_fires_published_total", "task-trigger records published to Kafka",
                          registry=REGISTRY)
ASSIGNED = Gauge("pbseg_processor_assigned_partitions", "Partitions this worker owns", registry=REGISTRY)


class RateWindow:
    """Events per second over a sliding window, for the gauge (rate() works on the counter too)."""

    def __init__(self, window_s: float = 10.0, clock=time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self.samples: list[tuple[float, int]] = []

    def add(self, n: int) -> float:
        now = self.clock()
        self.samples.append((now, n))
        while self.samples and self.samples[0][0] < now - self.window_s:
            self.samples.pop(0)
        span = max(now - self.samples[0][0], 1.0) if self.samples else 1.0
        return sum(c for _, c in self.samples) / span


REJECTIONS_SEEN = Counter("pbseg_rejections_seen_total",
                          "Records on the rejected topic (ingress and processor) since this worker started",
                          ["stage", "reason"], registry=REGISTRY)
