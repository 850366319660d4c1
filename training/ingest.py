"""Ingest: copy the configured data source into ``data/raw/housing.csv``.

The source is a URL (http, https, file) or a local path. The copy is written to a
temporary file beside the target and renamed into place only once complete, so
an interrupted or failed download never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from housing.params import load_params
from housing.settings import HousingSettings

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


class IngestError(RuntimeError):
    """The data source could not be read."""


def _open_source(source: str, timeout_s: float) -> BinaryIO:
    scheme = urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        try:
            return urllib.request.urlopen(source, timeout=timeout_s)  # noqa: S310 - scheme checked above  # nosec B310
        except OSError as exc:
            raise IngestError(f"cannot download {source}: {exc}") from exc
    path = Path(source)
    if not path.is_file():
        raise IngestError(
            f"data source {source!r} is neither an http(s)/file URL nor an existing file; "
            "set HOUSING_DATA_SOURCE or data.source in params.yaml"
        )
    return path.open("rb")


def ingest(source: str, target: Path, timeout_s: float = 60.0) -> str:
    """Copy ``source`` to ``target`` atomically and return the copy's MD5 hex digest.

    Raises :class:`IngestError` if the source cannot be read or is empty; the
    target is then left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with _open_source(source, timeout_s) as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if tmp.stat().st_size == 0:
            raise IngestError(f"data source {source!r} is empty")
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    source = params.data_source(HousingSettings())
    md5 = ingest(source, params.data.raw_path, params.data.download_timeout_s)
    log.info("ingested %s -> %s (md5 %s)", source, params.data.raw_path, md5)


if __name__ == "__main__":
    main()
