"""`make load`: run Locust headless against the service, keep its CSV and HTML report, fail past its thresholds.

    python -m load_tests.run_load [--users 32] [--run-time 30s] [--out reports/load] [--houses CSV] [--host URL]

Without --host it starts a fresh `bentoml serve` (its own prediction log and request logs in a temporary folder)
and stops it afterwards. With --host it drives a service that is already running, whose feedback token it takes
from HOUSING_FEEDBACK_TOKEN. The exit code is Locust's: 0 when the run passed the locustfile's thresholds, 1 (with
the reason printed) when it did not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.paths import BIN, ROOT
from devtools.ports import free_port
from devtools.processes import stop
from devtools.serving import LOCAL_FEEDBACK_TOKEN, serve_bentoml
from devtools.waits import wait_ready
from housing.settings import variable

FEEDBACK_TOKEN = variable("feedback_token")


def locust(args: argparse.Namespace, host: str, env: dict[str, str]) -> int:
    """Locust's exit code after a headless run of the locustfile against ``host``.

    Locust runs in the checkout, which it puts on the locustfile's import path: the locustfile imports devtools.
    """
    command = [str(BIN / "locust"), "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
               "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", args.run_time,
               "--host", host, "--houses", str(args.houses), "--stats-csv", str(args.out / "locust"),
               "--html", str(args.out / "locust.html"), "--only-summary"]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--spawn-rate", type=float, default=8)
    parser.add_argument("--run-time", default="30s")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "load")
    parser.add_argument("--houses", type=Path, default=ROOT / "data" / "processed" / "test.csv")
    parser.add_argument("--host", help="a running service (default: start a fresh one)")
    args = parser.parse_args(argv)
    if not args.houses.is_file():
        raise SystemExit(f"load: no houses to price at {args.houses} (run `make pipeline`, or give --houses)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.host:
        if not os.environ.get(FEEDBACK_TOKEN):
            raise SystemExit(f"load: --host needs {FEEDBACK_TOKEN}, the feedback token of the service at {args.host}")
        return locust(args, args.host, dict(os.environ))
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="housing-load-"))
    server = serve_bentoml(port, workdir)
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        except (RuntimeError, TimeoutError) as error:
            raise SystemExit(f"load: the service did not start ({error}); its log: {workdir / 'bentoml.log'}") from None
        return locust(args, f"http://127.0.0.1:{port}", {**os.environ, FEEDBACK_TOKEN: LOCAL_FEEDBACK_TOKEN})
    finally:
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
