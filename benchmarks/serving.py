"""Benchmark: photos/s through MLflow's model server against `trackvision predict` in-process.

Generates N photos of about 1 MP (JPEG), starts `trackvision serve` (MLflow's `mlflow models
serve --env-manager local`) on 127.0.0.1 over a logged model (default: the registered champion),
and classifies the same photos three ways in one run: HTTP requests of 1 photo and of 32 photos
(base64 in a JSON `dataframe_split`), and `trackvision predict`'s path in this process (decoding in
a worker beside the model, batches of 32). Then splits one photo's cost: the client's base64 and
JSON, the decode to the model's size, the network's forward pass; the rest of a request is
HTTP, MLflow's parsing and schema check. Usage:
    python benchmarks/serving.py [--photos 64] [--side 1000] [--model models:/...@champion]
        [--repo .] [--out reports/bench_serving.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the loopback helpers live in tests/

from tests.loopback import free_port, program_on_port  # noqa: E402

log = logging.getLogger("bench")


def make_photos(folder: Path, n: int, side: int) -> list[Path]:
    """Synthetic photos (half with text) scaled to ``side`` px, with a camera's grain."""
    from PIL import Image

    from trackvision.data.sources.synthetic_text import generate_image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = generate_image(7, i, min(side, 160), bool(i % 2))
        big = np.asarray(small.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
        grain = rng.normal(0, 6, big.shape)
        path = folder / f"IMG_{i:04d}.jpg"
        Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def post(url: str, images: list[bytes]) -> list[dict]:
    rows = [[base64.b64encode(data).decode()] for data in images]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())["predictions"]


def through_server(url: str, images: list[bytes], batch: int) -> float:
    """Photos per second, requests of ``batch`` photos one after another."""
    post(url, images[:1])  # a warm server: the first request loads nothing new after this
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        answers = post(url, images[i : i + batch])
        assert all(a["error"] == "" for a in answers), answers
    return len(images) / (time.perf_counter() - start)


def in_process(model_uri: str, paths: list[Path]) -> float:
    from trackvision.models.packaged import load_packaged
    from trackvision.predict import predict

    classifier = load_packaged(model_uri)
    list(predict(classifier, paths[:1], batch_size=32, workers=0))  # warm
    start = time.perf_counter()
    done = list(predict(classifier, paths, batch_size=32, workers=1))
    assert all(not p.error for p in done)
    return len(paths) / (time.perf_counter() - start)


def per_photo_parts(model_uri: str, images: list[bytes]) -> dict[str, float]:
    """Milliseconds per photo: the client's encoding, the decode, the forward pass (batch 32)."""
    from trackvision.data.images import load_image
    from trackvision.models.packaged import load_packaged

    classifier = load_packaged(model_uri)
    t0 = time.perf_counter()
    for data in images:
        json.dumps([base64.b64encode(data).decode()])
    t1 = time.perf_counter()
    arrays = [
        load_image(Path("photo"), classifier.channels, classifier.decode_size, data=d)
        for d in images
    ]
    t2 = time.perf_counter()
    batch = torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays]))
    with torch.no_grad():
        for i in range(0, len(batch), 32):
            classifier(batch[i : i + 32])
    t3 = time.perf_counter()
    n = len(images) / 1000
    return {
        "client_base64_json_ms": round((t1 - t0) / n, 2),
        "decode_ms": round((t2 - t1) / n, 2),
        "forward_ms": round((t3 - t2) / n, 2),
    }


def champion(repo: Path) -> str:
    from trackvision.config import load_config

    config = load_config(repo / "params.yaml", check_models=False)
    name = config.mlflow.registered_model.format(source=config.data.source)
    return f"models:/{name}@champion"


def registered(model: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from trackvision.tracking import resolve_tracking_uri

    try:
        client = MlflowClient(resolve_tracking_uri(""))
        name, alias = model.removeprefix("models:/").split("@", 1)
        client.get_model_version_by_alias(name, alias)
    except (MlflowException, ValueError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--side", type=int, default=1000, help="photo side in px (1000: 1 MP)")
    parser.add_argument("--model", help="a logged model's URI (default: the champion)")
    parser.add_argument("--repo", type=Path, default=REPO, help="whose tracking store to use")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_serving.json")
    parser.add_argument(
        "--if-registered",
        action="store_true",
        help="no registered champion yet: say so and exit 0 instead of failing (`make bench`)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    repo = args.repo.resolve()
    os.chdir(repo)  # the store of params.yaml's mlflow.tracking_uri, as `trackvision` finds it
    model = args.model or champion(repo)
    if args.if_registered and not registered(model):
        log.warning(
            "benchmarks/serving.py: %s is not in the store; run `make repro`; skipped", model
        )
        return
    from trackvision.evaluation.footprint import machine

    with tempfile.TemporaryDirectory(prefix="trackvision-serving-") as tmp:
        paths = make_photos(Path(tmp), args.photos, args.side)
        images = [p.read_bytes() for p in paths]
        port = free_port()
        cmd = ["trackvision", "serve", "--model", model, "--port", str(port)]
        with program_on_port(cmd, port, Path(tmp) / "serve.log"):
            url = f"http://127.0.0.1:{port}/invocations"
            http_1 = through_server(url, images, 1)
            http_32 = through_server(url, images, 32)
        local = in_process(model, paths)
        parts = per_photo_parts(model, images)
    result = {
        "machine": machine(),
        "model": model,
        "photos": args.photos,
        "photo_side": args.side,
        "jpeg_kb_mean": round(sum(map(len, images)) / len(images) / 1000, 1),
        "http_batch_1_photos_per_s": round(http_1, 1),
        "http_batch_32_photos_per_s": round(http_32, 1),
        "predict_in_process_photos_per_s": round(local, 1),
        "ratio_in_process_to_http_32": round(local / http_32, 2),
        "per_photo_ms": parts,
        # A request's time beyond decode and forward pass: HTTP, JSON, MLflow's schema, pandas.
        "http_batch_1_other_ms": round(1000 / http_1 - parts["decode_ms"] - parts["forward_ms"], 2),
        "http_batch_32_other_ms": round(
            1000 / http_32 - parts["decode_ms"] - parts["forward_ms"], 2
        ),
    }
    from trackvision.atomic import write_json

    write_json(args.out, result)
    print(json.dumps(result, indent=2))  # the benchmark's report


if __name__ == "__main__":
    main()
