"""The delivery files' own validators (hadolint, actionlint, shellcheck, docker-compose), run as CI runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.workspace import BIN, ROOT


def validate(*command: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """Run a validator found on the venv's PATH first; its findings are the assertion message."""
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    executable = shutil.which(command[0], path=path)
    assert executable, f"{command[0]} is not installed: `make setup tools` installs it"
    result = subprocess.run(
        [executable, *command[1:]],
        cwd=cwd,
        env={**os.environ, "PATH": path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout
