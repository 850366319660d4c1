"""A challenger proves itself on live traffic before it serves: start and stop a shadow, compare, promote on evidence.

``housing shadow start VERSION`` (or ``POST /admin/shadow``) points the registry's ``@challenger`` at a registered
version (housing.registry) and asks this replica's workers to price in its shadow (housing.log.reloads, the path
a promotion takes); replicas that follow the registry pick it up at their next poll. Each worker then prices the
share ``fraction`` of its ``/predict`` and ``/predict_batch`` requests again with the challenger, after the champion's
answer went out (service.shadow_scorer), and the log keeps both prices of each house (housing.log). The comparison
(housing.shadow_stats) reads them back with the houses' feedback: ``GET /shadow`` shows it, and
``housing shadow promote`` (or ``POST /admin/shadow/promote``) makes the challenger champion only when it beat the
champion on at least ``shadow.min_labelled`` labelled houses by the paired test; either way the decision is recorded
(history, the challenger's model card) with the shadow's figures. ``housing shadow stop`` ends a shadow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from housing.log.queries import LogReader
from housing.log.reloads import CHALLENGER, roll_out
from housing.log.store import LogStore
from housing.model_card import shadow_section
from housing.params import Params, ShadowParams
from housing.registry import ProjectRegistry, ShadowVerdict
from housing.settings import settings
from housing.shadow_stats import compare, decision_figures, verdict


class NoShadowError(LookupError):
    """No challenger is in shadow: there is nothing to compare or promote."""


def start(registry: ProjectRegistry, store: LogStore, version: str, fraction: float = 1.0) -> dict[str, Any]:
    """Make ``version`` the challenger on ``fraction`` of the requests, and wait for this replica's workers to load
    it. ``rollout.switched`` is false when one could not (its error is in the workers' reports and ``/health``)."""
    bento_tag = registry.start_shadow(version, fraction)
    rollout = roll_out(store, bento_tag, role=CHALLENGER, fraction=fraction)
    return {"challenger_version": version, "fraction": fraction, "bento_tag": bento_tag, "rollout": rollout}


def stop(registry: ProjectRegistry, store: LogStore) -> dict[str, Any]:
    """End the shadow: ``@challenger`` removed, this replica's workers told to stop (the log keeps what they priced)."""
    version = registry.stop_shadow()
    return {"stopped_version": version, "rollout": roll_out(store, "", role=CHALLENGER)}


def evidence(
    reads: LogReader,
    champion: str,
    challenger: str,
    income_bands: Sequence[float] | None,
    rules: ShadowParams | None = None,
) -> dict[str, Any]:
    """``challenger`` against ``champion`` on the latest shadowed houses (``HOUSING_SHADOW_COMPARE_HOUSES``), with the
    verdict of ``rules`` when given (housing.shadow_stats)."""
    houses = reads.shadow_houses(challenger, settings().shadow_compare_houses)
    result = {"challenger_version": challenger, "houses_shadowed": reads.shadowed(challenger),
              **compare(houses, champion, income_bands)}  # fmt: skip
    if rules is not None:
        promote, reason = verdict(result["labelled"], rules.min_labelled, rules.p_value)
        result["verdict"] = {"promote": promote, "reason": reason, "min_labelled": rules.min_labelled,
                             "p_value": rules.p_value}  # fmt: skip
    return result


def promote(registry: ProjectRegistry, store: LogStore, params: Params, trigger: str = "shadow") -> dict[str, Any]:
    """Promote the challenger if the shadow's evidence says it beat the champion, else refuse; the decision (recorded
    either way, with the evidence) and, when promoted, the rollouts of the new champion and of the shadow's end.

    Raises :class:`NoShadowError` when no challenger is in shadow (or no champion to compare it with).
    """
    shadow = registry.shadow()
    if shadow["challenger"] is None or shadow["champion"] is None:
        raise NoShadowError("no challenger in shadow: start one with `housing shadow start VERSION`")
    found = evidence(LogReader(store), shadow["champion"], shadow["challenger"], params.prepare.income_bands,
                     params.shadow)  # fmt: skip
    promoted, reason = found["verdict"]["promote"], found["verdict"]["reason"]
    before, after = decision_figures(found, found["houses_shadowed"])
    section = shadow_section(found, found["houses_shadowed"], f"{'promoted' if promoted else 'refused'}: {reason}")
    decision, bento_tag = registry.settle_shadow(ShadowVerdict(promoted, reason, before, after, section), trigger)
    answer: dict[str, Any] = {"promoted": promoted, "decision": decision.as_dict(), "evidence": found}
    if bento_tag is not None:
        answer["rollout"] = roll_out(store, bento_tag)
        answer["shadow_rollout"] = roll_out(store, "", role=CHALLENGER)
    return answer
