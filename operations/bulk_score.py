"""`housing score`: price a file of houses (CSV or Parquet) into another file, a chunk at a time.

The output keeps every input column and adds ``price_usd``, ``lower_usd`` and ``upper_usd`` (the registered
model's conformal interval, as ``/predict`` answers it: housing.pyfunc_flavor; empty from a model registered
without intervals, or any other MLflow model) and ``model_version``. Each row is
held to the API's rules (housing.house_schema, without stopping at the first bad value): a row that breaks one
goes to ``<output stem>.rejects.csv`` beside the output with its row number (the first data row is 1), the
field, the rule and its words, and is not priced; every other row is. What cannot work stops before any: an
unknown file type, an input that is not there or cannot be read, a missing column, an output that exists
(without ``overwrite``). The output is written beside its final name and moved there once whole, so a run that
fails leaves no half file. Memory stays bounded by ``chunk_rows`` whatever the file's size.

The prices come from a :data:`Scorer`: MLflow's pyfunc in this process (:func:`local_scorer`) or a Spark
session's ``spark_udf`` (operations.spark_engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from housing.columns import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS
from housing.house_schema import Rejected, columns_model, split_rejected

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
PRICE_COLUMNS = ("price_usd", "lower_usd", "upper_usd")
VERSION_COLUMN = "model_version"
REJECT_COLUMNS = ("row", "field", "rule", "error")
# A file may leave this column out, as a request may: every house's count is then missing (the model imputes it).
OPTIONAL_COLUMNS = frozenset({"total_bedrooms"})
# A house's rules over a chunk's columns, naming every bad value rather than stopping at the first.
FileColumns = columns_model("FileColumns", fail_fast=False)
# Prices valid houses (the feature columns: floats, NaN where total_bedrooms is missing, and the category),
# answering a frame of PRICE_COLUMNS in the same order.
Scorer = Callable[[pd.DataFrame], pd.DataFrame]


class ScoreError(Exception):
    """Why a scoring job cannot start, in one line."""


@dataclass(frozen=True)
class ScoreJob:
    """What to score: ``source`` into ``target`` (formats by extension), ``chunk_rows`` rows at a time."""

    source: Path
    target: Path
    chunk_rows: int
    overwrite: bool = False

    @property
    def rejects(self) -> Path:
        """The rejects file beside the output: ``<output stem>.rejects.csv``."""
        return self.target.with_name(f"{self.target.stem}.rejects.csv")


@dataclass(frozen=True)
class ScoreSummary:
    """What a run did: rows read, priced and rejected, and how long it took (s)."""

    rows: int
    scored: int
    rejected: int
    seconds: float


def file_format(path: Path) -> str:
    """``csv`` or ``parquet``, by the file's extension."""
    if (kind := FORMATS.get(path.suffix.lower())) is None:
        raise ScoreError(f"{path}: not a CSV or Parquet file (by its extension: {', '.join(FORMATS)})")
    return kind


def check_job(job: ScoreJob) -> int | None:
    """Everything that would stop the job, checked before any work; the input's row count when its format says it.

    Raises :class:`ScoreError` naming the first problem.
    """
    kind = file_format(job.source)
    file_format(job.target)
    if not job.source.is_file():
        raise ScoreError(f"{job.source}: no such file")
    if job.target.resolve() == job.source.resolve():
        raise ScoreError(f"{job.target}: the output must not be the input")
    if not job.target.parent.is_dir():
        raise ScoreError(f"{job.target.parent}: no such folder for the output")
    for path in (job.target, job.rejects):
        if path.exists() and not job.overwrite:
            raise ScoreError(f"{path}: exists; pass --overwrite to replace it")
    columns, rows = _header(job.source, kind)
    if missing := [name for name in FEATURE_COLUMNS if name not in columns and name not in OPTIONAL_COLUMNS]:
        raise ScoreError(f"{job.source}: missing column{'s' * (len(missing) > 1)} {', '.join(missing)}")
    if taken := [name for name in (*PRICE_COLUMNS, VERSION_COLUMN) if name in columns]:
        raise ScoreError(f"{job.source}: has column {', '.join(taken)} already, which the output adds")
    return rows


