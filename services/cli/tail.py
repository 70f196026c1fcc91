"""`pbseg tail <topic> [--account N]`: a topic's records, live, one JSON line each on stdout - what
a downstream consumer of device-events, task-triggers or rejected postbacks will read.

Reads without a consumer group (nothing is committed, no group is joined): every partition is
assigned and read from its end, or from its beginning with --from-beginning. Records of one
partition come out in offset order; across partitions there is no order, as for any consumer.
Exit status: 0 (Ctrl-C, --max reached, --timeout-s elapsed), 1 Kafka unreachable, 2 unknown topic.

The pure part (topic names, the account filter, the output line) is kept apart from the Kafka
loop at the bottom, so it can be reasoned about - and tested - without a broker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

# short name -> the CommonSettings field holding the topic (env PBSEG_TOPIC_*)
SHORT_NAMES = {
    "device-events": "topic_device_events",
    "task-triggers": "topic_task_triggers",
    "rejected": "topic_rejected",
    "postbacks": "topic_postbacks",
}
# Connecting and reading the topic list must answer within this, or the broker counts as
# unreachable (a blackholed address would otherwise hang on aiokafka's 40 s request timeout).
CONNECT_TIMEOUT_S = 8.0
POLL_MS = 200


def resolve_topic(name: str, settings) -> str:
    """A short name's configured topic; any other name is a topic name as it is."""
    field = SHORT_NAMES.get(name)
    return getattr(settings, field) if field else name


def known_short_names(settings) -> str:
    return ", ".join(f"{short} ({getattr(settings, field)})" for short, field in SHORT_NAMES.items())


@dataclass(frozen=True)
class TailRecord:
    """The Kafka facts of one record that the output needs."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


_NOT_JSON = object()


def decode_value(value: bytes | None) -> Any:
    """The value's JSON, or _NOT_JSON (not UTF-8 JSON, or a tombstone)."""
    if value is None:
        return _NOT_JSON
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


def matches_account(decoded: Any, key: bytes | None, account: int) -> bool:
    """Whether a record belongs to `account`: its JSON's "account_id" when it has one (all of
    postback.v1, device-event.v1, task-trigger.v1 and rejected-postback.v1 do; a rejection whose
    account is unknown has null and matches none); otherwise its Kafka key, which is
    `<account>:<install id>` on postbacks/device-events and `<account>` on rejected."""
    if isinstance(decoded, dict) and "account_id" in decoded:
        found = decoded["account_id"]
        return type(found) is int and found == account  # not True == 1
    text = _text(key)
    return text is not None and (text == str(account) or text.startswith(f"{account}:"))


def render(record: TailRecord, decoded: Any, with_meta: bool) -> str:
    """One output line (no newline). The value's JSON is printed as the producer wrote it
    (re-serialized compactly only when it spans lines, so one record stays one line)."""
    if decoded is _NOT_JSON:
        body: dict[str, Any] = {"raw": _text(record.value)}
        if not with_meta:
            return orjson.dumps({"partition": record.partition, "offset": record.offset, **body}).decode()
    else:
        text = record.value.decode()  # valid JSON is valid UTF-8
        if "\n" in text or "\r" in text:
            text = orjson.dumps(decoded).decode()
        if not with_meta:
            return text.strip()
        body = {"value": orjson.Fragment(text.strip())}
    return orjson.dumps({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                         "timestamp": record.timestamp, "key": _text(record.key), **body}).decode()


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def register(sub) -> None:
    tail = sub.add_parser(
        "tail", help="print a topic's records live, one JSON line each (device-events, task-triggers, rejected)",
        description="Print a topic's records live, one JSON line each: the record's value as produced. "
                    f"TOPIC is a short name ({', '.join(SHORT_NAMES)}; the topics PBSEG_TOPIC_* name) "
                    "or a topic name. Reads without a consumer group; Ctrl-C stops.")
    tail.add_argument("topic", metavar="TOPIC")
    tail.add_argument("--account", type=int, metavar="N", help="only records of account N")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the oldest retained record of every partition (default: only new records)")
    tail.add_argument("--max", type=_positive_int, metavar="N", help="stop after printing N records")
    tail.add_argument("--timeout-s", type=_positive_seconds, metavar="S",
                      help="stop after S seconds without a record to print (default: run until Ctrl-C)")
    tail.add_argument("--with-meta", action="store_true",
                      help='wrap each value: {"topic","partition","offset","timestamp","key","value"}')
    tail.set_defaults(func=run)


class _Stop(Exception):
    """Ends the run with an exit status and a one-line message for stderr."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _assigned_consumer(settings, topic: str, from_beginning: bool):
    """A started consumer that holds every partition of `topic`, at its end or its beginning.
    Raises _Stop(1) when Kafka does not answer within CONNECT_TIMEOUT_S, _Stop(2) when the
    topic does not exist (checked on all topics' metadata, which never auto-creates a topic)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    bootstrap = settings.kafka_bootstrap_servers
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
                                client_id="pbseg-tail")
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await consumer.start()
                # All topics' metadata, straight from the cluster: the consumer's own cache knows
                # no topic yet, and asking for this one by name could auto-create it.
                cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - as services/query/rejected.py
        except (KafkaError, OSError, TimeoutError) as exc:
            reason = f"no answer within {CONNECT_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else str(exc)
            raise _Stop(1, f"cannot reach Kafka at {bootstrap} ({reason}). "
                           "Start it with `make up`, or set KAFKA_BOOTSTRAP_SERVERS to a running broker.") from exc
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise _Stop(2, f"topic {topic!r} does not exist on {bootstrap}; "
                           f"known short names: {known_short_names(settings)}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        return consumer
    except BaseException:
        await consumer.stop()
        raise


async def _tail(args: argparse.Namespace, out: TextIO) -> int:
    from services.common.settings import CommonSettings

    settings = CommonSettings()
    topic = resolve_topic(args.topic, settings)
    consumer = await _assigned_consumer(settings, topic, args.from_beginning)
    printed, quiet_since = 0, time.monotonic()
    try:
        while args.max is None or printed < args.max:
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            for tp in sorted(batches, key=lambda tp: tp.partition):
                for msg in batches[tp]:
                    decoded = decode_value(msg.value)
                    if args.account is not None and not matches_account(decoded, msg.key, args.account):
                        continue
                    record = TailRecord(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value)
                    out.write(render(record, decoded, args.with_meta) + "\n")
                    printed += 1
                    quiet_since = time.monotonic()
                    if printed == args.max:
                        break
                if printed == args.max:
                    break
            out.flush()  # live: a pipe (`| jq`) sees each batch as it arrives
            if args.timeout_s is not None and time.monotonic() - quiet_since >= args.timeout_s:
                break
    finally:
        await consumer.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    # aiokafka logs each failed connection attempt; the one-line error below says it better.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    try:
        return asyncio.run(_tail(args, sys.stdout))
    except _Stop as stop:
        print(f"error: {stop}", file=sys.stderr)
        return stop.status
    except KeyboardInterrupt:  # Ctrl-C is how a live tail ends
        return 0
    except BrokenPipeError:  # `pbseg tail ... | head`: the reader left
        # Python's advice: point stdout at devnull so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
