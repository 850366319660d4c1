"""Benchmark the prediction service against `mlflow models serve`, side by side in one run.

Measures, on this machine and in this order:
  1. single-record latency (p50/p99) at concurrency 1,
  2. throughput and p99 with 32 concurrent clients,
  3. the latency of one 10,000-record batch, back to back and with the log writer idle,
  4. `mlflow models serve` with the same registered model, the same record and the same 32 clients,
     in rounds that alternate with (2) so both see the same machine,
  5. (1) to (3) again on the same service with its forest on LightGBM's booster instead of compiled
     code (HOUSING_COMPILED_DIR empty): what compiling the forest buys, in the same run,
  6. the latency of explaining one house (POST /explain) at concurrency 1, and of (1) right after it,
  7. the batch of (3) in process, stage by stage (the service's own calls, without HTTP), once the servers
     have stopped: where the batch's time goes, and what the forest leaves to everything else,
  8. the batch of (3) through BentoML with the service's request and answer models and no model behind
     them (load_tests/batch_floor.py): the floor under the batch's time on this machine,
  9. the same 10,000 houses as columns (POST /predict_columns: one list per field), back to back and with the
     log writer idle, beside (3),
 10. (1) and (2) on a service of their own with a challenger in shadow and without, in alternating rounds
     (load_tests/bench_shadow.py): what a shadow costs the champion's clients,
 11. the largest `/explain` the service accepts (HOUSING_MAX_EXPLAIN_HOUSES houses) beside the server's timeout,
and writes reports/benchmark.json, from which `python -m scripts.figures` (run next by `make bench`) writes the
README's table. ``--explain-only`` measures (6) alone on one service and prints it, ``--columns-only`` (9) and (3)
alone, ``--shadow-only`` (10) alone, in alternating rounds (no files written).

MLflow runs twice: as `pip install mlflow` ships it (uvicorn on asyncio and h11: MLflow does not
install uvloop or httptools), which is the baseline of the throughput target, and with the uvloop and
httptools this project's service uses, to show how much of the gap is the HTTP server alone. Both
share this venv, so the first pins uvicorn's choices through UVICORN_LOOP and UVICORN_HTTP.
Load comes from wrk (C, so the client takes little of the two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import bentoml
import httpx
import numpy as np

from devtools.houses import as_columns, houses_from
from devtools.paths import BIN, ROOT
from devtools.ports import free_port
from devtools.processes import start_logged, stop
from devtools.serving import serve_bentoml
from devtools.waits import wait_ready
from housing.columns import read_columns
from housing.model_format import fitted_pipeline, target_inverse
from housing.settings import settings
from load_tests.bench_shadow import ADMIN_TOKEN, MAX_P50_RATIO, MIN_THROUGHPUT_RATIO, shadow_cost
from service.api_models import HouseBatch, columns_of
from service.model import ServedModel, forest_prices, load_served_model

TARGETS = {
    "single_p50_ms": 1.5,
    "throughput_ratio": 4.0,
    "throughput_vs_booster": 1.0,
    "p99_32_ms": 50.0,
    "batch_10k_ms": 100.0,
    "columns_10k_ms": 100.0,
    "invalid_vs_batch": 1.0,
    "explain_p50_ms": 10.0,
    # The largest accepted /explain finishes well inside the server's timeout: within a third of it.
    "explain_limit_share_of_timeout": 1 / 3,
    "shadow_single_p50_ratio": MAX_P50_RATIO,
    "shadow_throughput_ratio": MIN_THROUGHPUT_RATIO,
}
# Targets met from above (ratios); the others are ceilings.
AT_LEAST = {"throughput_ratio", "throughput_vs_booster", "shadow_throughput_ratio"}
# Longest the compiled forest may take to be ready when the pipeline did not leave it cached.
COMPILE_WAIT_S = 1800
T = TypeVar("T")
# Seconds between batches timed on their own: the log writer stores a 10,000-house batch in well under one.
BATCH_PAUSE_S = 2.0

WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, '
    .. '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000))
end
"""


def wrk(url: str, body: str, clients: int, seconds: int, workdir: Path) -> dict[str, Any]:
    """Run wrk with a JSON POST body; returns requests/s, latency percentiles (ms) and error counts.

    The clients open their keep-alive connections in one burst, as a client pool or a load balancer does:
    the service spreads them across its workers itself (service.balance).
    """
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body}]==]\n{WRK_REPORT}"
    )
    command = ["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s",
               "-s", str(script), url]  # fmt: skip
    run = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    )
    return {**run, "requests_per_s": run["requests"] / (run["duration_us"] / 1e6), "clients": clients}


