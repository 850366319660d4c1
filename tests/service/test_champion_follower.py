"""The champion follower's decisions, with the registry and the BentoML store faked (the real ones are in
tests/stores/test_follow_champion.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from housing.model_format import ModelLabels
from housing.registry import Names as Registered
from service import champion_follower
from service.champion_follower import ChampionFollower
from service.prometheus_metrics import CHAMPION_FOLLOW_FAILURES

REG = Registered("housing-price-model", "champion", "housing-price-model")


@dataclass
class Replica:
    """Serves bento tags named ``model:v<version>``; imports by adding a tag."""

    champion: str | None = "1"
    serving: str = "model:v1"
    broken: bool = False
    switches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def follower(self) -> ChampionFollower:
        follower = ChampionFollower("sqlite:///unused.db", lambda: self.serving, self.switches.append,
                                    self.errors.append)  # fmt: skip
        follower._client = object()  # type: ignore[assignment]  # the registry is faked below
        return follower


@pytest.fixture
def replica(monkeypatch: pytest.MonkeyPatch) -> Replica:
    replica = Replica()

    def served_model(client: object, reg: Registered, version: str) -> SimpleNamespace:
        if replica.broken:
            raise OSError("artifact store unreachable")
        return SimpleNamespace(tag=f"model:v{version}")

    monkeypatch.setattr(champion_follower, "champion_version",
                        lambda client, reg: replica.champion and SimpleNamespace(version=replica.champion))  # fmt: skip
    monkeypatch.setattr(champion_follower, "served_model", served_model)
    monkeypatch.setattr(champion_follower, "labels_of",
                        lambda tag: ModelLabels(mlflow_model=REG.model_name, mlflow_version=tag.partition(":v")[2],
                                                mlflow_alias=REG.alias))  # fmt: skip
    return replica


def test_a_moved_champion_is_imported_and_switched_to(replica: Replica) -> None:
    replica.champion = "2"
    assert replica.follower().follow() == "model:v2"
    assert replica.switches == ["model:v2"]


def test_the_served_champion_asks_for_nothing_and_clears_the_error(replica: Replica) -> None:
    assert replica.follower().follow() is None
    assert replica.switches == []
    assert replica.errors == [""]


def test_no_champion_yet_asks_for_nothing(replica: Replica) -> None:
    replica.champion = None
    assert replica.follower().follow() is None
    assert replica.switches == []


def test_a_champion_that_cannot_be_imported_leaves_the_old_model_and_says_so(replica: Replica) -> None:
    replica.champion, replica.broken = "2", True
    before = CHAMPION_FOLLOW_FAILURES._value.get()
    assert replica.follower().follow() is None
    assert replica.switches == []
    assert replica.errors == ["registry champion: OSError: artifact store unreachable"]
    assert CHAMPION_FOLLOW_FAILURES._value.get() == before + 1
    replica.broken = False  # the next poll gets it
    assert replica.follower().follow() == "model:v2"
