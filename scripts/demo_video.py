"""`make demo-video`: the demo walkthrough recorded as reports/demo/demo.mp4.

Runs the same checked walkthrough as `make demo` and turns it into narrated scenes: each step's
printed output rendered as a terminal page, and real screens (headless Chromium) of the MLflow UI
(runs, a child run, the registry, the model card), Swagger, Prometheus with the project's alerts
and the live dashboard under Locust load; then a live retraining on a scratch copy of the project
(scripts.fleet): drift and sales reach two replicas, `housing retrain` promotes a better model and
both replicas switch to it under load; the image built by `make image`'s steps and started under
podman, and the Kubernetes production overlay rendered.
Every scene checks what it shows, so a failing step fails the recording. Each scene's narration
(espeak-ng) sets how long its frames are shown; scripts/narration.py lays out the audio, the soft
subtitles and the MP4, and measures the result: 4.5 to 5.5 minutes, each scene in step with its
narration within a second, or `make demo-video` fails.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml
from playwright.sync_api import Browser, Page

from devtools.browser import chromium
from devtools.houses import request_records
from devtools.paths import BIN, ROOT
from devtools.ports import free_port
from devtools.processes import start_logged, stop
from devtools.serving import FEEDBACK_AUTH
from devtools.waits import wait_ready, wait_until
from housing.columns import TARGET_COLUMN
from housing.jobs import JobRunner
from housing.log.store import SQLiteStore
from scripts.demo import (
    BATCH,
    MODEL_NAME,
    Transcript,
    champion_version,
    check,
    expect,
    richer,
    run_command,
    trimmed,
    walk,
)
from scripts.fleet import Load, import_champion, project_env, replicas, scratch_project, serving
from scripts.narration import (
    SceneSync,
    VideoCheckError,
    check_video,
    mux,
    narration_track,
    srt,
    streams,
    synthesize,
    timeline,
    tool,
)
from service.api_docs import GROUPS

OUT_DIR = ROOT / "reports" / "demo"
WIDTH, HEIGHT = 1600, 900
CAPTION_HEIGHT = 110
FPS = 10
EXPERIMENT = "housing-price-prediction"
MONITORING = ROOT / "monitoring"
K8S_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "production"
IMAGE = "localhost/housing-price-service:latest"  # what `make image` tags
CONTAINER_READY_S = 180
LOAD_USERS = 8
LOAD_WARMUP_S = 8  # Locust's traffic reaches the dashboard's charts
LOAD_MIN_REQUESTS = 50
# Sales reported in the retraining scene: the new data the retrained model learns from.
SALES = 200
# MLflow's UI opens an assistant panel over a third of the page.
MLFLOW_ASSISTANT_CLOSE = 'button[aria-label="Close"]'

FRAME_HTML = """<!doctype html><html><head><meta charset="utf-8"><style>
  body {{ margin: 0; width: {width}px; height: {height}px; overflow: hidden; background: #0d1117;
         font-family: 'DejaVu Sans', sans-serif; }}
  header {{ height: {caption}px; box-sizing: border-box; padding: 18px 32px; background: #1d2330; color: #fff; }}
  h1 {{ margin: 0; font-size: 34px; }}
  p {{ margin: 8px 0 0; font-size: 20px; color: #c9d1d9; }}
  main {{ height: {body}px; display: flex; align-items: center; justify-content: center; }}
  img {{ max-width: 100%; max-height: 100%; }}
  pre {{ margin: 0; padding: 20px 32px; width: 100%; height: 100%; box-sizing: border-box; color: #e6edf3;
        font: 18px/1.45 'DejaVu Sans Mono', monospace; white-space: pre-wrap; word-break: break-all; }}
</style></head><body><header><h1>{title}</h1><p>{subtitle}</p></header><main>{content}</main></body></html>"""


@dataclass
class Scene:
    """What is said, and the frames shown meanwhile (each for an equal share of the narration)."""

    narration: str
    frames: list[Path] = field(default_factory=list)


@dataclass
class Frames:
    """Renders captioned frames of one size in Chromium, grouped by the scene they belong to."""

    # Browsing and frame rendering use separate tabs: set_content keeps the tab's URL, so browsing
    # to another route of the same single-page app from there would only change the hash.
    page: Page
    canvas: Page
    folder: Path
    scenes: list[Scene] = field(default_factory=list)

    @classmethod
    def open(cls, browser: Browser, folder: Path) -> Frames:
        # The dashboard's Content-Security-Policy forbids eval, which Playwright's string conditions use: the
        # recorder waits on pages, it does not check their policy (tests/monitoring/test_dashboard.py does).
        browse = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT - CAPTION_HEIGHT}, bypass_csp=True)
        return cls(browse, browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}), folder)

    def scene(self, narration: str) -> None:
        """Start a scene: the frames rendered from now on are shown while ``narration`` is spoken."""
        self.scenes.append(Scene(narration))

    @property
    def count(self) -> int:
        return sum(len(scene.frames) for scene in self.scenes)

    def _render(self, title: str, subtitle: str, content: str) -> Path:
        path = self.folder / f"{self.count:02d}.png"
        self.canvas.set_content(
            FRAME_HTML.format(width=WIDTH, height=HEIGHT, caption=CAPTION_HEIGHT, body=HEIGHT - CAPTION_HEIGHT,
                              title=html.escape(title), subtitle=html.escape(subtitle), content=content)
        )  # fmt: skip
        self.canvas.screenshot(path=str(path))
        self.scenes[-1].frames.append(path)
        return path

    def text(self, title: str, subtitle: str, lines: list[str]) -> Path:
        return self._render(title, subtitle, f"<pre>{html.escape(chr(10).join(lines))}</pre>")

    def image(self, title: str, subtitle: str, png: Path) -> Path:
        data = base64.b64encode(png.read_bytes()).decode()
        return self._render(title, subtitle, f'<img src="data:image/png;base64,{data}">')

    def screenshot(
        self, url: str, title: str, subtitle: str, ready: str | None = None, dismiss: str = "", top: str = ""
    ) -> Path:
        """A browser view of ``url`` as a captioned frame.

        ``ready`` is a JS condition to wait for, ``dismiss`` a selector of a panel's close button,
        ``top`` a text to scroll to the top of the view.
        """
        self.page.goto(url, wait_until="load")
        if ready:
            self.page.wait_for_function(ready, timeout=30_000)
        if dismiss and self.page.locator(dismiss).count():
            self.page.locator(dismiss).first.click()
        if top:
            self.page.get_by_text(top, exact=True).first.evaluate("element => element.scrollIntoView()")
        # Let client-side rendering and charts settle before the picture.
        self.page.wait_for_timeout(1500)
        shot = self.folder / f"{self.count:02d}-page.png"
        self.page.screenshot(path=str(shot))
        return self.image(title, subtitle, shot)


def stitch(frames: list[tuple[Path, float]], out: Path) -> None:
    """One H.264 MP4 showing each frame for its duration (ffmpeg's concat demuxer)."""
    listing = [line for path, seconds in frames for line in (f"file '{path}'", f"duration {seconds:.2f}")]
    # The concat demuxer ignores the last duration unless the last file is listed again.
    listing.append(f"file '{frames[-1][0]}'")
    concat = out.with_suffix(".txt")
    concat.write_text("\n".join(listing) + "\n")
    subprocess.run(
        [tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(concat),
         "-vf", f"fps={FPS},format=yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage",
         "-movflags", "+faststart", str(out)],
        check=True,
    )  # fmt: skip
    concat.unlink()


def probe(video: Path) -> dict[str, Any]:
    """Codec, size and duration of a video's first stream, as ffprobe reports them."""
    result = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,pix_fmt:format=duration,size", "-of", "json", str(video)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(result.stdout)
    return {**info["streams"][0], "duration_s": float(info["format"]["duration"]), "bytes": int(info["format"]["size"])}


def assemble(scenes: list[Scene], out: Path, min_s: float, max_s: float) -> list[SceneSync]:
    """The narrated MP4: each scene's frames for as long as its narration, then the check of the result.

    The narration is synthesized and measured first, so the frames' durations, the audio track and the
    subtitles all come from the same timeline; check_video then measures the MP4 against it.
    """
    work = out.parent / "narration"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    empty = [n for n, scene in enumerate(scenes, 1) if not scene.frames]
    if empty:
        raise VideoCheckError(f"scenes {empty} have no frames")
    wavs = [work / f"{n:02d}.wav" for n in range(len(scenes))]
    durations = [synthesize(scene.narration, wav) for scene, wav in zip(scenes, wavs, strict=True)]
    cues = timeline([scene.narration for scene in scenes], durations)
    shown = [
        (frame, (cue.end_s - cue.start_s) / len(scene.frames))
        for scene, cue in zip(scenes, cues, strict=True)
        for frame in scene.frames
    ]
    stitch(shown, work / "video.mp4")
    narration_track(wavs, cues, work / "narration.wav")
    (work / "subtitles.srt").write_text(srt(cues))
    mux(work / "video.mp4", work / "narration.wav", work / "subtitles.srt", out)
    return check_video(out, cues, min_s, max_s)


@contextmanager
def mlflow_ui(workdir: Path) -> Iterator[str]:
    """`mlflow server` on the project's tracking store (MLflow's default, or MLFLOW_TRACKING_URI)."""
    import mlflow  # slow to import: only when recording

    port, log = free_port(), workdir / "mlflow.log"
    server = start_logged([str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow.get_tracking_uri(),
                           "--host", "127.0.0.1", "--port", str(port)], log, cwd=ROOT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/health", server, log=log)
        yield url
    finally:
        stop(server)


def experiment_id(name: str) -> str:
    from mlflow import MlflowClient

    experiment = MlflowClient().get_experiment_by_name(name)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment {name!r}: run make pipeline")
    return str(experiment.experiment_id)


def child_run(experiment: str) -> Any:
    """The latest nested run of a model search."""
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs([experiment], "tags.mlflow.parentRunId != ''", max_results=1)
    check(bool(runs), "no child runs in MLflow: run make pipeline")
    return runs[0]


@contextmanager
def locust(service_url: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Locust headless with the project's locustfile against the service, stopped when the scene is done."""
    # In the checkout, which Locust puts on the locustfile's import path (it imports devtools).
    load = start_logged(
        [str(BIN / "locust"), "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
         "--users", str(LOAD_USERS), "--spawn-rate", str(LOAD_USERS), "--run-time", "5m", "--host", service_url,
         "--only-summary"], workdir / "locust.log", cwd=ROOT,
    )  # fmt: skip
    try:
        yield load
    finally:
        stop(load)


@contextmanager
def prometheus_ui(service_url: str, workdir: Path) -> Iterator[str]:
    """Prometheus scraping the service every second with monitoring/prometheus.yml's job and alerts.yml's rules."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    config.pop("alerting", None)  # no Alertmanager in the demo
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [service_url.removeprefix("http://")]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), workdir / "prometheus.log"
    server = start_logged([tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                           f"--storage.tsdb.path={workdir / 'prometheus'}", f"--web.listen-address=127.0.0.1:{port}"],
                          log)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", server, log=log)
        wait_query(url, 'up{job="housing-price-service"} == 1', "Prometheus never scraped the service")
        yield url
    finally:
        stop(server)


def wait_query(url: str, promql: str, failure: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The PromQL query's result once it has one; after ``timeout_s`` the scene fails with ``failure``."""
    query = {"query": promql}
    return wait_until(lambda: list(httpx.get(f"{url}/api/v1/query", params=query, timeout=10).json()["data"]["result"]),
                      timeout_s, failure, pause_s=0.5)  # fmt: skip


def build_image(out: Transcript) -> str:
    """`make image`'s two steps as the Makefile runs them (`bentoml build`, then `bentoml containerize` on podman).

    Returns the bento the image holds (name:version).
    """
    from scripts.image import build, image_size

    started = time.monotonic()
    out.say("$ make image   # bentoml build, then bentoml containerize --backend podman")
    built = subprocess.run([str(BIN / "bentoml"), "build", "--output", "tag"], cwd=ROOT, capture_output=True,
                           text=True, check=True, timeout=600)  # fmt: skip
    image = build(built.stdout.strip().splitlines()[-1].removeprefix("__tag__:"), engine="podman")
    check(IMAGE.removeprefix("localhost/") in image.tags, f"the build did not tag {IMAGE}")
    base = f"{image.base} (the offline stand-in)" if image.stand_in_base else image.base
    out.say(f"→ bento {image.bento}\n→ image {', '.join(image.tags)} on {base}\n"
            f"→ {image_size('podman', IMAGE) / 1e6:,.0f} MB, built in {time.monotonic() - started:.0f} s")  # fmt: skip
    return image.bento


@contextmanager
def container(out: Transcript) -> Iterator[str]:
    """The image `make image` built, run as tests/delivery/test_image.py runs it, until /readyz answers 200."""
    from scripts.image import engine_env

    volume = Path(tempfile.mkdtemp(prefix="housing-video-var-"))
    volume.chmod(0o777)  # the image's user (UID 1034) writes there, whatever the host's UID mapping
    port, name = free_port(), f"housing-video-{uuid.uuid4().hex[:8]}"
    home = "/home/bentoml"
    podman = tool("podman")
    command = [podman, "run", "-d", "--name", name, "--read-only", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "-v", f"{volume}:{home}/var",
               "-e", f"HOUSING_PREDICTION_DB={home}/var/predictions.db", "-p", f"127.0.0.1:{port}:3000"]  # fmt: skip
    for path in ("bentos", "models", "envs", "tmp", "prometheus_multiproc_dir"):
        command += ["--tmpfs", f"{home}/{path}:size=256m"]
    command += ["--tmpfs", "/tmp:size=256m", IMAGE]  # noqa: S108  # nosec B108
    out.say("$ podman " + " ".join(command[1:]))
    started = time.monotonic()
    subprocess.run(command, env=engine_env(), capture_output=True, text=True, check=True, timeout=120)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200,
                   started + CONTAINER_READY_S - time.monotonic(),
                   f"the container was not ready within {CONTAINER_READY_S} s", pause_s=0.5)  # fmt: skip
        out.say(f"$ GET /readyz\n→ 200 after {time.monotonic() - started:.0f} s")
        yield url
    finally:
        subprocess.run([podman, "rm", "-f", name], env=engine_env(), capture_output=True, check=False)
        shutil.rmtree(volume, ignore_errors=True)


def showing(text: str) -> str:
    """A JS condition: the page shows ``text``."""
    return f"document.body.innerText.includes({json.dumps(text)})"


# What is said over each walkthrough step, by the step's topic (its title up to the first colon).
NARRATION = {
    "Pipeline": "First, the pipeline. D V C repro runs the stages, ingest, validate, feedback, prepare, train, "
    "evaluate and register, and skips every stage whose inputs did not change. The reports name the winning "
    "model family and its error on the held out test split, and the registry's champion alias names the "
    "version the service loads.",
    "Serve": "Now the service. Bento M L serve loads the champion from the Bento M L store, and health says which "
    "version runs. The Swagger U I documents every endpoint with a worked example: predictions, feedback, "
    "drift, accuracy, the admin actions and the read only views.",
    "Price one house": "One house, priced. Besides the price, the answer carries a lower and an upper bound: a "
    "conformal interval that holds the sale price for ninety percent of houses like this one. The request I D "
    "comes back, so that the sale price can be reported against it later.",
    "Why that price": "And why that price: each input's contribution in dollars, from the forest's exact "
    "Shapley values. The model's average price plus the contributions adds up to the price served.",
    f"Price a batch of {BATCH} houses": "A batch of five hundred houses comes back in request order, with its "
    "mean error against the census.",
    "MLflow's scoring protocol": "M L flow's own scoring protocol, slash invocations, answers too, with the same "
    "prices for the same houses.",
    "Bad input": "Bad input never reaches the model. A latitude outside California, or more bedrooms than rooms, "
    "gets a four hundred that names the field, the record's index in a batch, and the rule it broke.",
    "Ground truth": "When a sale closes, its price comes back as feedback, against the request I D. Slash accuracy "
    "then measures the live error, mean absolute and root mean squared, on the houses with ground truth.",
    "Drift": "Drift. Real test houses show none. Then a thousand houses whose median income is one point six "
    "times the census figure: the drift test flags median income, and the housing drift command exits with "
    "status one, so that a scheduler can act on it.",
    "Prometheus metrics": "The metrics endpoint counts every prediction and every validation failure, and "
    "exposes the drift flag and the model version for Prometheus.",
    "Dashboard": "The dashboard and the statistics behind it: traffic per hour and the latest predictions.",
    "The served model": "The served model: its version, family, training run, test error and data version, "
    "the same figures as the pipeline's reports.",
}
INTRO = (
    "This is housing price M L ops, an end to end system that prices California houses. A D V C pipeline trains "
    "and registers the model in M L flow, a Bento M L service serves it with price intervals, and Prometheus, a "
    "live dashboard and drift checks watch it. Every step is checked as it is recorded."
)
OUTRO = (
    "That is the system: from data to model, to service, to monitoring, and back. Run make demo for this "
    "walkthrough in a terminal, and make demo video to record this video again."
)
# The finished video must last 4.5 to 5.5 minutes.
MIN_S, MAX_S = 270.0, 330.0


@dataclass
class Recording:
    """Turns each finished demo step into a narrated scene, with browser views where they belong."""

    frames: Frames
    mlflow_url: str
    workdir: Path

    def on_step(self, out: Transcript, service_url: str) -> None:
        # Step titles read "<n>. <Topic>: ..."; some topics have more to show, in scenes of their own.
        topic = out.title.split(". ", 1)[1].split(":", 1)[0]
        self.frames.scene(NARRATION[topic])
        self.frames.text(out.title, "make demo: what the walkthrough prints", out.lines)
        for scene in self.views().get(topic, []):
            scene(service_url)

    def views(self) -> dict[str, list[Callable[[str], None]]]:
        """The scenes shown after a walkthrough step, by the step's topic."""
        return {
            "Pipeline": [self.mlflow_runs, self.mlflow_registry],
            "Serve": [self.swagger],
            "Prometheus metrics": [self.prometheus],
            "Dashboard": [self.dashboard],
            "The served model": [self.model_card],
        }

    def swagger(self, service_url: str) -> None:
        # The service's Swagger page (service/api_docs.py): every route, grouped by purpose, from its own assets.
        self.frames.screenshot(service_url, "Swagger UI (/): pricing",
                               "every operation with an example request and the errors it can answer",
                               top=GROUPS["pricing"])  # fmt: skip
        self.frames.screenshot(service_url, "Swagger UI (/): the model and monitoring",
                               "the served model, health, drift, accuracy, traffic statistics, the dashboard",
                               top="/model")  # fmt: skip

    def dashboard(self, service_url: str) -> None:
        self.frames.scene(
            "Locust now sends a realistic mix of traffic: single houses, batches, feedback and invalid requests, "
            "which must get a four hundred. The live dashboard follows it as it comes: requests and latency, drift "
            "per feature, accuracy against feedback, and the latest predictions."
        )
        before = httpx.get(f"{service_url}/stats", timeout=30).json()["per_hour"][-1]["requests"]
        with locust(service_url, self.workdir) as load:
            time.sleep(LOAD_WARMUP_S)
            self.frames.screenshot(
                f"{service_url}/dashboard", f"The live dashboard under Locust load ({LOAD_USERS} users)",
                "load_tests/locustfile.py: single houses, batches, feedback and invalid requests",
                ready="document.getElementById('updated').textContent.startsWith('updated')",
            )  # fmt: skip
            check(load.poll() is None, f"Locust stopped early: {(self.workdir / 'locust.log').read_text()[-2000:]}")
        during = httpx.get(f"{service_url}/stats", timeout=30).json()["per_hour"][-1]["requests"]
        check(during - before >= LOAD_MIN_REQUESTS, f"Locust sent only {during - before} requests")
        self.frames.text("Locust: the load behind the dashboard", "its summary, and what the service counted",
                         [*(self.workdir / "locust.log").read_text().strip().splitlines()[-14:], "",
                          f"✓ the service counted {during - before:,} more requests this hour"])  # fmt: skip

    def prometheus(self, service_url: str) -> None:
        self.frames.scene(
            "A real Prometheus scrapes this service every second with the project's alert rules. The drift alert "
            "is already pending: if drift lasts thirty minutes it fires, and Alertmanager calls the service's "
            "retraining webhook. Accuracy, interval coverage, errors, latency and silence have rules of their own."
        )
        with prometheus_ui(service_url, self.workdir) as url:
            pending = 'ALERTS{alertname="HousingDriftDetected",alertstate="pending"}'
            wait_query(url, pending, "the drift alert is not pending")
            # Debian's Prometheus (make tools) ships the classic UI only, under /classic.
            self.frames.screenshot(f"{url}/classic/alerts", "Prometheus: the alert rules of monitoring/alerts.yml",
                                   "HousingDriftDetected is pending: the service flags drift",
                                   ready=showing("HousingDriftDetected"))  # fmt: skip
            self.frames.screenshot(f"{url}/classic/graph?g0.expr=sum%20by%20(instance)%20(housing_predictions_total)"
                                   "&g0.tab=0&g0.range_input=5m", "Prometheus: houses priced",
                                   "housing_predictions_total, scraped from the service every second",
                                   ready=showing("housing_predictions_total"))  # fmt: skip

    def mlflow_runs(self, _service_url: str) -> None:
        self.frames.scene(
            "In the M L flow U I, each pipeline run logs one parent run per model family, with every candidate of "
            "its hyper parameter search nested inside as a child run. Nothing is overwritten: every run is kept "
            "with its parameters, metrics and data version."
        )
        experiment = experiment_id(EXPERIMENT)
        self.mlflow_page(f"experiments/{experiment}/runs", "MLflow: the training runs",
                         "one parent run per model family (its candidates nested inside), every pipeline run kept",
                         "gradient_boosting")  # fmt: skip
        child = child_run(experiment)
        self.mlflow_page(
            f"experiments/{experiment}/runs/{child.info.run_id}",
            f"MLflow: a child run, {child.info.run_name}",
            "one candidate of the search, nested in its family's parent run",
            child.info.run_name,
        )

    def mlflow_registry(self, _service_url: str) -> None:
        self.frames.scene(
            "The registry keeps every version that met the quality floor. Each version's description is its "
            "model card: what it was trained on, its test error, its interval coverage and its limits. The "
            "champion alias marks the version the service loads."
        )
        champion = champion_version()
        self.mlflow_page(f"models/{MODEL_NAME}", f"MLflow registry: {MODEL_NAME}",
                         "every registered version, tagged with its metrics, data version and promotion decision",
                         "Version")  # fmt: skip
        self.mlflow_page(f"models/{MODEL_NAME}/versions/{champion}",
                         f"MLflow registry: version {champion} is @champion, its description the model card",
                         "the version the service loads from the BentoML store", "Model card:")  # fmt: skip

    def mlflow_page(self, route: str, title: str, subtitle: str, text: str) -> None:
        # MLflow's UI keeps polling, so the page never goes idle: wait for what it must show.
        self.frames.screenshot(f"{self.mlflow_url}/#/{route}", title, subtitle, ready=showing(text),
                               dismiss=MLFLOW_ASSISTANT_CLOSE)  # fmt: skip

    def model_card(self, service_url: str) -> None:
        self.frames.scene(
            "The service serves the same model card at slash model slash card, so whoever calls the A P I can "
            "read what the model is, how well it does, and where it should not be trusted."
        )
        response = httpx.get(f"{service_url}/model/card", timeout=30)
        check(response.status_code == 200, f"/model/card: status {response.status_code}")
        card = response.text if "json" not in response.headers.get("content-type", "") else str(response.json())
        version = httpx.get(f"{service_url}/model", timeout=30).json()["model_version"]
        check(version in card and "interval" in card.lower(), "the card names neither the version nor its intervals")
        self.frames.text("GET /model/card", "the model card: the registered version's MLflow description",
                         ["$ GET /model/card", *card.strip().splitlines()[:28]])  # fmt: skip

    def retraining(self) -> None:
        self.frames.scene(
            "Now a live retraining, on a scratch copy of the project. Two replicas, each with its own model store, "
            "share one prediction log and follow the registry's champion. Richer houses arrive and two hundred "
            "sales close; housing retrain sees the drift and reruns the pipeline."
        )
        folder = self.workdir / "fleet"
        project = scratch_project(folder)
        homes = [folder / "home-pipeline", folder / "home-1", folder / "home-2"]
        champion = import_champion(homes[0], project_env(project), project)
        for home in homes[1:]:
            shutil.copytree(homes[0], home)  # each replica's host is set up the same way
        host = PipelineHost(project, folder / "predictions.db", project_env(project) | {"BENTOML_HOME": str(homes[0])})
        out = Transcript("Drift ▸ housing retrain ▸ the pipeline reruns")
        with replicas(project, folder, homes[1:], host.log_db) as urls:
            check(serving(urls) == [champion] * len(urls), f"the replicas do not serve the champion v{champion}")
            out.say(f"{len(urls)} replicas ({', '.join(urls)}), each with its own BentoML store, one prediction log, "
                    f"following @champion: all serve v{champion}")  # fmt: skip
            houses = pd.read_csv(project / "data" / "processed" / "train.csv")
            sold = houses.sample(SALES, random_state=5)
            records = request_records(sold.drop(columns=TARGET_COLUMN))
            self.drift_and_sales(out, urls[0], records, sold[TARGET_COLUMN], richer(houses.drop(columns=TARGET_COLUMN)))
            load = Load(urls, records, clients=2, pause_s=0.05)
            started = time.time()
            decision, lines = load.run(lambda: host.retrain_and_follow(out, urls))
        check(load.statuses() == {200} and not load.errors, f"answers {load.statuses()}, errors {load.errors[:3]}")
        new = decision["champion_after"]
        self.frames.text("Retraining, live: drift ▸ housing retrain",
                         "a scratch copy of the project: its own DVC workspace, MLflow store and replicas",
                         out.lines)  # fmt: skip
        if decision["action"] == "promote":
            self.frames.scene(
                "The new model beat the champion on the same test houses: promoted, and both replicas switched "
                "under load, without a failed request."
            )
        else:
            self.frames.scene(
                "The new model did not beat the champion on the same test houses, so it was refused. A rollback "
                "moves the champion too, and both replicas follow it under load, without a failed request."
            )
        moved = float(decision["ts"])
        lines[:0] = [f"{len(load.answers):,} predictions during the {moved - started:.0f} s of retraining and after, "
                     "round robin over the replicas: all 200",
                     *(f"replica {n}: v{champion} until {load.switch_s(n - 1, champion, new, moved):.1f} s after "
                       f"@champion moved, v{new} after" for n in range(1, len(urls) + 1)), ""]  # fmt: skip
        self.frames.text(f"Both replicas follow @champion to v{new}, under load",
                         "each replica's champion follower imports the version and switches its workers",
                         lines)  # fmt: skip

    def drift_and_sales(
        self, out: Transcript, url: str, sold: list[dict[str, Any]], prices: pd.Series, drifting: pd.DataFrame
    ) -> None:
        """Price the houses ``sold`` and report ``prices`` as their sales, then price ``drifting`` until drift
        shows."""
        with httpx.Client(base_url=url, timeout=120) as client:
            # A fixed request ID: which sales join the test split (a hash of it) is the same in every recording.
            headers = {"X-Request-ID": "demo-video-sales"}
            priced = expect(client.post("/predict_batch", json=sold, headers=headers))
            for index, price in enumerate(prices):
                sale = {"request_id": priced["request_id"], "index": index, "actual_price_usd": float(price)}
                expect(client.post("/feedback", json=sale, headers=FEEDBACK_AUTH))
            out.say(f"{len(sold)} houses priced, and their sale prices reported: POST /feedback")
            expect(out.call(client, "POST", "/predict_batch", request_records(drifting)))
            report = wait_until(lambda: expect(client.get("/drift")), 30,
                                lambda body: f"no drift flagged: {trimmed(body)}",
                                lambda body: "median_income" in body["drifted_features"], pause_s=0.5)  # fmt: skip
        out.say(f"$ GET /drift\n→ 200  drift in {', '.join(report['drifted_features'])}")

    def container(self) -> None:
        self.frames.scene(
            "The same service in a container, built here by make image with bento M L containerize. It starts "
            "with a read only root file system, no capabilities, as a user who is not root, and its readiness "
            "probe says when it serves."
        )
        out = Transcript("The image built and starting")
        bento = build_image(out)
        with container(out) as url:
            health = httpx.get(f"{url}/health", timeout=30).json()
            out.say(f"$ GET /health\n→ 200  {json.dumps(health)}")
            check(health["status"] == "ok", f"the container's health is {health['status']}")
            out.say(f"✓ the image of {bento} serves {MODEL_NAME} v{health['model_version']}")
        self.frames.text(f"The container: {IMAGE} under podman", "built by make image just now; /readyz says it serves",
                         out.lines)  # fmt: skip

    def kubernetes(self) -> None:
        self.frames.scene(
            "Finally, Kubernetes. Kube control kustomize renders the production overlay: a deployment with at "
            "least three replicas, probes on live z and ready z, a horizontal pod autoscaler, a pod disruption "
            "budget, network policies, and a service monitor for Prometheus."
        )
        rendered = subprocess.run([tool("kubectl"), "kustomize", str(K8S_OVERLAY)], capture_output=True, text=True,
                                  check=True).stdout  # fmt: skip
        documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
        kinds = sorted({doc["kind"] for doc in documents})
        wanted = {"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy"}
        check(wanted <= set(kinds), f"the production overlay lacks {wanted - set(kinds)}")
        autoscaler = next(doc for doc in documents if doc["kind"] == "HorizontalPodAutoscaler")
        check(autoscaler["spec"]["minReplicas"] >= 3, "production runs fewer than three replicas")
        lines = [f"$ kubectl kustomize {K8S_OVERLAY.relative_to(ROOT)}", f"  {len(documents)} objects: "
                 + ", ".join(kinds), f"  HorizontalPodAutoscaler: {autoscaler['spec']['minReplicas']} to "
                 f"{autoscaler['spec']['maxReplicas']} replicas", "", *rendered.splitlines()[:24]]  # fmt: skip
        self.frames.text("Kubernetes: the production overlay rendered", "deploy/k8s/overlays/production", lines)


@dataclass
class PipelineHost:
    """The scratch project's pipeline host: its DVC project, the replicas' prediction log, and its environment."""

    project: Path
    log_db: Path
    env: dict[str, str]

    def retrain_and_follow(self, out: Transcript, urls: list[str]) -> tuple[dict[str, Any], list[str]]:
        """`housing retrain`; when it refuses the new model, `housing rollback` instead, so the champion moves
        either way. Returns the decision that moved it, and the history, once every replica serves its version."""
        result = self.command(out, "retrain", "--db", str(self.log_db), tail=0)
        for line in result.stdout.splitlines():
            if line.startswith("Running stage"):  # what DVC reran: the feedback, the split, training, registration
                out.say(f"  {line}")
        store = SQLiteStore(self.log_db)
        try:
            status = JobRunner(store, self.log_db.parent).status()
        finally:
            store.close()
        decision = status["decision"]
        out.say(f"  reasons: {'; '.join(status['reasons'])}")
        out.say(f"  decision: {decision['action']} v{decision['version']}: {decision['reason']}")
        out.say(f"  took {status['finished'] - status['started']:.0f} s")
        after = Transcript("")
        if decision["action"] != "promote":
            moved = self.command(after, "rollback", "--db", str(self.log_db), "--reason", "the demo: replicas "
                                 "follow a rollback too", tail=0)  # fmt: skip
            decision = json.loads(moved.stdout)["decision"]
            after.say(f"  {decision['action']} v{decision['champion_before']} -> v{decision['version']}")
        new = str(decision["champion_after"])
        wait_until(lambda: serving(urls), 120, lambda versions: f"the replicas serve {versions}, not v{new}",
                   lambda versions: versions == [new] * len(urls), pause_s=0.5)  # fmt: skip
        time.sleep(2)  # the load sees each replica on the new version for a while
        self.command(after, "history", "--limit", "3")
        return decision, after.lines

    def command(self, out: Transcript, *args: str, tail: int = 6) -> subprocess.CompletedProcess[str]:
        """A `housing` command in the scratch project, printed to ``out`` with its output's last ``tail`` lines."""
        result = run_command(out, "housing", *args, "--project-dir", str(self.project), env=self.env, tail=tail)
        output = result.stdout + result.stderr
        check(result.returncode == 0, f"housing {args[0]} failed: {output[-2000:]}")
        return result


def record(out: Path) -> list[SceneSync]:
    """Walk through the system, scene by scene, and assemble the narrated video; returns its measured sync."""
    folder = out.parent / "frames"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.monotonic()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="housing-video-")))
        frames = Frames.open(stack.enter_context(chromium()), folder)
        frames.scene(INTRO)
        frames.text("housing-price-mlops: end-to-end demo", "recorded by make demo-video",
                    ["DVC pipeline ▸ MLflow registry (@champion) ▸ BentoML service ▸ monitoring", "",
                     "Every step below is checked; the recording fails on the first surprise."])  # fmt: skip
        recording = Recording(frames, stack.enter_context(mlflow_ui(workdir)), workdir)
        walk(workdir, recording.on_step)
        recording.retraining()
        recording.container()
        recording.kubernetes()
        frames.scene(OUTRO)
        frames.text("Done", "regenerate this video with make demo-video",
                    [f"every scene checked in {time.monotonic() - start:.0f} s; every server stopped"])  # fmt: skip
    return assemble(frames.scenes, out, MIN_S, MAX_S)


def main() -> None:
    out = OUT_DIR / "demo.mp4"
    report = record(out)
    kinds, duration = streams(out)
    for number, sync in enumerate(report, start=1):
        print(f"scene {number:2d} at {sync.start_s:6.1f} s: subtitle {sync.subtitle_s:.2f} s, speech "
              f"{sync.speech_s:.2f} s, picture {sync.picture_s:.2f} s from its start")  # fmt: skip
    print(f"\n✓ {out.relative_to(ROOT)}: {duration:.1f} s ({duration / 60:.1f} min), streams {', '.join(kinds)}; "
          f"worst sync error {max(s.worst_s for s in report):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