def served_per_worker(log_dir: Path) -> Counter[str]:
    """Requests each worker has logged so far, by worker index: the lines of its JSON request log (rotated too)."""
    served: Counter[str] = Counter()
    for path in log_dir.glob("requests-*.log*"):
        with path.open("rb") as lines:
            served[path.name.split(".")[0].removeprefix("requests-")] += sum(1 for _ in lines)
    return served


def wrk_per_worker(call: tuple[str, str], clients: int, seconds: int, workdir: Path) -> dict[str, Any]:
    """:func:`wrk` against our service, with the requests each worker served during the run."""
    before = served_per_worker(workdir / "log")
    run = wrk(*call, clients, seconds, workdir)
    time.sleep(0.5)  # the request log's writer thread flushes every 100 ms
    after = served_per_worker(workdir / "log")
    return {**run, "per_worker": {worker: after[worker] - before[worker] for worker in sorted(after)}}


def batch_latency(url: str, houses: Any, runs: int, pause_s: float = 0.0) -> dict[str, float]:
    """Median, fastest and slowest of ``runs`` posts of ``houses`` (a JSON body: a list of houses, or columns) to
    ``url``, in ms.

    Back to back (``pause_s`` 0), each batch shares the cores with the log writer storing the one before it;
    a pause long enough for the writer to finish times a batch on its own.
    """
    body = json.dumps(houses)
    timings = []
    with httpx.Client(timeout=60) as client:
        for _ in range(runs + 1):  # the first run warms up
            time.sleep(pause_s)
            start = time.perf_counter()
            response = client.post(url, content=body, headers={"Content-Type": "application/json"})
            timings.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    timings = timings[1:]
    return {"median_ms": statistics.median(timings), "min_ms": min(timings), "max_ms": max(timings), "runs": runs}


def batch_stages(model: ServedModel, houses: list[dict[str, Any]], runs: int) -> tuple[dict[str, float], np.ndarray]:
    """Median ms of each stage of pricing ``houses`` in process, and the bounds (n_houses, 2) the stages end with.

    The calls the service makes for a batch, timed one at a time, each on the previous stage's output. A test
    holds the bounds equal to the service's own, so the stages are the whole computation. ``model`` must be a
    LightGBM forest with intervals, its runtimes settled (``ForestRuntime.wait``).
    """
    if model.forest is None or model.scale_forest is None or model.intervals is None:
        raise ValueError("batch stages are measured on a LightGBM forest with intervals")
    forest, scale_forest, intervals = model.forest, model.scale_forest, model.intervals
    features, inverse = fitted_pipeline(model.estimator).named_steps["features"], target_inverse(model.estimator)
    timings: dict[str, float] = {}

    def stage(name: str, compute: Callable[[], T]) -> T:
        times = []
        for _ in range(runs + 1):  # the first run warms up
            start = time.perf_counter()
            out = compute()
            times.append((time.perf_counter() - start) * 1000)
        timings[name] = statistics.median(times[1:])
        return out

    body = json.dumps(houses)
    batch = stage("validate", lambda: HouseBatch.model_validate_json(body).root)
    columns = stage("columns", lambda: read_columns(columns_of(batch)))
    threads = model.threads_for(columns).get("num_threads", 1)  # as many as the service gives this batch
    engineered = stage("features", lambda: features.transform(columns))
    prices = stage("forest", lambda: forest_prices(forest, engineered, inverse, threads))
    scale = stage("scale_model", lambda: scale_forest.predict(intervals.scale_inputs(columns, prices), threads))
    bounds = stage("bounds", lambda: intervals.bounds(prices, intervals.spread(columns, scale)))
    return timings, bounds


def served_champion() -> ServedModel:
    """The model the service serves (``HOUSING_MODEL_TAG``), its compiled forests ready."""
    model = load_served_model(bentoml.models.get(settings().model_tag), settings().compiled_dir)
    for runtime in (model.forest, model.scale_forest):
        if runtime is not None and not runtime.wait(COMPILE_WAIT_S):
            raise SystemExit(f"the served model's forests were not compiled within {COMPILE_WAIT_S} s")
    return model


