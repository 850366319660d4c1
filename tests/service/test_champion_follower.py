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


@dataclass
class Shadowed(Replica):
    """A replica that also follows the registry's challenger: ``asked`` is what its workers were last asked."""

    challenger: str | None = None
    fraction: float = 1.0
    asked: tuple[str, float] = ("", 1.0)
    challenger_broken: bool = False

    def follower(self) -> ChampionFollower:
        follower = ChampionFollower("sqlite:///unused.db", lambda: self.serving, self.switches.append,
                                    self.errors.append, lambda: self.asked, self.ask)  # fmt: skip
        follower._client = object()  # type: ignore[assignment]
        return follower

    def ask(self, tag: str, fraction: float | None) -> None:
        self.asked = (tag, 1.0 if fraction is None else fraction)


@pytest.fixture
def shadowed(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> Shadowed:
    """The ``replica`` fixture's fakes, answering for a :class:`Shadowed` replica."""
    found = Shadowed()
    monkeypatch.setattr(champion_follower, "champion_version",
                        lambda client, reg: found.champion and SimpleNamespace(version=found.champion))  # fmt: skip

    def challenger_version(client: object, reg: Registered) -> SimpleNamespace | None:
        if found.challenger_broken:
            raise OSError("registry unreachable")
        return found.challenger and SimpleNamespace(version=found.challenger, tags={})

    monkeypatch.setattr(champion_follower, "challenger_version", challenger_version)
    monkeypatch.setattr(champion_follower, "shadow_fraction", lambda version: found.fraction)
    return found


def test_the_registrys_challenger_is_followed_into_the_shadow_and_out(shadowed: Shadowed) -> None:
    shadowed.challenger, shadowed.fraction = "3", 0.5
    assert shadowed.follower().follow() is None  # the champion is served: no switch
    assert shadowed.asked == ("model:v3", 0.5)
    shadowed.asked = ("model:v3", 0.5)
    shadowed.fraction = 0.25  # `housing shadow start 3 --fraction 0.25` again
    shadowed.follower().follow()
    assert shadowed.asked == ("model:v3", 0.25)
    shadowed.challenger = None  # `housing shadow stop`
    shadowed.follower().follow()
    assert shadowed.asked == ("", 1.0)
    assert shadowed.errors == ["", "", ""]


def test_a_challenger_that_cannot_be_followed_leaves_the_champion_alone(shadowed: Shadowed) -> None:
    shadowed.champion, shadowed.challenger_broken = "2", True
    assert shadowed.follower().follow() == "model:v2"  # the champion still moves
    assert shadowed.switches == ["model:v2"]
    assert shadowed.errors == ["registry challenger: OSError: registry unreachable"]
