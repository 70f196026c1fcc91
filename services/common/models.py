"""Message formats on Kafka. Each model is one versioned schema; `schemas/*.json` is
generated from these models (`pbseg schemas write`) and a test fails when they drift."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from services.domain.codes import EVENT_CODE_PATTERN, INSTALL_ID_PATTERN, MAX_TID_CHARS


class PostbackRecord(BaseModel):
    """postback.v1: one accepted postback, keyed `{account_id}:{install_id}` on the postbacks topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="postback.v1")

    schema_: Literal["postback.v1"] = Field("postback.v1", alias="schema")
    event_id: str = Field(min_length=1, max_length=64, description="Unique id minted by the ingress")
    account_id: int = Field(ge=1)
    install_id: str = Field(pattern=INSTALL_ID_PATTERN)
    event: str = Field(pattern=EVENT_CODE_PATTERN, description="Event code")
    occurred_at: int = Field(ge=0, description="Event time, unix milliseconds")
    received_at: int = Field(ge=0, description="Time the ingress received it, unix milliseconds")
    tid: Optional[str] = Field(None, max_length=MAX_TID_CHARS, description="Transaction id for dedupe")
    amount: Optional[str] = Field(None, max_length=32, description="Decimal amount as a string")
    currency: Optional[str] = Field(None, max_length=8)


class DeviceEventRecord(BaseModel):
    """device-event.v1: one applied occurrence, published by the processor."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="device-event.v1")

    schema_: Literal["device-event.v1"] = Field("device-event.v1", alias="schema")
    event_id: str = Field(min_length=1, max_length=80)
    account_id: int = Field(ge=1)
    install_id: str = Field(pattern=INSTALL_ID_PATTERN)
    event: str = Field(pattern=EVENT_CODE_PATTERN)
    deposit_ordinal: Optional[int] = Field(None, ge=1, description="n for the n-th deposit of the device")
    first_occurrence: bool = Field(description="True when this event occurred on this device for the first time")
    occurred_at: int = Field(ge=0)
    processed_at: int = Field(ge=0)
    tid: Optional[str] = None
    amount: Optional[str] = None
    currency: Optional[str] = None


class RejectedPostbackRecord(BaseModel):
    """rejected-postback.v1: a postback refused by the ingress or the processor."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="rejected-postback.v1")

    schema_: Literal["rejected-postback.v1"] = Field("rejected-postback.v1", alias="schema")
    stage: Literal["ingress", "processor"]
    reason: str = Field(description="Machine code, e.g. unknown_event")
    message: str
    account_id: Optional[int] = None
    raw: str = Field(max_length=1024, description="The raw query (or record) truncated to 1 KiB")
    at: int = Field(ge=0, description="Unix milliseconds")


class TaskTriggerRecord(BaseModel):
    """task-trigger.v1: a trigger fired for a device (services/domain/triggers.py), published by the
    processor to task-triggers.v1, keyed `<account_id>:<install_id>`. At least once: a duplicate
    carries the same fire_id and the same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="task-trigger.v1")

    schema_: Literal["task-trigger.v1"] = Field("task-trigger.v1", alias="schema")
    fire_id: str = Field(min_length=1, max_length=120, description="t<trigger_id>-<cause_event_id>: one per trigger "
                                                                    "and cause occurrence")
    trigger_id: int = Field(ge=1)
    trigger_version: int = Field(ge=1, description="The trigger version whose filter decided the fire")
    account_id: int = Field(ge=1)
    install_id: str = Field(pattern=INSTALL_ID_PATTERN)
    cause_event_id: str = Field(min_length=1, max_length=80, description="The device-event.v1 event_id of the cause")
    due_at: int = Field(ge=0, description="Unix ms: the cause's event time + the trigger's delay")
    fired_at: int = Field(ge=0, description="Unix ms: the tick that decided the fire (>= due_at)")


ALL_SCHEMAS: dict[str, type[BaseModel]] = {
    "postback.v1": PostbackRecord,
    "device-event.v1": DeviceEventRecord,
    "rejected-postback.v1": RejectedPostbackRecord,
    "task-trigger.v1": TaskTriggerRecord,
}
