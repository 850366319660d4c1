"""The serving process loads the shared core and the service, never the training pipeline or the operations."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_service_imports_no_training_code() -> None:
    probe = (
        "import sys, service.service; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'operations')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def imported_packages(package: str) -> set[str]:
    """The top-level names every module of ``package`` imports."""
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_neither_side() -> None:
    assert not imported_packages("housing") & {"training", "service", "operations", "scripts", "load_tests"}


def test_no_service_module_shares_a_name_with_a_library_or_the_core() -> None:
    modules = {path.stem for path in (ROOT / "service").glob("*.py")} - {"__init__"}
    core = {path.stem for path in (ROOT / "housing").glob("*.py")}
    libraries = imported_packages("service") - {"service", "housing"}
    assert not modules & (core | libraries | set(sys.stdlib_module_names))
