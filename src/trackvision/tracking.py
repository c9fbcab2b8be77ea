"""Experiment tracking behind a small interface: MLflow for real runs, a no-op for tests.

Stages talk to a ``Tracker``; only this module imports MLflow. Where the store lives:
``MLFLOW_TRACKING_URI`` if set (a team server), else ``mlflow.tracking_uri`` from params.yaml,
else ``sqlite:///<repo root>/mlflow.db``. The repo root is ``DVC_ROOT`` when DVC runs the stage,
which matters for ``dvc exp run --queue/--temp``: those run in a temporary copy of the repo that is
deleted afterwards, so the store and the artifacts must be anchored in the real one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from torch import nn

from trackvision.errors import TrackingError
from trackvision.layout import repo_root

if TYPE_CHECKING:
    from trackvision.config import Config

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """What stages and the training loop may record about a run."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_model(
        self, model: nn.Module, input_example: np.ndarray, checkpoint_dir: Path | None = None
    ) -> None: ...
    def register_model(self, name: str, tags: Mapping[str, str], rank_by: str) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Records nothing: for tests and for ``mlflow.enabled: false``."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_model(
        self, model: nn.Module, input_example: np.ndarray, checkpoint_dir: Path | None = None
    ) -> None:
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


def resolve_tracking_uri(configured: str = "") -> str:
    """MLFLOW_TRACKING_URI, else the configured URI, else the sqlite file at the repo root."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or configured
        or f"sqlite:///{repo_root() / 'mlflow.db'}"
    )


def use_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` without leaking it into this process's environment.

    ``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI, which ``resolve_tracking_uri``
    reads first: one run's store would silently become every later run's in the same process.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def ui_command(tracking_uri: str, root: Path, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command that serves the UI over a local store, artifacts included.

    Runs pin their artifacts next to the store (``mlruns/``); runs created through this server
    (a team's clients) put theirs in ``mlartifacts/``, served by the same process.
    """
    import sys

    if tracking_uri.startswith(("http://", "https://", "databricks")):
        raise TrackingError(
            f"the tracking store is already a server ({tracking_uri}): open it in a browser"
        )
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--artifacts-destination",
        str(root / "mlartifacts"),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def finished_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Every FINISHED run of ``experiment``: run_id, start_time, params and metrics as dicts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=5000
    )
    return [
        {
            "run_id": r.info.run_id,
            "start_time": r.info.start_time,
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
        }
        for r in runs
    ]


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


def run_context_tags() -> dict[str, str]:
    """Git commit, DVC experiment name and stage, when there are any."""
    tags: dict[str, str] = {}
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or _git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_STAGE"):
        tags["dvc_stage"] = os.environ["DVC_STAGE"]
    return tags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class MlflowTracker:
    """One MLflow run: started fresh (train) or reopened by id (evaluate adds to its run)."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        import mlflow

        self._mlflow = mlflow
        use_tracking_uri(tracking_uri)
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            exp_id = self._create_experiment(experiment, tracking_uri)
        else:
            exp_id = exp.experiment_id
        run = mlflow.start_run(
            run_id=run_id,
            experiment_id=exp_id,
            run_name=run_name,
            tags=dict(tags or {}) if run_id is None else None,
        )
        if run_id is not None and tags:
            mlflow.set_tags(dict(tags))
        self.run_id = run.info.run_id
        self.experiment_id = exp_id
        log.info("MLflow run %s in experiment %r at %s", self.run_id, experiment, tracking_uri)

    def _create_experiment(self, name: str, tracking_uri: str) -> str:
        # With a local store, pin artifacts next to mlflow.db: an experiment first created inside
        # a temporary DVC workspace would otherwise keep its artifacts in a folder DVC deletes.
        location = None
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri.removeprefix("sqlite:///"))
            location = (db.parent / "mlruns").resolve().as_uri()
        try:
            return self._mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by a concurrent run: use theirs
            exp = self._mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MLflow params are immutable: only log keys this run has not logged yet.
        existing = self._mlflow.get_run(self.run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        if fresh:
            self._mlflow.log_params(fresh)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_model(
        self, model: nn.Module, input_example: np.ndarray, checkpoint_dir: Path | None = None
    ) -> None:
        """The model as MLflow's PyTorch flavour, in torch.export's ``pt2`` format, which
        MLflow loads without unpickling; ``checkpoint_dir``'s safetensors + JSON files ride
        along (``extra_files``) so the project reloads the model as it was trained."""
        import mlflow.pytorch
        import torch
        from mlflow.exceptions import MlflowException
        from mlflow.models import infer_signature

        from trackvision.training.checkpoint import CHECKPOINT_FILES

        model = model.eval()
        with torch.no_grad():
            output = model(torch.from_numpy(input_example)).numpy()
        logged = {
            "name": "model",
            "signature": infer_signature(input_example, output),
            "input_example": input_example,
            # Given explicitly: inferring them would load the model in a subprocess (slow).
            "pip_requirements": [
                f"torch=={torch.__version__.split('+')[0]}",
                "timm",
                "trackvision",
            ],
            "extra_files": (
                [str(checkpoint_dir / name) for name in CHECKPOINT_FILES]
                if checkpoint_dir is not None
                else None
            ),
        }
        try:
            # validate_serving_input: MLflow would reload the saved graph to serve the example
            # (mobilevit_xxs 1.3-5 s a run, measured); the tests load logged models with pyfunc.
            # Only here: with "pickle" MLflow hands extra keywords to torch.save.
            mlflow.pytorch.log_model(
                model, serialization_format="pt2", validate_serving_input=False, **logged
            )
        except (MlflowException, OSError, ConnectionError):
            raise  # the store's trouble: the retrying wrapper deals with it
        except Exception as exc:  # torch.export could not trace this architecture
            log.warning(
                "torch.export could not trace %s (%s: %s); logged it as a pickle instead, "
                "which mlflow.pytorch.load_model unpickles (trackvision predict/export load its "
                "safetensors files and do not)",
                type(model).__name__,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            mlflow.pytorch.log_model(model, serialization_format="pickle", **logged)

    def register_model(self, name: str, tags: Mapping[str, str], rank_by: str) -> None:
        """This run's logged model becomes a new version of ``name``; ``champion`` moves to the
        version whose tag ``rank_by`` is highest (the earliest such version on a tie)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        logged = client.search_logged_models(
            experiment_ids=[self.experiment_id],
            filter_string=f"source_run_id = '{self.run_id}'",
        )
        if not logged:
            raise TrackingError(f"run {self.run_id} has no logged model to register as {name!r}")
        source = max(logged, key=lambda m: m.creation_timestamp)
        version = self._mlflow.register_model(
            f"models:/{source.model_id}", name, tags={k: str(v) for k, v in tags.items()}
        )
        # Re-ranked from every version each time, so the alias ends right even when experiments
        # evaluate concurrently and register out of order.
        versions = client.search_model_versions(f"name = '{name}'")
        ranked = [v for v in versions if _is_number(v.tags.get(rank_by))]
        best = max(ranked, key=lambda v: (float(v.tags[rank_by]), -int(v.version)))
        client.set_registered_model_alias(name, "champion", best.version)
        log.info(
            "registered %s version %s (%s %s); champion: version %s (%s %s)",
            name,
            version.version,
            rank_by,
            tags.get(rank_by),
            best.version,
            rank_by,
            best.tags[rank_by],
        )

    def close(self, status: str = "FINISHED") -> None:
        self._mlflow.end_run(status=status)


