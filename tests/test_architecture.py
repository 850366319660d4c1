"""Who owns what, as docs/architecture.md draws it: the import checks, and the calls an import check cannot see.

- The prediction log has one owner, housing/log: no SQL over its tables, and no writer, anywhere else.
- The registry has one owner, housing/registry.py; no endpoint runs a process or reads another program's printout.
- operations/ imports no service module; routers reach the service's state through FastAPI dependencies.
- No product module is over 500 lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from housing.log.schema import SCHEMAS

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("housing", "service", "operations", "training")
# What else runs the product's parts: the demo and image scripts, the benchmarks, the deploy checks.
TOOLS = ("scripts", "load_tests", "deploy", "devtools")
LOG_PACKAGE = ROOT / "housing" / "log"
MAX_LINES = 500
LOG_TABLES = "|".join(sorted(SCHEMAS))
SQL_OVER_THE_LOG = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+({LOG_TABLES})\b", re.IGNORECASE)


def modules(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted(path for path in (ROOT / package).rglob("*.py") if "__pycache__" not in path.parts)


@cache
def parsed(path: Path) -> tuple[str, ast.Module]:
    """A module's source and syntax tree, read once for every rule."""
    source = path.read_text()
    return source, ast.parse(source)


@cache
def strings(path: Path) -> tuple[str, ...]:
    """The source of every string literal of a module but its docstrings (prose), f-strings whole."""
    source, tree = parsed(path)
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    raw = source.encode()
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    # An f-string's literal parts report the whole f-string as their source: read each f-string once.
    parts = {id(value) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for value in node.values}
    found = []
    for node in ast.walk(tree):
        literal = isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))
        if literal and id(node) not in docstrings | parts and node.end_lineno is not None:
            start = offsets[node.lineno - 1] + node.col_offset
            end = offsets[node.end_lineno - 1] + (node.end_col_offset or 0)
            found.append(raw[start:end].decode())
    return tuple(found)


def imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names) of each import statement of a module."""
    for node in ast.walk(parsed(path)[1]):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, [alias.name for alias in node.names]


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_sql_over_the_log_outside_its_package() -> None:
    found = [
        f"{relative(path)}: {text.strip()[:60]!r}"
        for path in modules(*PRODUCT, *TOOLS)
        if LOG_PACKAGE not in path.parents
        for text in strings(path)
        if SQL_OVER_THE_LOG.search(text)
    ]
    assert found == []


def test_the_log_tables_are_named_only_in_the_log_package() -> None:
    names = set(SCHEMAS) | {"LABELLED"}
    table_constants = {
        "PREDICTIONS",
        "FEEDBACK",
        "CORRECTIONS",
        "TRAFFIC",
        "RELOAD_REQUESTS",
        "WORKERS",
        "JOBS",
        "SHADOW",
    }
    found = [
        f"{relative(path)} imports {sorted(set(imported) & (table_constants | names))} from {module}"
        for path in modules(*PRODUCT, *TOOLS)
        if LOG_PACKAGE not in path.parents
        for module, imported in imports(path)
        if module.startswith("housing.log") and set(imported) & (table_constants | names)
    ]
    assert found == []


def test_the_feedback_join_is_written_once() -> None:
    joins = [
        relative(path)
        for path in modules(*PRODUCT, *TOOLS)
        for text in strings(path)
        if re.search(r"\bfeedback\b.*\bJOIN\b", text, re.IGNORECASE | re.DOTALL)
    ]
    assert joins == ["housing/log/queries.py"]


def test_only_the_service_starts_the_writer() -> None:
    starters = [
        relative(path)
        for path in modules(*PRODUCT, "scripts", "deploy")
        if LOG_PACKAGE not in path.parents and re.search(r"\b(open_log|PredictionLog)\(", path.read_text())
    ]
    assert starters == ["service/service.py"]


def test_operations_import_no_service_module() -> None:
    found = [
        f"{relative(path)}: {module}"
        for path in modules("operations")
        for module, _ in imports(path)
        if module.split(".")[0] == "service"
    ]
    assert found == []


def test_no_endpoint_runs_a_process_or_reads_a_printout() -> None:
    for path in modules("service"):
        for module, _ in imports(path):
            assert module.split(".")[0] not in {"subprocess", "operations"}, f"{relative(path)} imports {module}"
        assert "create_subprocess" not in path.read_text(), relative(path)


def test_routers_take_the_service_state_as_a_dependency() -> None:
    for path in modules("service"):
        assert "get_current_service" not in path.read_text(), f"{relative(path)} looks the service up at run time"


def test_the_registry_has_one_module() -> None:
    described = [
        relative(path)
        for path in modules(*PRODUCT)
        if (doc := ast.get_docstring(parsed(path)[1])) and doc.startswith("The model registry")
    ]
    assert described == ["housing/registry.py"]
    assert not (ROOT / "training" / "champion.py").exists()
    assert not (ROOT / "housing" / "decisions.py").exists()


def test_no_two_modules_share_a_name() -> None:
    stems: dict[str, list[str]] = {}
    for path in modules(*PRODUCT):
        if path.stem != "__init__":
            stems.setdefault(path.stem, []).append(relative(path))
    assert {stem: paths for stem, paths in stems.items() if len(paths) > 1} == {}


@pytest.mark.parametrize("path", list(modules(*PRODUCT)), ids=relative)
def test_no_product_module_is_over_500_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES
