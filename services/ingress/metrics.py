"""Prometheus metrics of the ingress (served at /metrics).

Outcomes: accepted (2xx), rejected (4xx: bad input, key, catalog, rate limit, limits),
unavailable (503: Kafka or catalog not there). `reason` is the machine code of the reply.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("pbseg_ingress_requests_total", "Postback requests by outcome and reason",
                                ["outcome", "reason"], registry=r)
        self.produce_seconds = Histogram(
            "pbseg_ingress_produce_seconds", "Time from handing a postback to Kafka until its acknowledgement",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0), registry=r)
        self.in_flight = Gauge("pbseg_ingress_in_flight", "Postback requests being handled now", registry=r)
        self.rejected_writes = Counter("pbseg_ingress_rejected_records_total",
                                       "Records for the rejected-postbacks topic by result",
                                       ["result"], registry=r)
        self.catalog_version = Gauge("pbseg_ingress_catalog_version", "Version of the cached catalog", registry=r)
        self.kafka_reachable = Gauge("pbseg_ingress_kafka_reachable", "1 when the last Kafka probe succeeded", registry=r)
        # Children bound once: labels() costs a dict lookup and a lock per call.
        self.accepted = self.requests.labels("accepted", "accepted")

    def count(self, outcome: str, reason: str) -> None:
        self.requests.labels(outcome, reason).inc()
