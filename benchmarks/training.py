"""Benchmark: training and inference speed, the project's path against a naive loop, in one run.

For each case (model, input size, channels) it measures, on this machine:
- training images/s of the project's path: ``trackvision.training.loop.fit`` on in-memory uint8
  tensors, with the precision and memory format the model's entry in params.yaml chooses
  (``precision: auto`` resolved for this CPU), against a naive loop written the plain way:
  torchvision ``ImageFolder`` decoding JPEGs with PIL every step, ``ToTensor`` + ``Normalize``,
  NCHW fp32, default threads (in a fresh process);
  each case alternates passes of each (``--passes`` at 28 px, ``--passes-large`` at 128 and
  224 px) and compares medians;
- inference latency per image (batch 1, median) and throughput (batch 64) on the CPU.
Prints the ratios and writes ``reports/bench.json`` (and an MLflow run in experiment
``benchmarks``, unless ``--no-mlflow``). Usage:
    python benchmarks/training.py [--quick] [--out reports/bench.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from trackvision.atomic import write_json
from trackvision.config import load_config
from trackvision.data.packed import Split
from trackvision.data.sources.synthetic_text import generate_image
from trackvision.evaluation.footprint import cpu_latency_ms, machine, median_ms
from trackvision.models.preprocessing import resolve_preprocessing
from trackvision.models.zoo import create_model, model_family
from trackvision.training.loop import fit
from trackvision.training.precision import resolve_precision

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench")

# (model, side in px, channels): the cases; 28-px greyscale is Fashion-MNIST's shape.
CASES = [
    ("cnn", 28, 1),
    ("vit", 28, 1),
    ("mobilevit_xxs", 128, 3),
    ("mobilevit_xxs", 224, 3),
    ("tf_efficientnet_lite0", 128, 3),
    ("tf_efficientnet_lite0", 224, 3),
]


def _images(n: int, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    mode = "L" if channels == 1 else "RGB"
    pics = [generate_image(11, i, size, bool(i % 2)).convert(mode) for i in range(n)]
    arr = np.stack([np.asarray(p).reshape(size, size, channels) for p in pics])
    return arr, np.arange(n) % 2


def _write_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img)
        pil.save(folder / str(label) / f"{i:05d}.jpg", quality=90)


def _model(name: str, size: int, channels: int, arch: dict) -> torch.nn.Module:
    if name == "vit":
        arch = {**arch, "patch_size": 4}  # 28 px: 7 x 7 tokens
    torch.manual_seed(0)
    return create_model(name, num_classes=2, in_chans=channels, image_size=size, arch=arch)


def naive_train(name, size, channels, arch, folder: Path, batch: int, steps: int) -> float:
    """The plain way: ImageFolder + PIL decode every step, NCHW fp32, default threads.

    Runs in a fresh process, so that no state of the project's path carries over.
    """
    env = dict(os.environ)
    spec = json.dumps([name, size, channels, arch, str(folder), batch, steps])
    done = subprocess.run(
        [sys.executable, __file__, "--naive-child", spec],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the naive loop failed for {name}:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _naive_train_here(name, size, channels, arch, folder: Path, batch: int, steps: int) -> float:
    mean, std = (0.5,) * channels, (0.5,) * channels
    tf = [transforms.Grayscale()] if channels == 1 else []
    tf += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    data = datasets.ImageFolder(folder, transform=transforms.Compose(tf))
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    model = _model(name, size, channels, arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seen, start, done = 0, 0.0, 0
    while done < steps + 1:
        for x, y in loader:
            if done == 1:  # the first step pays for allocations: not timed
                seen, start = 0, time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
            done += 1
            if done == steps + 1:
                break
    return seen / (time.perf_counter() - start)


def project_train(name, size, channels, spec_train, arch, split: Split, batch: int) -> float:
    """The project's path: ``fit`` on in-memory uint8 tensors, precision as params.yaml says."""
    model = _model(name, size, channels, arch)
    pre = resolve_preprocessing(model, model_family(name), channels, size)
    settings = spec_train.model_copy(
        update=dict(epochs=2, batch_size=batch, image_size=size, patience=0, warmup_epochs=0)
    )
    val = Split(split.images[:batch], split.labels[:batch])
    result = fit(model, split, val, settings, pre, torch.device("cpu"))
    return result.images_per_s[-1]  # epoch 2: warm


