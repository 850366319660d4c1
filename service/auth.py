"""Bearer tokens: the one check behind the admin endpoints and feedback."""

from __future__ import annotations

import secrets
from http import HTTPStatus

from pydantic import SecretStr


def bearer_refusal(
    authorization: str | None, token: SecretStr | None, role: str, variable: str
) -> tuple[HTTPStatus, str] | None:
    """Why ``authorization`` does not carry ``token`` (status and message), or None when it does.

    403 when no token is configured in ``variable`` (the role is disabled) or the token is wrong,
    401 when the request carries no bearer token at all.
    """
    if token is None:
        return HTTPStatus.FORBIDDEN, f"{role} is disabled: the service has no {variable}"
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return HTTPStatus.UNAUTHORIZED, f"authorization: send the header 'Authorization: Bearer <{role} token>'"
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        return HTTPStatus.FORBIDDEN, f"authorization: wrong {role} token"
    return None
