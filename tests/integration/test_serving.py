"""The registered champion served by MLflow's own model server, called as an application would."""

from __future__ import annotations

import base64
import csv
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.repos import run
from tests.loopback import free_port, program_on_port
from trackvision.data.sources.synthetic_text import generate_image

pytestmark = pytest.mark.integration

CHAMPION = "models:/synthetic_text-classifier@champion"


@pytest.fixture
def server(pipeline, tmp_path) -> Iterator[str]:
    """`trackvision serve` (MLflow's `mlflow models serve --env-manager local`) on 127.0.0.1."""
    repo, env = pipeline
    port = free_port()
    cmd = ["trackvision", "serve", "--port", str(port)]
    with program_on_port(cmd, port, tmp_path / "serve.log", cwd=repo, env=env):
        yield f"http://127.0.0.1:{port}/invocations"


def _photos(folder: Path) -> list[Path]:
    """JPEG and PNG photos as a phone or a scanner writes them, one upright only by EXIF."""
    folder.mkdir()
    paths = []
    for i in range(6):
        image = generate_image(5, i, 160, bool(i % 2))
        path = folder / (f"IMG_{i}.jpg" if i % 3 else f"scan_{i}.png")
        image.save(path, **({"quality": 88} if path.suffix == ".jpg" else {}))
        paths.append(path)
    turned = generate_image(5, 9, 160, True).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; a viewer rotates it back
    turned.save(folder / "IMG_9.jpg", quality=88, exif=exif)
    return [*paths, folder / "IMG_9.jpg"]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_champion_labels_photos_as_predict_does_and_survives_bad_input(
    pipeline, server, tmp_path
) -> None:
    repo, env = pipeline
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "predicted.csv"
    run(
        ["trackvision", "predict", *map(str, photos), "--model", CHAMPION, "--out", str(out)],
        repo,
        env,
    )
    expected = {Path(row["path"]).name: row for row in csv.DictReader(out.open())}

    broken = photos[1].read_bytes()[:300]  # a JPEG cut short
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14_000, 14_000)).save(bomb)  # tiny on disk, over Pillow's pixel limit
    rows = [_b64(p.read_bytes()) for p in photos] + [_b64(broken), "", _b64(bomb.read_bytes())]
    status, body = _post(
        server, {"dataframe_split": {"columns": ["image"], "data": [[r] for r in rows]}}
    )
    assert status == 200, body
    answers = body["predictions"]
    assert len(answers) == len(rows)
    for path, answer in zip(photos, answers, strict=False):
        want = expected[path.name]
        assert answer["label"] == want["label"] and answer["error"] == ""
        for name, p in answer["probabilities"].items():
            assert abs(p - float(want[f"p_{name}"])) < 1e-5
        assert answer["probability"] == max(answer["probabilities"].values())
    reasons = [a["error"] for a in answers[len(photos) :]]
    assert "truncated" in reasons[0]
    assert "empty" in reasons[1]
    assert "decompression-bomb limit" in reasons[2]
    assert all(a["label"] == "" for a in answers[len(photos) :])

    # A request that is not what the model takes: one clear 400, and the server goes on.
    status, body = _post(server, {"dataframe_split": {"columns": ["photo"], "data": [["x"]]}})
    assert status == 400 and "image" in body["message"]
    status, body = _post(server, {"dataframe_records": [{"image": rows[0]}]})
    assert status == 200 and body["predictions"][0]["label"] == expected[photos[0].name]["label"]
