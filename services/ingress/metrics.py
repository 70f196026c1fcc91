"""Prometheus metrics of the ingress (served at /metrics).

Outcomes: accepted (2xx), rejected (4xx: bad input, key, catalog, rate limit, limits),
unavailable (503: Kafka or catalog not there). `reason` is the machine code of the reply.

The per-request figures (requests by outcome and reason, in flight, the produce latency
histogram) are plain ints updated on the event loop's thread and exported by a collector
when /metrics is scraped: prometheus_client's own Counter/Gauge/Histogram take a lock per
call (docs/decisions/0003-ingress-hot-path-tuning.md, for what that cost). A process has one event loop
thread, so the ints need no lock; the scrape runs on that thread too.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

PRODUCE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class LatencyHistogram:
    """Bucket counts of a histogram in plain ints (le semantics: v <= bound)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = PRODUCE_BUCKETS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out


class _HotPathCollector:
    """Exports IngressMetrics' plain-int figures at scrape time."""

    def __init__(self, metrics: IngressMetrics):
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        requests = CounterMetricFamily("pbseg_ingress_requests", "Postback requests by outcome and reason",
                                       labels=["outcome", "reason"])
        if m.accepted_count:
            requests.add_metric(["accepted", "accepted"], m.accepted_count)
        for (outcome, reason), n in sorted(m.other_counts.items()):
            requests.add_metric([outcome, reason], n)
        yield requests
        yield GaugeMetricFamily("pbseg_ingress_in_flight", "Postback requests being handled now", value=m.in_flight)
        if m.open_connections is not None:
            yield GaugeMetricFamily("pbseg_ingress_connections", "Open client connections",
                                    value=m.open_connections())
        h = m.produce_seconds
        yield HistogramMetricFamily("pbseg_ingress_produce_seconds",
                                    "Time from handing a postback to Kafka until its acknowledgement",
                                    buckets=h.cumulative(), sum_value=h.total)


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Hot path: plain ints (see the module docstring).
        self.accepted_count = 0
        self.other_counts: dict[tuple[str, str], int] = {}
        self.in_flight = 0
        # Set by the HTTP server: a callable returning its open connections.
        self.open_connections = None
        self.produce_seconds = LatencyHistogram()
        r.register(_HotPathCollector(self))
        # Rare events: ordinary prometheus_client metrics.
        self.rejected_writes = Counter("pbseg_ingress_rejected_records_total",
                                       "Records for the rejected-postbacks topic by result",
                                       ["result"], registry=r)
        self.catalog_version = Gauge("pbseg_ingress_catalog_version", "Version of the cached catalog", registry=r)
        self.kafka_reachable = Gauge("pbseg_ingress_kafka_reachable", "1 when the last Kafka probe succeeded", registry=r)

    def count(self, outcome: str, reason: str) -> None:
        key = (outcome, reason)
        self.other_counts[key] = self.other_counts.get(key, 0) + 1
