"""Feedback: the houses the service priced whose sale price came back, as labeled training rows.

Reads the service's prediction log (housing.log_store: the PostgreSQL database
``HOUSING_DATABASE_URL`` when set, else the SQLite file ``HOUSING_PREDICTION_DB``,
read-only) and writes ``prepare.feedback_path``: the raw feature columns, the
actual price as the target, and a ``feedback_id`` (request id and index) that
keeps each row on the same side of the train/test split in every later run. Only
authenticated feedback (sent with the feedback token, or corrected by an admin)
becomes a label: anonymous answers could poison the next model. With no log, the
file has the header only.
"""

from __future__ import annotations

import logging

import pandas as pd

from housing.columns import FEATURE_COLUMNS, TARGET_BOUNDS, TARGET_COLUMN
from housing.log_schema import AUTHENTICATED, FEEDBACK, PREDICTIONS
from housing.log_store import LogStore, SQLiteStore, open_store
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


def labeled_feedback(store: LogStore) -> pd.DataFrame:
    """Every priced house with feedback, shape (n, 11): features, target (USD) and ``feedback_id``."""
    if isinstance(store, SQLiteStore) and not store.path.exists():
        return pd.DataFrame(columns=COLUMNS)
    with store.reading() as session:
        # A log from before feedback was authenticated has no such column, and no trusted feedback.
        trusted = AUTHENTICATED in store.table_columns(session, FEEDBACK)
        if not (store.table_columns(session, PREDICTIONS) and trusted):
            return pd.DataFrame(columns=COLUMNS)
        rows = session.execute(_QUERY).fetchall()
    df = pd.DataFrame(rows, columns=COLUMNS)
    # The training data caps prices at 500,001 USD; a higher sale price is censored the same way,
    # or the model would learn two meanings of the top value.
    df[TARGET_COLUMN] = df[TARGET_COLUMN].clip(TARGET_BOUNDS.low, TARGET_BOUNDS.high)
    return df[COLUMNS]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    store = open_store(HousingSettings(), read_only=True)
    try:
        df = labeled_feedback(store)
    finally:
        store.close()
    out = params.prepare.feedback_path
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    log.info("%d labeled houses from %s -> %s", len(df), store.describe(), out)


if __name__ == "__main__":
    main()
