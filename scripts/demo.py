"""`make demo`: a scripted walkthrough of the whole system on the real data.

`make demo` first runs the pipeline (`make pipeline`: `dvc repro` and the registry check),
then this script runs `dvc repro` again (stages whose inputs did not change are skipped), shows
that the pipeline is up to date and what it registered, starts
the real `bentoml serve` on a free port and walks through the API: one prediction, its explanation, a
batch, MLflow's /invocations, bad input, feedback, drift (endpoint and CLI), /metrics,
the dashboard and /model. Each step prints its request and a trimmed response and
checks status codes and content; the first failing step ends the walkthrough with
exit status 1. The server is always stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from devtools.houses import request_records
from devtools.paths import BIN, ROOT
from devtools.ports import free_port
from devtools.processes import stop
from devtools.serving import FEEDBACK_AUTH, serve_bentoml
from devtools.waits import wait_ready, wait_until
from housing.columns import NUMERIC_BOUNDS, TARGET_COLUMN
from housing.registry import tracking_uri

MODEL_NAME = "housing-price-model"
# The DVC project the walkthrough shows: HOUSING_PROJECT_DIR, else this checkout (as `make demo` runs it).
PROJECT = Path(os.environ.get("HOUSING_PROJECT_DIR") or ROOT).resolve()
TEST_CSV = PROJECT / "data" / "processed" / "test.csv"
RULE = "━" * 78
TRIM = 400
BATCH = 500
# Enough shifted houses to fill the drift window (params.yaml drift.window) on their own.
SHIFTED = 1000
INCOME_SHIFT = 1.6
FEEDBACK = 20
PROJECT_SERIES = (
    "housing_predictions_total",
    "housing_validation_failures_total",
    "housing_drift_detected",
    "housing_model_info",
)


class StepError(Exception):
    """A step's response was not what the walkthrough expects."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepError(message)


def trimmed(payload: Any, limit: int = TRIM) -> str:
    # Pages come back as one line: the transcript shows their start, not their layout.
    text = " ".join(payload.split()) if isinstance(payload, str) else json.dumps(payload)
    return text if len(text) <= limit else f"{text[:limit]} … ({len(text):,} characters)"


@dataclass
class Transcript:
    """What one step printed: its heading and body lines, kept for the video."""

    title: str
    lines: list[str] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)

    def call(self, client: httpx.Client, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        """Send a request and print it with a trimmed response."""
        self.say(f"$ {method} {path}" + (f"  {trimmed(body, 160)}" if body is not None else ""))
        response = client.request(method, path, json=body, **kwargs)
        self.say(f"→ {response.status_code}  {trimmed(body_of(response))}")
        return response


def body_of(response: httpx.Response) -> Any:
    return response.json() if "json" in response.headers.get("content-type", "") else response.text


def expect(response: httpx.Response, status: int = 200) -> Any:
    check(response.status_code == status, f"{response.request.url.path}: status {response.status_code}, not {status}")
    return body_of(response)


def run_command(
    out: Transcript, *args: str, env: dict[str, str] | None = None, tail: int = 12
) -> subprocess.CompletedProcess[str]:
    """Run a project command in the project, ``env`` added to the environment, and print it with the last
    ``tail`` lines of its output."""
    out.say("$ " + " ".join(args))
    # The venv's tools first on PATH: DVC's stages run `python -m ...`, as under make.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=PROJECT, env=env, capture_output=True, text=True, check=False
    )
    for line in (result.stdout + result.stderr).strip().splitlines()[-tail:] if tail else []:
        out.say(f"  {line}")
    out.say(f"  (exit status {result.returncode})")
    return result


def richer(houses: pd.DataFrame) -> pd.DataFrame:
    """SHIFTED houses drawn from ``houses`` (seeded), their median income INCOME_SHIFT times the census figure:
    inputs that drift."""
    shifted = houses.sample(SHIFTED, replace=True, random_state=1)
    income = shifted["median_income"] * INCOME_SHIFT
    shifted["median_income"] = income.clip(upper=NUMERIC_BOUNDS["median_income"].high)
    return shifted


def champion_version() -> str:
    from mlflow import MlflowClient  # slow to import: only once the pipeline step needs it

    client = MlflowClient(tracking_uri(PROJECT))
    return str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)


