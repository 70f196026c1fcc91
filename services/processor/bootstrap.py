"""The one wiring place of the processor: settings in, a Faust app with its service out.

Nothing here runs at import time; `python -m services.processor` (__main__.py) reads the
settings and calls `build_app`. Faust provides the app and the worker lifecycle (signals,
start-up, shutdown); the postbacks topic is consumed in batches by aiokafka inside the
ProcessorService (service.py; pipeline.py says why)."""

from __future__ import annotations

import faust

from services.processor import metrics
from services.processor.decoding import rejection_labels
from services.processor.service import ProcessorService
from services.processor.settings import ProcessorSettings


def build_app(settings: ProcessorSettings) -> faust.App:
    app = faust.App(
        f"{settings.consumer_group}-worker",
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store="memory://",
        web_enabled=False,
        datadir=settings.datadir,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="latest",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(settings.session_timeout_ms / 3000, 0.5),
    )
    # The low-volume stream Faust consumes itself: every rejection (ingress and processor), as
    # metrics by stage and reason - what an operator watches to see bad senders.
    rejected_topic = app.topic(settings.topic_rejected, value_type=bytes, value_serializer="raw", key_serializer="raw")

    @app.agent(rejected_topic)
    async def observe_rejections(stream):
        async for value in stream:
            stage, reason = rejection_labels(value)
            metrics.REJECTIONS_SEEN.labels(stage, reason).inc()

    # Faust instantiates the services it starts: the settings travel on a subclass.
    app.service(type("ProcessorService", (ProcessorService,), {"settings": settings}))
    return app
