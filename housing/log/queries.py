"""Every read of the prediction log, on SQLite and PostgreSQL alike: the log's typed read API.

The service reads single predictions (feedback), the drift sample, accuracy and coverage on feedback,
traffic and the latest predictions, and a challenger's shadowed houses beside the champion's prices and their
feedback; the pipeline's feedback stage reads the labelled houses; the operator's report (operations.insights)
reads a window of everything. Only authenticated feedback (sent
with the feedback token, or corrected by an admin) labels a house: anonymous answers could poison the
next model and its accuracy figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from housing.columns import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS
from housing.log.schema import (
    AUTHENTICATED,
    FEEDBACK,
    LATENCY_BUCKETS_MS,
    LATENCY_COLUMNS,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    PREDICTIONS,
    SHADOW,
    TRAFFIC,
    TRAFFIC_SLOT_S,
)
from housing.log.store import LogStore, Session, SQLiteStore

if TYPE_CHECKING:  # pandas loads with the first read that returns a frame (the service never asks for one)
    import pandas as pd

# The feedback-to-prediction join, written once: each feedback row beside the priced house it labels.
LABELLED = f"{FEEDBACK} f JOIN {PREDICTIONS} p ON p.request_id = f.request_id AND p.idx = f.idx"
TRUSTED = f"f.{AUTHENTICATED} = 1"

INPUTS = [*NUMERIC_COLUMNS, CATEGORICAL_COLUMN]
WINDOW_PREDICTIONS = ["request_id", "endpoint", "ts", "latency_ms", *INPUTS]
WINDOW_FEEDBACK = ["ts", "price_usd", "lower_usd", "upper_usd", CATEGORICAL_COLUMN, "median_income", "actual_price_usd"]
WINDOW_TRAFFIC = ["slot", "requests", "houses"]
LABELLED_COLUMNS = [*FEATURE_COLUMNS, "actual_price_usd", "request_id", "idx"]

# Table and column names in these statements are the module's own; every value is a parameter.
_NEWEST = f"SELECT (SELECT MAX(id) FROM {PREDICTIONS}), (SELECT MAX(id) FROM {FEEDBACK})"  # noqa: S608  # nosec B608
_PREDICTION = f"SELECT * FROM {PREDICTIONS} WHERE request_id = ? AND idx = ? LIMIT 1"  # noqa: S608  # nosec B608
_RECENT = f"SELECT * FROM {PREDICTIONS} ORDER BY id DESC LIMIT ?"  # noqa: S608  # nosec B608
_RECENT_INPUTS = f"SELECT {', '.join(INPUTS)} FROM {PREDICTIONS} ORDER BY id DESC LIMIT ?"  # noqa: S608  # nosec B608
# One feedback per house: the service keeps the first answer, and an admin's correction replaces it in place.
_LABELLED_HOUSES = f"""SELECT {", ".join(f"p.{name}" for name in FEATURE_COLUMNS)}, f.actual_price_usd,
                              p.request_id, p.idx
                       FROM {LABELLED} WHERE {TRUSTED} ORDER BY f.id"""  # noqa: S608  # nosec B608
_WINDOW_PREDICTIONS = f"""SELECT {", ".join(WINDOW_PREDICTIONS)} FROM {PREDICTIONS}
                          WHERE ts >= ? AND ts < ? ORDER BY id"""  # noqa: S608  # nosec B608
_WINDOW_FEEDBACK = f"""SELECT {", ".join(f"p.{name}" for name in WINDOW_FEEDBACK[:-1])}, f.actual_price_usd
                       FROM {LABELLED} WHERE {TRUSTED} AND p.ts >= ? AND p.ts < ? ORDER BY f.id"""  # noqa: S608  # nosec B608
_WINDOW_UNTRUSTED = f"""SELECT COUNT(*) FROM {LABELLED}
                        WHERE f.{AUTHENTICATED} = 0 AND p.ts >= ? AND p.ts < ?"""  # noqa: S608  # nosec B608
# A challenger's shadowed houses, newest first: its price and bounds beside the champion's, the slicing inputs, and
# the sale price where authenticated feedback came (NULL where none did).
SHADOW_COLUMNS = ["champion_version", "champion_price_usd", "price_usd", "lower_usd", "upper_usd", "latency_ms",
                  "batch_houses", "ts", "champion_lower_usd", "champion_upper_usd", CATEGORICAL_COLUMN, "median_income",
                  "actual_price_usd"]  # fmt: skip
_SHADOW_HOUSES = f"""SELECT s.champion_version, s.champion_price_usd, s.price_usd, s.lower_usd, s.upper_usd,
                            s.latency_ms, s.batch_houses, s.ts, p.lower_usd, p.upper_usd, p.{CATEGORICAL_COLUMN},
                            p.median_income, f.actual_price_usd
                     FROM {SHADOW} s JOIN {PREDICTIONS} p ON p.request_id = s.request_id AND p.idx = s.idx
                     LEFT JOIN {FEEDBACK} f ON f.request_id = s.request_id AND f.idx = s.idx AND f.{AUTHENTICATED} = 1
                     WHERE s.model_version = ? ORDER BY s.id DESC LIMIT ?"""  # noqa: S608  # nosec B608
_SHADOWED = f"SELECT COUNT(*) FROM {SHADOW} WHERE model_version = ?"  # noqa: S608  # nosec B608
_LAST_SHADOWED = f"SELECT model_version FROM {SHADOW} ORDER BY id DESC LIMIT 1"  # noqa: S608  # nosec B608
_WINDOW_TRAFFIC = f"""SELECT {", ".join(WINDOW_TRAFFIC)} FROM {TRAFFIC}
                      WHERE slot >= ? AND slot <= ? ORDER BY slot"""  # noqa: S608  # nosec B608


@dataclass(frozen=True)
class AccuracyMinute:
    """The feedback error sums of one model version's houses priced in one minute (``minute`` since the epoch)."""

    model_version: str
    minute: int
    n: int
    abs_error: float
    squared_error: float
    n_interval: int
    covered: int


