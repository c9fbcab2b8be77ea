"""The MLflow side of tracking: one run, the logged model, the registry; and the factory.

Only this module (of the tracking package) imports MLflow, and only when a run is opened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trackvision.errors import TrackingError
from trackvision.tracking.champion import pick_champion
from trackvision.tracking.interface import NullTracker, Tracker
from trackvision.tracking.retry import RetryingTracker
from trackvision.tracking.store import resolve_tracking_uri, run_context_tags, use_tracking_uri

if TYPE_CHECKING:
    from trackvision.config import Config

log = logging.getLogger(__name__)

# The tag that ties a run to the exact weights it produced: how a model restored from DVC (pulled,
# from the run cache, applied from another machine's experiment) finds its run in any store.
WEIGHTS_TAG = "weights_sha256"
# The experiment's kind: the UI opens a model-training experiment on its runs, not on GenAI views.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


class MlflowTracker:
    """One MLflow run: started fresh (train) or reopened by id (evaluate adds to its run)."""

    restored = False

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        system_metrics: bool = False,
    ) -> None:
        import mlflow

        self._mlflow = mlflow
        exp_id = experiment_id(tracking_uri, experiment)
        run = mlflow.start_run(
            run_id=run_id,
            experiment_id=exp_id,
            run_name=run_name,
            tags=dict(tags or {}) if run_id is None else None,
            # CPU, memory (and GPU, with pynvml) sampled by MLflow's own monitor thread.
            log_system_metrics=system_metrics,
        )
        if run_id is not None and tags:
            mlflow.set_tags(dict(tags))
        self.run_id = run.info.run_id
        self.experiment_id = exp_id
        log.info("MLflow run %s in experiment %r at %s", self.run_id, experiment, tracking_uri)

    def _activate(self) -> None:
        """Make this run the fluent API's active run in the calling thread.

        MLflow keeps the active run per thread, and the retry queue delivers calls from a
        thread of its own; without this, its first call would start a stray run."""
        active = self._mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            self._mlflow.start_run(run_id=self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._activate()
        # MLflow params are immutable: only log keys this run has not logged yet.
        existing = self._mlflow.get_run(self.run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        if fresh:
            self._mlflow.log_params(fresh)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._activate()
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_history(self, rows: list[Mapping[str, float]]) -> None:
        """A resumed run's saved epochs, but only those the store lacks: a kill can come before
        the retry queue delivered the last ones, and MLflow keeps every point logged twice."""
        if not rows:
            return
        self._activate()
        key = next(k for k in rows[0] if k != "epoch")  # an epoch's metrics go in one batch
        client = self._mlflow.MlflowClient()
        held = {m.step for m in client.get_metric_history(self.run_id, key)}
        for row in rows:
            if int(row["epoch"]) not in held:
                metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
                self._mlflow.log_metrics(metrics, step=int(row["epoch"]))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._activate()
        self._mlflow.set_tags(dict(tags))

    def log_dataset(self, name: str, digest: str, source: Mapping[str, str]) -> None:
        """The run's data as an MLflow dataset input: the UI's Dataset column names the version."""
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        self._activate()
        dataset = MetaDataset(CodeDatasetSource(dict(source)), name=name, digest=digest)
        self._mlflow.log_input(dataset, context="training")

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._activate()
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_model(self, checkpoint_dir: Path, example_images: np.ndarray) -> None:
        """The model as an MLflow pyfunc logged as code (``trackvision/serving/mlflow_model.py``)
        with the checkpoint's safetensors and JSON files as its artifacts: encoded photos in,
        labels out; loading it never unpickles. ``example_images`` (N x H x W x C uint8), as PNG
        files, are the input example the UI shows and the signature is inferred from."""
        self._activate()
        import mlflow.pyfunc
        import pandas as pd
        import torch
        from mlflow.models import infer_signature

        import trackvision.serving as serving
        from trackvision.data.images import encode_png
        from trackvision.models.packaged import from_checkpoint
        from trackvision.training.checkpoint import CHECKPOINT_FILES

        example = pd.DataFrame({serving.COLUMN: [encode_png(image) for image in example_images]})
        output = serving.classify(from_checkpoint(checkpoint_dir), example[serving.COLUMN])
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(serving.__file__).with_name("mlflow_model.py")),
            artifacts={name: str(checkpoint_dir / name) for name in CHECKPOINT_FILES},
            signature=infer_signature(example, output),
            input_example=example,
            # Given explicitly: inferring them would load the model in a subprocess (slow).
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                "timm",
                "pillow",
                "trackvision",
            ],
        )

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
        best = pick_champion(client.search_model_versions(f"name = '{name}'"), rank_by)
        if best is None:
            return
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


def experiment_id(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name`` in the store at ``tracking_uri`` (the fluent API's store
    from now on), created as a model-training experiment if it is not there yet."""
    import mlflow

    use_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND) is None:  # created before the kind was set
            mlflow.MlflowClient().set_experiment_tag(
                exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING
            )
        return exp.experiment_id
    # With a local store, pin artifacts next to mlflow.db: an experiment first created inside
    # a temporary DVC workspace would otherwise keep its artifacts in a folder DVC deletes.
    location = None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        location = (db.parent / "mlruns").resolve().as_uri()
    try:
        return mlflow.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
        )
    except Exception:  # created meanwhile by a concurrent run: use theirs
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def prepare_store(config: Config) -> None:
    """Create the tracking store and the experiment the stages log to, if they are not there
    yet: a search does it once before its trials, so that no trial pays for it (a new sqlite
    store migrates its schema) and an unreachable store stops the search before it starts."""
    if not config.mlflow.enabled:
        return
    uri = resolve_tracking_uri(config.mlflow.tracking_uri)
    try:
        experiment_id(uri, config.data.source)
    except Exception as exc:
        raise _unreachable(uri, f"open experiment {config.data.source!r}", exc) from exc


