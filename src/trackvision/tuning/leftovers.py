"""What a killed ``dvc exp run`` leaves behind, put back. DVC cleans up neither thing itself
(``dvc exp clean`` only clears its queue's messages).

- Before a trial runs in its temporary copy, DVC prepares it in the user's repository: it
  detaches HEAD, writes the trial's ``-S`` values into ``params.yaml``, stages
  ``.dvc/tmp/repro.dat`` and commits all of it to its stash, then restores everything. A
  ``kill -9`` (or a lost machine) in that moment leaves HEAD detached and those files staged;
  DVC's next run would detach from the detached HEAD and keep it so. ``tune``, the command users
  kill and start again, puts back what is DVC's own (HEAD, ``repro.dat``) and names what may be
  the user's (``params.yaml``).
- git's ``index.lock``: git and libgit2 create it while they write the index and rename it when
  done; a DVC killed in between leaves it, and every later ``dvc exp run`` stops with "the index
  is locked". It is removed only when no process has it open (a live writer always does).
- The trial's copy (``.dvc/tmp/exps/standalone/tmp*``: the repository with its data checked out)
  stays when its run is killed, so a search killed a few times would fill the disk with copies of
  the dataset. A copy that no process works in, and whose run DVC has not written about for a
  while (it does as the copy is made, as the run starts and as it ends), is removed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What this module knows of DVC's internals (the reflog message, the stash preparation, the
# executor records) was read off this version; tests/tuning/test_leftovers.py fails when the
# installed DVC differs, so that an upgrade is checked against each assumption below.
WRITTEN_AGAINST_DVC = "3.67.1"

# scmrepo detaches HEAD with this reflog message, naming the commit in full (git's own
# `checkout` names it as typed); `git checkout` to the branch writes a newer entry. Not an API:
# tests/tuning/test_leftovers.py fails if an upgrade changes it.
_DVC_DETACH = re.compile(r"checkout: moving from (?P<branch>\S+) to (?P<rev>[0-9a-f]{40})")


# DVC writes a copy's run record moments before it changes into the copy and after it leaves:
# a record this old with no process in the copy is a killed run's.
QUIET_S = 120


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def _reattach_head(root: Path) -> bool:
    """HEAD back on its branch when DVC detached it at that branch's commit and died."""
    if _git(root, "symbolic-ref", "-q", "HEAD").returncode == 0:
        return False  # on a branch
    head = _git(root, "rev-parse", "HEAD").stdout.strip()
    last = _DVC_DETACH.fullmatch(_git(root, "reflog", "-1", "--format=%gs", "HEAD").stdout.strip())
    if last is None or last["rev"] != head:
        return False  # detached by the user, or moved on since
    branch = f"refs/heads/{last['branch']}"
    if _git(root, "rev-parse", "-q", "--verify", branch).stdout.strip() != head:
        return False  # the branch moved on: the user's detached HEAD is theirs to keep
    msg = f"trackvision tune: restore HEAD to {last['branch']} after a killed dvc exp run"
    _git(root, "symbolic-ref", "-m", msg, "HEAD", branch).check_returncode()
    log.warning("a killed dvc exp run left HEAD detached: put back on %s", last["branch"])
    return True


def _unstage_packed_args(root: Path, packed: str) -> bool:
    """DVC's ``repro.dat`` out of the index (its own warning says to), when HEAD lacks it."""
    staged = _git(root, "ls-files", "--cached", "--", packed).stdout.strip()
    if not staged or _git(root, "cat-file", "-e", f"HEAD:./{packed}").returncode == 0:
        return False
    _git(root, "rm", "--cached", "-q", "--", packed).check_returncode()
    log.warning("a killed dvc exp run left %s staged: unstaged it", packed)
    return True


def working_dirs() -> list[Path]:
    """The current directory of every process this user can see (DVC's and its stages')."""
    import psutil

    return [Path(p.info["cwd"]) for p in psutil.process_iter(["cwd"]) if p.info.get("cwd")]


def open_paths() -> set[Path]:
    """Every file some process this user can see has open."""
    import psutil

    paths: set[Path] = set()
    for proc in psutil.process_iter():
        try:
            paths.update(Path(f.path) for f in proc.open_files())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return paths


def remove_stale_index_lock(root: Path) -> bool:
    """Delete ``.git/index.lock`` when no process holds it open: a killed writer's."""
    git_dir = _git(root, "rev-parse", "--absolute-git-dir").stdout.strip()
    lock = Path(git_dir or root / ".git") / "index.lock"
    # The kernel reports open files by their resolved path.
    if not lock.exists() or lock.resolve() in open_paths():
        return False
    lock.unlink(missing_ok=True)
    log.warning("a killed git or DVC process left %s: removed it", lock)
    return True


def _tree_bytes(root: Path) -> int:
    return sum(
        os.lstat(os.path.join(top, name)).st_size
        for top, _, files in os.walk(root)
        for name in files
    )


def _remove_dead_copies(repo: Any) -> None:
    """Delete the trial copies that killed runs left under ``.dvc/tmp/exps``."""
    from dvc.repo.experiments.executor.base import BaseExecutor, ExecutorInfo

    pid_dir = Path(repo.experiments.tempdir_queue.pid_dir)
    records = sorted(pid_dir.glob(f"*/*{BaseExecutor.INFOFILE_EXT}"))
    if not records:
        return
    busy = working_dirs()
    removed, freed = 0, 0
    for record in records:
        copy = Path(ExecutorInfo.load_json(str(record)).root_dir)
        if copy.parent.resolve() != pid_dir.parent.resolve():
            continue  # not where DVC makes its copies: never delete what a record points at
        if not copy.is_dir() or time.time() - record.stat().st_mtime < QUIET_S:
            continue  # cleaned up by DVC, or a run that may be starting or ending now
        if any(d == copy or copy in d.parents for d in busy):
            continue  # a live run
        freed += _tree_bytes(copy)
        shutil.rmtree(copy)
        removed += 1
    if removed:
        log.warning(
            "removed %d copies of the repository that killed trials left in %s (%.1f MB)",
            removed,
            pid_dir.parent,
            freed / 1e6,
        )


def clean_up_after_killed_trials(root: Path) -> None:
    """Undo what a ``dvc exp run`` killed while it prepared a trial left in ``root``; delete the
    copies of the repository that killed trials left.

    The first runs under DVC's repository lock, which that preparation holds: a live ``dvc exp
    run`` (of another ``tune`` in this repository) is never mistaken for a dead one.
    """
    from dvc.lock import LockError
    from dvc.repo import Repo
    from dvc.repo.experiments.executor.base import BaseExecutor

    with Repo(str(root)) as repo:
        _remove_dead_copies(repo)
        packed = (
            Path(repo.tmp_dir, BaseExecutor.PACKED_ARGS_FILE).relative_to(repo.root_dir).as_posix()
        )
        try:
            with repo.lock:
                remove_stale_index_lock(root)
                reattached = _reattach_head(root)
                unstaged = _unstage_packed_args(root, packed)
        except LockError:  # held: a DVC command is running here now, not dead
            log.info("another DVC command holds %s; not looking for a killed trial", root)
            return
    params_changed = _git(root, "diff", "--quiet", "HEAD", "--", "params.yaml").returncode
    if (reattached or unstaged) and params_changed:
        log.warning(
            "params.yaml differs from HEAD: it may hold the killed trial's -S values "
            "(`git diff HEAD -- params.yaml` shows them; `git checkout HEAD -- params.yaml` "
            "undoes them)"
        )
