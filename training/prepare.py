"""Prepare: a deterministic train/test split, stratified on median-income bands, plus feedback.

Income is the strongest predictor of price, so stratifying on it keeps the test
set's income mix equal to the population's and the test metrics honest.
Labeled feedback from the service joins both sides by a hash of its id: a
house never moves from train to test as feedback grows, so a champion is never
scored on a house it was trained on when a challenger is compared with it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.params import PrepareParams, load_params
from housing.slices import income_band
from training.feedback import FEEDBACK_ID

log = logging.getLogger(__name__)


def split(df: pd.DataFrame, params: PrepareParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into (train, test), stratified on income bands, seeded."""
    train, test = train_test_split(
        df,
        test_size=params.test_size,
        stratify=income_band(df["median_income"], params.income_bands),
        random_state=params.seed,
    )
    return train.sort_index(), test.sort_index()


def add_feedback(
    train: pd.DataFrame, test: pd.DataFrame, feedback: pd.DataFrame, test_size: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Append feedback rows to (train, test); a row is in test when its id hashes below ``test_size``."""
    in_test = feedback[FEEDBACK_ID].map(_unit_hash) < test_size
    rows = feedback.drop(columns=FEEDBACK_ID)
    return pd.concat([train, rows[~in_test]], ignore_index=True), pd.concat([test, rows[in_test]], ignore_index=True)


def _unit_hash(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``key``."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:13], 16) / 16**13


def load_split(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Read a processed split as (features, target)."""
    df = pd.read_csv(path)
    return df[list(FEATURE_COLUMNS)], df[TARGET_COLUMN]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    train, test = split(pd.read_csv(params.data.raw_path), params.prepare)
    feedback = pd.read_csv(params.prepare.feedback_path)
    train, test = add_feedback(train, test, feedback, params.prepare.test_size)
    for frame, path in ((train, params.prepare.train_path), (test, params.prepare.test_path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    log.info("%d feedback rows joined: %d train / %d test", len(feedback), len(train), len(test))


if __name__ == "__main__":
    main()
