"""The domain package imports nothing outside the standard library and itself."""

import ast
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "services" / "domain"


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_domain_imports_only_the_standard_library_and_itself():
    files = sorted(DOMAIN.glob("*.py"))
    assert len(files) >= 6
    foreign = {(f.name, name) for f in files for name in _imports(f)
               if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
               and not name.startswith("services.domain")}
    assert foreign == set()
