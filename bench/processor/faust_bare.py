"""The bare-Faust baseline of bench/processor: an agent that does nothing with the records
but count them, reading batches with `stream.take()` (BENCH_FAUST_MODE=take, default) or one
event at a time (BENCH_FAUST_MODE=events). It writes `count first_ts last_ts` to
BENCH_FAUST_STATUS about every 0.2 s. Run: faust -A faust_bare worker (PYTHONPATH=here)."""

import os
import time

import faust

TOPIC = os.environ["BENCH_FAUST_TOPIC"]
STATUS = os.environ["BENCH_FAUST_STATUS"]
MODE = os.environ.get("BENCH_FAUST_MODE", "take")

app = faust.App(os.environ["BENCH_FAUST_GROUP"], broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}",
                store="memory://", web_enabled=False, topic_allow_declare=False, topic_disable_leader=True,
                consumer_auto_offset_reset="earliest", datadir=os.environ.get("BENCH_FAUST_DATADIR", "/tmp/bench-faust"),
                stream_buffer_maxsize=16384)
topic = app.topic(TOPIC, value_type=bytes, value_serializer="raw", key_serializer="raw")
state = {"count": 0, "first": 0.0, "last": 0.0, "written": 0.0}


def note(n: int) -> None:
    now = time.time()
    if not state["count"]:
        state["first"] = now
    state["count"] += n
    state["last"] = now
    if now - state["written"] > 0.2:
        state["written"] = now
        with open(STATUS + ".tmp", "w") as f:
            f.write(f"{state['count']} {state['first']} {state['last']}\n")
        os.replace(STATUS + ".tmp", STATUS)


@app.agent(topic)
async def count_records(stream):
    if MODE == "events":
        async for _ in stream:
            note(1)
    else:
        async for values in stream.take(1000, within=0.2):
            note(len(values))