def inference(name, size, channels, arch) -> dict[str, float]:
    model = _model(name, size, channels, arch).eval()
    one = torch.randn(1, channels, size, size)
    latency = cpu_latency_ms(model, one, repeats=20)
    batch = torch.randn(64, channels, size, size)
    with torch.inference_mode():
        batch_ms = median_ms(lambda: model(batch), repeats=3, warmup=1)
    return {"latency_ms_b1": latency, "images_per_s_b64": 64 / (batch_ms / 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="MODEL:SIZE",
        help="only these cases, e.g. cnn:28 (default: every case)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument(
        "--passes",
        type=int,
        default=5,
        help="alternating passes of each loop for the 28-px cases, median taken (default 5: "
        "the 28-px ratios swung 1.33x-1.76x between single runs of three on a busy host)",
    )
    parser.add_argument(
        "--passes-large",
        type=int,
        default=3,
        help="the same for the 128- and 224-px cases (default 3, which made a run here 8 min 43 s "
        "against 4 min 8 s with 1; single passes read mobilevit_xxs at 128 px 1.17x in one run "
        "and 1.78x-1.92x in others)",
    )
    parser.add_argument("--naive-child", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for flag, value in (("--passes", args.passes), ("--passes-large", args.passes_large)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.naive_child:  # a fresh process for the baseline (see naive_train)
        name, size, channels, arch, folder, batch, steps = json.loads(args.naive_child)
        print(_naive_train_here(name, size, channels, arch, Path(folder), batch, steps))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("trackvision").setLevel(logging.WARNING)
    config = load_config(REPO / "params.yaml")
    results = []
    cases = [c for c in CASES if not args.cases or f"{c[0]}:{c[1]}" in args.cases]
    if not cases:
        parser.error(
            f"--cases: none of {args.cases} is a case; choose from "
            + ", ".join(f"{n}:{s}" for n, s, _ in CASES)
        )
    for name, size, channels in cases:
        spec = config.model(name)
        batch, large = 64, size >= 128
        n = (2 if args.quick else 4) * batch if large else (4 if args.quick else 16) * batch
        images, labels = _images(n, size, channels)
        # One pass is at the mercy of a noisy neighbour (the host's speed drifts over minutes):
        # alternate naive and project passes and compare medians.
        repeats = 1 if args.quick else args.passes_large if large else args.passes
        naives, projects = [], []
        with tempfile.TemporaryDirectory() as tmp:
            _write_folder(Path(tmp), images, labels)
            for _ in range(repeats):
                naives.append(
                    naive_train(name, size, channels, spec.arch, Path(tmp), batch, n // batch - 1)
                )
                projects.append(
                    project_train(
                        name, size, channels, spec.train, spec.arch, Split(images, labels), batch
                    )
                )
        naive, project = statistics.median(naives), statistics.median(projects)
        row = {
            "model": name,
            "size": size,
            "channels": channels,
            "precision": resolve_precision(spec.train.precision, torch.device("cpu")),
            "channels_last": spec.train.channels_last,
            "naive_train_images_per_s": round(naive, 1),
            "project_train_images_per_s": round(project, 1),
            "speedup": round(project / naive, 2),
            "passes": repeats,
            # every pass, so the noise behind a median is on record
            "naive_passes": [round(v, 1) for v in naives],
            "project_passes": [round(v, 1) for v in projects],
            **{k: round(v, 2) for k, v in inference(name, size, channels, spec.arch).items()},
        }
        results.append(row)
        log.info(
            "%-22s %3d px x%d  train: naive %7.1f  project %7.1f img/s  = %.2fx | "
            "inference b1 %.2f ms, b64 %.0f img/s",
            name,
            size,
            channels,
            naive,
            project,
            row["speedup"],
            row["latency_ms_b1"],
            row["images_per_s_b64"],
        )
    report = {
        "machine": machine(),
        "cases": results,
    }
    write_json(args.out, report)
    if not args.no_mlflow and config.mlflow.enabled:
        import mlflow

        from trackvision.tracking import resolve_tracking_uri

        mlflow.set_tracking_uri(resolve_tracking_uri(config.mlflow.tracking_uri))
        mlflow.set_experiment("benchmarks")
        with mlflow.start_run(run_name="training and inference speed"):
            mlflow.log_params(report["machine"])
            for r in results:
                key = f"{r['model']}_{r['size']}"
                mlflow.log_metrics(
                    {
                        f"{key}_speedup": r["speedup"],
                        f"{key}_project_img_s": r["project_train_images_per_s"],
                        f"{key}_latency_ms": r["latency_ms_b1"],
                    }
                )
            mlflow.log_artifact(str(args.out))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
