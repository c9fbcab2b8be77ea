"""One trial as DVC runs it: ``dvc exp run --temp`` of one model, and its result read back.

``--temp`` runs the experiment in a copy of the repository, so the user's workspace is never
touched and several trials (threads here, or ``tune`` on other machines) run at once.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackvision.errors import TrackvisionError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class TrialError(TrackvisionError):
    """A trial's ``dvc exp run`` failed: the search stops and says why."""


def set_args(overrides: dict[str, Any]) -> list[str]:
    """``-S ++key=value`` for each override (``++``: set the key whether or not params.yaml
    has it yet, in Hydra's override grammar); JSON values are YAML, as DVC parses them."""
    return [
        arg for key, value in overrides.items() for arg in ("-S", f"++{key}={json.dumps(value)}")
    ]


def run_experiment(
    root: Path, name: str, overrides: dict[str, Any], model: str, env: dict[str, str]
) -> None:
    """``dvc exp run --temp -n <name>`` of ``evaluate@<model>`` (and what it depends on)."""
    cmd = ["dvc", "exp", "run", "--temp", "-n", name, *set_args(overrides), f"evaluate@{model}"]
    log.info("trial %s: %s", name, " ".join(cmd))
    code, output = dvc(cmd[1:], root, env)
    if code != 0:
        tail = output.strip().splitlines()[-12:]
        raise TrialError(f"trial {name}: `{' '.join(cmd)}` exited {code}:\n" + "\n".join(tail))


def dvc(
    argv: list[str],
    root: Path,
    env: dict[str, str],
    on_line: Callable[[str], None] = lambda _line: None,
) -> tuple[int, str]:
    """``dvc <argv>`` in ``root``: its exit status and output (stdout and stderr together),
    each line also handed to ``on_line``."""
    proc = subprocess.Popen(
        ["dvc", *argv],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        on_line(line)
        lines.append(line)
    return proc.wait(), "".join(lines)


def experiment_ref(root: Path, name: str) -> str:
    """The git ref DVC keeps experiment ``name`` under (the newest if several baselines do)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps/"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for ref in refs:
        if ref.rsplit("/", 1)[-1] == name:
            return ref
    raise TrialError(f"experiment {name}: no git ref under refs/exps/ after it ran")


def experiment_history(root: Path, name: str, model: str) -> list[dict[str, float]]:
    """The per-epoch history the experiment committed (``metrics/<model>/history.csv``)."""
    path = f"metrics/{model}/history.csv"
    proc = subprocess.run(
        ["git", "show", f"{experiment_ref(root, name)}:{path}"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise TrialError(f"experiment {name}: {path} missing ({proc.stderr.strip()})")
    return [
        {k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(proc.stdout))
    ]


def search_env(threads: int | None) -> dict[str, str]:
    """The environment every trial's DVC run starts from: this one, with its share of the cores."""
    env = dict(os.environ)
    if threads and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(threads)  # trials side by side must not fight for cores
    return env


def trial_env(base: dict[str, str], link_json: str) -> dict[str, str]:
    """A trial's environment: the search's, and the link its train stage reports epochs by."""
    return {**base, "TRACKVISION_TRIAL": link_json}
