from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from service.prometheus_metrics import failed_fields, observe_many


def bucket_counts(registry: CollectorRegistry) -> dict[str, float]:
    return {
        f"{sample.name}{sample.labels}": sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize("count", [8, 1], ids=["counted with numpy", "observed one by one"])
def test_observe_many_equals_observing_one_by_one(count: int) -> None:
    values = np.array([0.0, 49_999.0, 50_000.0, 50_001.0, 123_456.0, 500_000.0, 500_001.0, 2e6])
    registries = CollectorRegistry(), CollectorRegistry()
    one, many = (Histogram("price", "p", buckets=[50_000, 100_000, 500_000], registry=r) for r in registries)
    for value in values:
        one.observe(value)
    for start in range(0, len(values), count):
        observe_many(many, values[start : start + count])
    observe_many(many, np.array([]))
    assert bucket_counts(registries[1]) == bucket_counts(registries[0])


def test_failed_fields_names_fields_and_bounds_the_label_set() -> None:
    body = json.dumps(
        {
            "error": "3 validation errors",
            "detail": [
                {"loc": ["latitude"], "msg": "..."},
                {"loc": ["root", 2, "households"], "msg": "..."},
                {"loc": ["attacker_chosen_name"], "msg": "..."},
                {"loc": [], "msg": "Invalid JSON"},
            ],
        }
    ).encode()
    assert failed_fields(body) == ["latitude", "households", "other", "body"]
    assert failed_fields(b"not json") == ["body"]
    assert failed_fields(b'[{"error": "x"}]') == ["body"]
