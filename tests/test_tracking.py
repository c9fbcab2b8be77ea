"""Tracking that does not take training down with it: retries, a queue, a clear final error."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_params
from trackvision.config import parse_config
from trackvision.errors import TrackingError
from trackvision.tracking import open_tracker
from trackvision.tracking.mlflow_adapter import EXPERIMENT_KIND, MODEL_TRAINING, prepare_store
from trackvision.tracking.retry import RetryingTracker

from .training.test_loop import SETTINGS, fit_toy


class _Store:
    """A fake tracker whose calls fail while ``down`` says so."""

    run_id = "run-1"

    def __init__(self, down=lambda n: False) -> None:
        self.down, self.calls, self.recorded, self.closed = down, 0, [], None

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.down(self.calls):
            raise ConnectionError("connection refused")

    def log_metrics(self, metrics, step=None) -> None:
        self._maybe_fail()
        self.recorded.append(step)

    def log_params(self, params) -> None:
        self._maybe_fail()

    def close(self, status="FINISHED") -> None:
        self.closed = status


def test_a_blink_is_retried_and_nothing_is_lost() -> None:
    store = _Store(down=lambda n: n in (2, 3))  # the second call fails twice, then succeeds
    tracker = RetryingTracker(store, "http://x", retries=3, backoff=0.0)
    for step in (1, 2, 3):
        tracker.log_metrics({"a": 1.0}, step=step)
    tracker.close()
    assert store.recorded == [1, 2, 3] and store.closed == "FINISHED"


def test_training_survives_an_outage_and_the_run_fails_clearly_at_the_end() -> None:
    store = _Store()
    # gone once epoch 2's metrics are in, for good (counted by what was recorded, not by calls,
    # so a parameter logged at the start of fit does not shift the outage)
    store.down = lambda n: len(store.recorded) >= 2
    tracker = RetryingTracker(store, "http://mlflow:5000", retries=2, backoff=0.0, retry_every=0)
    result = fit_toy(tracker=tracker)
    assert len(result.history) == SETTINGS.epochs  # training went on to the last epoch
    assert store.recorded == [1, 2]
    with pytest.raises(TrackingError, match=r"http://mlflow:5000.*2 call\(s\) not recorded"):
        tracker.close()
    assert store.closed == "FAILED"


def test_a_store_back_before_the_end_gets_everything_in_order() -> None:
    store = _Store(down=lambda n: 3 <= n <= 5)  # calls 3-5 fail, then the store is back
    tracker = RetryingTracker(store, "http://x", retries=1, backoff=0.0, retry_every=0)
    for step in range(1, 6):
        tracker.log_metrics({"a": 1.0}, step=step)
    deadline = time.monotonic() + 10
    while len(store.recorded) < 5 and time.monotonic() < deadline:  # delivered in the background
        time.sleep(0.01)
    tracker.close()
    assert store.recorded == [1, 2, 3, 4, 5]


def test_retries_never_wait_in_the_training_thread() -> None:
    """An outage with long back-offs: every call returns at once; the queue waits, not training."""
    store = _Store(down=lambda n: True)
    tracker = RetryingTracker(store, "http://x", retries=3, backoff=5.0, retry_every=30.0)
    start = time.monotonic()
    for step in range(1, 21):
        tracker.log_metrics({"a": 1.0}, step=step)
    assert time.monotonic() - start < 0.5
    start = time.monotonic()
    with pytest.raises(TrackingError, match="20 call"):
        tracker.close()
    assert time.monotonic() - start < 5  # closing cuts the back-off short; one last attempt


def test_an_unreachable_server_fails_before_any_work(params, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    config = parse_config(tiny_params(params, **{"mlflow.enabled": True}))
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port}.*mlflow.enabled: false"):
        open_tracker(config, "cnn", "cnn")
    # A search opens the store before its first trial: it stops there, having run nothing.
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port}.*mlflow.enabled: false"):
        prepare_store(config)


def test_a_search_creates_the_store_and_its_experiment_before_the_trials(
    params, tmp_path, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = parse_config(tiny_params(params, **{"mlflow.enabled": True}))
    prepare_store(config)
    exp = MlflowClient(uri).get_experiment_by_name(config.data.source)
    assert exp.tags[EXPERIMENT_KIND] == MODEL_TRAINING  # the UI opens it on its training runs
    assert exp.artifact_location == (tmp_path / "mlruns").as_uri()  # beside the store
    prepare_store(config)  # a second search finds them there
    assert MlflowClient(uri).get_experiment_by_name(config.data.source).experiment_id == (
        exp.experiment_id
    )


def _checkpoint(folder: Path, seed: int) -> Path:
    """A tiny cnn's checkpoint (safetensors + JSON), as the train stage writes one."""
    from trackvision.models.preprocessing import Preprocessing
    from trackvision.models.zoo import create_model
    from trackvision.training.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(seed)
    arch = {"width": 4, "dense": 8}
    net = create_model("cnn", num_classes=2, in_chans=3, image_size=16, arch=arch).eval()
    pre = Preprocessing((0.5,) * 3, (0.25,) * 3, (3, 16, 16), "bilinear", "test")
    card = ModelCard("cnn", "cnn", arch, ["no_text", "text"], 3, 16, "none", decode_size=20)
    save_checkpoint(folder / str(seed), net.state_dict(), card, pre)
    return folder / str(seed)


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 30, 24, 3), dtype=np.uint8)


