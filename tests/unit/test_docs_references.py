"""Docs that stay true: every test the docs name (failure-mode table, guarantees) exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"`(tests/[\w/.-]+\.py)?(::(\w+))?[^`]*`")


def referenced(doc: Path) -> list[tuple[str, str | None]]:
    """(test file, test function or None) for every backticked tests/... or ::name in the doc; a bare
    `::name` belongs to the file named last before it on the same line."""
    found = []
    for line in doc.read_text().splitlines():
        last = None
        for m in TOKEN.finditer(line):
            path, name = m.group(1), m.group(3)
            if path:
                last = path
            if path or (name and last):
                found.append((path or last, name))
    return found


def test_every_test_the_docs_name_exists():
    missing = []
    for doc in (ROOT / "docs" / "architecture.md", ROOT / "README.md"):
        for path, name in referenced(doc):
            file = ROOT / path
            if not file.exists():
                missing.append(f"{doc.name}: {path}")
            elif name and not re.search(rf"^(async )?def {name}\b", file.read_text(), re.M):
                missing.append(f"{doc.name}: {path}::{name}")
    assert not missing, "docs name tests that do not exist:\n" + "\n".join(sorted(set(missing)))
    assert len(referenced(ROOT / "docs" / "architecture.md")) > 50  # the parser finds the table's references
