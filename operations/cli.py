"""`housing`: operator commands for the running system.

    housing drift [--db PATH] [--out DIR] [--fail-on-drift]
        compare the latest priced houses in the prediction log with the training data saved
        with the served model; write ``drift.json`` and a readable ``drift.md``; print the verdict.
    housing retrain [--project-dir DIR] [--db PATH] [--force]
        retrain when drift or accuracy on feedback pass their thresholds (operations.retrain).
    housing rollback [--to VERSION] [--project-dir DIR] [--db PATH]
        move ``@champion`` back to the previous champion (or VERSION); the service follows.
    housing reload [--db PATH]
        make every worker of the running service serve the BentoML store's latest model.
    housing history [--project-dir DIR] [--json]
        every promotion, refusal and rollback, newest first.
    housing shadow start VERSION [--fraction F] | stop | show | promote  [--project-dir DIR] [--db PATH]
        run a registered version in the champion's shadow on live requests (all, or the share F), end it, compare
        it with the champion, or promote it if it beat the champion on enough labelled houses (housing.shadow).
    housing report [--out DIR] [--since TIME | --days N] [--db PATH] [--project-dir DIR]
        insights from the prediction log (operations.insights): ``report.md`` with PNG figures and
        ``report.json`` in ``reports/insights``.
    housing score INPUT OUTPUT [--model URI] [--engine local|spark] [--spark-master URL] [--overwrite]
        price a CSV or Parquet file of houses into another, a chunk at a time (operations.bulk_score); rows
        that break the API's rules go to ``<output stem>.rejects.csv`` and make the exit status 1.

The commands that touch MLflow work from the project directory, whose
``params.yaml`` names the model and whose ``mlflow.db`` is the default store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from housing import shadow
from housing.drift_check import check_drift
from housing.jobs import AlreadyRunningError, job_lock
from housing.log.queries import LogReader, OutdatedLogError
from housing.log.reloads import roll_out_from
from housing.log.store import LogStore, migrate, open_store
from housing.model_format import reference_of
from housing.params import load_params
from housing.registry import NoProjectError, NoRegistryError, ProjectRegistry, pin_model
from housing.settings import settings
from operations.bulk_score import ScoreError, ScoreJob, Scorer, check_job, local_scorer, score_file
from operations.insights import ReportOptions, build_report
from operations.insights_report import write_report
from operations.retrain import retrain


def render_markdown(report: dict[str, Any], model_tag: str) -> str:
    if report["status"] != "ok":
        return f"# Drift report\n\nOnly {report['rows']} priced houses logged; {report['min_rows']} needed.\n"
    rows = "\n".join(
        f"| {name} | {r['test']} | {r['psi']:.3f} | {r['p_value']:.2g} | {'**drift**' if r['drifted'] else 'ok'} |"
        for name, r in report["features"].items()
    )
    verdict = ", ".join(report["drifted_features"]) or "none"
    return (
        f"# Drift report\n\nModel {model_tag}; the latest {report['rows']} priced houses against the training data.\n"
        f"Thresholds: PSI > {report['thresholds']['psi']} or p < {report['thresholds']['p_value']}.\n\n"
        f"Drifted features: {verdict}\n\n| feature | test | PSI | p-value | verdict |\n|---|---|---|---|---|\n{rows}\n"
    )


def drift_command(args: argparse.Namespace) -> int:
    config = settings()
    bento_model = bentoml.models.get(config.model_tag)
    reference = reference_of(bento_model)
    store = _log_store(args.db)
    try:
        migrate(store)  # a log that is not there yet is an empty one: not enough data
        report = check_drift(reference, LogReader(store))
    finally:
        store.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drift.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "drift.md").write_text(render_markdown(report, str(bento_model.tag)))
    if report["status"] != "ok":
        print(f"not enough data: {report['rows']} of {report['min_rows']} houses")
        return 0
    print("drift detected in: " + ", ".join(report["drifted_features"]) if report["drift_detected"] else "no drift")
    return 1 if args.fail_on_drift and report["drift_detected"] else 0


def retrain_command(args: argparse.Namespace) -> int:
    store = _log_store(args.db)
    try:
        migrate(store)  # the job's record goes to the log's store, which the service may never have made
        with job_lock(args.db.parent):
            outcome = retrain(args.project_dir, args.db, store, force=args.force)
    except AlreadyRunningError as exc:
        print(exc)
        return 75  # EX_TEMPFAIL: try again later
    finally:
        store.close()
    print(json.dumps(outcome, indent=2, default=str))
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    registry = ProjectRegistry(args.project_dir)
    try:
        decision, bento_tag = registry.rollback(args.to, args.reason, settings().retrain_reason or "manual")
    except (LookupError, MlflowException) as exc:
        print(f"rollback refused: {exc}")
        return 1
    print(json.dumps({"decision": decision.as_dict(), "rollout": roll_out_from(args.db, bento_tag)}, indent=2))
    return 0


def reload_command(args: argparse.Namespace) -> int:
    rollout = roll_out_from(args.db, str(bentoml.models.get(settings().model_tag).tag))
    print(json.dumps(rollout, indent=2))
    return 0 if rollout["switched"] or not rollout["workers"] else 1


def history_command(args: argparse.Namespace) -> int:
    entries = ProjectRegistry(args.project_dir).history(args.limit)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        after = entry["metrics_after"].get("rmse")
        rmse = f"RMSE {after:,.0f}" if after is not None else ""
        print(
            f"{_time(entry['ts'])}  {entry['action']:<8} v{entry['version'] or '-':<4} "
            f"champion v{entry['champion_before'] or '-'} -> v{entry['champion_after'] or '-'}  {rmse}  "
            f"{entry['reason']}"
        )
    return 0


def shadow_command(args: argparse.Namespace) -> int:
    """Exit status 0 when done (a promotion: promoted), 1 when refused or a worker could not load the model."""
    registry, store = ProjectRegistry(args.project_dir), _log_store(args.db)
    try:
        migrate(store)
        if args.action == "start":
            answer = shadow.start(registry, store, args.version, args.fraction)
        elif args.action == "stop":
            answer = shadow.stop(registry, store)
        elif args.action == "show":
            found = registry.shadow()
            if found["challenger"] is None or found["champion"] is None:
                raise shadow.NoShadowError("no challenger in shadow")
            params = load_params(args.project_dir / "params.yaml")
            answer = shadow.evidence(LogReader(store), found["champion"], found["challenger"],
                                     params.prepare.income_bands, params.shadow)  # fmt: skip
        else:
            answer = shadow.promote(registry, store, load_params(args.project_dir / "params.yaml"))
    except (LookupError, ValueError, MlflowException, BentoMLException) as exc:  # a version that cannot be imported too
        print(f"housing shadow {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(answer, indent=2, default=str))
    if args.action == "promote":
        print(f"{'promoted' if answer['promoted'] else 'refused'}: {answer['decision']['reason']}", file=sys.stderr)
        return 0 if answer["promoted"] else 1
    rollout = answer.get("rollout")
    return 0 if rollout is None or rollout["switched"] or not rollout["workers"] else 1


def report_command(args: argparse.Namespace) -> int:
    params = load_params(args.project_dir / "params.yaml")
    profile_path = args.profile or args.project_dir / params.drift.profile_path
    now = time.time()
    options = ReportOptions(
        since=args.since.timestamp() if args.since else now - args.days * 86_400 if args.days else 0.0,
        until=now,
        income_bands=params.prepare.income_bands,
        psi_threshold=params.drift.psi_threshold,
        p_value=params.drift.p_value,
        min_rows=args.min_rows or params.drift.min_rows,
        windows=args.windows,
        bucket_s=args.bucket_minutes * 60 if args.bucket_minutes else None,
        min_slice=args.min_slice,
    )
    store = _log_store(args.db, read_only=True)
    try:
        profile = json.loads(profile_path.read_text()) if profile_path.exists() else None
        report = build_report(LogReader(store), profile, options)
    except OutdatedLogError as exc:
        print(f"no report: {exc}")
        return 1
    finally:
        store.close()
    write_report(report, args.out)
    print("\n".join([f"insights report: {args.out / 'report.md'}", *report["findings"]]))
    return 0


def score_command(args: argparse.Namespace) -> int:
    """Exit status 0 when every row is priced, 1 when some were rejected, 2 when the job could not run."""
    job = ScoreJob(args.input, args.output, args.chunk_rows or settings().score_chunk_rows, args.overwrite)
    try:
        total = check_job(job)
        model_uri, version = pin_model(args.model or _champion_uri(args.project_dir), args.project_dir)
        with _scorer(args.engine, model_uri, args.spark_master) as scorer, _progress(total) as progress:
            summary = score_file(job, scorer, version, progress)
    except (ScoreError, MlflowException, NoProjectError, NoRegistryError) as exc:
        print(f"housing score: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    print(f"scored {summary.scored:,} of {summary.rows:,} rows with {model_uri} into {job.target} "
          f"in {summary.seconds:.1f} s ({rate:,.0f} rows/s)")  # fmt: skip
    if summary.rejected:
        rows = f"{summary.rejected:,} row{'s' * (summary.rejected != 1)}"
        print(f"{rows} rejected (row, field and rule in {job.rejects})", file=sys.stderr)
        return 1
    return 0


def _champion_uri(project_dir: Path) -> str:
    """``models:/<register.model_name>@<register.alias>`` of the project's params.yaml."""
    names = ProjectRegistry(project_dir).names
    return f"models:/{names.model_name}@{names.alias}"