def _header(path: Path, kind: str) -> tuple[list[str], int | None]:
    """The file's column names, and its row count if the format records it (Parquet does, CSV does not)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            metadata = pq.ParquetFile(path).metadata
            return list(metadata.schema.to_arrow_schema().names), metadata.num_rows
        return list(pd.read_csv(path, nrows=0).columns), None
    except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScoreError(f"{path}: cannot be read as {kind}: {reason}") from None


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, ``chunk_rows`` at a time. A CSV's values are read as text (numbers are parsed, and a
    value that is not one is named in the rejects), so an untouched column is written back as it came."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    with pd.read_csv(path, dtype=str, chunksize=chunk_rows) as reader:
        for chunk in reader:
            yield chunk.astype("string")  # a column all empty in one chunk stays text, as in the others


def house_values(chunk: pd.DataFrame) -> dict[str, np.ndarray]:
    """The chunk's feature columns as validation reads them: object arrays of shape (n_rows,), a missing value as
    None, a number as a Python number, text that is not a number kept as text (the rules refuse it)."""
    rows = len(chunk)
    values = {}
    for name in FEATURE_COLUMNS:
        series = chunk[name] if name in chunk else pd.Series([None] * rows, dtype=object)
        missing = series.isna().to_numpy()
        if name in NUMERIC_COLUMNS and not pd.api.types.is_numeric_dtype(series) and not missing.all():
            numbers = pd.to_numeric(series.astype(object), errors="coerce")
            parsed = numbers.notna().to_numpy()
            series = series.astype(object).where(~parsed, numbers.astype(object))
        column = np.empty(rows, dtype=object)
        column[:] = series.astype(object).tolist()
        column[missing] = None
        values[name] = column
    return values


def model_frame(values: dict[str, np.ndarray], keep: np.ndarray) -> pd.DataFrame:
    """The accepted rows (``keep``, a mask of shape (n_rows,)) as the model reads them: floats, NaN where missing."""
    return pd.DataFrame(
        {name: np.asarray(values[name][keep], dtype=float) for name in NUMERIC_COLUMNS}
        | {CATEGORICAL_COLUMN: values[CATEGORICAL_COLUMN][keep]}
    )


def local_scorer(model_uri: str) -> Scorer:
    """MLflow's pyfunc of ``model_uri`` in this process: prices and their bounds (``params={"intervals": True}``),
    or prices alone with empty bounds from a model without intervals."""
    import mlflow.pyfunc

    from housing.pyfunc_flavor import offers_intervals

    model = mlflow.pyfunc.load_model(model_uri)
    if not offers_intervals(model.metadata.signature):
        return lambda houses: without_bounds(model.predict(houses))

    def score(houses: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(model.predict(houses, params={"intervals": True}))[list(PRICE_COLUMNS)]

    return score


def without_bounds(prices: Any) -> pd.DataFrame:
    """The priced frame of a model without intervals: its prices (shape (n_rows,) or (n_rows, 1)), bounds empty."""
    price = np.asarray(prices, dtype=float).reshape(-1)
    return pd.DataFrame({"price_usd": price, "lower_usd": np.nan, "upper_usd": np.nan})


class _ChunkWriter:
    """Appends frames to a CSV or Parquet file written under a temporary name beside ``path``, moved there by
    :meth:`commit` (a run that fails leaves no half file)."""

    def __init__(self, path: Path) -> None:
        self.path, self.kind = path, file_format(path)
        self.partial = path.with_name(f".{path.name}.partial")
        self._parquet: Any = None
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "csv":
            frame.to_csv(self.partial, mode="a" if self._started else "w", header=not self._started, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = self._parquet.schema if self._parquet is not None else None
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.partial, table.schema)
            self._parquet.write_table(table)
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    def commit(self) -> None:
        self.close()
        self.partial.replace(self.path)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)


def priced_rows(chunk: pd.DataFrame, houses: pd.DataFrame, keep: np.ndarray, priced: pd.DataFrame,
                version: str) -> pd.DataFrame:  # fmt: skip
    """The accepted rows (``keep``) as the output holds them: every input column (the house's numbers as the model
    read them: ``houses``, from :func:`model_frame`), then the price, its bounds and the model version."""
    rows = chunk.loc[keep].reset_index(drop=True)
    for name in NUMERIC_COLUMNS:
        if name in rows:
            rows[name] = houses[name]
    return rows.assign(**{name: priced[name].to_numpy(dtype=float) for name in PRICE_COLUMNS}, model_version=version)


def rejected_rows(chunk: pd.DataFrame, rejected: list[Rejected], first_row: int) -> pd.DataFrame:
    """The rejected rows with their row number in the file (``first_row`` is the chunk's first), the field, the
    rule and its words, then every input column as it came."""
    positions = [item.row for item in rejected]
    reasons = pd.DataFrame(
        {"row": [first_row + position for position in positions], "field": [item.field for item in rejected],
         "rule": [item.rule for item in rejected], "error": [item.message for item in rejected]}
    )  # fmt: skip
    return pd.concat([reasons, chunk.iloc[positions].reset_index(drop=True)], axis=1)


def score_file(
    job: ScoreJob, scorer: Scorer, version: str, progress: Callable[[int], None] = lambda rows: None
) -> ScoreSummary:
    """Score ``job`` (checked by :func:`check_job`) with ``scorer``; the output's ``model_version`` is ``version``.

    ``progress`` is told the rows of each chunk once it is written. The rejects file is written only when a row
    is rejected (an old one from an earlier run is removed).
    """
    start, rows, scored, rejected = time.perf_counter(), 0, 0, 0
    output, rejects = _ChunkWriter(job.target), _ChunkWriter(job.rejects)
    try:
        for chunk in read_chunks(job.source, job.chunk_rows):
            values = house_values(chunk)
            keep, broken = split_rejected(values, FileColumns)
            houses = model_frame(values, keep)
            priced = scorer(houses) if len(houses) else pd.DataFrame(columns=list(PRICE_COLUMNS), dtype=float)
            output.write(priced_rows(chunk, houses, keep, priced, version))
            if broken:
                rejects.write(rejected_rows(chunk, broken, rows + 1))
            rows, scored, rejected = rows + len(chunk), scored + len(houses), rejected + len(broken)
            progress(len(chunk))
        if not output.started:  # a file of no rows: an output of none, with the columns
            names = _header(job.source, file_format(job.source))[0]
            output.write(pd.DataFrame(columns=[*names, *PRICE_COLUMNS, VERSION_COLUMN]))
    except BaseException:
        output.discard()
        rejects.discard()
        raise
    output.commit()
    if rejected:
        rejects.commit()
    else:
        job.rejects.unlink(missing_ok=True)
    return ScoreSummary(rows=rows, scored=scored, rejected=rejected, seconds=time.perf_counter() - start)