@dataclass
class Walkthrough:
    """The API steps against one running service; later steps use what earlier ones returned."""

    client: httpx.Client
    workdir: Path
    champion: str
    houses: pd.DataFrame = field(default_factory=lambda: pd.read_csv(TEST_CSV).sample(BATCH, random_state=0))
    priced: dict[str, Any] = field(default_factory=dict)
    batch: dict[str, Any] = field(default_factory=dict)
    houses_priced: int = 0

    def steps(self) -> list[tuple[str, Callable[[Transcript], None]]]:
        return [
            ("Serve: bentoml serve service.service:HousePricer", self.serve),
            ("Price one house: POST /predict, with its interval", self.predict),
            ("Why that price: POST /explain", self.explain),
            (f"Price a batch of {BATCH} houses: POST /predict_batch", self.predict_batch),
            ("MLflow's scoring protocol: POST /invocations", self.invocations),
            ("Bad input: a 400 naming the field and the rule", self.bad_input),
            ("Ground truth: POST /feedback, then GET /accuracy", self.feedback),
            ("Drift: GET /drift and `housing drift`", self.drift),
            ("Prometheus metrics: GET /metrics", self.metrics),
            ("Dashboard: GET /dashboard and the /stats behind it", self.dashboard),
            ("The served model: GET /model", self.model),
        ]

    def records(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        return request_records(rows.drop(columns=TARGET_COLUMN))

    def serve(self, out: Transcript) -> None:
        out.say(f"service at {self.client.base_url}; prediction log and request logs in {self.workdir}")
        expect(out.call(self.client, "GET", "/readyz"))
        health = expect(out.call(self.client, "GET", "/health"))
        check(health["status"] == "ok", f"health is {health['status']}")
        check(health["model_version"] == self.champion, f"serving v{health['model_version']}, not the champion")
        out.say(f"✓ serving {MODEL_NAME} v{self.champion}, the registered champion")

    def predict(self, out: Transcript) -> None:
        house = self.houses.iloc[0]
        body = self.records(self.houses.iloc[:1])[0]
        response = out.call(self.client, "POST", "/predict", body, headers={"X-Request-ID": "demo-predict-1"})
        self.priced = expect(response)
        check(self.priced["request_id"].startswith("demo-predict-1~"), "the client's request id was not kept")
        price, low, high = (self.priced[key] for key in ("price_usd", "lower_usd", "upper_usd"))
        check(0 < low <= price <= high, f"the price {price:,.0f} is not within its bounds {low:,.0f} to {high:,.0f}")
        self.houses_priced += 1
        coverage = self.priced["interval_coverage"]
        out.say(f"✓ {price:,.0f} USD, between {low:,.0f} and {high:,.0f} USD for {coverage:.0%} of houses like it")
        out.say(f"  the census says {house[TARGET_COLUMN]:,.0f} USD")

    def explain(self, out: Transcript) -> None:
        explained = expect(out.call(self.client, "POST", "/explain", self.records(self.houses.iloc[:1])[0]))
        reasons = explained["explanations"][0]
        price, base, contributions = reasons["price_usd"], reasons["base_usd"], reasons["contributions_usd"]
        check(abs(price - self.priced["price_usd"]) < 0.01, "/explain prices the house unlike /predict")
        check(abs(base + sum(contributions.values()) - price) <= 1, "base and contributions do not add up to the price")
        top = sorted(contributions.items(), key=lambda item: -abs(item[1]))[:3]
        out.say(f"✓ {base:,.0f} USD on average, then " + ", ".join(f"{name} {usd:+,.0f}" for name, usd in top)
                + f" … = {price:,.0f} USD")  # fmt: skip

    def predict_batch(self, out: Transcript) -> None:
        self.batch = expect(out.call(self.client, "POST", "/predict_batch", self.records(self.houses)))
        check(self.batch["count"] == BATCH == len(self.batch["prices_usd"]), "not one price per house")
        self.houses_priced += BATCH
        error = (pd.Series(self.batch["prices_usd"], index=self.houses.index) - self.houses[TARGET_COLUMN]).abs()
        out.say(f"✓ {BATCH} prices in request order; mean absolute error against the census {error.mean():,.0f} USD")

    def invocations(self, out: Transcript) -> None:
        rows = self.houses.iloc[:3].drop(columns=TARGET_COLUMN)
        split = json.loads(rows.to_json(orient="split", index=False))
        answer = expect(out.call(self.client, "POST", "/invocations", {"dataframe_split": split}))
        self.houses_priced += len(rows)
        same = all(abs(a - b) < 0.01 for a, b in zip(answer["predictions"], self.batch["prices_usd"], strict=False))
        check(len(answer["predictions"]) == len(rows) and same, "/invocations disagrees with /predict_batch")
        out.say("✓ the same prices as /predict_batch for the same houses")

    def bad_input(self, out: Transcript) -> None:
        house = self.records(self.houses.iloc[:1])[0]
        cases = [
            ("/predict", {**house, "latitude": 48.85}, "latitude", "less_than_equal"),
            ("/predict_batch", [house, {**house, "total_bedrooms": house["total_rooms"] + 1}], "1", "must not exceed"),
        ]
        for path, body, field_name, rule in cases:
            error = json.dumps(expect(out.call(self.client, "POST", path, body), status=400))
            check(field_name in error and rule in error, f"{path}: the error does not name {field_name!r} and {rule!r}")
        out.say("✓ each 400 names the field (and the record's index in a batch) and the rule it broke")

    def feedback(self, out: Transcript) -> None:
        actual = float(self.houses.iloc[0][TARGET_COLUMN])
        body = {"request_id": self.priced["request_id"], "actual_price_usd": actual}
        receipt = expect(out.call(self.client, "POST", "/feedback", body, headers=FEEDBACK_AUTH))
        check(abs(receipt["error_usd"] - (actual - self.priced["price_usd"])) < 0.01, "wrong error in the receipt")
        for index, census in enumerate(self.houses[TARGET_COLUMN].iloc[:FEEDBACK]):
            body = {"request_id": self.batch["request_id"], "index": index, "actual_price_usd": float(census)}
            expect(self.client.post("/feedback", json=body, headers=FEEDBACK_AUTH))
        out.say(f"(and the census price of the first {FEEDBACK} houses of the batch)")
        # Feedback reaches the SQLite log through a background writer: wait for it.
        rows = self.poll("/accuracy", lambda body: bool(body["accuracy"]) and body["accuracy"][0]["n"] > FEEDBACK)
        rows = rows["accuracy"]
        out.say(f"$ GET /accuracy\n→ 200  {trimmed(rows)}")
        first = rows[0]
        out.say(f"✓ {first['n']} houses with ground truth: MAE {first['mae']:,.0f} USD, RMSE {first['rmse']:,.0f}")

    def poll(self, path: str, done: Callable[[Any], bool], timeout_s: float = 10) -> Any:
        """GET ``path`` until ``done`` accepts its body."""
        return wait_until(lambda: expect(self.client.get(path)), timeout_s,
                          f"{path} did not change within {timeout_s:g} s", done, pause_s=0.2)  # fmt: skip

    def drift(self, out: Transcript) -> None:
        report = expect(out.call(self.client, "GET", "/drift"))
        check(report["status"] == "ok", f"drift status {report['status']}")
        check(not report["drift_detected"], f"real test houses flagged as drift: {report['drifted_features']}")
        out.say(f"✓ {report['rows']} real houses: no drift in {len(report['features'])} features")
        out.say(f"Now {SHIFTED} houses whose median income is {INCOME_SHIFT}x the census figure:")
        expect(out.call(self.client, "POST", "/predict_batch", self.records(richer(self.houses))))
        self.houses_priced += SHIFTED
        # The shifted houses reach the log through a background writer: wait for them.
        report = self.poll("/drift", lambda body: body["rows"] >= SHIFTED)
        out.say(f"$ GET /drift\n→ 200  {trimmed(report)}")
        check("median_income" in report["drifted_features"], "shifted incomes not detected")
        cli = run_command(out, "housing", "drift", "--db", str(self.workdir / "predictions.db"),
                          "--out", str(self.workdir / "drift"), "--fail-on-drift")  # fmt: skip
        check(cli.returncode == 1 and "median_income" in cli.stdout, "`housing drift --fail-on-drift` missed it")
        out.say(f"✓ drift in {', '.join(report['drifted_features'])}; the CLI exits 1 for schedulers")

    def metrics(self, out: Transcript) -> None:
        out.say("$ GET /metrics")
        response = self.client.get("/metrics")
        check(response.status_code == 200, f"/metrics: status {response.status_code}")
        samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]
        for sample in samples:
            if sample.name in PROJECT_SERIES:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out.say(f"  {sample.name}{{{labels}}} {sample.value:g}")
        priced = sum(s.value for s in samples if s.name == "housing_predictions_total")
        check(priced == self.houses_priced, f"housing_predictions_total is {priced:g}, {self.houses_priced} priced")
        failures = sum(s.value for s in samples if s.name == "housing_validation_failures_total")
        check(failures >= 2, "the bad requests are not counted")
        out.say(f"✓ {priced:g} houses priced, {failures:g} validation failures, drift flagged for Prometheus")

    def dashboard(self, out: Transcript) -> None:
        page = out.call(self.client, "GET", "/dashboard")
        check(page.status_code == 200 and "<title>Housing price service</title>" in page.text, "no dashboard page")
        out.say("$ GET /stats")
        stats = expect(self.client.get("/stats"))
        this_hour, recent = stats["per_hour"][-1], stats["recent"]
        out.say(f"→ 200  this hour: {trimmed(this_hour)}; latest prediction: {trimmed(recent[:1], 200)}")
        check(this_hour["requests"] >= 4, "this hour's traffic is missing from /stats")
        check(len(recent) > 0, "no recent predictions in /stats")
        out.say(f"✓ open {self.client.base_url}/dashboard: traffic, latency, drift, accuracy, recent predictions")

    def model(self, out: Transcript) -> None:
        info = expect(out.call(self.client, "GET", "/model"))
        metrics = json.loads((PROJECT / "reports" / "metrics.json").read_text())
        check(info["model_version"] == self.champion, f"/model says v{info['model_version']}")
        check(round(info["test_metrics"]["rmse"]) == round(metrics["test"]["rmse"]), "test RMSE differs from reports/")
        out.say(
            f"✓ {info['model_name']} v{info['model_version']} ({info['family']}), run {info['run_id'][:12]}, "
            f"test RMSE {info['test_metrics']['rmse']:,.0f} USD, R² {info['test_metrics']['r2']:.3f}, "
            f"data version {info['data_version'][:12]}"
        )


