"""A long run of steady mixed traffic against a real `bentoml serve`: does anything grow or drift? (`make soak`)

    python -m load_tests.soak [--minutes 30] [--interval 30] [--out reports/soak]

Serves the champion of the checkout's BentoML store (as `make bench` does), measures its capacity for single
houses with a short burst, then drives about half of it for ``--minutes``: one-house `/predict` calls and
100-house `/predict_batch` calls from wrk (C: the client takes little of the two cores), in the mix :data:`MIX`,
and from a Python thread every :data:`FEEDBACK_EVERY_S` a priced house's feedback and its explanation (one at a
time: the service explains one house at a time per worker, and answers 429 past that).
Every ``--interval`` seconds it samples the server's processes (resident memory, open files, threads) and that
interval's latency percentiles (p50, p99 over every request of the mix). It fails if, after the first interval
(the warm-up), memory or open files grow by more than :data:`MAX_GROWTH`, or the p99 drifts by more than
:data:`MAX_P99_DRIFT`, and writes ``soak.json`` and ``soak.png`` to ``--out``. `make test` runs two minutes of it
against the session's server (tests/load_tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from devtools.paths import ROOT
from devtools.ports import free_port
from devtools.processes import stop
from devtools.serving import FEEDBACK_AUTH, serve_bentoml
from devtools.waits import wait_ready
from load_tests.benchmark import wrk
from service.api_models import EXAMPLE_HOUSE

# Requests of each kind out of 100, in the order wrk's script sends them.
MIX = {"predict": 95, "predict_batch": 5}
BATCH_HOUSES = 100
FEEDBACK_EVERY_S = 0.5
MAX_GROWTH = 0.10
MAX_P99_DRIFT = 0.50
CONNECTIONS = 8
OUT = ROOT / "reports" / "soak"

SCRIPT = """
local bodies = {{}}
local paths = {{}}
{requests}
local n = 0
local gap_ms = {gap_ms}
request = function()
  n = n + 1
  local i = (n % #paths) + 1
  return wrk.format("POST", paths[i], {{["Content-Type"] = "application/json"}}, bodies[i])
end
delay = function() return gap_ms end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, '
    .. '"p50_ms": %.3f, "p99_ms": %.3f}}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass
class Sample:
    """One interval: its end (s since the start), the server's processes at that end, and its requests' latency."""

    t_s: float
    rss_mb: float
    open_files: int
    threads: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    refused: int


@dataclass
class Soak:
    """A soak's setting, its samples and its verdict."""

    minutes: float
    interval_s: int
    target_rps: float
    capacity_rps: float
    samples: list[Sample] = field(default_factory=list)
    feedback: int = 0
    explained: int = 0
    side_failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def script(gap_ms: float) -> str:
    """wrk's Lua script: the mix in order, each connection waiting ``gap_ms`` between its requests."""
    batch = json.dumps([EXAMPLE_HOUSE] * BATCH_HOUSES)
    one = json.dumps(EXAMPLE_HOUSE)
    lines = []
    for path, count in MIX.items():
        body = batch if path == "predict_batch" else one
        lines += [f'table.insert(paths, "/{path}"); table.insert(bodies, [==[{body}]==])'] * count
    return SCRIPT.format(requests="\n".join(lines), gap_ms=f"{gap_ms:.3f}")


def processes(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def usage(pid: int) -> tuple[float, int, int]:
    """Resident memory (MB), open files and threads of the server and its workers."""
    rss, files, threads = 0, 0, 0
    for process in processes(pid):
        with process.oneshot():
            rss += process.memory_info().rss
            files += process.num_fds()
            threads += process.num_threads()
    return rss / 2**20, files, threads


def side_traffic(url: str, auth: dict[str, str], stop_event: threading.Event, soak: Soak) -> None:
    """Every FEEDBACK_EVERY_S: price a house, send its sale price (as a client with the feedback token does) and
    ask why it got its price."""
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop_event.wait(FEEDBACK_EVERY_S):
            priced = http.post("/predict", json=EXAMPLE_HOUSE).json()
            sold = {"request_id": priced["request_id"], "actual_price_usd": priced["price_usd"] * 1.05}
            for name, response in [("feedback", http.post("/feedback", json=sold, headers=auth)),
                                   ("explain", http.post("/explain", json=EXAMPLE_HOUSE))]:  # fmt: skip
                if response.status_code != 200:
                    soak.side_failures.append(f"{name}: {response.status_code} {response.text[:200]}")
                elif name == "feedback":
                    soak.feedback += 1
                else:
                    soak.explained += 1


def run(
    url: str, pid: int, minutes: float, interval_s: int, capacity_rps: float, workdir: Path,
    auth: dict[str, str] = FEEDBACK_AUTH,
) -> Soak:  # fmt: skip
    """Drive half of ``capacity_rps`` for ``minutes`` against the server of process ``pid``, sampling every
    ``interval_s``, feedback sent with ``auth``; the soak with its verdict."""
    target = capacity_rps / 2
    soak = Soak(minutes, interval_s, round(target, 1), round(capacity_rps, 1))
    lua = workdir / "soak.lua"
    lua.write_text(script(gap_ms=CONNECTIONS / target * 1000))
    stop_event = threading.Event()
    feeder = threading.Thread(target=side_traffic, args=(url, auth, stop_event, soak), daemon=True)
    feeder.start()
    start = time.monotonic()
    try:
        for _ in range(max(2, round(minutes * 60 / interval_s))):
            measured = wrk_script(url, lua, interval_s)
            rss, files, threads = usage(pid)
            soak.samples.append(Sample(round(time.monotonic() - start, 1), round(rss, 1), files, threads,
                                       round(measured["requests_per_s"], 1), measured["p50_ms"], measured["p99_ms"],
                                       measured["errors"], measured["non_2xx"]))  # fmt: skip
            print(f"soak {soak.samples[-1]}", flush=True)
    finally:
        stop_event.set()
        feeder.join(30)
    soak.problems = verdict(soak.samples) + soak.side_failures[:5]
    return soak


def wrk_script(url: str, lua: Path, seconds: int) -> dict[str, Any]:
    """One interval of the mix (wrk with ``lua``): requests per second, p50 and p99 (ms) and the errors."""
    command = ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--timeout", "10s", "-s", str(lua), url]
    run = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    return {**run, "requests_per_s": run["requests"] / (run["duration_us"] / 1e6)}


def verdict(samples: list[Sample]) -> list[str]:
    """What grew or drifted after the warm-up (the first sample), against MAX_GROWTH and MAX_P99_DRIFT."""
    warm, last = samples[0], samples[-1]
    problems = []
    if last.rss_mb > warm.rss_mb * (1 + MAX_GROWTH):
        problems.append(f"memory grew from {warm.rss_mb:.0f} to {last.rss_mb:.0f} MB after the warm-up")
    if last.open_files > warm.open_files * (1 + MAX_GROWTH):
        problems.append(f"open files grew from {warm.open_files} to {last.open_files} after the warm-up")
    if last.p99_ms > warm.p99_ms * (1 + MAX_P99_DRIFT):
        problems.append(f"p99 drifted from {warm.p99_ms:.1f} to {last.p99_ms:.1f} ms after the warm-up")
    if errors := sum(sample.errors for sample in samples):
        problems.append(f"{errors} requests failed (connection errors or timeouts)")
    if refused := sum(sample.refused for sample in samples):
        problems.append(f"{refused} requests were answered with an error status")
    return problems


def plot(soak: Soak, path: Path) -> None:
    import matplotlib.pyplot as plt

    t = [sample.t_s / 60 for sample in soak.samples]
    fig, (memory, files, latency) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    memory.plot(t, [s.rss_mb for s in soak.samples], marker="o")
    memory.set(ylabel="resident MB", title=f"Soak: {soak.target_rps:.0f} req/s for {soak.minutes:g} min")
    files.plot(t, [s.open_files for s in soak.samples], marker="o", label="open files")
    files.plot(t, [s.threads for s in soak.samples], marker="o", label="threads")
    files.legend()
    latency.plot(t, [s.p50_ms for s in soak.samples], marker="o", label="p50")
    latency.plot(t, [s.p99_ms for s in soak.samples], marker="o", label="p99")
    latency.set(xlabel="minutes", ylabel="ms")
    latency.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(soak: Soak, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = {"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": psutil.cpu_count(),
              "machine": platform.machine(), "mix": MIX, "batch_houses": BATCH_HOUSES, **asdict(soak)}  # fmt: skip
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(soak, out / "soak.png")


def capacity(url: str, workdir: Path) -> float:
    """Single-house requests per second at 32 clients for 5 s: what `make bench` measures, in short."""
    return float(wrk(f"{url}/predict", json.dumps(EXAMPLE_HOUSE), 32, 5, workdir)["requests_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=int, default=30, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="housing-soak-"))
    port = free_port()
    server = serve_bentoml(port, workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", server)
        soak = run(url, server.pid, args.minutes, args.interval, capacity(url, workdir), workdir)
    finally:
        stop(server)
    write(soak, args.out)
    print(json.dumps({"problems": soak.problems, "samples": len(soak.samples)}, indent=2))
    raise SystemExit(1 if soak.problems else 0)


if __name__ == "__main__":
    main()
