"""devtools/ stays out of the product: no product module imports it, and neither the wheel, the bento nor the
operations image takes it (the service image is the bento's; the operations image adds the wheel and the files it
copies)."""

from __future__ import annotations

import re
from pathlib import Path

import pathspec
import pytest
import yaml
from setuptools import find_packages
from setuptools.config.pyprojecttoml import read_configuration

from devtools.paths import ROOT
from tests.service.test_boundary import imported_packages

PRODUCT = ("housing", "training", "service", "operations")
DEV_ONLY = {"devtools", "scripts", "load_tests", "tests"}


def devtools_files() -> list[str]:
    """Every file of devtools/, relative to the checkout, as BentoML and docker see paths."""
    return [path.relative_to(ROOT).as_posix() for path in (ROOT / "devtools").rglob("*") if path.is_file()]


def test_no_product_module_imports_the_dev_tools() -> None:
    for package in PRODUCT:
        assert not imported_packages(package) & DEV_ONLY, package


def test_the_wheel_has_the_product_packages_and_no_dev_tools() -> None:
    packages = read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]["packages"]
    assert {name.split(".")[0] for name in packages} == set(PRODUCT)
    assert "devtools" in find_packages(where=ROOT)  # a package setuptools would take, were the include wider


# BentoML's own kind of pattern, which pathspec now calls deprecated.
@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")
def test_the_bento_takes_no_dev_tools() -> None:
    """BentoML matches bentofile.yaml's include and exclude as gitignore patterns (pathspec's gitwildmatch)."""
    config = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    include = pathspec.PathSpec.from_lines("gitwildmatch", config["include"])
    exclude = pathspec.PathSpec.from_lines("gitwildmatch", config.get("exclude", []))
    assert include.match_file("service/service.py")  # the patterns are read as BentoML reads them
    files = devtools_files()
    assert "devtools/local_stores.py" in files
    assert [path for path in files if include.match_file(path) and not exclude.match_file(path)] == []


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context sources of every COPY and ADD (not those copied from another stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0].upper() in ("COPY", "ADD"):
            arguments = [word for word in words[1:] if not word.startswith("--")]
            if not any(word.startswith("--from") for word in words[1:]):
                sources += arguments[:-1]
    return sources


def test_the_operations_image_copies_no_dev_tools() -> None:
    sources = copied_sources(ROOT / "deploy" / "operations" / "Dockerfile")
    assert "operations/" in sources
    taken = [source for source in sources if source.rstrip("/") in (".", "devtools") or source.startswith("devtools/")]
    assert taken == []
