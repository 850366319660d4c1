"""The shadow's routes: ``GET /shadow`` (the challenger against the champion on the same live houses) and the admin's
start, stop and promote (housing.shadow, in process, as the CLI's ``housing shadow`` does from a shell).

Starting and stopping go through the registry's ``@challenger`` and this replica's reload requests; promotion reads
the evidence from the log and records its decision either way. The comparison is reused for a few seconds
(service.view_cache), and its figures read at most ``HOUSING_SHADOW_COMPARE_HOUSES`` houses.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from housing import shadow
from housing.params import Params, load_params
from housing.registry import NoRegistryError
from housing.settings import settings
from housing.slices import INCOME_BAND, band_edges
from service.admin import _registry, _rolled_out, _unknown_version, require_admin
from service.api_models import ShadowStart
from service.state import Serving, ServingState

shadow_view = APIRouter(tags=["monitoring"])
shadow_admin = APIRouter(prefix="/admin/shadow", tags=["admin"], dependencies=[Depends(require_admin)])
NO_REGISTRY = "shadow: no model registry yet; run the pipeline (make pipeline) first"


@shadow_view.get("/shadow")
def shadow_comparison(
    state: Serving,
    version: str | None = Query(
        default=None,
        max_length=32,
        examples=["7"],
        description="The challenger to compare (default: the one in shadow, else the last).",
    ),
) -> dict[str, Any]:
    """The challenger in shadow against the served champion, on the same live houses: houses shadowed, price
    differences (challenger minus champion; mean, median and 95th percentile of the absolute difference, in USD and %)
    overall and per ``ocean_proximity`` value and income band, the challenger's pricing time, and on the houses with
    feedback both models' RMSE and MAE with a paired test (one-sided Wilcoxon and t-test of the squared errors), and
    the promotion's verdict where the project's params.yaml is at hand."""
    scorer, champion = state.shadow, state.model.info.model_version
    active = scorer.model.info.model_version if scorer.model is not None else None
    challenger = version or active or state.reads.last_shadowed()
    answer: dict[str, Any] = {"active": active is not None, "challenger_version": challenger,
                              "fraction": scorer.fraction if active else None, "queued_houses": scorer.queued,
                              "problem": scorer.problem, "champion_version": champion}  # fmt: skip
    if challenger is None:
        return answer | {"houses_shadowed": 0}
    params = _project_params(settings().project_dir.resolve())
    bands = params.prepare.income_bands if params else _card_bands(state)
    found = state.views.get(("shadow", challenger, champion),
                            lambda: shadow.evidence(state.reads, champion, challenger, bands,
                                                    params.shadow if params else None))  # fmt: skip
    return answer | found


@shadow_admin.post("")
async def start_shadow(state: Serving, request: ShadowStart) -> dict[str, Any]:
    """Make a registered version the challenger: it prices ``fraction`` of /predict and /predict_batch requests in
    shadow, after the champion's answers; replicas that follow the registry pick it up at their next poll."""
    registry = _registry("shadow")
    try:
        started = await asyncio.to_thread(shadow.start, registry, state.log.store, request.version, request.fraction)
    except NoRegistryError:
        raise HTTPException(503, NO_REGISTRY) from None
    except Exception as exc:
        if not _unknown_version(exc):
            raise
        raise HTTPException(409, f"shadow refused: {exc}") from None
    _rolled_out(started["rollout"])
    return started


@shadow_admin.delete("")
async def stop_shadow(state: Serving) -> dict[str, Any]:
    """End the shadow: the challenger alias goes, every worker stops pricing with it (the log keeps its prices)."""
    try:
        return await asyncio.to_thread(shadow.stop, _registry("shadow"), state.log.store)
    except NoRegistryError:
        raise HTTPException(503, NO_REGISTRY) from None


@shadow_admin.post("/promote")
async def promote_shadow(state: Serving) -> dict[str, Any]:
    """Make the challenger champion if it beat the champion on at least ``shadow.min_labelled`` labelled houses by
    the paired test; otherwise 409, saying why. The decision is recorded either way (``GET /model/history``)."""
    registry = _registry("shadow")
    params = _project_params(registry.project_dir)
    if params is None:
        raise HTTPException(503, "shadow: no params.yaml in the service's HOUSING_PROJECT_DIR")
    try:
        answer = await asyncio.to_thread(shadow.promote, registry, state.log.store, params, "shadow (admin API)")
    except NoRegistryError:
        raise HTTPException(503, NO_REGISTRY) from None
    except shadow.NoShadowError as exc:
        raise HTTPException(409, f"promotion refused: {exc}") from None
    if not answer["promoted"]:
        raise HTTPException(409, f"promotion refused: {answer['decision']['reason']}")
    _rolled_out(answer["rollout"])
    return answer


@lru_cache(maxsize=4)
def _project_params(project_dir: Path) -> Params | None:
    """The project's params.yaml (read once), or None where the service runs without its project (an image)."""
    path = project_dir / "params.yaml"
    return load_params(path) if path.is_file() else None


def _card_bands(state: ServingState) -> list[float] | None:
    """The income bands the served version's card names (a service without its project); None without a card."""
    card = state.model.card
    names = list(card.slices.get(INCOME_BAND, {})) if card is not None else []
    return band_edges(names) if names else None
