"""Benchmark: `trackvision predict` over a gallery of 224-px JPEGs, decoding beside the model.

Generates N photos (half with text), then classifies them with a trained model (default:
models/mobilevit_xxs/) twice: decoding in the main process (workers 0) and in a worker process
while the model computes (workers 1, the default). Prints images/s, the cores kept busy (CPU
time / wall time) and the ratio. Usage:
    python benchmarks/predict.py [--images 1000] [--size 224] [--model models/mobilevit_xxs]
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

from trackvision.atomic import write_json
from trackvision.data.sources.synthetic_text import generate_image
from trackvision.evaluation.footprint import machine
from trackvision.models.packaged import is_logged_model
from trackvision.predict import predict_gallery

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]


def _cpu_seconds() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default=str(REPO / "models" / "mobilevit_xxs"))
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_predict.json")
    parser.add_argument(
        "--if-trained",
        action="store_true",
        help="no trained model yet: say so and exit 0 instead of failing (`make bench`)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if not is_logged_model(args.model) and not (Path(args.model) / "model.safetensors").is_file():
        # A fresh clone has no trained model until `make repro` (or `dvc pull`) has run.
        missing = (
            f"benchmarks/predict.py: no trained model in {args.model} (model.safetensors "
            "missing); run `make repro` or `dvc pull` first, or pass --model models/<name>"
        )
        if args.if_trained:
            log.warning("%s; skipped", missing)
            return
        raise SystemExit(missing)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery"
        gallery.mkdir()
        for i in range(args.images):
            image = generate_image(21, i, args.size, bool(i % 2))
            image.save(gallery / f"IMG_{i:05d}.jpg", quality=90)
        for workers in (0, 1, 2):
            cpu0, t0 = _cpu_seconds(), time.perf_counter()
            summary = predict_gallery(
                [gallery], args.model, Path(tmp) / f"p{workers}.csv", workers=workers
            )
            wall = time.perf_counter() - t0
            busy = (_cpu_seconds() - cpu0) / wall
            results[f"workers_{workers}"] = {
                "images_per_s": round(args.images / wall, 1),
                "cores_busy": round(busy, 2),
                "seconds": round(wall, 2),
            }
            log.info(
                "workers=%d: %.1f images/s, %.2f cores busy (%s)",
                workers,
                args.images / wall,
                busy,
                summary["per_class"],
            )
    ratio = results["workers_1"]["images_per_s"] / results["workers_0"]["images_per_s"]
    best = max(results, key=lambda k: results[k]["images_per_s"])
    log.info("decoding beside the model: %.2fx", ratio)
    write_json(
        args.out,
        {
            **results,
            "ratio": round(ratio, 2),
            "best": best,
            "images": args.images,
            "size": args.size,
            "model": args.model,
            "machine": machine(),
        },
    )


if __name__ == "__main__":
    main()