def _unreachable(uri: str, what: str, exc: Exception) -> TrackingError:
    return TrackingError(
        f"tracking store {uri}: cannot {what} ({exc}). Start the server, point "
        "MLFLOW_TRACKING_URI / mlflow.tracking_uri elsewhere, or set mlflow.enabled: false"
    )


def find_run_by_weights(tracking_uri: str, experiment: str, weights_sha256: str) -> str | None:
    """The latest run in ``experiment`` tagged with these weights' sha256, if the store has one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.{WEIGHTS_TAG} = '{weights_sha256}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def open_tracker(
    config: Config,
    model: str,
    family: str,
    run_id: str | None = None,
    weights_sha256: str | None = None,
    system_metrics: bool = False,
) -> Tracker:
    """The MLflow run of ``model``, or a no-op when tracking is off.

    ``run_id`` reopens that run (a resumed training). ``weights_sha256`` reopens the run that
    trained these exact weights in this store, or starts one that says the model was trained
    elsewhere: a model restored by DVC evaluates in whatever store this clone uses.
    """
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
    try:
        if weights_sha256 is not None and run_id is None:
            run_id = find_run_by_weights(uri, config.data.source, weights_sha256)
            if run_id is None:
                log.info("no run in %s trained these %s weights: recording a new run", uri, model)
                tags.update(
                    {
                        WEIGHTS_TAG: weights_sha256,
                        "model_origin": "restored from DVC outputs; trained in another store "
                        "or before runs were tagged with their weights",
                    }
                )
        tracker = MlflowTracker(
            tracking_uri=uri,
            experiment=config.data.source,
            run_name=f"{model} @ {exp_name}" if exp_name else f"{model} @ workspace",
            run_id=run_id,
            tags=tags,
            system_metrics=system_metrics,
        )
    except Exception as exc:  # before any work: fail fast and say what to do
        raise _unreachable(uri, f"start the run of {model}", exc) from exc
    tracker.restored = WEIGHTS_TAG in tags
    return RetryingTracker(tracker, uri)
