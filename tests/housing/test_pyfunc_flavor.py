"""The registered model's pyfunc: which logged models answer intervals."""

from __future__ import annotations

from housing.pyfunc_flavor import offers_intervals
from training.register import signature


def test_only_a_signature_with_the_interval_parameters_offers_intervals() -> None:
    assert offers_intervals(signature(0.9))
    assert not offers_intervals(signature(None))
    assert not offers_intervals(None)  # a model logged without a signature
