"""Using a trained model: predict over a gallery (CSV, sorted copies) and export for devices."""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import REPO, tiny_project
from trackvision.cli import run
from trackvision.data.packed import read_split
from trackvision.data.sources.synthetic_text import generate_image
from trackvision.errors import DataError, ExportError
from trackvision.models.packaged import load_packaged
from trackvision.predict import predict_gallery
from trackvision.stages.evaluate import evaluate
from trackvision.stages.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A tiny pipeline through evaluate (cnn, MLflow into a temp store)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    config, layout = tiny_project(tmp_path_factory.mktemp("trained"), params)
    train(config, layout, "cnn")
    evaluate(config, layout, "cnn")
    _unpack(layout.raw("synthetic_text"), layout.root / PHOTOS)
    return config, layout


PHOTOS = "photos"  # the raw pack's files as a user's folder holds them, under the same names


def _unpack(raw: Path, dest: Path) -> None:
    from trackvision.data.rawset import read_raw

    _classes, items = read_raw(raw)
    for item in items:
        path = dest / item.shown_as.split(f"{raw.name}/", 1)[-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.read())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _gallery(folder: Path) -> list[Path]:
    (folder / "trip" / "day2").mkdir(parents=True)
    files = []
    for i in range(10):
        path = folder / ("trip" if i < 5 else "trip/day2") / f"IMG_{i:03d}.jpg"
        generate_image(11, i, 96, bool(i % 2)).save(path, quality=90)
        files.append(path)
    (folder / "trip" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "trip" / "notes.txt").write_text("not an image")
    return files


def test_predict_writes_a_csv_and_copies_without_touching_the_originals(trained, tmp_path):
    _config, layout = trained
    photos = _gallery(tmp_path / "photos")
    before = {p: _sha(p) for p in (tmp_path / "photos").rglob("*") if p.is_file()}
    out, sorted_dir = tmp_path / "predictions.csv", tmp_path / "sorted"

    summary = predict_gallery(
        [tmp_path / "photos"], str(layout.model_dir("cnn")), out, sorted_dir, threshold=0.0
    )

    assert {p: _sha(p) for p in before} == before  # nothing moved, changed or deleted
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 11 and summary["unreadable"] == 1
    assert list(rows[0]) == ["path", "label", "confidence", "p_no_text", "p_text", "error"]
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert broken["label"] == "" and "broken.jpg" in broken["error"]
    for row in (r for r in rows if not r["error"]):
        probs = [float(row["p_no_text"]), float(row["p_text"])]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert float(row["confidence"]) == pytest.approx(max(probs), abs=1e-6)
        assert row["label"] == ("text" if probs[1] > probs[0] else "no_text")
    copies = sorted(p for p in sorted_dir.rglob("*") if p.is_file())
    assert len(copies) == 10 and {p.parent.name for p in copies} <= {"text", "no_text"}
    assert sorted(_sha(p) for p in copies) == sorted(_sha(p) for p in photos)

    # A rerun copies nothing new; a threshold of 1 sends everything uncertain to uncertain/.
    predict_gallery([tmp_path / "photos"], str(layout.model_dir("cnn")), out, sorted_dir, 0.0)
    assert len([p for p in sorted_dir.rglob("*") if p.is_file()]) == 10
    again = predict_gallery(
        [tmp_path / "photos"], str(layout.model_dir("cnn")), out, tmp_path / "strict", 1.0
    )
    assert again["copied"].get("uncertain", 0) >= 1


