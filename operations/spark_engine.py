"""`housing score --engine spark`: the same scoring, its prices computed by a Spark session's executors.

Each chunk of valid houses becomes a Spark DataFrame priced by ``mlflow.pyfunc.spark_udf`` (the registered
model's pyfunc on every executor, ``params={"intervals": True}``), then comes back in order to be written beside its
input columns (operations.bulk_score reads, validates and writes, as for the local engine): on a cluster the
pricing spreads over its executors while the file stays where the driver reads and writes it. The model is pinned
to one registered version before the session starts (housing.registry.pin_model).

PySpark is an optional extra (``pip install '.[spark]'``) and needs Java (``make tools`` installs the OS's).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from housing.columns import FEATURE_COLUMNS
from housing.pyfunc_flavor import offers_intervals
from operations.bulk_score import PRICE_COLUMNS, ScoreError, Scorer, without_bounds

INSTALL_HINT = "--engine spark needs PySpark and Java: pip install '.[spark]' (or uv pip install '.[spark]'), and Java "
JAVA_HINT = "from the OS's packages (make tools, or apt-get install default-jre-headless)"
# The struct the model's pyfunc answers per row (housing.pyfunc_flavor with intervals on).
RESULT_TYPE = ", ".join(f"{name} double" for name in PRICE_COLUMNS)


def spark_available() -> str | None:
    """Why the Spark engine cannot run here (PySpark or Java missing), or None when it can."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return INSTALL_HINT + JAVA_HINT
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return f"--engine spark: no Java found; install it {JAVA_HINT}"
    return None


@contextmanager
def spark_scorer(model_uri: str, master: str) -> Iterator[Scorer]:
    """A :data:`Scorer` that prices on a Spark session at ``master`` (``local[*]``, ``spark://host:7077``, ...),
    stopped on exit. Raises :class:`ScoreError` with the way to install what is missing."""
    if (missing := spark_available()) is not None:
        raise ScoreError(missing)
    import mlflow.pyfunc
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import struct

    # The Python workers must run this interpreter (its packages), not the system's python3.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("housing-score")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        # A model without intervals answers one price per row: its bounds stay empty, as on the local engine.
        intervals = offers_intervals(mlflow.models.get_model_info(model_uri).signature)
        udf = mlflow.pyfunc.spark_udf(
            spark, model_uri, result_type=RESULT_TYPE if intervals else "double", env_manager="local",
            params={"intervals": True} if intervals else None,
        )  # fmt: skip

        def score(houses: pd.DataFrame) -> pd.DataFrame:
            frame: Any = spark.createDataFrame(houses)
            priced = frame.select(udf(struct(*FEATURE_COLUMNS)).alias("priced"))
            if not intervals:
                return without_bounds(priced.toPandas()["priced"])
            return priced.select("priced.*").toPandas()[list(PRICE_COLUMNS)]

        yield score
    finally:
        spark.stop()
