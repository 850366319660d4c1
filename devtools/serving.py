"""A throwaway ``bentoml serve`` of the service on loopback, as the benchmark, the load test and the demos start it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devtools.paths import BIN, ROOT
from devtools.processes import start_logged

# The feedback token of the throwaway servers the benchmark, load test and demo start on loopback.
LOCAL_FEEDBACK_TOKEN = "local-feedback-token"  # noqa: S105  # nosec B105
FEEDBACK_AUTH = {"Authorization": f"Bearer {LOCAL_FEEDBACK_TOKEN}"}


def private_home(workdir: Path) -> str:
    """A BentoML home of ``workdir``'s own that sees the model and bento stores of ``BENTOML_HOME``.

    Every `bentoml serve` empties its home's prometheus_multiproc_dir when it starts: a second server started from
    the same home (a benchmark beside `make run`, two tests at once) would wipe the first one's counters.
    """
    shared = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    home = workdir / "bentoml-home"
    home.mkdir(parents=True, exist_ok=True)
    for store in ("models", "bentos"):
        (shared / store).mkdir(parents=True, exist_ok=True)
        if not (home / store).exists():
            (home / store).symlink_to(shared.resolve() / store, target_is_directory=True)
    return str(home)


def serve_bentoml(
    port: int, workdir: Path, service: str = "service.service:HousePricer", **env_extra: str
) -> subprocess.Popen[bytes]:
    """``bentoml serve`` of ``service`` on loopback ``port``, its prediction log, request log and output in ``workdir``.

    The output goes to ``workdir / "bentoml.log"``; ``env_extra`` adds to (or overrides) the environment. The
    server has a home of its own (:func:`private_home`) unless ``env_extra`` names one.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "BENTOML_HOME": env_extra.get("BENTOML_HOME") or private_home(workdir),
        "HOUSING_PREDICTION_DB": str(workdir / "predictions.db"),
        "HOUSING_LOG_DIR": str(workdir / "log"),
        "HOUSING_FEEDBACK_TOKEN": LOCAL_FEEDBACK_TOKEN,
        **env_extra,
    }
    command = [str(BIN / "bentoml"), "serve", service, "--host", "127.0.0.1", "--port", str(port)]
    return start_logged(command, workdir / "bentoml.log", env, cwd=ROOT)
