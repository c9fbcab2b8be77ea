"""DVC remote storage for real: push, then pull into a fresh clone, over a folder and over S3.

The S3 remote is a real S3-protocol server (moto) on 127.0.0.1, started here; its credentials
exist only in the environment of the commands that use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.repos import run, tree_digest
from tests.loopback import free_port, wait_for_port

pytestmark = pytest.mark.integration

OUTPUTS = ("data", "models")


def _outputs(repo: Path) -> dict[str, str]:
    return {f"{d}/{k}": v for d in OUTPUTS for k, v in tree_digest(repo / d).items()}


def _clone(origin: Path, dest: Path, env: dict[str, str]) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent, env)
    return dest


def test_push_then_pull_into_a_fresh_clone_from_the_default_remote(pipeline, tmp_path) -> None:
    repo, env = pipeline
    run(["dvc", "push"], repo, env)
    # Out of the box the remote is ~/.cache/trackvision/dvc-storage (HOME is the test's own).
    storage = Path(env["HOME"]) / ".cache" / "trackvision" / "dvc-storage"
    assert any(storage.rglob("*")), f"dvc push wrote nothing under {storage}"

    clone = _clone(repo, tmp_path / "clone", env)
    assert not (clone / "data" / "balanced").exists()
    run(["dvc", "pull"], clone, env)
    assert _outputs(clone) == _outputs(repo)
    out = run(["dvc", "repro"], clone, env)
    assert "Data and pipelines are up to date" in out.stdout


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """moto's S3 server on 127.0.0.1 with one bucket; yields its URL and the credentials env."""
    port = free_port()
    creds = {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "moto.log", "w"),  # noqa: SIM115 - closed with the process
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc, tmp_path / "moto.log")
        import boto3

        s3 = boto3.client("s3", endpoint_url=url, **_boto_kwargs(creds))
        s3.create_bucket(Bucket="trackvision")
        yield url, creds
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _boto_kwargs(creds: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
        "region_name": creds["AWS_DEFAULT_REGION"],
    }


def _use_s3(repo: Path, url: str, env: dict[str, str]) -> None:
    """The README's S3 set-up, pointed at the local server (per clone: .dvc/config.local)."""
    run(["dvc", "remote", "modify", "--local", "storage", "url", "s3://trackvision/dvc"], repo, env)
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", url], repo, env)


def test_push_then_pull_over_s3(pipeline, s3_server, tmp_path) -> None:
    repo, base_env = pipeline
    url, creds = s3_server
    env = {**base_env, **creds}
    work = _clone(repo, tmp_path / "pusher", env)
    shutil.copytree(repo / ".dvc" / "cache", work / ".dvc" / "cache")
    run(["dvc", "checkout"], work, env)
    _use_s3(work, url, env)
    run(["dvc", "push"], work, env)

    import boto3

    listed = boto3.client("s3", endpoint_url=url, **_boto_kwargs(creds)).list_objects_v2(
        Bucket="trackvision", Prefix="dvc/"
    )
    assert listed.get("KeyCount", 0) > 0
    # No credentials were written to any config file.
    for config in (work / ".dvc").glob("config*"):
        assert creds["AWS_SECRET_ACCESS_KEY"] not in config.read_text()

    clone = _clone(repo, tmp_path / "puller", env)
    _use_s3(clone, url, env)
    run(["dvc", "pull"], clone, env)
    assert _outputs(clone) == _outputs(repo)
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], clone, env).stdout

    # Without credentials the pull fails with DVC's error, not silently.
    bare = {k: v for k, v in base_env.items() if not k.startswith("AWS_")}
    bare["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    again = _clone(repo, tmp_path / "no-creds", bare)
    _use_s3(again, url, bare)
    proc = subprocess.run(
        ["dvc", "pull"], cwd=again, env=bare, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0


def test_tagged_data_versions_come_back_by_checkout_get_and_import(pipeline, tmp_path) -> None:
    repo, env = pipeline
    work = _clone(repo, tmp_path / "work", env)
    run(["dvc", "pull"], work, env)
    run(["git", "tag", "data-v1"], work, env)
    v1 = tree_digest(work / "data" / "balanced")

    # A second data version: another split seed.
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["balance"]["seed"] = 7
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "balance"], work, env)
    v2 = tree_digest(work / "data" / "balanced")
    assert v2 != v1
    run(["git", "commit", "-q", "-am", "data v2"], work, env)
    run(["git", "tag", "data-v2"], work, env)
    run(["dvc", "push"], work, env)

    # git checkout <tag> && dvc pull
    run(["git", "checkout", "-q", "data-v1"], work, env)
    run(["dvc", "pull"], work, env)
    assert tree_digest(work / "data" / "balanced") == v1

    # dvc get: a copy of data/balanced at a revision, no repo needed.
    run(["dvc", "get", str(work), "data/balanced", "--rev", "data-v2", "-o", "got"], tmp_path, env)
    assert tree_digest(tmp_path / "got") == v2

    # dvc import: a tracked dependency on data/balanced at a revision, updatable later.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    run(["git", "init", "-q"], consumer, env)
    run(["dvc", "init", "-q"], consumer, env)
    run(
        ["dvc", "import", str(work), "data/balanced", "--rev", "data-v1", "-o", "imported"],
        consumer,
        env,
    )
    assert tree_digest(consumer / "imported") == v1
    lock = yaml.safe_load((consumer / "imported.dvc").read_text())
    assert lock["deps"][0]["repo"]["rev"] == "data-v1"
    assert len(lock["deps"][0]["repo"]["rev_lock"]) == 40
