"""The BentoML model store a worker imports into: a writable one, even when it serves a bento on a read-only root.

`bentoml serve` of a built bento (as in the image) reads its models from the bento's own store, inside the bento.
On the image's read-only root nothing can be imported there: not the champion the follower sees in the registry,
not a rollback. A worker that finds its store read-only moves to ``$BENTOML_HOME/models`` (a tmpfs or volume in
the compose stack, an emptyDir on Kubernetes), seeded with the bento's models. Every worker, and the ``housing``
CLI run beside them, then share that one store, which is also what names the replica (housing.log.reloads).
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models.model import ModelStore, copy_model

log = logging.getLogger(__name__)

_SEEDING_LOCK = ".seeding.lock"


def use_a_writable_model_store() -> Path:
    """Make this process's model store a writable one, as above; returns the store's folder.

    A store that is writable already stays; so does a read-only one when ``$BENTOML_HOME/models`` cannot be written
    either (the follower then reports every failed import on ``/health``).
    """
    current: ModelStore = BentoMLContainer.model_store.get()
    # BentoML gives a store no public path; the bento's store is the one its loader set for this process.
    source = Path(current._path)
    if os.access(source, os.W_OK):
        return source
    target = Path(BentoMLContainer.bentoml_home.get()) / "models"
    writable = ModelStore(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        seeded = _seed(current, writable, target)
    except OSError as exc:
        log.warning("model store: %s is read-only and %s cannot be written (%s): no model can be imported",
                    source, target, exc)  # fmt: skip
        return source
    BentoMLContainer.model_store.set(writable)
    log.info("model store: %s is read-only; serving from %s (%d models copied in)", source, target, seeded)
    return target


def _seed(source: ModelStore, target: ModelStore, folder: Path) -> int:
    """Copy every model of ``source`` that ``target`` lacks, one worker at a time; how many were copied."""
    with (folder / _SEEDING_LOCK).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return sum(copy_model(model.tag, src_model_store=source, target_model_store=target) for model in source.list())