def _scorer(engine: str, model_uri: str, master: str) -> AbstractContextManager[Scorer]:
    if engine == "spark":
        from operations.spark_engine import spark_scorer  # PySpark is an optional extra

        return spark_scorer(model_uri, master)
    return nullcontext(local_scorer(model_uri))


@contextmanager
def _progress(total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (rows done, time spent and left) that the scoring loop advances; off a terminal,
    none (the summary line says what was done)."""
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("rows", total=total)
        yield partial(progress.advance, task)


def _utc_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone, UTC."""
    moment = datetime.fromisoformat(text.removesuffix("Z"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _log_store(db: Path, read_only: bool = False) -> LogStore:
    """The prediction log's store the settings name (PostgreSQL, else the SQLite file ``db``)."""
    return open_store(settings().model_copy(update={"prediction_db": db}), read_only=read_only)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="housing", description="Operate the housing price service.")
    commands = parser.add_subparsers(dest="command", required=True)
    drift = commands.add_parser("drift", help="compare recent inputs with the training data")
    drift.add_argument("--db", type=Path, help="prediction log (default: HOUSING_PREDICTION_DB)")
    drift.add_argument("--out", type=Path, default=Path("reports/drift"), help="folder for drift.json and drift.md")
    drift.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any feature drifted")
    drift.set_defaults(run=drift_command)
    retrain_parser = commands.add_parser("retrain", help="retrain if drift or accuracy demand it; promote if better")
    retrain_parser.add_argument("--force", action="store_true", help="retrain even if nothing demands it")
    retrain_parser.set_defaults(run=retrain_command)
    rollback = commands.add_parser("rollback", help="move @champion back to the previous champion")
    rollback.add_argument("--to", help="the version to restore (default: the champion before the current one)")
    rollback.add_argument("--reason", default="", help="why, for the history")
    rollback.set_defaults(run=rollback_command)
    reload = commands.add_parser("reload", help="make the running service serve the store's latest model")
    reload.set_defaults(run=reload_command)
    history = commands.add_parser("history", help="promotions, refusals and rollbacks, newest first")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.add_argument("--limit", type=int, default=100)
    history.set_defaults(run=history_command)
    shadow_parser = commands.add_parser("shadow", help="run a challenger on live requests beside the champion")
    shadow_parser.add_argument(
        "action",
        choices=("start", "stop", "show", "promote"),
        help="start VERSION in shadow, stop it, compare it, or promote it on its evidence",
    )
    shadow_parser.add_argument("version", nargs="?", help="the registered version to start in shadow")
    shadow_parser.add_argument("--fraction", type=float, default=1.0, help="the share of requests it prices (0-1]")
    shadow_parser.set_defaults(run=shadow_command)
    report = commands.add_parser("report", help="insights from the prediction log: Markdown, figures and JSON")
    report.add_argument("--out", type=Path, default=Path("reports/insights"), help="folder for report.md and figures")
    period = report.add_mutually_exclusive_group()
    period.add_argument("--since", type=_utc_time, help="only houses priced since this ISO time (UTC unless given)")
    period.add_argument("--days", type=float, help="only houses priced in the last DAYS days")
    report.add_argument("--profile", type=Path, help="training profile (default: params.yaml drift.profile_path)")
    report.add_argument("--windows", type=_positive, default=6, help="time windows of the drift-over-time section")
    report.add_argument("--min-rows", type=_positive, help="houses a drift score needs (default: drift.min_rows)")
    report.add_argument("--bucket-minutes", type=_positive, help="traffic bucket width (default: fits the period)")
    report.add_argument("--min-slice", type=_positive, default=20, help="houses a slice needs to be named in findings")
    report.set_defaults(run=report_command)
    score = commands.add_parser("score", help="price a CSV or Parquet file of houses into another; bad rows rejected")
    score.add_argument("input", type=Path, help="houses: .csv or .parquet, one column per field of a house")
    score.add_argument("output", type=Path, help="every input column plus price, bounds and model version")
    score.add_argument("--model", help="any MLflow model URI (default: models:/housing-price-model@champion)")
    score.add_argument("--engine", choices=("local", "spark"), default="local", help="price here, or on Spark")
    score.add_argument("--spark-master", default="local[*]", help="the Spark master of --engine spark")
    score.add_argument("--overwrite", action="store_true", help="replace the output and rejects files")
    score.add_argument("--chunk-rows", type=_positive, help="rows at a time (default: HOUSING_SCORE_CHUNK_ROWS)")
    score.add_argument("--project-dir", type=Path, default=Path(), help="the DVC project (default: .)")
    score.set_defaults(run=score_command)
    for command in (retrain_parser, rollback, reload, history, report, shadow_parser):
        command.add_argument("--db", type=Path, help="prediction log (default: HOUSING_PREDICTION_DB)")
        command.add_argument("--project-dir", type=Path, default=Path(), help="the DVC project (default: .)")
    args = parser.parse_args(argv)
    if args.command == "shadow" and (args.action == "start") != bool(args.version):
        parser.error("housing shadow: give VERSION to start, and only to start")
    if getattr(args, "db", None) is None:
        args.db = settings().prediction_db
    args.db = args.db.resolve()
    args.project_dir = getattr(args, "project_dir", Path()).resolve()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
