from __future__ import annotations

from http import HTTPStatus

from pydantic import SecretStr

from service.auth import bearer_refusal

TOKEN = SecretStr("right")


def test_the_right_bearer_token_passes() -> None:
    assert bearer_refusal("Bearer right", TOKEN, "feedback", "HOUSING_FEEDBACK_TOKEN") is None
    assert bearer_refusal("bearer right", TOKEN, "feedback", "HOUSING_FEEDBACK_TOKEN") is None


def test_refusals_say_why() -> None:
    assert bearer_refusal(None, TOKEN, "admin", "X")[0] == HTTPStatus.UNAUTHORIZED
    assert bearer_refusal("Basic right", TOKEN, "admin", "X")[0] == HTTPStatus.UNAUTHORIZED
    assert bearer_refusal("Bearer ", TOKEN, "admin", "X")[0] == HTTPStatus.UNAUTHORIZED
    assert bearer_refusal("Bearer wrong", TOKEN, "admin", "X") == (
        HTTPStatus.FORBIDDEN,
        "authorization: wrong admin token",
    )
    status, message = bearer_refusal("Bearer right", None, "feedback", "HOUSING_FEEDBACK_TOKEN")
    assert status == HTTPStatus.FORBIDDEN
    assert "HOUSING_FEEDBACK_TOKEN" in message
