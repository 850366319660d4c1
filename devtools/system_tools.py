"""The system tools a make target needs, checked before it starts: one line naming what to run when any is missing.

    python3 -m devtools.system_tools image    # nothing and exit 0, or the one line and exit 2

Run with the system's Python (standard library only) before the target's prerequisites, so that a target that
cannot finish says so at once rather than after the pipeline and the bento build, in a traceback
(``mmdebstrap: command not found``) or in Playwright's box asking for browsers. ``make tools`` installs every
tool named here (tests/devtools/test_system_tools.py holds it to the Makefile's lists).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tool:
    """A program a target runs, and the Debian package that provides it (as ``make tools`` installs it)."""

    name: str
    package: str


def on_path(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


# Debian keeps PostgreSQL's server programs off PATH, under /usr/lib/postgresql/<major>/bin.
POSTGRESQL_ROOT = Path("/usr/lib/postgresql")


def postgresql_server() -> bool:
    return any(POSTGRESQL_ROOT.glob("*/bin/initdb")) or shutil.which("initdb") is not None


def chromium() -> bool:
    """The system's Chromium (devtools.browser uses it), or the build ``playwright install`` put in its cache."""
    cache = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    return shutil.which("chromium") is not None or any(cache.glob("chromium*/chrome-linux*/chrome"))


# How to tell whether a tool is installed, when it is not a program of its own name on PATH.
PRESENT: Mapping[str, Callable[[], bool]] = {"postgresql": postgresql_server, "chromium": chromium}
PODMAN = [
    Tool("podman", "podman"), Tool("runc", "runc"), Tool("mmdebstrap", "mmdebstrap"), Tool("strip", "binutils")
]  # fmt: skip
# What each target runs: the image is built with podman (its base made with mmdebstrap and strip where no registry is
# reachable) unless a docker engine answers; the video also records Prometheus, a browser and a voice.
NEEDS: Mapping[str, list[Tool]] = {
    "image": PODMAN,
    "demo-video": [*PODMAN, Tool("chromium", "chromium"), Tool("espeak-ng", "espeak-ng"),
                   Tool("ffmpeg", "ffmpeg"), Tool("prometheus", "prometheus")],
    "bench": [Tool("wrk", "wrk"), Tool("postgresql", "postgresql")],
    "shared-stores": [Tool("postgresql", "postgresql")],
}  # fmt: skip
# A docker engine that answers replaces podman and its helpers (scripts.image prefers it).
DOCKER_REPLACES = {"podman", "runc", "mmdebstrap", "strip"}


def docker_answers() -> bool:
    """Whether a docker engine runs here: its socket exists (asking it would take seconds when it is down)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return shutil.which("docker") is not None and host.startswith("unix://") and Path(host[7:]).is_socket()


def missing(target: str) -> list[Tool]:
    """The tools ``target`` needs that are not installed here."""
    skipped = DOCKER_REPLACES if docker_answers() else set()
    return [
        tool for tool in NEEDS[target] if tool.name not in skipped and not PRESENT.get(tool.name, on_path(tool.name))()
    ]


def advice(target: str, absent: list[Tool]) -> str:
    """The one line a target stops with."""
    names = ", ".join(tool.name for tool in absent)
    return f"make {target} needs {names}, not installed here: run `make tools` first (apt-get, as root or with sudo)"


def main(argv: list[str]) -> int:
    (target,) = argv
    absent = missing(target)
    if absent:
        print(advice(target, absent))  # on stdout: the Makefile stops with it ($(error ...))
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
