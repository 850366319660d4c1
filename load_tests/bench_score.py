"""`make bench-score`: `housing score` on 1,000,000 rows, beside MLflow pyfunc's `predict` on the same rows.

Builds a CSV of ``--rows`` houses drawn (with replacement, seeded) from the pipeline's labelled split files, then
times, each in a process of its own whose peak resident memory the kernel reports (``wait4``):

  1. `housing score` of the file into Parquet with the local engine (read, validate, price with bounds, write, a
     chunk at a time), on the whole file and on its first tenth: peak memory that does not grow with the file is
     what "bounded" means;
  2. the baseline: the same rows already in memory, priced with their bounds by ``mlflow.pyfunc.load_model(...)
     .predict(rows, params={"intervals": True})`` in one call (reading the file and loading the model not timed);
  3. with ``--spark``, `housing score --engine spark` on the first tenth (``local[*]``): Spark's start-up included.

and writes reports/bench_score.json, from which `python -m scripts.figures` (run next by `make bench-score`)
writes the rows of README.md's and docs/summary.md's bulk-scoring tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from devtools.paths import BIN, ROOT
from housing.columns import FEATURE_COLUMNS
from housing.params import load_params
from housing.registry import tracking_uri
from housing.settings import settings

SOURCES = ("data/processed/train.csv", "data/processed/test.csv")


def houses_csv(path: Path, rows: int) -> Path:
    """``rows`` houses (the features only) drawn with replacement from the labelled split files, as a CSV."""
    pool = pd.concat([pd.read_csv(ROOT / source) for source in SOURCES], ignore_index=True)[list(FEATURE_COLUMNS)]
    pool.sample(rows, replace=True, random_state=0).to_csv(path, index=False)
    return path


def measured(args: list[str]) -> dict[str, Any]:
    """Run ``args``; its wall time (s), peak resident memory (MB, from the kernel) and exit status."""
    start = time.perf_counter()
    child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = (stream.read().decode() if stream else "" for stream in (child.stdout, child.stderr))
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{args[:3]} failed ({child.returncode}):\n{stdout}\n{stderr[-2000:]}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": stdout.strip()}


def score(source: Path, target: Path, *extra: str) -> dict[str, Any]:
    """`housing score` of ``source`` into ``target``: its rows a second over the whole run (the process's start, the
    model's load and the Spark session's start included), and over the scoring loop alone (the time it reports)."""
    run = measured([str(BIN / "housing"), "score", str(source), str(target), "--overwrite", *extra])
    rows = sum(1 for _ in source.open()) - 1
    scoring_s = float(re.findall(r" in ([\d.]+) s ", run["stdout"])[-1])
    return {**run, "rows": rows, "rows_per_s": rows / run["seconds"], "scoring_s": scoring_s,
            "scoring_rows_per_s": rows / scoring_s}  # fmt: skip


def pyfunc_baseline(source: Path, model_uri: str) -> dict[str, Any]:
    """Run in a process of its own (``--pyfunc``): load the rows and the model, time one ``predict`` of them all."""
    import mlflow.pyfunc

    mlflow.set_tracking_uri(tracking_uri(ROOT))  # the store `housing score` reads (housing.registry.pin_model)
    rows = pd.read_csv(source)
    model = mlflow.pyfunc.load_model(model_uri)
    start = time.perf_counter()
    priced = model.predict(rows, params={"intervals": True})
    seconds = time.perf_counter() - start
    return {"rows": len(priced), "predict_seconds": seconds, "rows_per_s": len(priced) / seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    register = load_params(ROOT / "params.yaml").register_
    model_uri = f"models:/{register.model_name}@{register.alias}"
    workdir = Path(tempfile.mkdtemp(prefix="housing-bench-score-"))
    try:
        whole = houses_csv(workdir / "houses.csv", args.rows)
        tenth = houses_csv(workdir / "tenth.csv", args.rows // 10)
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "model_uri": model_uri,
            "chunk_rows": args.chunk_rows,
            "input_mb": whole.stat().st_size / 1e6,
        }
        chunks = ("--chunk-rows", str(args.chunk_rows))
        results["local"] = score(whole, workdir / "priced.parquet", *chunks)
        results["local_tenth"] = score(tenth, workdir / "tenth.parquet", *chunks)
        baseline = measured([sys.executable, "-m", "load_tests.bench_score", "--pyfunc", str(whole), model_uri])
        results["pyfunc"] = {**json.loads(baseline["stdout"]), "peak_rss_mb": baseline["peak_rss_mb"]}
        if args.spark:
            spark = ("--engine", "spark", "--spark-master", "local[*]")
            results["spark_tenth"] = score(tenth, workdir / "spark.parquet", *chunks, *spark)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["summary"] = {
        "rows": args.rows,
        "local_rows_per_s": results["local"]["rows_per_s"],
        "local_scoring_rows_per_s": results["local"]["scoring_rows_per_s"],
        "local_peak_rss_mb": results["local"]["peak_rss_mb"],
        "local_tenth_peak_rss_mb": results["local_tenth"]["peak_rss_mb"],
        "pyfunc_rows_per_s": results["pyfunc"]["rows_per_s"],
        "pyfunc_peak_rss_mb": results["pyfunc"]["peak_rss_mb"],
        "local_vs_pyfunc": results["local"]["rows_per_s"] / results["pyfunc"]["rows_per_s"],
    }
    if args.spark:
        results["summary"]["spark_tenth_rows_per_s"] = results["spark_tenth"]["rows_per_s"]
        results["summary"]["spark_tenth_scoring_rows_per_s"] = results["spark_tenth"]["scoring_rows_per_s"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="houses in the file")
    parser.add_argument("--chunk-rows", type=int, default=settings().score_chunk_rows, help="housing score's")
    parser.add_argument("--spark", action="store_true", help="also score the first tenth on a local Spark")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_score.json")
    parser.add_argument("--pyfunc", nargs=2, metavar=("FILE", "MODEL_URI"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pyfunc:  # the baseline's own process (see run)
        print(json.dumps(pyfunc_baseline(Path(args.pyfunc[0]), args.pyfunc[1])))
        return
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