def pipeline(out: Transcript) -> str:
    """Run the pipeline (each stage skipped when its inputs did not change), show that it is up to date and what
    it registered; returns the champion's version."""
    check(run_command(out, "dvc", "repro").returncode == 0, "dvc repro failed")
    result = run_command(out, "dvc", "status", "--json")
    check(result.returncode == 0, "dvc status failed")
    # A stage marked always_changed (its input lives outside DVC) is never reported up to date.
    stale = [stage for stage, changes in json.loads(result.stdout).items() if changes != ["always changed"]]
    check(not stale, f"stages not up to date: {', '.join(stale)} (make pipeline runs them)")
    out.say("✓ every stage is up to date")
    metrics = json.loads((PROJECT / "reports" / "metrics.json").read_text())
    test = metrics["test"]
    out.say(f"winner: {metrics['winner']} of {', '.join(metrics['families'])}")
    out.say(f"test split ({metrics['test_rows']:,} houses): RMSE {test['rmse']:,.0f} USD, R² {test['r2']:.3f}")
    check(metrics["quality_floor"]["met"], "the model misses the quality floor")
    version = champion_version()
    out.say(f"✓ registry: {MODEL_NAME}@champion is version {version}")
    return version


Hook = Callable[[Transcript, str], None]


def step(title: str, number: int, action: Callable[[Transcript], Any], on_step: Hook | None, url: str) -> Any:
    out = Transcript(f"{number}. {title}")
    print(f"\n{RULE}\n{out.title}\n{RULE}", flush=True)
    result = action(out)
    if on_step:
        on_step(out, url)
    return result


