"""Benchmark: build ``text_recognition`` from already-downloaded archives of the real sizes.

Makes an MSRA-TD500-shaped zip (300 train + 200 test photos) and a Flickr8k-shaped zip (8,091
photos, about 1 GB like the real one) in a temporary download cache, then times the download stage
(archives found in the cache: extract once, pick, copy) and the balance stage on the result.
Usage: python benchmarks/text_recognition_build.py [--flickr 8091] [--out reports/bench_text.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from trackvision.atomic import write_json
from trackvision.config import parse_config
from trackvision.data.fetch import file_digest
from trackvision.layout import Layout
from trackvision.stages.balance import balance
from trackvision.stages.download import download
from trackvision.stages.plan import plan

REPO = Path(__file__).resolve().parents[1]


def photo(rng: np.random.Generator, width: int = 500, height: int = 375) -> bytes:
    """A noisy photo-sized JPEG (~120 KB, like Flickr8k's) made quickly from a coarse pattern."""
    coarse = rng.integers(0, 255, (height // 4, width // 4, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((width, height)), dtype=np.int16)
    img = np.clip(img + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def build_archives(cache: Path, n_flickr: int) -> int:
    rng = np.random.default_rng(0)
    cache.mkdir(parents=True)
    pool = [photo(rng) for _ in range(64)]  # encoding 8,091 distinct photos would dominate
    total = 0
    with zipfile.ZipFile(cache / "MSRA-TD500.zip", "w") as zf:
        for split, n in (("train", 300), ("test", 200)):
            for i in range(n):
                zf.writestr(f"MSRA-TD500/{split}/IMG_{i:04d}.JPG", photo(rng, 640, 480))
                zf.writestr(f"MSRA-TD500/{split}/IMG_{i:04d}.gt", b"0 0 1 1 1 1 0\n")
    with zipfile.ZipFile(cache / "Flickr8k_Dataset.zip", "w") as zf:
        for i in range(n_flickr):
            # Distinct bytes per file (a trailing comment) so de-duplication keeps each one.
            data = pool[i % len(pool)] + f"#{i}".encode()
            zf.writestr(f"Flicker8k_Dataset/{i:06d}_{i:x}.jpg", data)
            total += len(data)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flickr", type=int, default=8091)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_text.json"))
    args = parser.parse_args()
    # Imported here, not at the top: balance's worker processes are spawned and re-import this
    # script's top level, and `machine` brings torch (2.6 s a process), which is not the stage's.
    from trackvision.evaluation.footprint import machine

    logging.basicConfig(level=logging.WARNING)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        flickr_bytes = build_archives(root / "cache", args.flickr)
        archive_mb = (root / "cache" / "Flickr8k_Dataset.zip").stat().st_size / 1e6
        params["data"]["source"] = "text_recognition"
        params["download"].update(cache_dir=str(root / "cache"), mirror="http://127.0.0.1:9")
        # The stand-in archive replaces the published MD5; the check itself still runs.
        md5 = file_digest(root / "cache" / "Flickr8k_Dataset.zip", "md5")
        params["download"]["checksums"] = {"Flickr8k_Dataset.zip": md5}
        config = parse_config(params)
        layout = Layout(root / "repo")
        t0 = time.perf_counter()
        download(config, layout)
        t1 = time.perf_counter()
        plan(config, layout)
        balance(config, layout)
        t2 = time.perf_counter()
    result = {
        "flickr_images": args.flickr,
        "flickr_zip_mb": round(archive_mb, 1),
        "flickr_payload_mb": round(flickr_bytes / 1e6, 1),
        "download_stage_s": round(t1 - t0, 2),
        "balance_stage_s": round(t2 - t1, 2),
        "total_s": round(t2 - t0, 2),
        "machine": machine(),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
