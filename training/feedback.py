"""Feedback: the houses the service priced whose sale price came back, as labeled training rows.

Reads the service's prediction log through its read API (housing.log.queries: the PostgreSQL database
``HOUSING_DATABASE_URL`` when set, else the SQLite file ``HOUSING_PREDICTION_DB``, read-only) and writes
``prepare.feedback_path``: the raw feature columns, the actual price as the target, and a ``feedback_id``
(request id and index) that keeps each row on the same side of the train/test split in every later run.
Only authenticated feedback (sent with the feedback token, or corrected by an admin) becomes a label:
anonymous answers could poison the next model. With no log, the file has the header only.
"""

from __future__ import annotations

import logging

import pandas as pd

from housing.columns import FEATURE_COLUMNS, TARGET_BOUNDS, TARGET_COLUMN
from housing.log.queries import LogReader
from housing.log.store import open_store
from housing.params import load_params
from housing.settings import HousingSettings

log = logging.getLogger(__name__)

FEEDBACK_ID = "feedback_id"
COLUMNS = [*FEATURE_COLUMNS, TARGET_COLUMN, FEEDBACK_ID]


def labeled_feedback(reads: LogReader) -> pd.DataFrame:
    """Every priced house with authenticated feedback, shape (n, 11): features, target (USD) and ``feedback_id``."""
    houses = reads.labelled_houses()
    ids = houses["request_id"] + ":" + houses["idx"].astype(str)
    df = houses[list(FEATURE_COLUMNS)].assign(**{TARGET_COLUMN: houses["actual_price_usd"], FEEDBACK_ID: ids})
    # The training data caps prices at 500,001 USD; a higher sale price is censored the same way,
    # or the model would learn two meanings of the top value.
    df[TARGET_COLUMN] = df[TARGET_COLUMN].clip(TARGET_BOUNDS.low, TARGET_BOUNDS.high)
    return df[COLUMNS]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    store = open_store(HousingSettings(), read_only=True)
    try:
        df = labeled_feedback(LogReader(store))
    finally:
        store.close()
    out = params.prepare.feedback_path
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    log.info("%d labeled houses from %s -> %s", len(df), store.describe(), out)


if __name__ == "__main__":
    main()
