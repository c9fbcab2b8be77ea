"""Benchmark: images/s of the balance stage's decode-check-resize-pack on 224-px JPEGs.

Prints one process against every core, and their ratio, in one run. Usage:
    python benchmarks/data_stages.py [--images 1200] [--size 224] [--out reports/bench_data.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from trackvision.atomic import write_json
from trackvision.data.balance import build_balanced_set
from trackvision.data.similarity import Rule
from trackvision.data.sources.synthetic_text import generate_image

log = logging.getLogger("bench")


def make_jpegs(folder: Path, n: int, size: int) -> None:
    for i in range(n):
        label = "text" if i % 2 else "no_text"
        (folder / label).mkdir(parents=True, exist_ok=True)
        generate_image(7, i, size, bool(i % 2)).save(folder / label / f"{i:05d}.jpg", quality=90)


def run(folder: Path, workers: int, image_size: int) -> float:
    start = time.perf_counter()
    result = build_balanced_set(
        folder,
        channels=3,
        image_size=image_size,
        ratios={"train": 0.7, "val": 0.15, "test": 0.15},
        strategy="none",
        seed=0,
        min_per_class=1,
        workers=workers,
        near_copies=Rule(),  # the default: balance groups near-copies before splitting
    )
    seconds = time.perf_counter() - start
    return sum(len(s) for s in result.splits.values()) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--size", type=int, default=224, help="side of the source JPEGs")
    parser.add_argument("--image-size", type=int, default=64, help="side they are resized to")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_data.json"))
    args = parser.parse_args()
    # Imported here, not at the top: balance's worker processes are spawned and re-import this
    # script's top level, and `machine` brings torch (2.6 s a process), which is not the stage's.
    from trackvision.evaluation.footprint import machine

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_jpegs(folder, args.images, args.size)
        one = run(folder, 1, args.image_size)
        every = run(folder, cores, args.image_size)
    result = {
        "images": args.images,
        "jpeg_side": args.size,
        "resized_to": args.image_size,
        "cores": cores,
        "machine": machine(),
        "images_per_s_1_process": round(one, 1),
        f"images_per_s_{cores}_processes": round(every, 1),
        "ratio": round(every / one, 2),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
