"""Benchmark: what an experiment costs around its training epochs.

Two shapes of experiment, both run as real ``dvc exp run --temp`` in this repository (whose data
stages must be up to date: ``dvc pull`` or ``dvc repro`` first):

- ``--models cnn`` (the default): one search trial as ``trackvision tune`` runs it,
  ``-S models.cnn.lr=... evaluate@cnn``, DVC as its own process;
- ``--models all``: the default experiment, ``-S train.lr=...``, every model and ``compare``.

DVC's and the stages' output is read as it comes; the wall time is split into DVC's set-up, each
stage process (a train process into before, during and after its epochs) and DVC's commit of
the experiment. Prints the figures and the ratio wall / epochs, and writes them to
``reports/bench_trial.json`` (``reports/bench_experiment.json`` for ``all``). The experiment is
removed afterwards. Usage:
    python benchmarks/trial_cost.py [--models cnn|all] [--lr-scale 0.999] [--no-stage-server]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from trackvision.atomic import write_json
from trackvision.config import Config, load_config
from trackvision.evaluation.footprint import machine
from trackvision.tracking.mlflow_adapter import prepare_store
from trackvision.tuning.experiment import dvc, experiment_ref, set_args

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"Running stage '([^']+)'")

Lines = list[tuple[float, str]]


def timed_lines(cmd: list[str], repo: Path, env: dict[str, str]) -> Lines:
    """Run the DVC command ``cmd`` in ``repo`` as tune does and return each output line with
    the seconds since the start."""
    start = time.perf_counter()
    lines: Lines = []

    def stamp(line: str) -> None:
        lines.append((time.perf_counter() - start, line.rstrip()))

    code, _ = dvc(cmd[1:], repo, env, stamp)
    lines.append((time.perf_counter() - start, f"<exit {code}>"))
    if code != 0:
        tail = "\n".join(text for _, text in lines[-30:])
        raise SystemExit(f"`{' '.join(cmd)}` failed:\n{tail}")
    return lines


def first(lines: Lines, needle: str, after: float = 0.0) -> float:
    for t, text in lines:
        if t >= after and needle in text:
            return t
    raise SystemExit(f"no line with {needle!r} in the experiment's output")


def stage_spans(lines: Lines) -> dict[str, tuple[float, float]]:
    """Each stage DVC ran: (start, end), the end being the next stage's start or the moment
    DVC reports the experiment run (its lock updates and output hashing count to the stage)."""
    starts = [(t, m.group(1)) for t, text in lines if (m := STAGE_LINE.search(text))]
    ran = first(lines, "Ran experiment")
    ends = [t for t, _ in starts[1:]] + [ran]
    return {name: (t, end) for (t, name), end in zip(starts, ends, strict=True)}


def train_parts(
    lines: Lines, span: tuple[float, float], record: dict, n_train: int
) -> dict[str, float]:
    start, end = span
    tracked = first(lines, "MLflow run", start)
    epochs_s = sum(n_train / ips for ips in record["images_per_s"])
    fit_s = record["train_seconds"]
    return {
        "before_fit_s": round(tracked - start, 2),
        "epochs_s": round(epochs_s, 2),
        "validation_and_epoch_bookkeeping_s": round(fit_s - epochs_s, 2),
        "after_fit_s": round(end - tracked - fit_s, 2),
        "epochs": len(record["images_per_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn", help="one model's trial, or 'all'")
    parser.add_argument(
        "--lr-scale", type=float, default=0.999, help="the experiment's lr = the current lr x this"
    )
    parser.add_argument("--repo", type=Path, default=REPO, help="a repository with its data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    repo = args.repo.resolve()
    config = load_config(repo / "params.yaml")
    name = f"bench-exp-{int(time.time())}"
    if args.models == "all":
        models = list(config.model_names)
        overrides, targets = {"train.lr": config.train.lr * args.lr_scale}, []
        out = args.out or repo / "reports" / "bench_experiment.json"
    else:
        models = [args.models]
        lr = config.model(args.models).train.lr
        overrides = {f"models.{args.models}.lr": lr * args.lr_scale}
        targets = [f"evaluate@{args.models}"]
        out = args.out or repo / "reports" / "bench_trial.json"
    cmd = ["dvc", "exp", "run", "--temp", "-n", name, *set_args(overrides), *targets]
    log.info("$ %s", " ".join(cmd))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    os.chdir(repo)  # the tracking store resolves against the repository
    prepare_store(config)  # as tune does before its first trial
    lines = timed_lines(cmd, repo, env)
    wall = lines[-1][0]
    spans = stage_spans(lines)
    ref = experiment_ref(repo, name)
    per_model = {}
    for model in models:
        record = json.loads(_git_show(repo, ref, f"runs/{model}/train.json"))
        n_train = _n_train(config, record["mlflow_run_id"])
        per_model[model] = {
            "training_images_per_epoch": n_train,
            **train_parts(lines, spans[f"train@{model}"], record, n_train),
            "evaluate_process_s": round(_length(spans[f"evaluate@{model}"]), 2),
        }
    epochs_s = sum(m["epochs_s"] for m in per_model.values())
    with_validation = epochs_s + sum(
        m["validation_and_epoch_bookkeeping_s"] for m in per_model.values()
    )
    modelled = {f"{kind}@{m}" for m in models for kind in ("train", "evaluate")}
    ran = first(lines, "Ran experiment")
    result = {
        "machine": machine(),
        "command": " ".join(cmd),
        "wall_s": round(wall, 2),
        "training_epochs_s": round(epochs_s, 2),
        "ratio_wall_to_epochs": round(wall / epochs_s, 3),
        "ratio_wall_to_epochs_with_validation": round(wall / with_validation, 3),
        "dvc_setup_and_upstream_checks_s": round(min(s for s, _ in spans.values()), 2),
        # DVC pushes every object reachable from HEAD into the trial's copy: set-up grows with it.
        "git_objects": _git_objects(repo),
        "models": per_model,
        "other_stages_s": {k: round(_length(v), 2) for k, v in spans.items() if k not in modelled},
        "dvc_commit_of_the_experiment_s": round(wall - ran, 2),
    }
    subprocess.run(["dvc", "exp", "remove", name], cwd=repo, capture_output=True, check=False)
    write_json(out, result)
    print(json.dumps(result, indent=2))  # the benchmark's report


def _length(span: tuple[float, float]) -> float:
    return span[1] - span[0]


def _git_objects(repo: Path) -> int:
    counts = subprocess.run(
        ["git", "count-objects", "-v"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    fields = dict(line.split(": ", 1) for line in counts.splitlines())
    return int(fields["count"]) + int(fields["in-pack"])


def _git_show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def _n_train(config: Config, run_id: str) -> int:
    from mlflow.tracking import MlflowClient

    from trackvision.tracking import resolve_tracking_uri

    run = MlflowClient(resolve_tracking_uri(config.mlflow.tracking_uri)).get_run(run_id)
    return int(run.data.params["data.n_train"])


if __name__ == "__main__":
    sys.exit(main())
