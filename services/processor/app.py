"""The processor as a Faust app (run with `faust -A services.processor.app worker`)."""

from __future__ import annotations

import faust
import orjson

from services.common.clock import SystemClock
from services.common.logs import configure_logging
from services.common.models import PostbackRecord
from services.common.redis_conn import async_redis
from services.processor.settings import ProcessorSettings
from services.processor.store import DeviceStateStore

settings = ProcessorSettings()
configure_logging(settings.log_level, settings.log_format)
clock = SystemClock()

app = faust.App(
    settings.consumer_group,
    broker=f"kafka://{settings.kafka_bootstrap_servers}",
    store="memory://",
    web_port=settings.web_port,
    web_host="127.0.0.1",
    topic_partitions=settings.postbacks_partitions,
    topic_allow_declare=False,
    consumer_auto_offset_reset="earliest",
)
postbacks = app.topic(settings.topic_postbacks, value_type=bytes, value_serializer="raw", key_serializer="raw")
store = DeviceStateStore(
    async_redis(settings.redis_url), settings.key_prefix, settings.topic_postbacks,
    int(settings.tid_retention_days * 86_400_000),
)


@app.agent(postbacks)
async def apply_postbacks(stream):
    async for event in stream.events():
        record = PostbackRecord.model_validate(orjson.loads(event.value))
        await store.apply(event.message.partition, [(event.message.offset, record)], clock.now_ms())
