"""A make target that needs system tools stops at once, in one line naming `make tools`, when one is missing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import system_tools
from devtools.system_tools import NEEDS, main, missing
from tests.workspace import ROOT

MAKE = "/usr/bin/make"


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with none of the tools: an empty PATH folder, no PostgreSQL, no browser cache, no docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "browsers"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    monkeypatch.setattr(system_tools, "POSTGRESQL_ROOT", tmp_path / "postgresql")
    return bin_dir


def install(bin_dir: Path, *names: str) -> None:
    for name in names:
        program = bin_dir / name
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)


@pytest.mark.parametrize("target", sorted(NEEDS))
def test_a_bare_machine_is_told_to_run_make_tools(bare: Path, target: str, capsys: pytest.CaptureFixture) -> None:
    assert main([target]) == 2
    printed = capsys.readouterr()
    (line,) = printed.out.splitlines()
    assert "run `make tools` first" in line
    assert all(tool.name in line for tool in NEEDS[target])
    assert printed.err == ""


def test_installed_tools_pass_and_only_the_missing_are_named(bare: Path, tmp_path: Path) -> None:
    install(bare, "podman", "runc", "strip")
    assert [tool.name for tool in missing("image")] == ["mmdebstrap"]
    install(bare, "mmdebstrap")
    assert main(["image"]) == 0
    (tmp_path / "postgresql" / "15" / "bin").mkdir(parents=True)
    install(tmp_path / "postgresql" / "15" / "bin", "initdb")  # Debian's place, off PATH
    assert missing("shared-stores") == []
    playwright = tmp_path / "browsers" / "chromium-1200" / "chrome-linux"
    playwright.mkdir(parents=True)
    install(playwright, "chrome")  # `playwright install chromium` where the system has none
    install(bare, "espeak-ng", "ffmpeg", "prometheus")
    assert missing("demo-video") == []


def test_make_tools_installs_every_tool_named() -> None:
    makefile = (ROOT / "Makefile").read_text()
    listed = set(re.search(r"^SYSTEM_TOOLS := (.*)$", makefile, re.M)[1].split())  # type: ignore[index]
    listed |= set(re.search(r"^SYSTEM_PACKAGES := (.*)$", makefile, re.M)[1].split())  # type: ignore[index]
    listed |= {"chromium"}  # Debian's package, or Playwright's build on Ubuntu
    assert {tool.package for tools in NEEDS.values() for tool in tools} <= listed


# Not shared-stores: this machine's PostgreSQL sits where Debian puts it, off PATH, and a bare PATH cannot hide it
# (the check itself is the one above: test_a_bare_machine_is_told_to_run_make_tools).
@pytest.mark.parametrize("target", ["image", "demo-video", "bench"])
def test_the_target_stops_before_anything_else_runs(tmp_path: Path, target: str) -> None:
    """`make <target>` on a machine without the tools: one line, and neither setup nor the pipeline ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("grep", "bash"):  # what the Makefile itself runs while it is read
        (bin_dir / program).symlink_to(f"/usr/bin/{program}")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "browsers"),
           "DOCKER_HOST": f"unix://{tmp_path / 'docker.sock'}"}  # fmt: skip
    # A copy of the Makefile in a folder of its own: a target that went on would make its venv there.
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    for shared in ("devtools", "pyproject.toml", "requirements"):
        (tmp_path / shared).symlink_to(ROOT / shared)
    done = subprocess.run([MAKE, target, f"PYTHON={sys.executable}", "VENV=.venv"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1, lines
    assert f"make {target} needs" in lines[0]
    assert "run `make tools` first" in lines[0]
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["Makefile", "bin", "devtools", "pyproject.toml", "requirements"]  # no .venv, no pipeline output
