"""A small disk for fault tests: a size-limited tmpfs mounted for the test, filled until the kernel says ENOSPC."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FILL_CHUNK = 64 * 1024


@dataclass
class SmallDisk:
    """A mounted tmpfs of ``size_mb``: :meth:`fill` takes its last byte, :meth:`free` gives the space back."""

    path: Path

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> int:
        """Write a file until the disk is full; the bytes it took."""
        written = 0
        # Large writes first; a smaller one may still fit after them: take what is left in ever smaller steps.
        for size in (FILL_CHUNK, 4096, 512, 1):
            try:
                with self.filler.open("ab") as out:
                    while True:
                        out.write(b"\0" * size)
                        out.flush()
                        written += size
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def available(self) -> int:
        return shutil.disk_usage(self.path).free


@contextmanager
def small_disk(path: Path, size_mb: int, owner: str | None = None) -> Iterator[SmallDisk]:
    """Mount a tmpfs of ``size_mb`` at ``path`` (made if missing; as root, as these machines allow), owned by
    ``owner`` if given; unmounted however the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0777", "tmpfs", str(path)], check=True,
                   capture_output=True)  # fmt: skip
    try:
        if owner:
            shutil.chown(path, owner, owner)
        yield SmallDisk(path)
    finally:
        # Lazily: a server that still holds a file open must not keep the test from ending.
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        if os.path.ismount(path):
            raise RuntimeError(f"{path} is still mounted")
