"""Feedback: the houses the service priced whose sale price came back, as labeled training rows.

Reads the service's SQLite prediction log (``HOUSING_PREDICTION_DB``, see
service/prediction_log.py) read-only and writes ``prepare.feedback_path``: the
raw feature columns, the actual price as the target, and a ``feedback_id``
(request id and index) that keeps each row on the same side of the train/test
split in every later run. Only authenticated feedback (sent with the feedback
token, or corrected by an admin) becomes a label: anonymous answers could
poison the next model. With no log, the file has the header only.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pandas as pd

from housing.columns import FEATURE_COLUMNS, TARGET_BOUNDS, TARGET_COLUMN
from housing.log_schema import AUTHENTICATED, FEEDBACK, PREDICTIONS
from housing.params import load_params
from housing.settings import HousingSettings

log = logging.getLogger(__name__)

FEEDBACK_ID = "feedback_id"
COLUMNS = [*FEATURE_COLUMNS, TARGET_COLUMN, FEEDBACK_ID]

# One feedback per house: the service keeps the first answer, and an admin's correction replaces it in place.
_QUERY = f"""
    SELECT {", ".join(f"p.{name}" for name in FEATURE_COLUMNS)},
           f.actual_price_usd AS {TARGET_COLUMN}, p.request_id || ':' || p.idx AS {FEEDBACK_ID}
    FROM {FEEDBACK} f JOIN {PREDICTIONS} p ON p.request_id = f.request_id AND p.idx = f.idx
    WHERE f.{AUTHENTICATED} = 1
    ORDER BY f.id
"""  # noqa: S608 - column names are the project's own  # nosec B608


def labeled_feedback(db_path: Path) -> pd.DataFrame:
    """Every priced house with feedback, shape (n, 11): features, target (USD) and ``feedback_id``."""
    if not db_path.exists():
        return pd.DataFrame(columns=COLUMNS)
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # A log from before feedback was authenticated has no such column, and no trusted feedback.
        trusted = FEEDBACK in tables and AUTHENTICATED in {
            row[1] for row in conn.execute(f"PRAGMA table_info({FEEDBACK})")
        }
        if not (PREDICTIONS in tables and trusted):
            return pd.DataFrame(columns=COLUMNS)
        df = pd.read_sql_query(_QUERY, conn)
    finally:
        conn.close()
    # The training data caps prices at 500,001 USD; a higher sale price is censored the same way,
    # or the model would learn two meanings of the top value.
    df[TARGET_COLUMN] = df[TARGET_COLUMN].clip(TARGET_BOUNDS.low, TARGET_BOUNDS.high)
    return df[COLUMNS]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    db_path = HousingSettings().prediction_db
    df = labeled_feedback(db_path)
    out = params.prepare.feedback_path
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    log.info("%d labeled houses from %s -> %s", len(df), db_path, out)


if __name__ == "__main__":
    main()
