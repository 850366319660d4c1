"""The image `bentoml containerize` builds, proven without a Docker engine.

hadolint reads the Dockerfile the bento carries and the one containerize renders; the image's own start
command (its entrypoint, no arguments) serves the bento from the session's store; its HEALTHCHECK runs
against that server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest

from service.api_models import EXAMPLE_HOUSE
from tests.delivery.tools import validate
from tests.service.described_api import check_described
from tests.service.server import Server, start_server
from tests.workspace import BIN, ROOT, Workspace

pytestmark = pytest.mark.integration


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = (line.strip() for line in joined.splitlines())
    return [(line.split(maxsplit=1)[0].upper(), line.partition(" ")[2]) for line in lines if line and line[0] != "#"]


@pytest.fixture(scope="module")
def dockerfile(bento: Path) -> str:
    return (bento / "env" / "docker" / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def containerize_dockerfile(bento: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BuildKit Dockerfile `bentoml containerize` renders from the bento's template.

    BentoML 1.4.40 only finds the template when the working directory contains its temporary build
    context (bentoml/BentoML#5566); the release workflow containerizes from `/` for the same reason.
    """
    output = tmp_path_factory.mktemp("containerize") / "Dockerfile"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir("/")
        bentoml.container.get_containerfile(f"{bento.parent.name}:{bento.name}", output_path=str(output))
    return output


def test_bento_dockerfile_passes_hadolint(bento: Path) -> None:
    validate("hadolint", "--config", str(ROOT / ".hadolint.yaml"), str(bento / "env" / "docker" / "Dockerfile"))


def test_containerize_dockerfile_passes_hadolint(containerize_dockerfile: Path) -> None:
    assert "--mount=type=cache" in containerize_dockerfile.read_text()  # the BuildKit rendering, not the bento's
    validate("hadolint", "--config", str(ROOT / ".hadolint.yaml"), str(containerize_dockerfile))


def test_image_is_slim_python_312_running_as_non_root(dockerfile: str) -> None:
    steps = instructions(dockerfile)
    assert [args for op, args in steps if op == "FROM"] == ["python:3.12-slim AS base-container"]
    user = [args for op, args in steps if op == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert int(uid) > 0
    assert int(gid) > 0
    installs = " ".join(args for op, args in steps if op == "RUN" and "apt-get install" in args)
    assert "build-essential" not in installs
    assert "libgomp1" in installs
    assert steps[-1] == ("ENTRYPOINT", '[ "/home/bentoml/bento/env/docker/entrypoint.sh" ]')


def healthcheck(dockerfile: str) -> list[str]:
    (args,) = [args for op, args in instructions(dockerfile) if op == "HEALTHCHECK"]
    return json.loads(args.partition(" CMD ")[2])


@pytest.fixture(scope="module")
def container(bento: Path, dockerfile: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The image's start command as its Dockerfile gives it (ENTRYPOINT, no CMD), run in the bento's folder.

    The image copies the bento to BENTO_PATH, its WORKDIR; here the bento stays where `bentoml build` put it.
    """
    steps = instructions(dockerfile)
    assert [op for op, _ in steps if op == "CMD"] == []
    (image_bento,) = [args.partition("=")[2] for op, args in steps if op == "ARG" and args.startswith("BENTO_PATH=")]
    (entrypoint,) = [json.loads(args) for op, args in steps if op == "ENTRYPOINT"]
    command = [str(bento / Path(entrypoint[0]).relative_to(image_bento)), *entrypoint[1:]]
    server = start_server(tmp_path_factory.mktemp("container"), {"BENTO_PATH": str(bento)}, command=command, cwd=bento)
    yield server
    server.stop()


def test_start_command_serves_the_bento(container: Server, bento: Path, workspace: Workspace) -> None:
    assert f'Starting production HTTP BentoServer from "{bento}' in container.output.read_text()
    with httpx.Client(base_url=container.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        health = http.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        prediction = http.post("/predict", json=EXAMPLE_HOUSE)
        assert prediction.status_code == 200, prediction.text
        registration = json.loads((workspace.path / "reports" / "registration.json").read_text())
        assert prediction.json()["model_version"] == registration["version"]  # the champion the bento pinned
    assert container.db.is_file()  # HOUSING_PREDICTION_DB is honoured


def test_the_bento_s_document_describes_this_api(container: Server, bento: Path, workspace: Workspace) -> None:
    """The built bento serves the same description, versioned by its tag (BentoML's would show its README)."""
    registration = json.loads((workspace.path / "reports" / "registration.json").read_text())
    doc = httpx.get(f"{container.url}/docs.json", timeout=30).json()
    check_described(doc, f"{bento.parent.name}:{bento.name}", registration["version"])
    assert (bento / "README.md").read_text() == doc["info"]["description"]  # bentofile.yaml's description


def test_healthcheck_probes_the_port_served(container: Server, dockerfile: str) -> None:
    command = healthcheck(dockerfile)
    assert command[0] == "python"
    env = {**os.environ, "BENTOML_PORT": container.url.rsplit(":", 1)[1]}
    probe = [str(BIN / "python"), *command[1:]]
    assert subprocess.run(probe, env=env, capture_output=True, timeout=10, check=False).returncode == 0
    env["BENTOML_PORT"] = "1"  # nothing listens there
    assert subprocess.run(probe, env=env, capture_output=True, timeout=10, check=False).returncode != 0


def smoke_test(*args: str) -> subprocess.CompletedProcess:
    """deploy/smoke_test.py, which the deploy workflow runs against the staging stack."""
    command = [str(BIN / "python"), str(ROOT / "deploy" / "smoke_test.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_deploy_smoke_test_passes_against_the_image_start_command(container: Server) -> None:
    smoke = smoke_test(container.url)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert [line.split()[0] for line in smoke.stdout.splitlines()] == ["ok"] * 5


def test_deploy_smoke_test_fails_without_a_service() -> None:
    smoke = smoke_test("http://127.0.0.1:1", "--timeout", "1")
    assert smoke.returncode == 1
    assert "FAIL http://127.0.0.1:1/readyz" in smoke.stderr