def _photos(n: int) -> list[bytes]:
    from trackvision.data.images import encode_png

    return [encode_png(image) for image in _images(n)]


def test_each_evaluated_run_becomes_a_version_and_champion_follows_the_best(
    tmp_path, monkeypatch
) -> None:
    import mlflow
    import pandas as pd

    from trackvision.models.packaged import from_checkpoint
    from trackvision.serving import classify
    from trackvision.tracking.mlflow_adapter import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    photos = _photos(4)
    checkpoints = {}
    for seed, accuracy in ((0, "0.80"), (1, "0.90"), (2, "0.85"), (3, "0.90")):
        tracker = MlflowTracker(tracking_uri=uri, experiment="synthetic_text", run_name=str(seed))
        checkpoints[seed] = _checkpoint(tmp_path / "checkpoints", seed)
        tracker.log_model(checkpoints[seed], _images(2))
        tags = {"test_accuracy": accuracy, "model_name": f"m{seed}"}
        tracker.register_model("synthetic_text-classifier", tags, rank_by="test_accuracy")
        tracker.close()

    # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI; the tracker must not leak it, or
    # the next run in this process would silently go to this store.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = mlflow.tracking.MlflowClient(uri)
    versions = client.search_model_versions("name = 'synthetic_text-classifier'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    champion = client.get_model_version_by_alias("synthetic_text-classifier", "champion")
    # Best accuracy 0.90, first reached by version 2; the later tie does not move it.
    assert int(champion.version) == 2 and champion.tags["model_name"] == "m1"

    # Logged as code with safetensors beside it: nothing to unpickle.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded with an unpickling loader")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)
    loaded = mlflow.pyfunc.load_model("models:/synthetic_text-classifier@champion")
    out = loaded.predict(pd.DataFrame({"image": photos}))
    expected = classify(from_checkpoint(checkpoints[1]), photos)
    assert list(out["label"]) == list(expected["label"])
    np.testing.assert_allclose(out["probability"], expected["probability"], rtol=1e-5)
    assert set(out["probabilities"][0]) == {"no_text", "text"}
    # The signature and example say how to call it.
    info = mlflow.models.get_model_info("models:/synthetic_text-classifier@champion")
    assert info.signature.inputs.input_names() == ["image"]
    assert "label" in info.signature.outputs.input_names()


def test_registered_model_name_may_only_use_source(params) -> None:
    from trackvision.errors import ConfigError

    params["mlflow"]["registered_model"] = "{dataset}-classifier"
    with pytest.raises(ConfigError, match=r"mlflow.registered_model.*\{source\}"):
        parse_config(params)


def test_a_resumed_history_adds_only_the_epochs_the_store_lacks(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    from trackvision.tracking.mlflow_adapter import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(tracking_uri=uri, experiment="resume", run_name="r")
    tracker.log_metrics({"val_accuracy": 0.5, "val_loss": 0.9}, step=1)  # delivered before a kill
    rows = [
        {"epoch": 1, "val_accuracy": 0.5, "val_loss": 0.9},
        {"epoch": 2, "val_accuracy": 0.6, "val_loss": 0.8},  # saved, but never delivered
    ]
    tracker.log_history(rows)
    tracker.close()
    client = MlflowClient(uri)
    for key, values in (("val_accuracy", [0.5, 0.6]), ("val_loss", [0.9, 0.8])):
        history = client.get_metric_history(tracker.run_id, key)
        assert [(m.step, m.value) for m in history] == list(zip([1, 2], values, strict=True))
