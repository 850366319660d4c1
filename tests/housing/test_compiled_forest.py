"""Compiled forests score as the booster does, are cached by content, and never stop the booster from serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightgbm import LGBMRegressor

from housing import compiled_forest
from housing.compiled_forest import ForestRuntime, artefact_path, compile_forest, is_cached


@pytest.fixture(scope="module")
def booster() -> Any:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 6))
    y = X[:, 0] * 3 + np.sin(X[:, 1]) + rng.normal(scale=0.1, size=500)
    return LGBMRegressor(n_estimators=40, num_leaves=15, verbose=-1, random_state=0).fit(X, y).booster_


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(300, 6))


def started(booster: Any, cache: Path | None, rows: np.ndarray, changes: list[tuple[str, str | None]]) -> ForestRuntime:
    runtime = ForestRuntime(booster, cache, rows[:20], on_change=lambda r: changes.append((r.runtime, r.problem)))
    runtime.start()
    assert runtime.wait(300)
    return runtime


def test_compiled_scores_equal_the_booster_and_are_cached(booster: Any, rows: np.ndarray, tmp_path: Path) -> None:
    changes: list[tuple[str, str | None]] = []
    runtime = started(booster, tmp_path, rows, changes)
    assert runtime.runtime == "lleaves"
    assert runtime.problem is None
    assert changes[0][0] == "lightgbm"
    assert "compiling" in str(changes[0][1])
    np.testing.assert_allclose(runtime.predict(rows), booster.predict(rows), rtol=1e-12)
    np.testing.assert_allclose(runtime.predict(rows, num_threads=2), booster.predict(rows), rtol=1e-12)
    artefact = artefact_path(tmp_path, booster.model_to_string())
    assert is_cached(artefact)
    # A second runtime of the same model loads the artefact at once, without compiling.
    again = ForestRuntime(booster, tmp_path, rows[:20])
    again.start()
    assert again.runtime == "lleaves"


def test_compiled_code_is_called_only_on_rows_of_its_width(booster: Any, rows: np.ndarray, tmp_path: Path) -> None:
    """Native code reads each row's columns unchecked: rows in any layout are copied, rows of another width refused."""
    runtime = started(booster, tmp_path, rows, [])
    assert runtime.runtime == "lleaves"
    for layout in (np.asfortranarray(rows), rows.astype(np.float32), rows[::2], rows[:1]):
        np.testing.assert_allclose(runtime.predict(layout), booster.predict(layout), rtol=1e-12)
    for wrong in (rows[:, :5], np.hstack([rows, rows]), rows[0]):
        with pytest.raises(ValueError, match=r"expected shape \(n, 6\)"):
            runtime.predict(wrong)


def test_a_corrupt_artefact_is_never_loaded_and_is_rebuilt(booster: Any, rows: np.ndarray, tmp_path: Path) -> None:
    artefact = compile_forest(booster.model_to_string(), tmp_path)
    artefact.write_bytes(artefact.read_bytes()[:100])  # truncated: loading it could crash the process
    assert not is_cached(artefact)
    changes: list[tuple[str, str | None]] = []
    runtime = started(booster, tmp_path, rows, changes)
    assert changes[0][0] == "lightgbm"
    assert runtime.runtime == "lleaves"
    assert is_cached(artefact)


def test_a_failed_compile_leaves_the_booster_serving(
    booster: Any, rows: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled_forest.sys, "executable", "/bin/false")  # the child process fails
    changes: list[tuple[str, str | None]] = []
    runtime = started(booster, tmp_path, rows, changes)
    assert runtime.runtime == "lightgbm"
    assert runtime.problem is not None
    assert runtime.problem.startswith("failed: lleaves failed (exit 1)")
    np.testing.assert_array_equal(runtime.predict(rows), booster.predict(rows))


def test_compiled_code_that_disagrees_with_the_booster_is_not_used(
    booster: Any, rows: np.ndarray, tmp_path: Path
) -> None:
    class Shifted:
        """A booster whose scores are off by one: the artefact compiled from its text disagrees with it."""

        def model_to_string(self) -> str:
            return str(booster.model_to_string())

        def predict(self, data: Any, num_threads: int = 1) -> Any:
            return booster.predict(data, num_threads=num_threads) + 1.0

    runtime = started(Shifted(), tmp_path, rows, [])
    assert runtime.runtime == "lightgbm"
    assert "differ" in str(runtime.problem)


def test_without_a_cache_the_booster_serves(booster: Any, rows: np.ndarray) -> None:
    runtime = started(booster, None, rows, [])
    assert (runtime.runtime, runtime.problem) == ("lightgbm", "compilation disabled")


def test_artefacts_are_keyed_by_model_and_toolchain(
    booster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = booster.model_to_string()
    assert artefact_path(tmp_path, text) == artefact_path(tmp_path, text)
    assert artefact_path(tmp_path, text) != artefact_path(tmp_path, text + " ")
    before = artefact_path(tmp_path, text)
    monkeypatch.setattr(compiled_forest, "INLINE", not compiled_forest.INLINE)
    assert artefact_path(tmp_path, text) != before
