"""`make demo-video`: the demo walkthrough recorded as reports/demo/demo.mp4.

Runs the same checked walkthrough as `make demo` and turns it into captioned frames:
each step's printed output rendered as a terminal page, and screenshots (headless
Chromium) of the MLflow UI (experiment and registered model), the service's Swagger
UIs (/ and /docs) and the live dashboard. ffmpeg stitches the frames into an H.264
MP4 of a few minutes; nothing is recorded by hand, so it can be regenerated any time.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page

from load_tests.benchmark import BIN, ROOT, free_port, stop, wait_ready
from scripts.browser import chromium
from scripts.demo import MODEL_NAME, Transcript, champion_version, walk

OUT_DIR = ROOT / "reports" / "demo"
WIDTH, HEIGHT = 1600, 900
CAPTION_HEIGHT = 110
FPS = 10
SCREENSHOT_S = 7.0
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
class Frames:
    """Renders captioned frames of one size in Chromium and remembers how long each is shown."""

    # Browsing and frame rendering use separate tabs: set_content keeps the tab's URL, so browsing
    # to another route of the same single-page app from there would only change the hash.
    page: Page
    canvas: Page
    folder: Path
    shown: list[tuple[Path, float]] = field(default_factory=list)

    @classmethod
    def open(cls, browser: Browser, folder: Path) -> Frames:
        browse = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT - CAPTION_HEIGHT})
        return cls(browse, browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}), folder)

    def _render(self, title: str, subtitle: str, content: str, seconds: float) -> Path:
        path = self.folder / f"{len(self.shown):02d}.png"
        self.canvas.set_content(
            FRAME_HTML.format(width=WIDTH, height=HEIGHT, caption=CAPTION_HEIGHT, body=HEIGHT - CAPTION_HEIGHT,
                              title=html.escape(title), subtitle=html.escape(subtitle), content=content)
        )  # fmt: skip
        self.canvas.screenshot(path=str(path))
        self.shown.append((path, seconds))
        return path

    def text(self, title: str, subtitle: str, lines: list[str]) -> Path:
        # Long enough to read: a few seconds plus a little per line.
        seconds = min(14.0, 4.0 + 0.5 * len(lines))
        return self._render(title, subtitle, f"<pre>{html.escape(chr(10).join(lines))}</pre>", seconds)

    def image(self, title: str, subtitle: str, png: Path) -> Path:
        data = base64.b64encode(png.read_bytes()).decode()
        return self._render(title, subtitle, f'<img src="data:image/png;base64,{data}">', SCREENSHOT_S)

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
        shot = self.folder / f"{len(self.shown):02d}-page.png"
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
        [ffmpeg("ffmpeg"), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(concat),
         "-vf", f"fps={FPS},format=yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage",
         "-movflags", "+faststart", str(out)],
        check=True,
    )  # fmt: skip
    concat.unlink()


def probe(video: Path) -> dict[str, Any]:
    """Codec, size and duration of a video's first stream, as ffprobe reports them."""
    result = subprocess.run(
        [ffmpeg("ffprobe"), "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,pix_fmt:format=duration,size", "-of", "json", str(video)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(result.stdout)
    return {**info["streams"][0], "duration_s": float(info["format"]["duration"]), "bytes": int(info["format"]["size"])}


def ffmpeg(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is not installed (apt-get install ffmpeg)")
    return path


@contextmanager
def mlflow_ui(workdir: Path) -> Iterator[str]:
    """`mlflow server` on the project's tracking store (MLflow's default, or MLFLOW_TRACKING_URI)."""
    import mlflow  # slow to import: only when recording

    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow.get_tracking_uri(),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=(workdir / "mlflow.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/health", server)
        yield url
    finally:
        stop(server)


def experiment_id(name: str) -> str:
    from mlflow import MlflowClient

    experiment = MlflowClient().get_experiment_by_name(name)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment {name!r}: run make pipeline")
    return str(experiment.experiment_id)


def showing(text: str) -> str:
    """A JS condition: the page shows ``text``."""
    return f"document.body.innerText.includes({json.dumps(text)})"


@dataclass
class Recording:
    """Turns each finished demo step into frames, with browser views where they belong."""

    frames: Frames
    mlflow_url: str

    def on_step(self, out: Transcript, service_url: str) -> None:
        self.frames.text(out.title, "make demo: what the walkthrough prints", out.lines)
        # Step titles read "<n>. <Topic>: ..."; three topics have something to show in a browser.
        topic = out.title.split(". ", 1)[1].split(":", 1)[0]
        views = {"Pipeline": self.mlflow, "Serve": self.swagger, "Dashboard": self.dashboard}
        if topic in views:
            views[topic](service_url)

    def swagger(self, service_url: str) -> None:
        # BentoML's page lists every route and serves its own assets; FastAPI's /docs loads them from a CDN.
        self.frames.screenshot(service_url, "Swagger UI (/): the prediction API",
                               "BentoML documents every endpoint with a worked example",
                               top="Service APIs")  # fmt: skip
        self.frames.screenshot(service_url, "Swagger UI (/): the GET views",
                               "the served model, health, drift, accuracy, traffic statistics, the dashboard",
                               top="/model")  # fmt: skip

    def dashboard(self, service_url: str) -> None:
        self.frames.screenshot(
            f"{service_url}/dashboard", "The live dashboard (/dashboard)",
            "traffic, latency, drift per feature, accuracy against feedback, recent predictions",
            ready="document.getElementById('updated').textContent.startsWith('updated')",
        )  # fmt: skip

    def mlflow(self, _service_url: str) -> None:
        experiment, champion = experiment_id("housing-price-prediction"), champion_version()
        pages = [
            (f"experiments/{experiment}/runs", "MLflow: the training runs",
             "one parent run per model family (its candidates nested inside), every pipeline run kept",
             "gradient_boosting"),
            (f"models/{MODEL_NAME}", f"MLflow registry: {MODEL_NAME}",
             "every registered version, tagged with its metrics, data version and promotion decision", "Version"),
            (f"models/{MODEL_NAME}/versions/{champion}", f"MLflow registry: version {champion} is @champion",
             "the version the service loads from the BentoML store", "champion"),
        ]  # fmt: skip
        for route, title, subtitle, text in pages:
            # MLflow's UI keeps polling, so the page never goes idle: wait for what it must show.
            self.frames.screenshot(f"{self.mlflow_url}/#/{route}", title, subtitle, ready=showing(text),
                                   dismiss=MLFLOW_ASSISTANT_CLOSE)  # fmt: skip


def record(out: Path) -> dict[str, Any]:
    folder = out.parent / "frames"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.monotonic()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="housing-video-")))
        frames = Frames.open(stack.enter_context(chromium()), folder)
        frames.text("housing-price-mlops: end-to-end demo", "recorded by make demo-video",
                    ["DVC pipeline ▸ MLflow registry (@champion) ▸ BentoML service ▸ monitoring", "",
                     "Every step below is checked; the walkthrough fails on the first surprise."])  # fmt: skip
        walk(workdir, Recording(frames, stack.enter_context(mlflow_ui(workdir))).on_step)
        frames.text("Done", "regenerate this video with make demo-video",
                    [f"walkthrough passed in {time.monotonic() - start:.0f} s; the server is stopped"])  # fmt: skip
    stitch(frames.shown, out)
    return probe(out)


def main() -> None:
    out = OUT_DIR / "demo.mp4"
    info = record(out)
    print(f"\n✓ {out.relative_to(ROOT)}: {info['duration_s']:.0f} s, {info['bytes'] / 1e6:.1f} MB, "
          f"{info['codec_name']} {info['width']}x{info['height']}")  # fmt: skip


if __name__ == "__main__":
    main()
