"""The checked-in JSON Schemas are generated from the models."""

import pytest

from services.common.models import ALL_SCHEMAS
from services.common.schemas import SCHEMA_DIR, render


@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
def test_checked_in_schema_matches_model(name):
    """Run `make schemas` after changing a model; this fails until you do."""
    path = SCHEMA_DIR / f"{name}.json"
    assert path.exists(), f"{path} missing: run `make schemas`"
    assert path.read_text() == render(name)
