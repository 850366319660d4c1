"""The model card's Markdown as MLflow keeps it."""

from __future__ import annotations

from housing.model_card import MAX_DESCRIPTION_CHARS, with_section


def test_a_section_fits_mlflow_s_description_limit_whole() -> None:
    section = "## Live shadow evaluation\n\nrefused"
    assert with_section("# Card\n\nshort", section) == "# Card\n\nshort\n\n" + section
    long = with_section("# Card\n\n" + "x" * 6000, section)
    assert len(long) <= MAX_DESCRIPTION_CHARS
    assert long.startswith("# Card")
    assert long.endswith(section)
    assert "shortened" in long
