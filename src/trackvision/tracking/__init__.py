"""Experiment tracking behind a small interface: MLflow for real runs, a no-op for tests.

- ``interface``: the ``Tracker`` protocol stages and the training loop talk to, ``NullTracker``;
- ``store``: where the tracking store is, and what a run says about where it came from;
- ``mlflow_adapter``: the MLflow implementation and ``open_tracker``, the factory stages use;
- ``retry``: the queue that keeps training going through a tracking outage;
- ``champion``: which registered version is the champion.
"""

from trackvision.tracking.interface import (
    NullTracker,
    Tracker,
    TrackerFactory,
    closing_run,
    flatten,
)
from trackvision.tracking.mlflow_adapter import open_tracker
from trackvision.tracking.store import resolve_tracking_uri, use_tracking_uri

__all__ = [
    "NullTracker",
    "Tracker",
    "TrackerFactory",
    "closing_run",
    "flatten",
    "open_tracker",
    "resolve_tracking_uri",
    "use_tracking_uri",
]
