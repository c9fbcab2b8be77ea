"""A ``dvc exp run`` killed while it prepares a trial: real git and DVC, killed at that moment."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.repos import (
    git_env,
    kill_dvc_while_it_prepares,
    run,
    wait_until_group_gone,
)
from trackvision.tuning.leftovers import QUIET_S, WRITTEN_AGAINST_DVC, clean_up_after_killed_trials


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root, env = tmp_path / "repo", git_env()
    root.mkdir()
    (root / "params.yaml").write_text("lr: 0.1\n")
    (root / "dvc.yaml").write_text(
        "stages:\n  fit:\n    cmd: python -c 'print(1)' > out.txt\n    params: [lr]\n"
        "    outs: [out.txt]\n"
    )
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"]):
        run(cmd, root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "init"], root, env)
    return root, env


def _git(root: Path, env: dict[str, str], *args: str) -> str:
    return run(["git", *args], root, env).stdout


def test_head_and_dvc_files_are_put_back_and_params_named(
    repo: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, env = repo
    kill_dvc_while_it_prepares(root, env, "lr=0.5")
    assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=root).returncode == 1
    assert _git(root, env, "status", "--porcelain").splitlines() == [
        "A  .dvc/tmp/repro.dat",
        "M  params.yaml",
    ]

    with caplog.at_level(logging.WARNING):
        clean_up_after_killed_trials(root)
    assert _git(root, env, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert _git(root, env, "status", "--porcelain").splitlines() == ["M  params.yaml"]
    assert "git checkout HEAD -- params.yaml" in caplog.text
    assert (root / "params.yaml").read_text() == "lr: 0.5\n"  # the user's file: only named

    # What the warning says to type leaves the repository as it was, and DVC's next
    # experiment runs from the branch again.
    _git(root, env, "checkout", "HEAD", "--", "params.yaml")
    assert _git(root, env, "status", "--porcelain") == ""
    run(["dvc", "exp", "run", "--temp", "-S", "lr=0.2"], root, env)
    assert _git(root, env, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert _git(root, env, "status", "--porcelain") == ""


def test_a_head_the_user_detached_and_a_clean_repo_are_left_alone(
    repo: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, env = repo
    clean_up_after_killed_trials(root)
    _git(root, env, "checkout", "-q", "--detach")
    with caplog.at_level(logging.WARNING):
        clean_up_after_killed_trials(root)
    assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=root).returncode == 1
    assert _git(root, env, "status", "--porcelain") == ""
    assert caplog.text == ""


def test_a_dvc_command_that_holds_the_repository_is_not_taken_for_a_dead_one(
    repo: tuple[Path, dict[str, str]],
) -> None:
    from dvc.repo import Repo

    root, env = repo
    kill_dvc_while_it_prepares(root, env, "lr=0.5")
    with Repo(str(root)) as live, live.lock:  # as a running `dvc exp run` of another tune
        start = time.monotonic()
        clean_up_after_killed_trials(root)
    assert time.monotonic() - start < 30
    assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=root).returncode == 1
    assert "A  .dvc/tmp/repro.dat" in _git(root, env, "status", "--porcelain")


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_copy_a_killed_trial_left_is_removed_and_a_live_ones_kept(
    repo: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, env = repo
    (root / "dvc.yaml").write_text(
        "stages:\n  fit:\n    cmd: touch started && sleep 600 && touch out.txt\n"
        "    params: [lr]\n    outs: [out.txt]\n"
    )
    _git(root, env, "commit", "-q", "-am", "a stage that runs long")
    trial = subprocess.Popen(
        ["dvc", "exp", "run", "--temp", "-S", "lr=0.3"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    copies = root / ".dvc" / "tmp" / "exps" / "standalone"
    deadline = time.monotonic() + 60
    while not list(copies.glob("tmp*/started")):
        assert trial.poll() is None and time.monotonic() < deadline, "the trial never started"
        time.sleep(0.2)
    (copy,) = copies.glob("tmp*")
    (record,) = (copies / "run").glob("*/*.run")

    _age(record, QUIET_S + 60)  # a long run: DVC wrote its record long ago
    clean_up_after_killed_trials(root)
    assert copy.is_dir()  # its processes work in it

    os.killpg(trial.pid, signal.SIGKILL)
    trial.wait()
    wait_until_group_gone(trial.pid)
    _age(record, 5)  # dead, but DVC wrote about it moments ago: it may be starting or ending
    clean_up_after_killed_trials(root)
    assert copy.is_dir()

    _age(record, QUIET_S + 60)
    with caplog.at_level(logging.WARNING):
        clean_up_after_killed_trials(root)
    assert not copy.exists()
    assert "removed 1 copies of the repository that killed trials left" in caplog.text


# A writer as git and libgit2 are one: the lock created exclusively and held open while the index
# is written; SIGKILLed before it renames the lock into place.
_INDEX_WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_killed_writers_index_lock_is_removed_and_a_live_ones_kept(
    repo: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, env = repo
    lock = root / ".git" / "index.lock"
    writer = subprocess.Popen(
        [sys.executable, "-c", _INDEX_WRITER, str(lock)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "locked\n"
    clean_up_after_killed_trials(root)
    assert lock.exists()  # a live writer holds it

    writer.kill()
    writer.wait()
    failed = subprocess.run(
        ["dvc", "exp", "run", "-S", "lr=0.2"], cwd=root, env=env, capture_output=True, text=True
    )
    assert failed.returncode != 0  # what a user meets without the clean-up
    with caplog.at_level(logging.WARNING):
        clean_up_after_killed_trials(root)
    assert not lock.exists()
    assert "left" in caplog.text and "index.lock" in caplog.text
    run(["dvc", "exp", "run", "-S", "lr=0.2"], root, env)  # the next experiment runs


def test_dvc_is_the_version_the_recovery_was_written_against() -> None:
    """leftovers.py relies on how this DVC prepares and records an experiment (its reflog
    message, ``repro.dat``, the executor records). After an upgrade, rerun this file's tests
    against the new DVC, check each assumption in leftovers.py, then update the version."""
    import dvc

    assert dvc.__version__ == WRITTEN_AGAINST_DVC, (
        f"DVC {dvc.__version__} is installed; trackvision/tuning/leftovers.py was written against "
        f"{WRITTEN_AGAINST_DVC}: check it against the new version, then update WRITTEN_AGAINST_DVC"
    )
