"""Copies of this repository that tests run the real `git`, `dvc` and `mlflow` programs in."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.conftest import REPO


def run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run a program; fail the test with its output if it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def git_env() -> dict[str, str]:
    """This environment without MLflow/DVC context, with the venv's programs first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def copy_repo(dest: Path, edit_params: Callable[[dict], dict]) -> tuple[Path, dict[str, str]]:
    """This repository's tracked files (no outputs, no lock) in a new git repo, params edited.

    HOME is a fresh folder beside the copy, so the default remote (``~/.cache/...``) and every
    other per-user cache of the programs it runs stay out of the real user's home.
    """
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and rel != "dvc.lock" and not rel.startswith(("metrics/", "reports/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(edit_params(params), sort_keys=False))
    env = git_env()
    # matplotlib's font cache is per-user and slow to build: keep using the real one.
    env.setdefault("MPLCONFIGDIR", str(Path.home() / ".config" / "matplotlib"))
    env["HOME"] = str(dest.parent / "home")
    Path(env["HOME"]).mkdir(exist_ok=True)
    run(["git", "init", "-q", "-b", "main"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "-m", "copy"], dest, env)
    return dest, env


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def client(repo_dir: Path):
    """An MLflow client on the repository's local sqlite store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{repo_dir / 'mlflow.db'}")


# DVC as `dvc exp run` starts it, held at the point its stash commit is being made: after it
# detached HEAD, wrote -S into params.yaml and staged repro.dat.
_HELD_DVC = """
import sys, time
from dvc.repo.experiments.queue.base import BaseStashQueue
pack = BaseStashQueue._pack_args
def held(self, *args, **kwargs):
    pack(self, *args, **kwargs)
    print("prepared", flush=True)
    time.sleep(600)
BaseStashQueue._pack_args = held
from dvc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_dvc_while_it_prepares(root: Path, env: dict[str, str], set_arg: str) -> None:
    """``dvc exp run --temp -S <set_arg>`` SIGKILLed while it prepares the trial in ``root``."""
    cmd = [sys.executable, "-c", _HELD_DVC, "exp", "run", "--temp", "-S", set_arg]
    dvc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    assert dvc.stdout is not None and dvc.stdout.readline() == "prepared\n"
    os.kill(dvc.pid, signal.SIGKILL)
    dvc.wait()


def wait_until_group_gone(group: int, timeout: float = 60) -> None:
    """Return once process group ``group`` (SIGKILLed) has no process left, reaped ones included."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process group {group} still has processes {timeout} s on")


def wait_until_nothing_runs_in(root: Path, timeout: float = 60) -> None:
    """Return once no process has its working directory in ``root``: a killed search's DVC and
    stage commands, whatever process group they are in."""
    from trackvision.tuning.leftovers import working_dirs

    root = root.resolve()
    deadline = time.monotonic() + timeout
    while (left := [d for d in working_dirs() if d.is_relative_to(root)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not left, f"processes still run in {sorted(map(str, left))} {timeout} s on"


def bench(script: str, args: list[str], out: Path, cwd: Path, env: dict[str, str]) -> dict:
    """Run ``benchmarks/<script>`` with ``args``; its results file (``--out``) as read back."""
    cmd = [sys.executable, str(REPO / "benchmarks" / script), *args, "--out", str(out)]
    run(cmd, cwd, env, timeout=1200)
    return json.loads(out.read_text())
