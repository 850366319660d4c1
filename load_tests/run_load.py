"""`make load`: start the service, run Locust headless against it, keep its CSV and HTML report."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmark import ROOT, free_port, serve_bentoml, stop, wait_ready

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--spawn-rate", type=float, default=8)
    parser.add_argument("--run-time", default="30s")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "load")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = serve_bentoml(port, Path(tempfile.mkdtemp(prefix="housing-load-")))
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        result = subprocess.run(
            [str(BIN / "locust"), "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
             "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", args.run_time,
             "--host", f"http://127.0.0.1:{port}", "--csv", str(args.out / "locust"), "--html", str(args.out / "locust.html"),
             "--only-summary"],
            check=False,
        )  # fmt: skip
    finally:
        stop(server)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