def accuracy_of(
    minutes: Sequence[AccuracyMinute], since_ts: float = 0.0, bucket_s: float | None = None
) -> list[dict[str, Any]]:
    """MAE and RMSE (USD) per model version, from :meth:`LogReader.accuracy_minutes`.

    Only houses priced from ``since_ts`` on count, to the minute (the minute that holds ``since_ts`` counts).
    ``coverage`` is the share of sale prices inside their logged interval, over the ``n_interval`` houses that
    have one (None without any). With ``bucket_s`` the figures are split into time buckets of that many seconds
    by prediction time, each bucket starting at a multiple of ``bucket_s`` (houses count by their minute),
    oldest first: accuracy over time. Without, one bucket starting at 0.
    """
    first = math.floor(since_ts / 60)
    totals: dict[tuple[float, str], list[float]] = {}
    for m in minutes:
        if m.minute < first:
            continue
        start = math.floor(m.minute * 60 / bucket_s) * float(bucket_s) if bucket_s else 0.0
        sums = totals.setdefault((start, m.model_version), [0, 0.0, 0.0, 0, 0])
        for i, value in enumerate((m.n, m.abs_error, m.squared_error, m.n_interval, m.covered)):
            sums[i] += value
    return [
        {"model_version": version, "bucket_start": start, "n": int(n), "mae": abs_error / n,
         "rmse": math.sqrt(squared / n), "n_interval": int(n_interval),
         "coverage": covered / n_interval if n_interval else None}
        for (start, version), (n, abs_error, squared, n_interval, covered) in sorted(totals.items())
    ]  # fmt: skip


class OutdatedLogError(Exception):
    """The log has not had every migration this code reads: the service, when it starts, applies them."""


@dataclass(frozen=True)
class LogWindow:
    """Everything logged between two times, as frames.

    Attributes
    ----------
    predictions : DataFrame of shape (n_houses, len(WINDOW_PREDICTIONS))
        Each priced house: its request, endpoint, time (s since the epoch), request latency (ms) and inputs.
    feedback : DataFrame of shape (n_labelled, len(WINDOW_FEEDBACK))
        Each house with authenticated feedback: its price and bounds (USD), slicing inputs and sale price (USD).
    untrusted_feedback : int
        Answers sent without the feedback token for the window's houses (left out of ``feedback``).
    traffic : DataFrame of shape (n_minutes, 3)
        Per-minute request and house totals (``slot`` is the minute since the epoch).
    """

    predictions: pd.DataFrame
    feedback: pd.DataFrame
    untrusted_feedback: int
    traffic: pd.DataFrame


