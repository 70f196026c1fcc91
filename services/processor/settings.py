from __future__ import annotations

from pydantic import Field

from services.common.settings import CommonSettings


class ProcessorSettings(CommonSettings):
    consumer_group: str = Field("pbseg-processor", alias="PROCESSOR_GROUP")
    tid_retention_days: float = Field(30.0, alias="PROCESSOR_TID_RETENTION_DAYS", ge=30.0)
    web_port: int = Field(6066, alias="PROCESSOR_WEB_PORT")
