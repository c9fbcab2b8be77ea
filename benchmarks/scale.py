"""Benchmark: the whole pipeline at the sizes users bring, stage by stage, and a gallery of photos.

For each dataset it builds a look-alike in the real format at full size (Fashion-MNIST's four IDX
files, Tiny-ImageNet-200's zip), serves it on 127.0.0.1 through ``download.mirror`` (checksums
through ``download.checksums``), runs every stage of ``dvc repro`` in a fresh project, one
``dvc repro -s`` each, and records wall time, images/s and the peak memory of the stage's process
tree; then ``dvc push`` to an empty local remote and ``git clone`` + ``dvc pull``. The gallery case
decodes 4000 x 3000 JPEGs the way balance does. Results go to ``--out`` and an MLflow run in the
experiment ``benchmarks``. Usage:
    python benchmarks/scale.py [--datasets fashion_mnist tiny_imagenet gallery]
        [--out reports/bench_scale.json] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the look-alike archives and the loopback server live in tests/

from tests.data import fake_archives as fake  # noqa: E402
from tests.loopback import Served, serve  # noqa: E402

from trackvision.atomic import write_json  # noqa: E402

log = logging.getLogger("bench")
STAGES = ("download", "plan", "balance", "augment", "train@cnn", "evaluate@cnn")


def _patterns(n: int, classes: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable look-alike images: a smooth template per class plus per-image noise.

    Every class gets the same number of images (n // classes, in a shuffled order), as in the
    real datasets, so balancing keeps every image.
    """
    # The templates are the same for every split (seed 0); labels and noise follow ``seed``.
    coarse = np.random.default_rng(0).uniform(0, 255, (classes, 4, 4))
    rng = np.random.default_rng(seed + 1)
    templates = np.stack(
        [np.asarray(Image.fromarray(c.astype(np.uint8)).resize((side, side))) for c in coarse]
    ).astype(np.int16)
    labels = rng.permutation(np.repeat(np.arange(classes), n // classes))
    images = np.empty((n, side, side), dtype=np.uint8)
    for start in range(0, n, 4096):
        lab = labels[start : start + 4096]
        noise = rng.normal(0, 40, (len(lab), side, side))
        images[start : start + 4096] = np.clip(templates[lab] + noise, 0, 255)
    return images, labels


def fashion_mnist_files(scale: float = 1.0) -> dict[str, bytes]:
    files = {}
    for prefix, n, seed in (("train", int(60_000 * scale), 0), ("t10k", int(10_000 * scale), 1)):
        images, labels = _patterns(n, 10, 28, seed)
        files[f"{prefix}-images-idx3-ubyte.gz"] = fake.idx_images(images)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = fake.idx_labels(labels)
    return files


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tiny_imagenet_zip(path: Path, classes: int = 200, per_class: int = 500, val: int = 50) -> None:
    wnids = [f"n{10_000_000 + c:08d}" for c in range(classes)]
    rng = np.random.default_rng(0)
    tint = rng.uniform(0.5, 1.5, (classes, 3))
    grey, labels = _patterns(classes * (per_class + val), classes, 64, 2)
    rgb = lambda k: np.clip(grey[k, ..., None] * tint[labels[k]], 0, 255).astype(np.uint8)  # noqa: E731
    root = "tiny-imagenet-200"
    counts = dict.fromkeys(range(classes), 0)
    annotations = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{root}/wnids.txt", "\n".join(wnids) + "\n")
        zf.writestr(f"{root}/words.txt", "".join(f"{w}\tclass {i}\n" for i, w in enumerate(wnids)))
        for k in range(len(labels)):
            c = int(labels[k])
            if counts[c] < per_class:
                zf.writestr(
                    f"{root}/train/{wnids[c]}/images/{wnids[c]}_{counts[c]}.JPEG", _jpeg(rgb(k))
                )
            elif counts[c] < per_class + val:
                name = f"val_{len(annotations)}.JPEG"
                zf.writestr(f"{root}/val/images/{name}", _jpeg(rgb(k)))
                annotations.append(f"{name}\t{wnids[c]}\t0\t0\t63\t63")
            counts[c] += 1
        zf.writestr(f"{root}/val/val_annotations.txt", "\n".join(annotations) + "\n")


def make_project(root: Path, params: dict) -> None:
    """A fresh project: this repository's code and dvc.yaml, the given params, git + DVC."""
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(
        REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    (root / "data" / "gallery").mkdir(parents=True)
    shutil.copy(REPO / "data" / "gallery" / "README.md", root / "data" / "gallery" / "README.md")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db\n/mlruns/\n.trackvision/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "project"], cwd=root, check=True, env=_git_env())


def _git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }


