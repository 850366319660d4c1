"""Paths the service does not serve: one metric label, a 404 without a redirect; every HTML page's headers."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from service.served_paths import STATIC_FILES, STATIC_PREFIX, SYSTEM_PATHS, UNSERVED, ServedPathMetrics

pytestmark = pytest.mark.integration


def test_every_route_the_service_has_is_a_served_path(client: TestClient) -> None:
    served = ServedPathMetrics.served
    documented = [*client.get("/docs.json").json()["paths"], *client.get("/openapi.json").json()["paths"]]
    assert len(documented) > 15
    for path in [*documented, *SYSTEM_PATHS, "/docs", *(STATIC_PREFIX + name for name in STATIC_FILES)]:
        assert served(path), path
        assert client.get(path).status_code != 404 or path in {"/schema.json"}, path
    for path in ["/x", "/predict/", "/feedback/", "/admin/", f"{STATIC_PREFIX}nope.js", "/metrics/x", UNSERVED]:
        assert not served(path), path


@pytest.mark.parametrize("path", ["/feedback/", "/predict/", "/model/"])
def test_a_trailing_slash_is_not_redirected_to_a_host_the_request_named(client: TestClient, path: str) -> None:
    response = client.post(path, json={}, headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers


@pytest.mark.parametrize("path", ["/", "/docs", "/dashboard"])
def test_every_html_page_carries_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    api = client.get("/health")  # a JSON answer gets none of them
    assert "content-security-policy" not in api.headers
