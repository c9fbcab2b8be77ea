"""A tracker that retries, then queues, instead of failing the training it records.

A tracking server that blinks must not kill training at epoch 7 of 10, nor slow it down: every
call goes into an ordered queue that a background thread delivers. Each call is tried ``retries``
times with exponential backoff; when the store stays unreachable the thread waits
``retry_every`` seconds and tries again, while training goes on. ``close`` makes a last attempt
and, if the store is still unreachable, raises TrackingError naming what was not recorded.
Stages write their local outputs before closing the run, so those are complete.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trackvision.errors import TrackingError
from trackvision.tracking.interface import Tracker

log = logging.getLogger(__name__)


class RetryingTracker:
    """Delivers ``inner``'s calls in order from a background thread (see the module doc)."""

    def __init__(
        self,
        inner: Tracker,
        where: str,
        retries: int = 3,
        backoff: float = 1.0,
        retry_every: float = 30.0,
    ) -> None:
        self.inner, self.where = inner, where
        self.retries, self.backoff, self.retry_every = retries, backoff, retry_every
        self._pending: deque[tuple[str, tuple, dict]] = deque()
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._deliver, name="tracking", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str | None:
        return self.inner.run_id

    @property
    def restored(self) -> bool:
        return getattr(self.inner, "restored", False)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        with self._cond:
            self._pending.append((method, args, kwargs))
            self._cond.notify_all()

    def _try(self, method: str, args: tuple, kwargs: dict) -> bool:
        for attempt in range(self.retries):
            try:
                getattr(self.inner, method)(*args, **kwargs)
                return True
            except Exception as exc:  # any transport or server error: keep training
                self._error = exc
                if attempt + 1 < self.retries:
                    with self._cond:
                        self._cond.wait_for(lambda: self._closing, self.backoff * 2**attempt)
        return False

    def _deliver(self) -> None:
        """The background thread: deliver calls in order; on an outage, wait and retry."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return  # closing, and nothing left
                method, args, kwargs = self._pending[0]
            if self._try(method, args, kwargs):
                with self._cond:
                    self._pending.popleft()
                    self._cond.notify_all()
                continue
            with self._cond:
                if self._closing:
                    return  # the last attempt failed: close reports what is left
                log.warning(
                    "tracking store %s unreachable (%s); %d call(s) queued, training goes on",
                    self.where,
                    self._error,
                    len(self._pending),
                )
                self._cond.wait_for(lambda: self._closing, max(self.retry_every, 0.01))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._call("log_metrics", dict(metrics), step=step)

    def log_history(self, rows: list[Mapping[str, float]]) -> None:
        self._call("log_history", [dict(r) for r in rows])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", dict(tags))

    def log_dataset(self, name: str, digest: str, source: Mapping[str, str]) -> None:
        self._call("log_dataset", name, digest, dict(source))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", path, artifact_path)

    def log_model(self, checkpoint_dir: Path, example_images: np.ndarray) -> None:
        self._call("log_model", checkpoint_dir, example_images)

    def register_model(self, name: str, tags: Mapping[str, str], rank_by: str) -> None:
        self._call("register_model", name, dict(tags), rank_by)

    def close(self, status: str = "FINISHED") -> None:
        """Wait for the queue; one last attempt after an outage; then end the run."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        while self._pending and self._try(*self._pending[0]):
            self._pending.popleft()
        if self._pending:
            lost = sorted({method for method, _, _ in self._pending})
            with contextlib.suppress(Exception):
                self.inner.close("FAILED")
            raise TrackingError(
                f"tracking store {self.where} stayed unreachable ({self._error}): "
                f"{len(self._pending)} call(s) not recorded ({', '.join(lost)}) in run "
                f"{self.run_id}. The local outputs are complete; start the server and run "
                "the stage again (dvc repro)"
            )
        self.inner.close(status)
