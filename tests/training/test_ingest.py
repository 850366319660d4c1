from __future__ import annotations

import hashlib
import http.server
import io
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from training import ingest as ingest_module
from training.ingest import IngestError, ingest


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source" / "housing.csv"
    path.parent.mkdir()
    path.write_text("a,b\n1,2\n3,4\n")
    return path


@pytest.fixture
def http_url(source: Path) -> Iterator[str]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(source.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_copies_a_local_file(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "raw" / "housing.csv"
    md5 = ingest(str(source), target)
    assert target.read_bytes() == source.read_bytes()
    assert md5 == hashlib.md5(source.read_bytes(), usedforsecurity=False).hexdigest()


def test_downloads_over_http(http_url: str, source: Path, tmp_path: Path) -> None:
    target = tmp_path / "housing.csv"
    ingest(f"{http_url}/housing.csv", target)
    assert target.read_bytes() == source.read_bytes()


def test_file_url(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "housing.csv"
    ingest(source.as_uri(), target)
    assert target.read_bytes() == source.read_bytes()


def test_http_error_keeps_previous_copy(http_url: str, tmp_path: Path) -> None:
    target = tmp_path / "raw" / "housing.csv"
    target.parent.mkdir()
    target.write_text("previous")
    with pytest.raises(IngestError, match="cannot download"):
        ingest(f"{http_url}/missing.csv", target)
    assert target.read_text() == "previous"
    assert list(target.parent.iterdir()) == [target]


def test_missing_source_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="HOUSING_DATA_SOURCE"):
        ingest(str(tmp_path / "nope.csv"), tmp_path / "housing.csv")


def test_empty_source_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    target = tmp_path / "out" / "housing.csv"
    with pytest.raises(IngestError, match="empty"):
        ingest(str(empty), target)
    assert not target.exists()


class _BrokenStream(io.BytesIO):
    """Yields one chunk, then fails as a dropped connection would."""

    def read(self, size: int = -1) -> bytes:
        if self.tell():
            raise ConnectionResetError("connection dropped")
        return super().read(size)


def test_interrupted_download_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "_open_source", lambda source, timeout: _BrokenStream(b"x" * 100))
    target = tmp_path / "housing.csv"
    target.write_text("previous")
    with pytest.raises(ConnectionResetError):
        ingest("https://example.invalid/housing.csv", target)
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]  # no leftover .part file


def test_environment_overrides_params(monkeypatch: pytest.MonkeyPatch, source: Path, tmp_path: Path, params) -> None:
    target = tmp_path / "raw.csv"
    monkeypatch.setenv("HOUSING_DATA_SOURCE", str(source))
    monkeypatch.setattr(
        ingest_module,
        "load_params",
        lambda: params.model_copy(update={"data": params.data.model_copy(update={"raw_path": target})}),
    )
    ingest_module.main()
    assert target.read_bytes() == source.read_bytes()
