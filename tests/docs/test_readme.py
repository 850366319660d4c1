"""The README stays true to the code: every setting, knob and endpoint documented, the diagram current, and each
claim it makes about behaviour (retraining triggers, the image command, targets, commands, metrics) held to the
files that implement it. The request log's fields are held to a real log line in tests/service/test_api.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from housing import drift_check
from housing.log import metrics as log_metrics
from housing.settings import HousingSettings, variable
from operations import cli
from scripts import image
from scripts.render_diagram import SOURCE, readme_block, render
from service import prometheus_metrics
from service.service import API_PATHS, info_app
from tests.docs.readme import README, housing_commands, make_targets, metrics, passage, quoted, shell_command
from tests.workspace import ROOT


def knobs(tree: dict, prefix: str = "") -> list[str]:
    """Dotted names of params.yaml's settings, down to the level a reader sets (families count as one)."""
    names = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("families", "quality_floor", "max_missing_fraction", "scale_model"):
            names += knobs(value, f"{name}.")
        else:
            names.append(name)
    return names


def test_every_environment_variable_is_documented() -> None:
    names = {variable(name) for name in HousingSettings.model_fields}
    assert names == set(re.findall(r"`(HOUSING_[A-Z_]+)`", README)) - {"HOUSING_IMAGE"}


def test_every_params_knob_is_documented() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    missing = [name for name in knobs(params) if f"`{name}`" not in README]
    assert not missing, missing


def test_every_endpoint_is_documented() -> None:
    routes = {route.path for route in info_app.routes if getattr(route, "include_in_schema", False)}
    for path in {*API_PATHS, *routes}:
        assert f"`POST {path}`" in README or f"`GET {path}`" in README or f"`{path}`" in README, path


@pytest.mark.integration
def test_the_diagram_is_the_readmes_and_renders() -> None:
    assert readme_block() == SOURCE.read_text()
    svg = render(SOURCE.read_text(), None)
    for node in ("ingest", "register", "MLflow", "Prometheus", "release.yml"):
        assert node in svg
    assert SOURCE.with_suffix(".png").stat().st_size > 50_000


def makefile_recipe(target: str) -> str:
    """The commands of a Makefile target."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert match, f"no target {target!r} in the Makefile"
    return match.group(1)


def test_the_retraining_triggers_are_the_ones_configured() -> None:
    claim = passage("**What triggers retraining.**", "## Quickstart")
    named = quoted(claim)
    assert {"housing retrain", "make retrain", "POST /admin/retrain", "POST /admin/retrain/alert"} <= set(named)
    assert makefile_recipe("retrain").strip() == "housing retrain"
    paths = info_app.openapi()["paths"]
    assert "post" in paths["/admin/retrain"]
    assert "post" in paths["/admin/retrain/alert"]

    # Alertmanager: exactly the alerts the README names go to the retraining webhook, and they exist.
    alerts = {name for name in named if name.startswith("Housing")}
    config = yaml.safe_load((ROOT / "monitoring" / "alertmanager.yml").read_text())
    (route,) = [route for route in config["route"]["routes"] if route["receiver"] == "retrain"]
    (matcher,) = route["matchers"]
    assert set(re.fullmatch(r'alertname=~"(.*)"', matcher).group(1).split("|")) == alerts  # type: ignore[union-attr]
    (receiver,) = [receiver for receiver in config["receivers"] if receiver["name"] == "retrain"]
    assert [hook["url"].split(":3000")[1] for hook in receiver["webhook_configs"]] == ["/admin/retrain/alert"]
    rules = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())
    assert alerts <= {rule.get("alert") for group in rules["groups"] for rule in group["rules"]}

    # The schedule: every six hours, in the workflow and in the CronJob, both running `housing retrain`.
    assert "every six hours" in claim
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "retrain.yml").read_text())
    (schedule,) = workflow[True]["schedule"]  # YAML 1.1 reads the key `on` as True
    assert schedule["cron"].split()[1] == "*/6"
    runs = [step.get("run", "") for step in workflow["jobs"]["retrain"]["steps"]]
    assert any("args=(retrain" in run and '.venv/bin/housing "${args[@]}"' in run for run in runs)
    cronjob = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "retrain-cronjob.yaml").read_text())
    assert cronjob["kind"] == "CronJob"
    assert cronjob["metadata"]["name"] == "housing-retrain"
    assert cronjob["spec"]["schedule"].split()[1] == "*/6"
    (job,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert job["args"][:2] == ["housing", "retrain"]


def test_the_containerize_command_is_the_one_make_image_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's command, word for word, is what scripts/image.py runs with podman, and from the same folder."""
    assert "python -m scripts.image" in makefile_recipe("image")
    ran: list[tuple[list[str], Path]] = []
    bento = SimpleNamespace(tag=SimpleNamespace(name="housing-price-service", version="v1abc"), path="/bento")
    monkeypatch.setitem(sys.modules, "bentoml", SimpleNamespace(get=lambda tag: bento))
    monkeypatch.setattr(image, "base_image", lambda path: "docker.io/library/python:3.12-slim")
    monkeypatch.setattr(image, "ensure_base", lambda engine, base: False)
    monkeypatch.setattr(image, "run", lambda command, *, timeout, cwd=ROOT: ran.append((command, cwd)))
    built = image.build("housing-price-service:latest", "podman")

    ((command, cwd),) = ran
    shown = shell_command("cd / && bentoml containerize")
    assert shown[:3] == ["cd", str(cwd), "&&"]
    assert cwd == Path("/")
    assert [Path(command[0]).name, *command[1:]] == [word.replace("<version>", "v1abc") for word in shown[3:]]
    # The tag compose runs by default is one of them.
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    default = re.search(r"image: \$\{HOUSING_IMAGE:-([^}]+)\}", compose).group(1)  # type: ignore[union-attr]
    assert default in built.tags


def test_every_make_target_named_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))
    named = make_targets()
    assert {"run", "test", "image", "load", "retrain"} <= named
    assert named <= targets, named - targets


def test_every_housing_command_named_exists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    (listed,) = re.findall(r"\{([a-z,]+)\}", capsys.readouterr().out)[:1]
    named = housing_commands()
    assert {"retrain", "drift", "rollback"} <= named
    assert named <= set(listed.split(",")), named


def test_every_metric_named_exists_with_its_labels() -> None:
    declared = {}
    declaring = [*vars(prometheus_metrics).values(), *vars(log_metrics).values(), *vars(drift_check).values()]
    for metric in declaring:
        if isinstance(metric, MetricWrapperBase):
            exposed = f"{metric._name}_total" if isinstance(metric, Counter) else metric._name
            declared[exposed] = set(metric._labelnames)
    named = metrics()
    assert len(named) >= 10
    for name, labels in named.items():
        assert name in declared, name
        assert labels is None or labels == declared[name], (name, labels, declared[name])