@contextmanager
def serving(workdir: Path) -> Iterator[str]:
    """The real `bentoml serve` on a free port, stopped however the walkthrough ends."""
    port = free_port()
    server = serve_bentoml(port, workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        print(f"\nstarting bentoml serve on port {port} …", flush=True)
        wait_ready(f"{url}/readyz", server)
        yield url
    finally:
        stop(server)
        print(f"\nserver on port {port} stopped", flush=True)


def walk(workdir: Path, on_step: Hook | None = None) -> None:
    """Every step in order; ``on_step`` sees each finished step with the service URL (the video uses it)."""
    champion = step("Pipeline: DVC and the MLflow registry", 1, pipeline, on_step, "")
    with serving(workdir) as url, httpx.Client(base_url=url, timeout=60) as client:
        tour = Walkthrough(client, workdir, champion)
        for number, (title, action) in enumerate(tour.steps(), start=2):
            step(title, number, action, on_step, url)


def main() -> None:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="housing-demo-") as workdir:
        try:
            walk(Path(workdir))
        # Whatever broke, say so, show the server's last words and exit 1 (the server is already stopped).
        except Exception as exc:
            print(f"\n✗ demo failed: {exc!r}", file=sys.stderr)
            log = Path(workdir) / "bentoml.log"
            if log.exists():
                print(log.read_text()[-3000:], file=sys.stderr)
            sys.exit(1)
    print(f"\n✓ demo passed in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
