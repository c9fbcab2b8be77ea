"""What every `trackvision` command sets for its process before any library runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_ASK_MLFLOW = (
    "from trackvision.cli import configure_process; configure_process('train', False); "
    "from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())"
)


@pytest.mark.parametrize(("users_setting", "disabled"), [(None, "True"), ("false", "False")])
def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on(users_setting, disabled) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
    }
    if users_setting is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = users_setting
    # MLflow also stays quiet under pytest and on CI machines: ask it as on a user's.
    for var in ("PYTEST_CURRENT_TEST", "CI"):
        env.pop(var, None)
    out = subprocess.run(
        [sys.executable, "-c", _ASK_MLFLOW], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == disabled