class RetryingTracker:
    """A Tracker that retries, then queues, instead of failing the training it records.

    A tracking server that blinks must not kill training at epoch 7 of 10. Each call is tried
    ``retries`` times with exponential backoff; one that still fails is queued, in order, and the
    queue is retried at most every ``retry_every`` seconds while training goes on. ``close`` makes
    a last attempt; if the store is still unreachable it raises TrackingError naming what was not
    recorded. Stages write their local outputs before closing the run, so those are complete.
    """

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
        self._pending: list[tuple[str, tuple, dict]] = []
        self._next_try = 0.0
        self._error: Exception | None = None

    @property
    def run_id(self) -> str | None:
        return self.inner.run_id

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._pending.append((method, args, kwargs))
        if time.monotonic() >= self._next_try:
            self._flush()

    def _flush(self) -> None:
        while self._pending:
            method, args, kwargs = self._pending[0]
            for attempt in range(self.retries):
                try:
                    getattr(self.inner, method)(*args, **kwargs)
                    break
                except Exception as exc:  # any transport or server error: keep training
                    self._error = exc
                    if attempt + 1 < self.retries:
                        time.sleep(self.backoff * 2**attempt)
            else:
                self._next_try = time.monotonic() + self.retry_every
                log.warning(
                    "tracking store %s unreachable (%s); %d call(s) queued, training goes on",
                    self.where,
                    self._error,
                    len(self._pending),
                )
                return
            self._pending.pop(0)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._call("log_metrics", dict(metrics), step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", dict(tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", path, artifact_path)

    def log_model(
        self, model: nn.Module, input_example: np.ndarray, checkpoint_dir: Path | None = None
    ) -> None:
        self._call("log_model", model, input_example, checkpoint_dir)

    def register_model(self, name: str, tags: Mapping[str, str], rank_by: str) -> None:
        self._call("register_model", name, dict(tags), rank_by)

    def close(self, status: str = "FINISHED") -> None:
        self._flush()
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


def _is_number(value: str | None) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


TrackerFactory = Callable[..., Tracker]


def open_tracker(config: Config, model: str, family: str, run_id: str | None = None) -> Tracker:
    """The MLflow run of ``model`` (new, or reopened by id), or a no-op when tracking is off."""
    if not config.mlflow.enabled:
        return NullTracker()
    exp_name = os.environ.get("DVC_EXP_NAME")
    tags = {
        **run_context_tags(),
        "data_source": config.data.source,
        "model_name": model,
        "model_family": family,
    }
    uri = resolve_tracking_uri(config.mlflow.tracking_uri)
    # MLflow's own HTTP retries back off for minutes; ours (RetryingTracker) keep training going.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        tracker = MlflowTracker(
            tracking_uri=uri,
            experiment=config.data.source,
            run_name=f"{model} @ {exp_name}" if exp_name else f"{model} @ workspace",
            run_id=run_id,
            tags=tags,
        )
    except Exception as exc:  # before any work: fail fast and say what to do
        raise TrackingError(
            f"tracking store {uri}: cannot start the run of {model} ({exc}). Start the server, "
            "point MLFLOW_TRACKING_URI / mlflow.tracking_uri elsewhere, or set "
            "mlflow.enabled: false"
        ) from exc
    return RetryingTracker(tracker, uri)
