"""The accuracy interval holds to published values."""

from __future__ import annotations

import pytest

from trackvision.evaluation.confidence import wilson_interval


def test_wilson_interval_matches_published_values() -> None:
    """Reference values: Newcombe (1998), 81/263 -> 0.2553-0.3662; and the edges."""
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    lo, hi = wilson_interval(20, 20)  # a perfect score on 20 images is not certainty
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.8389, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
