"""make test's workers: each group of tests (tests/conftest.py) stays on one worker."""

from __future__ import annotations

import pytest


def test_xdist_carries_this_tests_group(request: pytest.FixtureRequest) -> None:
    """xdist carries a group in the test's id (``name@group``). pytest 9.2 ignores how xdist 3.8
    sets it (pytest-dev/pytest-xdist#1386): nothing fails, but every group is split over the
    workers and each builds the shared fixtures again, minutes longer."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest-xdist --dist loadgroup (make test)")
    assert request.node.nodeid.endswith(f"@{__name__}"), (
        f"{request.node.nodeid}: xdist lost the test's group; install the pytest that "
        "requirements.lock pins (make setup)"
    )
