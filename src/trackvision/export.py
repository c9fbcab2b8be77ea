"""Export a trained model for small devices: ONNX or TorchScript, checked against PyTorch.

The exported graph is the whole ``PackagedClassifier``: uint8 images at the model's decode size
in, class probabilities out, so a device needs no knowledge of mean, std or input size.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trackvision import atomic
from trackvision.config import Config
from trackvision.errors import ConfigError, DataError, ExportError
from trackvision.evaluation.footprint import median_ms
from trackvision.models.packaged import PackagedClassifier

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
LATENCY_REPEATS_WITHOUT_PARAMS = 30  # outside a project (no params.yaml) to read it from


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    size_mb: float
    latency_ms: float  # CPU, batch 1, median, in the runtime a device would use
    max_abs_diff: float  # against PyTorch's probabilities on the check images


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")


def _onnx(classifier: PackagedClassifier, example: torch.Tensor, out: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        classifier,
        (example,),
        dynamic_shapes={"images": {0: batch}},
        input_names=["images"],
        output_names=["probabilities"],
        dynamo=True,
        external_data=False,
    )
    program.save(str(out))


@contextmanager
def _torch_jit_quietly() -> Iterator[None]:
    """Silence torch.jit's per-call deprecation and tracer warnings; say it once in the log.

    The tracer warns that the input-size check and mean/std become constants: that is the
    export's contract (H = W = the decode size), and the traced file is checked against
    PyTorch before it is kept.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def _torchscript(classifier: PackagedClassifier, example: torch.Tensor, out: Path) -> None:
    log.warning(
        "TorchScript (torch.jit) is deprecated in PyTorch %s; --format onnx is the maintained path",
        torch.__version__.split("+")[0],
    )
    with _torch_jit_quietly():
        traced = torch.jit.trace(classifier, example, check_trace=False)
        torch.jit.save(traced, str(out))


def _runner(fmt: str, path: Path):
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x})[0]
    with _torch_jit_quietly():
        module = torch.jit.load(str(path)).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def export_model(
    classifier: PackagedClassifier,
    fmt: str,
    out: Path,
    check_images: np.ndarray,
    latency_repeats: int,
) -> ExportResult:
    """Write ``classifier`` as ``fmt`` to ``out`` (atomically), verified on ``check_images``.

    ``check_images``: uint8 N x C x H x W at the classifier's decode size (real test images).
    Raises ExportError if the exported model's probabilities differ from PyTorch's by > 1e-4.
    """
    _check_format(fmt)
    classifier = classifier.eval()
    example = torch.from_numpy(np.ascontiguousarray(check_images[:2]))
    with atomic.atomic_path(out) as tmp:
        (_onnx if fmt == "onnx" else _torchscript)(classifier, example, tmp)
        run = _runner(fmt, tmp)
        with torch.no_grad():
            expected = classifier(torch.from_numpy(check_images)).numpy()
        got = run(np.ascontiguousarray(check_images))
        diff = float(np.abs(got - expected).max())
        if not diff <= 1e-4:
            raise ExportError(
                f"{out}: the {fmt} model's probabilities differ from PyTorch's by {diff:.2e} "
                "(limit 1e-4); not written"
            )
        one = np.ascontiguousarray(check_images[:1])
        latency = median_ms(lambda: run(one), latency_repeats)
    size_mb = out.stat().st_size / 1e6
    result = ExportResult(out, fmt, round(size_mb, 3), round(latency, 3), diff)
    log.info(
        "exported %s: %.2f MB, %.2f ms/image (CPU, batch 1), max |diff| vs PyTorch %.1e",
        out,
        result.size_mb,
        result.latency_ms,
        diff,
    )
    return result


def check_images(root: Path, classifier: PackagedClassifier, n: int = 64) -> np.ndarray:
    """Real inputs to verify an export on: test images from ``data/balanced`` when they match
    the model's input; otherwise seeded random images (with a warning)."""
    from trackvision.data.packed import read_split

    shape = (classifier.decode_size, classifier.decode_size, classifier.channels)
    try:
        test = read_split(root / "data" / "balanced", "test")
        if tuple(test.images.shape[1:]) == shape and len(test.images):
            return np.ascontiguousarray(np.asarray(test.images[:n]).transpose(0, 3, 1, 2))
    except (OSError, DataError):
        pass
    log.warning("no test images of shape %s in data/balanced: checking on random images", shape)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, shape[2], shape[0], shape[1]), dtype=np.uint8)


def export_command(
    model_ref: str, fmt: str, out: Path | None, root: Path, config: Config | None
) -> ExportResult:
    """``trackvision export``: write, verify, time; record size and latency in the model's
    MLflow run (a local model trained with tracking on)."""
    from trackvision.models.packaged import load_packaged

    _check_format(fmt)
    classifier = load_packaged(model_ref, config.mlflow.tracking_uri if config else "")
    name = "model" if ":/" in model_ref else Path(model_ref).name  # models:/... or runs:/...
    out = out or root / "exports" / f"{name}{SUFFIX[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Timed like evaluate times the PyTorch model, so the two latencies compare.
    repeats = config.evaluate.latency_repeats if config else LATENCY_REPEATS_WITHOUT_PARAMS
    result = export_model(classifier, fmt, out, check_images(root, classifier), repeats)
    model_dir = Path(model_ref)
    if config is not None and config.mlflow.enabled and (model_dir / "model.safetensors").is_file():
        # The run that trained these weights, or a new one saying where they came from.
        from trackvision.tracking import closing_run, open_tracker
        from trackvision.training.checkpoint import weights_sha256

        family = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))["family"]
        digest = weights_sha256(model_dir)
        with closing_run(open_tracker(config, name, family, weights_sha256=digest)) as tracker:
            tracker.log_metrics(
                {
                    f"export_{fmt}_mb": result.size_mb,
                    f"export_{fmt}_latency_ms": result.latency_ms,
                    f"export_{fmt}_max_abs_diff": result.max_abs_diff,
                }
            )
            tracker.log_artifact(out, "export")
    return result
