from __future__ import annotations

from pydantic import Field

from services.common.settings import CommonSettings


class QuerySettings(CommonSettings):
    # Base of the postback URLs shown to users on the Segments page.
    postback_base_url: str = Field("http://127.0.0.1:8080", alias="QUERY_POSTBACK_BASE_URL")
