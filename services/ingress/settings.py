from __future__ import annotations

from pydantic import Field

from services.common.settings import CommonSettings


class IngressSettings(CommonSettings):
    # Longest time a request waits for Kafka's acknowledgement before answering 503.
    produce_timeout_s: float = Field(2.0, alias="INGRESS_PRODUCE_TIMEOUT_S", gt=0, le=2.0)
    # How often the catalog cache polls the catalog version key.
    catalog_poll_s: float = Field(0.25, alias="INGRESS_CATALOG_POLL_S", gt=0, le=1.0)
