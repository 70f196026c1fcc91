"""Generates `schemas/*.json` from the pydantic models (the one source of truth)."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.models import ALL_SCHEMAS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render(name: str) -> str:
    schema = ALL_SCHEMAS[name].model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{name}.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ALL_SCHEMAS:
        path = directory / f"{name}.json"
        path.write_text(render(name))
        written.append(path)
    return written
