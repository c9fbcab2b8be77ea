"""Intervals and the binomial tail hold to published values and to scipy's."""

from __future__ import annotations

import pytest

from trackvision.evaluation.confidence import binomial_cdf, wilson_interval


def test_wilson_interval_matches_published_values() -> None:
    """Reference values: Newcombe (1998), 81/263 -> 0.2553-0.3662; and the edges."""
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    lo, hi = wilson_interval(20, 20)  # a perfect score on 20 images is not certainty
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.8389, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("k", "n", "confidence"),
    [(0, 1, 0.95), (1, 1, 0.95), (0, 20, 0.95), (81, 263, 0.95), (572, 600, 0.95), (9, 10, 0.99)],
)
def test_wilson_interval_equals_scipys(k: int, n: int, confidence: float) -> None:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (0, 10, 0.5),
        (3, 10, 0.5),
        (9, 10, 0.5),
        (40, 121, 0.5),
        (250, 600, 0.5),
        (4310, 10000, 0.45),
        (55, 60, 0.95),
        (1, 30, 1 / 3),
        (0, 1, 0.9999),
    ],
)
def test_binomial_cdf_equals_scipys(k: int, n: int, p: float) -> None:
    from scipy.stats import binom

    assert binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-9, abs=1e-300)


def test_binomial_cdf_edges() -> None:
    assert binomial_cdf(-1, 10, 0.5) == 0.0
    assert binomial_cdf(10, 10, 0.3) == 1.0  # every outcome is <= n
    assert binomial_cdf(3, 10, 0.0) == 1.0  # X is always 0
    assert binomial_cdf(3, 10, 1.0) == 0.0  # X is always n