def timed(cmd: list[str], cwd: Path) -> dict[str, float]:
    """Wall seconds and peak resident memory (GB) of the largest process ``cmd`` started."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}")
    return {"seconds": round(seconds, 1), "peak_gb": round(usage.ru_maxrss / (1 << 20), 3)}


def run_dataset(name: str, files: dict[str, bytes], params: dict, work: Path, images: int) -> dict:
    checksums = {f: fake.md5(data) for f, data in files.items()}
    project, remote, clone = work / f"{name}-a", work / f"{name}-remote", work / f"{name}-b"
    project.mkdir()
    with serve(Served(files=files)) as server:
        params["download"].update(
            mirror=server.url, checksums=checksums, cache_dir=str(work / "download-cache")
        )
        make_project(project, params)
        stages = {}
        for stage in STAGES:
            stages[stage] = timed(["dvc", "repro", "-s", stage], project)
            stages[stage]["images_per_s"] = round(images / stages[stage]["seconds"], 1)
            log.info("%s %s: %s", name, stage, stages[stage])
    subprocess.run(["dvc", "remote", "add", "-d", "bench", str(remote)], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-qm", "results"], cwd=project, check=True, env=_git_env())
    push = timed(["dvc", "push", "-q"], project)
    clone_pull = timed(["git", "clone", "-q", str(project), str(clone)], work)
    pull = timed(["dvc", "pull", "-q"], clone)
    raw = project / "data" / "raw" / params["data"]["source"]
    test = json.loads((project / "metrics" / "cnn" / "evaluation.json").read_text())
    return {
        "images": images,
        "stages": stages,
        "repro_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
        "peak_gb": max(s["peak_gb"] for s in stages.values()),
        "raw_files": sum(1 for p in raw.rglob("*") if p.is_file()),
        "push_seconds": push["seconds"],
        "clone_and_pull_seconds": round(clone_pull["seconds"] + pull["seconds"], 1),
        "test_accuracy": test.get("accuracy"),
    }


def gallery(work: Path, n: int = 500, size: int = 64) -> dict:
    """Decode n 4000 x 3000 JPEGs as balance does (every core), and once without draft mode."""
    from trackvision.data.balance import decode_items
    from trackvision.data.rawset import RawItem

    folder = work / "gallery"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize(
        (4000, 3000), Image.Resampling.BICUBIC
    )
    for i in range(n):
        base.rotate(i % 360).save(folder / f"IMG_{i:04d}.jpg", quality=90)
    items = [RawItem(str(p), str(p), "x") for p in sorted(folder.glob("*.jpg"))]
    start = time.perf_counter()
    decoded = sum(arr is not None for _, arr, _ in decode_items(items, 3, size, 0))
    seconds = time.perf_counter() - start
    with Image.open(items[0].file) as img:  # one full decode, for the ratio
        t0 = time.perf_counter()
        img.load()
        full = time.perf_counter() - t0
    return {
        "photos": n,
        "photo_size": "4000x3000",
        "decode_size": size,
        "decoded": decoded,
        "seconds": round(seconds, 2),
        "photos_per_s": round(n / seconds, 1),
        "full_decode_ms_one_core": round(full * 1000, 1),
        "bytes_gb": round(sum(p.stat().st_size for p in folder.iterdir()) / 1e9, 2),
    }


def base_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["models"] = ["cnn"]
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", default=["gallery", "fashion_mnist", "tiny_imagenet"]
    )
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_scale.json")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="share of the full sizes (photos, images, Tiny-ImageNet classes); 1 = full size",
    )
    parser.add_argument(
        "--tracking-uri", default="", help="store for the benchmark's run (default: the project's)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from trackvision.evaluation.footprint import machine

    results: dict[str, object] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="trackvision-scale-") as tmp:
        work = Path(tmp)
        if "gallery" in args.datasets:
            results["gallery"] = gallery(work, n=max(2, int(500 * args.scale)))
            log.info("gallery: %s", results["gallery"])
        if "fashion_mnist" in args.datasets:
            p = base_params()
            p["data"].update(source="fashion_mnist", image_size=28)
            p["train"].update(epochs=3, image_size=28)
            results["fashion_mnist"] = run_dataset(
                "fashion_mnist", fashion_mnist_files(args.scale), p, work, int(70_000 * args.scale)
            )
        if "tiny_imagenet" in args.datasets:
            zpath = work / "tiny-imagenet-200.zip"
            classes = max(2, int(200 * args.scale))
            tiny_imagenet_zip(zpath, classes=classes)
            p = base_params()
            p["data"].update(source="tiny_imagenet", image_size=64)
            p["train"].update(epochs=2)
            files = {zpath.name: zpath.read_bytes()}
            p["data"]["tiny_imagenet"]["classes"] = []  # every class in the archive
            results["tiny_imagenet"] = run_dataset("tiny_imagenet", files, p, work, classes * 550)
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    if not args.no_mlflow:
        import mlflow

        from trackvision.tracking import resolve_tracking_uri

        mlflow.set_tracking_uri(args.tracking_uri or resolve_tracking_uri(""))
        mlflow.set_experiment("benchmarks")
        with mlflow.start_run(run_name="scale: full-size datasets and a photo gallery"):
            mlflow.log_params(results["machine"])
            for key, value in _flat(results).items():
                mlflow.log_metric(key, value)
            mlflow.log_artifact(str(args.out))


def _flat(tree: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in tree.items():
        if key == "machine":
            continue
        name = f"{prefix}{key}".replace("@", "_")
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


if __name__ == "__main__":
    main()
