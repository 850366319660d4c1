"""The EDA notebook runs headless, top to bottom, on the real data."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "eda.ipynb"


def test_eda_notebook_executes(housing_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOUSING_EDA_DATA", str(housing_csv))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # missing values, histograms, target, correlations, map, ocean proximity
    text = "".join(o.get("text", "") for o in outputs)
    assert "target cap 500,001 USD" in text
    markdown = " ".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "## Insights for the pipeline" in markdown
