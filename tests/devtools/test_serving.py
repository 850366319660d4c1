"""A throwaway server's own BentoML home: its metrics folder apart, its stores and its replica shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.serving import private_home
from housing.log.reloads import this_replica


def test_each_server_home_keeps_its_metrics_apart_and_shares_the_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(shared))
    first, second = Path(private_home(tmp_path / "a")), Path(private_home(tmp_path / "b"))
    assert first != second  # each `bentoml serve` empties only its own prometheus_multiproc_dir
    for store in ("models", "bentos"):
        assert (first / store).resolve() == (second / store).resolve() == (shared / store).resolve()
    assert private_home(tmp_path / "a") == str(first)  # a second call reuses the links


def test_a_server_home_and_the_cli_home_name_one_replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    cli = this_replica()
    monkeypatch.setenv("BENTOML_HOME", private_home(tmp_path / "server"))
    assert this_replica() == cli  # `housing promote` from the shell reaches the server it started
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "elsewhere"))
    assert this_replica() != cli
