"""Pure: a rejected record -> the rejected-postback.v1 message (key, value)."""

from __future__ import annotations

from services.common.models import RejectedPostbackRecord
from services.processor.decoding import RecordRejection


def rejected_message(rejection: RecordRejection, topic: str, partition: int, offset: int, now_ms: int) -> tuple[bytes, bytes]:
    """Key is the account id when known (else empty), like the ingress's rejections."""
    record = RejectedPostbackRecord(
        stage="processor", reason=rejection.reason,
        message=f"{rejection.message} (at {topic}[{partition}]@{offset})",
        account_id=rejection.account_id, raw=rejection.raw, at=now_ms,
    )
    key = str(rejection.account_id).encode() if rejection.account_id is not None else b""
    return key, record.model_dump_json(by_alias=True).encode()
