"""Validate: check the raw CSV against the declared schema and write a report.

Every broken rule is collected (lazy validation), summarised as *column, rule,
number of rows* and written to ``reports/data_validation.json``; if any rule is
broken the stage fails with the same summary, so a bad file never reaches
training.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from housing.params import ValidateParams, load_params
from training.raw_schema import SCHEMA_NAME, offending_rows, raw_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Violation:
    column: str | None
    check: str
    rows: int

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        return f"{where}: rule {self.check!r} broken ({self.rows} row(s))"


@dataclass
class ValidationReport:
    path: str
    valid: bool
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    violations: list[Violation] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(str(v) for v in self.violations)


class DataValidationError(ValueError):
    """The raw data breaks the schema; ``report`` says where and how."""

    def __init__(self, report: ValidationReport):
        super().__init__(f"{report.path} fails validation: {report.summary()}")
        self.report = report


def read_raw(path: Path) -> pd.DataFrame:
    """Read the raw CSV as text-free of pandas' guesses: validation decides the types."""
    return pd.read_csv(path, dtype=str, keep_default_na=True)


def validate_frame(df: pd.DataFrame, params: ValidateParams, path: str = "<frame>") -> ValidationReport:
    """Validate ``df`` and return the report (``report.valid`` says if it passed)."""
    schema = raw_schema(params.max_missing_fraction, params.max_duplicate_fraction, params.min_rows)
    report = ValidationReport(
        path=path,
        valid=True,
        rows=len(df),
        columns=list(df.columns),
        missing={str(c): int(n) for c, n in df.isna().sum().items()},
        duplicates=int(df.duplicated().sum()),
    )
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        report.valid = False
        report.violations = _summarise(exc.failure_cases, df)
    return report


def validate_file(path: Path, params: ValidateParams) -> ValidationReport:
    """Validate the CSV at ``path``; an unreadable or empty file is a violation too."""
    try:
        df = read_raw(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        return ValidationReport(path=str(path), valid=False, violations=[Violation(None, f"readable CSV ({exc})", 0)])
    return validate_frame(df, params, str(path))


def _summarise(failures: pd.DataFrame, df: pd.DataFrame) -> list[Violation]:
    violations = []
    uncoercible = set(failures.loc[failures["check"].str.startswith("coerce_dtype"), "column"])
    for (raw_column, check), group in failures.groupby(["column", "check"], dropna=False, sort=False):
        column = None if not isinstance(raw_column, str) or raw_column == SCHEMA_NAME else raw_column
        if str(check).startswith("dtype(") and column in uncoercible:
            continue  # the same cells, already reported by the coercion
        if check in ("column_in_dataframe", "column_in_schema"):
            # The failure case names the column that is missing or unexpected.
            violations += [Violation(str(name), check, len(df)) for name in group["failure_case"]]
            continue
        rows = int(group["index"].notna().sum()) or offending_rows(df, str(check), column)
        violations.append(Violation(column, str(check), rows))
    return violations


def write_report(report: ValidationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    report = validate_file(params.data.raw_path, params.validate_)
    write_report(report, params.validate_.report_path)
    if not report.valid:
        log.error("%s", DataValidationError(report))
        sys.exit(1)
    log.info("%s: %d rows pass the schema", report.path, report.rows)


if __name__ == "__main__":
    main()
