"""What stages and the training loop may record about a run, and a tracker that records nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Tracker(Protocol):
    """One run in some tracking store."""

    run_id: str | None
    # True when this run was started for a model trained elsewhere (restored by DVC): the store
    # has no record of its training, so the caller records the model itself.
    restored: bool

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    # Per-epoch rows (with an "epoch" key): only the epochs the store does not hold yet.
    def log_history(self, rows: list[Mapping[str, float]]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_dataset(self, name: str, digest: str, source: Mapping[str, str]) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    # The checkpoint in ``checkpoint_dir`` as the run's model; a few N x H x W x C uint8 images.
    def log_model(self, checkpoint_dir: Path, example_images: np.ndarray) -> None: ...
    def register_model(self, name: str, tags: Mapping[str, str], rank_by: str) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


TrackerFactory = Callable[..., Tracker]


class NullTracker:
    """Records nothing: for tests and for ``mlflow.enabled: false``."""

    run_id: str | None = None
    restored: bool = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_history(self, rows: list[Mapping[str, float]]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_dataset(self, name: str, digest: str, source: Mapping[str, str]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_model(self, checkpoint_dir: Path, example_images: np.ndarray) -> None:
        pass

    def register_model(self, name: str, tags: Mapping[str, str], rank_by: str) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


@contextlib.contextmanager
def closing_run(tracker: Tracker) -> Iterator[Tracker]:
    """Close the run when the block ends: FINISHED, KILLED on Ctrl-C, FAILED on any error."""
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.close("KILLED")
        raise
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-4}} -> {'train.lr': 1e-4}; lists become their string form."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
