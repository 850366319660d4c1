"""Where the checkout and the venv's programs are."""

from __future__ import annotations

import sys
from pathlib import Path

# The checkout: devtools/ sits at its top.
ROOT = Path(__file__).resolve().parents[1]
# The running venv's programs (bentoml, mlflow, dvc, locust...), whatever is first on PATH.
BIN = Path(sys.executable).parent
