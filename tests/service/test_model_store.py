"""A worker serving a bento from a read-only model store moves to a writable one, seeded with the bento's models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import bentoml
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models.model import ModelStore

from service.model_store import use_a_writable_model_store


@pytest.fixture
def bento_store(tmp_path: Path) -> Iterator[Path]:
    """A bento's own store holding one model, as this process's store, and a BentoML home beside it."""
    folder = tmp_path / "bento" / "models"
    BentoMLContainer.model_store.set(ModelStore(folder))
    BentoMLContainer.bentoml_home.set(str(tmp_path / "home"))
    try:
        save("3")
        yield folder
    finally:
        BentoMLContainer.model_store.reset()
        BentoMLContainer.bentoml_home.reset()


def save(version: str) -> None:
    with bentoml.models.create("priced", labels={"mlflow_version": version}) as model:
        Path(model.path, "weights.txt").write_text(version)


def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``folder`` as a read-only root shows it (the tests run as root, whom file modes do not stop)."""
    writable = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: writable(path, mode) and Path(path) != folder)


def test_a_read_only_store_is_copied_to_the_home_and_served_from_there(
    bento_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_only(bento_store, monkeypatch)
    assert use_a_writable_model_store() == tmp_path / "home" / "models"
    served = bentoml.models.get("priced:latest")
    assert Path(served.path).is_relative_to(tmp_path / "home" / "models")
    assert served.info.labels == {"mlflow_version": "3"}
    # A new version lands beside it and becomes the latest: what the champion follower does.
    save("4")
    assert bentoml.models.get("priced:latest").info.labels == {"mlflow_version": "4"}
    # The second worker finds the models there already and copies nothing.
    BentoMLContainer.model_store.set(ModelStore(bento_store))
    assert use_a_writable_model_store() == tmp_path / "home" / "models"
    assert len(bentoml.models.list("priced")) == 2


def test_a_writable_store_stays(bento_store: Path, tmp_path: Path) -> None:
    assert use_a_writable_model_store() == bento_store
    assert not (tmp_path / "home" / "models").exists()