def invalid_bodies(one: dict[str, Any], batch: int) -> dict[str, tuple[str, bytes]]:
    """The costliest invalid requests a client can send to a service whose largest batch is ``batch`` houses.

    Each is as large as the service lets it be before refusing it unread: the body limit (512 bytes a house)
    and the JSON values a legal batch holds (10 a house).
    """
    limit = batch * 512 + 64 * 1024

    def ones(count: int) -> bytes:
        return b"[" + b",".join([b"1"] * count) + b"]"

    return {
        "numbers where a batch of houses goes": ("/predict_batch", ones(batch * 10)),
        "numbers up to the body limit": ("/predict_batch", ones(limit // 2 - 1)),
        "a house with unknown fields up to the body limit": ("/predict", json.dumps({f"k{i}": 1 for i in range(limit // 14)}).encode()),
        "a house with 40 unknown fields": ("/predict", json.dumps({**one, **{f"k{i}": 1 for i in range(40)}}).encode()),
        "nested 100,000 deep": ("/predict_batch", b"[" * 100_000 + b"]" * 100_000),
        "empty rows where a batch goes (/invocations)": ("/invocations", json.dumps({"dataframe_split": {"columns": [], "data": [[]] * batch * 10}}).encode()),
        "a batch with its last house invalid": ("/predict_batch", json.dumps([one] * (batch - 1) + [{**one, "latitude": 99.0}]).encode()),
    }  # fmt: skip


def invalid_body_latency(base: str, bodies: dict[str, tuple[str, bytes]], runs: int) -> dict[str, dict[str, Any]]:
    """Median time (ms) to the answer of each invalid body, with its status and answer size; each must be a 4xx."""
    out = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, (path, body) in bodies.items():
            timings, statuses, sizes = [], set(), set()
            for _ in range(runs):
                start = time.perf_counter()
                response = client.post(path, content=body, headers={"Content-Type": "application/json"})
                timings.append((time.perf_counter() - start) * 1000)
                statuses.add(response.status_code)
                sizes.add(len(response.content))
            if not all(400 <= status < 500 for status in statuses):
                raise SystemExit(f"{name}: answered {sorted(statuses)}, not a 4xx")
            out[name] = {"median_ms": statistics.median(timings), "status": sorted(statuses),
                         "body_bytes": len(body), "answer_bytes": max(sizes)}  # fmt: skip
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput, with every round's throughput alongside."""
    ranked = sorted(runs, key=lambda r: r["requests_per_s"])
    return {**ranked[len(ranked) // 2], "rounds_requests_per_s": [round(r["requests_per_s"], 1) for r in runs]}


def wait_runtime(url: str, runtime: str, timeout_s: float) -> float:
    """Seconds until ``/health`` says the forest runs on ``runtime`` (the compiled one may still be compiling)."""
    start = time.perf_counter()
    while (health := httpx.get(f"{url}/health", timeout=10).json())["model_runtime"] != runtime:
        if time.perf_counter() - start > timeout_s:
            raise SystemExit(
                f"{url} serves {health['model_runtime']}, not {runtime}: {health['model_runtime_problem']}"
            )
        time.sleep(2)
    return time.perf_counter() - start


def serve_mlflow(port: int, workers: int, workdir: Path, stock: bool = True) -> subprocess.Popen[bytes]:
    """`mlflow models serve` of the champion; ``stock``: on uvicorn's pure-Python defaults, as MLflow installs it."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_MODELS_WORKERS": str(workers)}
    if stock:
        env |= {"UVICORN_LOOP": "asyncio", "UVICORN_HTTP": "h11"}
    command = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/housing-price-model@champion",
               "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "--workers", str(workers)]  # fmt: skip
    return start_logged(command, workdir / f"mlflow-{'stock' if stock else 'fast'}.log", env, cwd=ROOT)


def explain_latency(url: str, one: dict[str, Any], seconds: int, workdir: Path) -> dict[str, Any]:
    """Explaining one house at concurrency 1 (wrk on POST /explain) after a short warm-up on every worker, then
    predicting its price the same way: the two side by side, with the 1-minute load average (the machine may be
    shared)."""
    load = os.getloadavg()[0]
    wrk(f"{url}/explain", json.dumps(one), 2, 2, workdir)
    explained = wrk(f"{url}/explain", json.dumps(one), 1, seconds, workdir)
    predicted = wrk(f"{url}/predict", json.dumps(one), 1, seconds, workdir)
    return {**explained, "predict_p50_ms": predicted["p50_ms"], "load_avg_1m": round(load, 2)}


def explain_at_limit(url: str, test_csv: Path, runs: int) -> dict[str, Any]:
    """The largest `/explain` the service accepts, timed as (3) times a batch, beside the server's timeout (10)."""
    from service.service import HousePricer  # the service's own declaration of its timeout

    limit, timeout_s = settings().max_explain_houses, HousePricer.config["traffic"]["timeout"]
    timed = batch_latency(f"{url}/explain", houses_from(test_csv, limit), runs)
    return {**timed, "houses": limit, "timeout_s": timeout_s, "share_of_timeout": timed["max_ms"] / 1000 / timeout_s}


def columns_latency(url: str, houses: list[dict[str, Any]], runs: int) -> dict[str, dict[str, float]]:
    """``houses`` as columns (POST /predict_columns), back to back and with the log writer idle (9)."""
    columns = as_columns(houses)
    return {
        "columns_10k": batch_latency(f"{url}/predict_columns", columns, runs),
        "columns_10k_paused": batch_latency(f"{url}/predict_columns", columns, runs, BATCH_PAUSE_S),
    }


@contextmanager
def one_service(prefix: str, **env: str) -> Iterator[tuple[str, Path]]:
    """A service of its own (``env`` added to its environment) in a fresh folder, ready and on compiled code; its
    URL and folder. Stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    url, server = f"http://127.0.0.1:{port}", serve_bentoml(port, workdir, **env)
    try:
        wait_ready(f"{url}/readyz", server)
        wait_runtime(url, "lleaves", COMPILE_WAIT_S)
        yield url, workdir
    finally:
        stop(server)
        shutil.rmtree(workdir, ignore_errors=True)


def columns_only(args: argparse.Namespace) -> dict[str, Any]:
    """Only (9) and (3), on one service, in ``args.rounds`` alternating rounds: columns beside the list of houses."""
    batch = houses_from(ROOT / "data" / "processed" / "test.csv", args.batch)
    rounds: dict[str, list[dict[str, float]]] = {}
    with one_service("housing-bench-columns-") as (url, _):
        for _ in range(args.rounds):
            measured = columns_latency(url, batch, args.batch_runs) | {
                "batch_10k": batch_latency(f"{url}/predict_batch", batch, args.batch_runs),
                "batch_10k_paused": batch_latency(f"{url}/predict_batch", batch, args.batch_runs, BATCH_PAUSE_S),
            }
            for name, result in measured.items():
                rounds.setdefault(name, []).append(result)
        model_version = httpx.get(f"{url}/model").json()["model_version"]
    medians = {name: statistics.median(run["median_ms"] for run in runs) for name, runs in rounds.items()}
    return {"model_version": model_version, "houses": args.batch, "median_ms": medians, "rounds": rounds}


# The service with the admin token and the project's registry: a challenger can be put in its shadow.
SHADOWED_ENV = {"HOUSING_ADMIN_TOKEN": ADMIN_TOKEN, "HOUSING_PROJECT_DIR": str(ROOT)}


def measure_shadow(url: str, one: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """(10) on the service at ``url`` (started with ``SHADOWED_ENV``), the champion in its own shadow."""
    version = httpx.get(f"{url}/model").json()["model_version"]
    body = json.dumps(one)
    return shadow_cost(url, version, lambda clients: wrk(f"{url}/predict", body, clients, args.seconds, workdir),
                       args.rounds)  # fmt: skip


def shadow_only(args: argparse.Namespace) -> dict[str, Any]:
    """Only (10), on one service: what a shadow costs."""
    one = houses_from(ROOT / "data" / "processed" / "test.csv", 1)[0]
    with one_service("housing-bench-shadow-", **SHADOWED_ENV) as (url, workdir):
        wrk(f"{url}/predict", json.dumps(one), 8, 3, workdir)  # warm-up
        return measure_shadow(url, one, args, workdir)


def explain_only(args: argparse.Namespace) -> dict[str, Any]:
    """Only (6), on one service: a quick check of the explanation's latency."""
    one = houses_from(ROOT / "data" / "processed" / "test.csv", 1)[0]
    with one_service("housing-bench-explain-") as (url, workdir):
        results = {"model_version": httpx.get(f"{url}/model").json()["model_version"]}
        results["explain_c1"] = explain_latency(url, one, args.seconds, workdir)
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="housing-bench-"))
    test_csv = ROOT / "data" / "processed" / "test.csv"
    one = houses_from(test_csv, 1)[0]
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    ports = {name: free_port() for name in ("single_c32", "booster_c32", "mlflow_c32", "mlflow_fast_c32", "floor",
                                            "shadow")}  # fmt: skip
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    # Every server stays up for the whole run (an idle one costs next to nothing), so the
    # throughput rounds can alternate between them and share whatever else the machine is doing.
    servers = {
        "single_c32": serve_bentoml(ports["single_c32"], workdir),
        # The same service and model on LightGBM's own booster (no compiled forest): the speed before compiling.
        "booster_c32": serve_bentoml(ports["booster_c32"], workdir / "booster", HOUSING_COMPILED_DIR=""),
        "mlflow_c32": serve_mlflow(ports["mlflow_c32"], args.mlflow_workers, workdir, stock=True),
        "mlflow_fast_c32": serve_mlflow(ports["mlflow_fast_c32"], args.mlflow_workers, workdir, stock=False),
        # The service's batch request and answer with no model behind them: the floor under a batch's time.
        "floor": serve_bentoml(ports["floor"], workdir / "floor", "load_tests.batch_floor:BatchFloor"),
        # The service again, with a challenger in its shadow in every other round.
        "shadow": serve_bentoml(ports["shadow"], workdir / "shadow", **SHADOWED_ENV),
    }
    floor, shadowed = urls.pop("floor"), urls.pop("shadow")
    try:
        ours, booster = urls["single_c32"], urls["booster_c32"]
        wait_ready(f"{floor}/readyz", servers["floor"])
        for name in ("single_c32", "booster_c32"):
            wait_ready(f"{urls[name]}/readyz", servers[name])
        wait_ready(f"{shadowed}/readyz", servers["shadow"])
        results["compile_wait_s"] = wait_runtime(ours, "lleaves", COMPILE_WAIT_S)
        wait_runtime(booster, "lightgbm", 0)
        for name in ("mlflow_c32", "mlflow_fast_c32"):
            wait_ready(f"{urls[name]}/ping", servers[name])
        info = httpx.get(f"{ours}/model").json()
        results["model"] = {"name": info["model_name"], "version": info["model_version"], "family": info["family"]}
        calls = {name: (f"{url}/invocations", json.dumps({"dataframe_records": [one]})) for name, url in urls.items()}
        calls["single_c32"] = (f"{ours}/predict", json.dumps(one))
        calls["booster_c32"] = (f"{booster}/predict", json.dumps(one))
        for url, body in calls.values():  # warm-up
            wrk(url, body, 8, 3, workdir)
        results["single_c1"] = wrk(*calls["single_c32"], 1, args.seconds, workdir)
        results["explain_c1"] = explain_latency(ours, one, args.seconds, workdir)
        results["explain_limit"] = explain_at_limit(ours, test_csv, args.batch_runs)
        results["booster_c1"] = wrk(*calls["booster_c32"], 1, args.seconds, workdir)
        batch = houses_from(test_csv, args.batch)
        results["batch_10k"] = batch_latency(f"{ours}/predict_batch", batch, args.batch_runs)
        results["batch_10k_paused"] = batch_latency(f"{ours}/predict_batch", batch, args.batch_runs, BATCH_PAUSE_S)
        results |= columns_latency(ours, batch, args.batch_runs)
        results["booster_batch_10k"] = batch_latency(f"{booster}/predict_batch", batch, args.batch_runs)
        results["floor_batch_10k"] = batch_latency(f"{floor}/predict_batch", batch, args.batch_runs)
        results["invalid_bodies"] = invalid_body_latency(ours, invalid_bodies(one, args.batch), args.batch_runs)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                ours = name == "single_c32"
                rounds[name].append(
                    wrk_per_worker(call, 32, args.seconds, workdir) if ours else wrk(*call, 32, args.seconds, workdir)
                )
        for name, runs in rounds.items():
            results[name] = median_run(runs)
        wait_runtime(shadowed, "lleaves", COMPILE_WAIT_S)
        results["shadow"] = measure_shadow(shadowed, one, args, workdir / "shadow")
        for name in ("mlflow_c32", "mlflow_fast_c32"):
            results[name]["workers"] = args.mlflow_workers
    finally:
        for server in servers.values():
            stop(server)
    champion = served_champion()
    results["batch_stages_ms"] = batch_stages(champion, batch, args.batch_runs)[0]
    results["batch_stages_runtime"] = champion.forest.runtime if champion.forest is not None else None

    results["summary"] = {
        "single_p50_ms": results["single_c1"]["p50_ms"],
        "single_p99_ms": results["single_c1"]["p99_ms"],
        "explain_p50_ms": results["explain_c1"]["p50_ms"],
        "explain_p99_ms": results["explain_c1"]["p99_ms"],
        "explain_limit_houses": results["explain_limit"]["houses"],
        "explain_limit_ms": results["explain_limit"]["max_ms"],
        "explain_limit_share_of_timeout": results["explain_limit"]["share_of_timeout"],
        "throughput_rps": results["single_c32"]["requests_per_s"],
        "p99_32_ms": results["single_c32"]["p99_ms"],
        "per_worker_32": results["single_c32"]["per_worker"],
        "least_worker_share": min(results["single_c32"]["per_worker"].values())
        / max(1, sum(results["single_c32"]["per_worker"].values())),
        "batch_10k_ms": results["batch_10k"]["median_ms"],
        "batch_10k_paused_ms": results["batch_10k_paused"]["median_ms"],
        "columns_10k_ms": results["columns_10k"]["median_ms"],
        "columns_10k_paused_ms": results["columns_10k_paused"]["median_ms"],
        "batch_without_forest_ms": sum(ms for name, ms in results["batch_stages_ms"].items() if name != "forest"),
        "batch_floor_ms": results["floor_batch_10k"]["median_ms"],
        "worst_invalid_ms": max(r["median_ms"] for r in results["invalid_bodies"].values()),
        "invalid_vs_batch": max(r["median_ms"] for r in results["invalid_bodies"].values())
        / results["batch_10k"]["median_ms"],
        "booster_single_p50_ms": results["booster_c1"]["p50_ms"],
        "booster_batch_10k_ms": results["booster_batch_10k"]["median_ms"],
        "booster_throughput_rps": results["booster_c32"]["requests_per_s"],
        "throughput_vs_booster": results["single_c32"]["requests_per_s"] / results["booster_c32"]["requests_per_s"],
        "mlflow_throughput_rps": results["mlflow_c32"]["requests_per_s"],
        "throughput_ratio": results["single_c32"]["requests_per_s"] / results["mlflow_c32"]["requests_per_s"],
        "mlflow_fast_throughput_rps": results["mlflow_fast_c32"]["requests_per_s"],
        "throughput_ratio_fast": results["single_c32"]["requests_per_s"] / results["mlflow_fast_c32"]["requests_per_s"],
        "shadow_single_p50_ms": results["shadow"]["median"]["with"]["single_p50_ms"],
        "shadow_throughput_rps": results["shadow"]["median"]["with"]["throughput_rps"],
        "shadow_single_p50_ratio": results["shadow"]["single_p50_ratio"],
        "shadow_throughput_ratio": results["shadow"]["throughput_ratio"],
    }
    summary = results["summary"]
    results["targets"] = {
        name: {"target": target, "value": summary[name], "met": summary[name] >= target if name in AT_LEAST else summary[name] <= target}
        for name, target in TARGETS.items()
    }  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--batch", type=int, default=10_000, help="records in the batch request")
    parser.add_argument("--batch-runs", type=int, default=5)
    parser.add_argument("--mlflow-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds per server")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmark.json")
    parser.add_argument("--explain-only", action="store_true", help="measure (6) only and print it")
    parser.add_argument("--columns-only", action="store_true", help="measure (9) beside (3) only and print them")
    parser.add_argument("--shadow-only", action="store_true", help="measure (10) only and print it")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run `make tools` first (it installs wrk)")
    if args.explain_only:
        print(json.dumps(explain_only(args), indent=2))
        return
    if args.columns_only:
        print(json.dumps(columns_only(args), indent=2))
        return
    if args.shadow_only:
        print(json.dumps({k: v for k, v in shadow_only(args).items() if k != "runs"}, indent=2))
        return
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"summary": results["summary"], "targets": results["targets"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
