"""Smoke test of a deployed prediction service, standard library only (it runs on a bare CI runner).

    python deploy/smoke_test.py http://localhost:3000

Checks readiness, /health, one prediction of the example house the service documents in its own OpenAPI
schema, and that /metrics counted it. Exits non-zero with the first failure.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from typing import Any


def call(url: str, body: Any = None, timeout_s: float = 10.0) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the URL is the operator's  # nosec B310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# Its own wait, not devtools.waits.wait_ready: the deploy workflow runs this one file with the runner's python3,
# where neither the project (devtools) nor httpx is installed.
def wait_ready(base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if call(f"{base}/readyz", timeout_s=2)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL {base}/readyz: not ready after {timeout_s:.0f} s")
        time.sleep(1)


def expect(condition: bool, message: str, response: tuple[int, str] | None = None) -> None:
    if not condition:
        raise SystemExit(f"FAIL {message}" + (f" ({response[0]}: {response[1][:300]})" if response else ""))
    print(f"ok   {message}")


def smoke(base: str, timeout_s: float) -> None:
    wait_ready(base, timeout_s)
    print(f"ok   {base}/readyz")
    response = call(f"{base}/health")
    health = json.loads(response[1]) if response[0] == 200 else {}
    expect(health.get("status") == "ok", "/health answers ok", response)
    schema = json.loads(call(f"{base}/docs.json")[1])
    example = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["example"]
    response = call(f"{base}/predict", example)
    prediction = json.loads(response[1]) if response[0] == 200 else {}
    expect(prediction.get("price_usd", 0) > 0, "/predict prices the documented example", response)
    expect(prediction.get("model_version") == health["model_version"], "/predict used the model /health reports")
    expect('endpoint="/predict"' in call(f"{base}/metrics")[1], "/metrics counts /predict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL of the service, e.g. http://localhost:3000")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    args = parser.parse_args()
    smoke(args.url.rstrip("/"), args.timeout)


if __name__ == "__main__":
    main()
