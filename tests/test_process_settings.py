"""What the entry point sets for the process before a stage runs."""

from __future__ import annotations

import os

import pytest

from trackvision import cli


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("MKL_CBWR", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_augment_runs_mkl_on_the_path_every_x86_cpu_shares(clean_env) -> None:
    cli._process_settings("augment")
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"


def test_training_keeps_mkl_on_its_fastest_path(clean_env) -> None:
    cli._process_settings("train")
    assert "MKL_CBWR" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


def test_a_users_own_setting_wins(clean_env) -> None:
    clean_env.setenv("MKL_CBWR", "AVX2")
    cli._process_settings("augment")
    assert os.environ["MKL_CBWR"] == "AVX2"


def test_the_entry_point_freezes_the_heap_before_the_interpreter_exits(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """What a stage made is never garbage-collected at exit (seconds of every stage process);
    the exit code is the command's."""
    import gc

    monkeypatch.setattr(
        "sys.argv", ["trackvision", "--params", str(tmp_path / "none.yaml"), "check"]
    )
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
        assert exited.value.code == 2  # no such params file: a config error
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
