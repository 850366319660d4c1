from __future__ import annotations

import pytest

from housing.settings import SECRET_VARIABLES, HousingSettings, variable, without_secrets


def test_every_variable_is_named_after_its_field() -> None:
    assert variable("prediction_db") == "HOUSING_PREDICTION_DB"
    with pytest.raises(KeyError):
        variable("no_such_setting")


def test_children_get_no_tokens() -> None:
    env = {"PATH": "/bin", "HOUSING_ADMIN_TOKEN": "a", "HOUSING_FEEDBACK_TOKEN": "f", "HOUSING_LOG_DIR": "x"}
    assert without_secrets(env) == {"PATH": "/bin", "HOUSING_LOG_DIR": "x"}
    assert set(SECRET_VARIABLES) == {"HOUSING_ADMIN_TOKEN", "HOUSING_FEEDBACK_TOKEN"}


def test_the_body_limit_follows_the_largest_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # The service tests' session-wide environment sets a body limit of its own.
    monkeypatch.delenv("HOUSING_MAX_BODY_BYTES", raising=False)
    monkeypatch.setenv("HOUSING_MAX_BATCH_SIZE", "10000")
    assert HousingSettings().body_limit == 10_000 * 512 + 64 * 1024
    monkeypatch.setenv("HOUSING_MAX_BODY_BYTES", "1000")
    assert HousingSettings().body_limit == 1000


def test_tokens_are_secret_in_every_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOUSING_FEEDBACK_TOKEN", "s3cret")
    settings = HousingSettings()
    assert "s3cret" not in repr(settings)
    assert settings.feedback_token is not None
    assert settings.feedback_token.get_secret_value() == "s3cret"