def test_predict_decodes_files_exactly_as_training_did(trained) -> None:
    """Raw test files through predict give the predictions of the packed test arrays."""
    _config, layout = trained
    with open(layout.balanced / "manifest.csv") as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    prefix = "data/raw/synthetic_text/"
    paths = [layout.root / PHOTOS / r["path"].removeprefix(prefix) for r in test_rows]
    classifier = load_packaged(str(layout.model_dir("cnn")))
    from trackvision.predict import predict

    by_file = [p.probabilities for p in predict(classifier, paths, batch_size=8, workers=1)]
    test = read_split(layout.balanced, "test")
    with torch.no_grad():
        packed = classifier(torch.from_numpy(np.array(test.images).transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(by_file), packed.numpy(), atol=1e-6)


def test_the_champion_in_mlflow_predicts_like_the_local_model_without_unpickling(
    trained, tmp_path, monkeypatch
) -> None:
    """`--model models:/...@champion`, found through params.yaml's tracking_uri, is rebuilt from
    the safetensors files logged beside MLflow's graph; no loader that unpickles is touched."""
    _config, layout = trained
    # Elsewhere than the project, so the default store (./mlflow.db) would be the wrong one.
    (tmp_path / "params.yaml").write_text((layout.root / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded with an unpickling loader")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.export, "load", refuse)
    photos = layout.root / PHOTOS
    out_local, out_logged = tmp_path / "local.csv", tmp_path / "logged.csv"
    local_ref = str(layout.model_dir("cnn"))
    assert run(["predict", str(photos), "--model", local_ref, "--out", str(out_local)]) == 0
    champion = "models:/synthetic_text-classifier@champion"
    assert run(["predict", str(photos), "--model", champion, "--out", str(out_logged)]) == 0
    local, logged = (list(csv.DictReader(p.open())) for p in (out_local, out_logged))
    assert len(local) > 10 and logged == local


def test_predict_errors_are_one_clear_line(trained, tmp_path, caplog, monkeypatch) -> None:
    _config, layout = trained
    monkeypatch.chdir(tmp_path)  # no models/ here: inputs are checked before a model is looked for
    assert run(["predict", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such file or folder" in caplog.text
    (tmp_path / "empty").mkdir()
    assert run(["predict", str(tmp_path / "empty"), "--model", str(layout.model_dir("cnn"))]) == 1
    assert "no image files found" in caplog.text
    assert run(["predict", str(layout.root / PHOTOS), "--model", "models/nope"]) == 1
    assert "models/nope: no such folder" in caplog.text
    (tmp_path / "photos").mkdir()
    generate_image(1, 1, 64, True).save(tmp_path / "photos" / "a.jpg")
    assert run(["predict", str(tmp_path / "photos")]) == 1
    assert "no evaluated model; run `dvc repro`" in caplog.text
    with pytest.raises(DataError, match="threshold"):
        predict_gallery([tmp_path], str(layout.model_dir("cnn")), tmp_path / "x.csv", None, 1.5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_and_is_recorded_in_mlflow(trained, tmp_path, fmt) -> None:
    from mlflow.tracking import MlflowClient

    from trackvision.export import export_command

    config, layout = trained
    out = tmp_path / f"cnn.{fmt}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_command(str(layout.model_dir("cnn")), fmt, out, layout.root, config)
    # A user's terminal gets log lines, not torch.jit's tracer and deprecation warnings.
    noise = [w for w in caught if issubclass(w.category, (torch.jit.TracerWarning, FutureWarning))]
    assert not noise, [str(w.message) for w in noise]
    assert out.is_file() and result.size_mb == pytest.approx(out.stat().st_size / 1e6, abs=1e-3)
    assert result.max_abs_diff <= 1e-4 and result.latency_ms > 0

    # Independently: the exported file on other real images (the validation split).
    val = np.ascontiguousarray(
        np.asarray(read_split(layout.balanced, "val").images).transpose(0, 3, 1, 2)
    )
    classifier = load_packaged(str(layout.model_dir("cnn")))
    with torch.no_grad():
        expected = classifier(torch.from_numpy(val)).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": val})[0]
    else:
        # The user's own loader, as TorchScript users call it; its deprecation is expected.
        with pytest.warns(FutureWarning, match="torch.jit.load"):
            module = torch.jit.load(str(out))
        got = module(torch.from_numpy(val)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)

    run_id = json.loads(layout.run_record("cnn").read_text())["mlflow_run_id"]
    mlflow_run = MlflowClient(config.mlflow.tracking_uri).get_run(run_id)
    assert mlflow_run.data.metrics[f"export_{fmt}_mb"] == pytest.approx(result.size_mb)
    assert mlflow_run.data.metrics[f"export_{fmt}_latency_ms"] == pytest.approx(result.latency_ms)
    artifacts = MlflowClient(config.mlflow.tracking_uri).list_artifacts(run_id, "export")
    assert f"export/{out.name}" in [a.path for a in artifacts]


def test_an_export_that_disagrees_with_pytorch_is_not_written(trained, tmp_path, monkeypatch):
    from trackvision import export

    _config, layout = trained
    monkeypatch.setattr(export, "_runner", lambda fmt, path: lambda x: np.zeros((len(x), 2)))
    out = tmp_path / "cnn.onnx"
    with pytest.raises(ExportError, match="differ from PyTorch's"):
        export.export_command(str(layout.model_dir("cnn")), "onnx", out, layout.root, None)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_errors_grid_shows_every_mistake(tmp_path) -> None:
    from trackvision.evaluation.plots import errors_png

    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    true = np.array([0, 1] * 5)
    predicted = true.copy()
    predicted[[1, 4, 7]] = 1 - predicted[[1, 4, 7]]
    n = errors_png(images, true, predicted, np.full(10, 0.9), ["a", "b"], tmp_path / "e.png", "t")
    assert n == 3
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    none = errors_png(images, true, true, np.full(10, 0.9), ["a", "b"], tmp_path / "0.png", "t")
    assert none == 0 and (tmp_path / "0.png").stat().st_size > 0


def test_the_errors_montage_holds_each_image_in_its_cell() -> None:
    from trackvision.evaluation.plots import montage

    images = np.random.default_rng(1).integers(0, 255, (11, 6, 5, 3), dtype=np.uint8)
    canvas, (cell_h, cell_w) = montage(images, cols=4, caption=3, gap=2)
    assert canvas.shape == (3 * 9, 4 * 7, 3) and (cell_h, cell_w) == (9, 7)
    for k, image in enumerate(images):
        row, col = divmod(k, 4)
        top, left = row * cell_h + 3, col * cell_w
        assert np.array_equal(canvas[top : top + 6, left : left + 5], image)
    assert (canvas[:3] == 255).all() and (canvas[-9:, 3 * 7 :] == 255).all()  # free cells
    assert montage(images[:0], cols=4, caption=3, gap=2)[0].shape == (9, 28, 3)
