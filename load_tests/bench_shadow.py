"""What a challenger in shadow costs the champion's clients: single-record p50 and 32-client throughput with a
shadow running, beside the same runs without one, on one service in alternating rounds.

The service is started with an admin token and the project's registry (``HOUSING_PROJECT_DIR``); each round ends
the shadow (``DELETE /admin/shadow``), measures, starts it again (``POST /admin/shadow``, the champion's own version as
the challenger: the same model, so the cost is the shadow's whole price) and measures again. The shadow leaves the
registry as it found it: it ends with the run. ``python -m load_tests.benchmark --shadow-only`` runs this alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

# The admin token of the benchmark's shadow service (loopback only).
ADMIN_TOKEN = "bench-admin-token"  # noqa: S105  # nosec B105
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The shadow's cost the targets allow: p50 at most 10% higher, throughput at least 90% of the run without.
MAX_P50_RATIO, MIN_THROUGHPUT_RATIO = 1.10, 0.90


def set_shadow(url: str, version: str | None) -> None:
    """Run ``version`` in shadow on every worker (None: end the shadow), and wait until they all do."""
    with httpx.Client(base_url=url, headers=ADMIN, timeout=120) as http:
        answer = http.post("/admin/shadow", json={"version": version}) if version else http.delete("/admin/shadow")
        answer.raise_for_status()
        if not answer.json()["rollout"]["switched"]:
            raise RuntimeError(f"not every worker followed the shadow: {answer.text}")
    time.sleep(1.0)  # the workers' first shadowed requests compile nothing, but let the switch settle


def shadow_cost(url: str, version: str, measure: Callable[[int], dict[str, Any]], rounds: int) -> dict[str, Any]:
    """``measure(clients)`` (a wrk run of ``/predict`` at that concurrency) at 1 and 32 clients, without and with
    ``version`` in shadow, in ``rounds`` alternating rounds; the medians, their ratios and every run."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {state: {"c1": [], "c32": []} for state in ("without", "with")}
    try:
        for _ in range(rounds):
            for state in ("without", "with"):
                set_shadow(url, version if state == "with" else None)
                runs[state]["c1"].append(measure(1))
                runs[state]["c32"].append(measure(32))
    finally:
        set_shadow(url, None)
    with httpx.Client(base_url=url, timeout=30) as http:
        shadowed = http.get("/shadow").json()
    medians = {
        state: {"single_p50_ms": statistics.median(run["p50_ms"] for run in by["c1"]),
                "throughput_rps": statistics.median(run["requests_per_s"] for run in by["c32"])}
        for state, by in runs.items()
    }  # fmt: skip
    return {
        "challenger_version": version,
        "houses_shadowed": shadowed.get("houses_shadowed", 0),
        "challenger_latency": shadowed.get("challenger_latency"),
        "median": medians,
        "single_p50_ratio": medians["with"]["single_p50_ms"] / medians["without"]["single_p50_ms"],
        "throughput_ratio": medians["with"]["throughput_rps"] / medians["without"]["throughput_rps"],
        "runs": runs,
    }