class LogReader:
    """Reads of the prediction log in ``store`` (whoever made the store closes it)."""

    def __init__(self, store: LogStore) -> None:
        self.store = store

    # -- single houses ----------------------------------------------------------
    def prediction(self, request_id: str, idx: int) -> dict[str, Any] | None:
        """The logged row of house ``idx`` of request ``request_id``; None if it is not (yet) in the log."""
        rows = self.store.query_dicts(_PREDICTION, [request_id, idx])
        return rows[0] if rows else None

    def newest(self) -> tuple[int, int]:
        """The ids of the newest prediction and the newest feedback (0 when none): what a cached view depends on."""
        ((prediction, feedback),) = self.store.query(_NEWEST)
        return int(prediction or 0), int(feedback or 0)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` priced houses, newest first, with request ids cut short (they are feedback keys)."""
        rows = self.store.query_dicts(_RECENT, [limit])
        return [{**row, "request_id": short_id(row["request_id"])} for row in rows]

    def recent_inputs(self, rows: int) -> dict[str, list[Any]]:
        """The raw inputs of the latest ``rows`` priced houses, as columns: the drift sample."""
        records = self.store.query(_RECENT_INPUTS, [rows])
        return {name: [record[i] for record in records] for i, name in enumerate(INPUTS)}

    # -- aggregates ---------------------------------------------------------------
    def accuracy(self, since_ts: float = 0.0, bucket_s: float | None = None) -> list[dict[str, Any]]:
        """MAE and RMSE (USD) of priced houses that received authenticated feedback, per model version: see
        :func:`accuracy_of` (which this is, over :meth:`accuracy_minutes`)."""
        return accuracy_of(self.accuracy_minutes(), since_ts, bucket_s)

    def accuracy_minutes(self) -> list[AccuracyMinute]:
        """Per model version and minute of prediction time, the sums every accuracy figure is made of.

        One query whatever the figures asked for: a view keeps these (until new feedback comes) and answers any
        ``since_ts`` or ``bucket_s`` from them (:func:`accuracy_of`).
        """
        sql = f"""
            SELECT p.model_version, {self.store.trunc.format("p.ts / 60")} AS minute, COUNT(*) AS n,
                   SUM(ABS(f.actual_price_usd - p.price_usd)) AS abs_error,
                   SUM((f.actual_price_usd - p.price_usd) * (f.actual_price_usd - p.price_usd)) AS squared_error,
                   COUNT(p.lower_usd) AS n_interval,
                   SUM(CASE WHEN f.actual_price_usd BETWEEN p.lower_usd AND p.upper_usd THEN 1 ELSE 0 END) AS covered
            FROM {LABELLED}
            WHERE {TRUSTED}
            GROUP BY p.model_version, minute
            ORDER BY minute, p.model_version
        """  # noqa: S608 - table names are ours  # nosec B608
        # PostgreSQL sums integers as NUMERIC (Decimal).
        return [AccuracyMinute(str(version), int(minute), int(n), float(abs_error), float(squared), int(n_interval),
                               int(covered))
                for version, minute, n, abs_error, squared, n_interval, covered in self.store.query(sql)]  # fmt: skip

    def traffic(self, now: float, bucket_s: int, buckets: int) -> list[dict[str, Any]]:
        """Requests, houses and request latency (p50/p95 in ms) per time bucket, oldest first.

        Covers the ``buckets`` buckets of ``bucket_s`` seconds (a multiple of a
        minute) before ``now``; empty buckets are included with zero requests.
        Summed by the database from the per-minute totals: the cost does not grow with the
        log. Percentiles are the upper bound of their histogram bucket (``LATENCY_BUCKETS_MS``).
        """
        first = int(now // bucket_s) - buckets + 1
        per = bucket_s // TRAFFIC_SLOT_S
        sums = ", ".join(f"SUM({name})" for name in ["requests", "houses", *LATENCY_COLUMNS])
        sql = f"SELECT slot / ? - ?, {sums} FROM {TRAFFIC} WHERE slot >= ? GROUP BY 1"  # noqa: S608 - our names  # nosec B608
        # PostgreSQL sums integers as NUMERIC (Decimal): back to int.
        totals = {int(position): [int(n) for n in counts]
                  for position, *counts in self.store.query(sql, [per, first, first * per])}  # fmt: skip
        empty = [0] * (2 + len(LATENCY_BUCKETS_MS))
        return [
            {"start": float((first + i) * bucket_s), "requests": requests, "houses": houses,
             "p50_ms": _percentile(histogram, 0.5), "p95_ms": _percentile(histogram, 0.95)}
            for i in range(buckets)
            for requests, houses, *histogram in [totals.get(i, empty)]
        ]  # fmt: skip

    # -- the shadow ----------------------------------------------------------------------
    def shadow_houses(self, challenger: str, limit: int) -> dict[str, list[Any]]:
        """The latest ``limit`` houses ``challenger`` priced in shadow, newest first, as columns (``SHADOW_COLUMNS``):
        its price and bounds (USD) beside the champion's, the challenger's pricing call (ms, houses), the slicing
        inputs and the sale price (None without authenticated feedback)."""
        rows = self.store.query(_SHADOW_HOUSES, [challenger, limit])
        return {name: [row[i] for row in rows] for i, name in enumerate(SHADOW_COLUMNS)}

    def shadowed(self, challenger: str) -> int:
        """How many houses ``challenger`` priced in shadow, in all (the log's retention keeps the labelled ones)."""
        return int(self.store.query(_SHADOWED, [challenger])[0][0])

    def last_shadowed(self) -> str | None:
        """The version of the latest challenger that priced a house in shadow; None before any did."""
        rows = self.store.query(_LAST_SHADOWED)
        return str(rows[0][0]) if rows else None

    # -- frames for the pipeline and the report --------------------------------------
    def labelled_houses(self) -> pd.DataFrame:
        """Every priced house with authenticated feedback, oldest feedback first: shape (n, 12), the raw
        inputs, the sale price ``actual_price_usd`` (USD) and the house's ``request_id`` and ``idx``.

        Empty where there is no log yet, or a log from before feedback was authenticated (it has no
        trusted feedback).
        """
        import pandas as pd

        if self._missing():
            return pd.DataFrame(columns=LABELLED_COLUMNS)
        with self.store.reading() as session:
            if not self._made(session) or AUTHENTICATED not in self.store.table_columns(session, FEEDBACK):
                return pd.DataFrame(columns=LABELLED_COLUMNS)
            rows = session.execute(_LABELLED_HOUSES).fetchall()
        return pd.DataFrame(rows, columns=LABELLED_COLUMNS)

    def window(self, since: float, until: float) -> LogWindow:
        """Predictions, authenticated feedback (beside its prediction) and traffic minutes between two times.

        Raises :class:`OutdatedLogError` for a log older than this code: a reader cannot migrate it.
        """
        import pandas as pd

        empty = LogWindow(pd.DataFrame(columns=WINDOW_PREDICTIONS), pd.DataFrame(columns=WINDOW_FEEDBACK), 0,
                          pd.DataFrame(columns=WINDOW_TRAFFIC))  # fmt: skip
        if self._missing():
            return empty
        with self.store.reading() as session:
            if not self._made(session):
                return empty
            self._check_schema(session)
            times = [since, until]
            predictions = pd.DataFrame(session.dicts(_WINDOW_PREDICTIONS, times), columns=WINDOW_PREDICTIONS)
            feedback = pd.DataFrame(session.dicts(_WINDOW_FEEDBACK, times), columns=WINDOW_FEEDBACK)
            untrusted = int(session.execute(_WINDOW_UNTRUSTED, times).fetchone()[0])
            slots = [int(since // TRAFFIC_SLOT_S), int(until // TRAFFIC_SLOT_S)]
            traffic = pd.DataFrame(session.dicts(_WINDOW_TRAFFIC, slots), columns=WINDOW_TRAFFIC)
        numeric = ["ts", "latency_ms", *NUMERIC_COLUMNS]
        predictions[numeric] = predictions[numeric].astype(float)
        money = ["ts", "price_usd", "lower_usd", "upper_usd", "median_income", "actual_price_usd"]
        feedback[money] = feedback[money].astype(float)
        # An empty frame's columns are objects.
        return LogWindow(predictions, feedback, untrusted, traffic.astype(int))

    def _missing(self) -> bool:
        """Whether the log is a SQLite file that is not there: a reader leaves it so (connecting would make it)."""
        return isinstance(self.store, SQLiteStore) and not self.store.path.exists()

    def _made(self, session: Session) -> bool:
        """Whether the log's tables have been made (by the service, when it starts)."""
        return bool(self.store.table_columns(session, PREDICTIONS))

    def _check_schema(self, session: Session) -> None:
        latest, applied = MIGRATIONS[-1].version, 0
        if self.store.table_columns(session, MIGRATIONS_TABLE):
            applied = session.execute(f"SELECT MAX(version) FROM {MIGRATIONS_TABLE}").fetchone()[0] or 0  # noqa: S608  # nosec B608
        if applied < latest:
            raise OutdatedLogError(
                f"the log {self.store.describe()} has schema version {applied}, this code reads version {latest}: "
                "start the service once on it (it migrates the log), then try again"
            )


def short_id(request_id: str) -> str:
    """The start of a request id: enough to recognise it, not enough to send feedback for it, and never the whole of
    the id a client asked for (the part before the service's ``~`` suffix)."""
    asked = request_id.partition("~")[0]
    return asked[: min(8, len(asked) // 2)] + "…"


def _percentile(histogram: Sequence[int], q: float) -> float | None:
    """Upper bound (ms) of the latency bucket holding the nearest-rank ``q`` percentile (None when empty)."""
    total = sum(histogram)
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for bound, count in zip(LATENCY_BUCKETS_MS, histogram, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return LATENCY_BUCKETS_MS[-1]
