"""Benchmark: what one search trial costs around its training epochs.

Runs a trial as `trackvision tune` does (`dvc exp run --temp -n <name> -S ... evaluate@<model>`)
in this repository, whose data stages must be up to date (`dvc pull` or `dvc repro` first),
reads DVC's and the stages' output as it comes, and splits the wall time into DVC's set-up, the
train process (before, during and after its epochs), the evaluate process and DVC's commit of
the experiment. Prints the figures and the ratio wall / epochs; writes them to
``reports/bench_trial.json``. The experiment is removed afterwards. Usage:
    python benchmarks/trial_cost.py [--model cnn] [--lr-scale 0.999]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from trackvision.atomic import write_json
from trackvision.config import Config, load_config
from trackvision.evaluation.footprint import machine
from trackvision.tuning.experiment import experiment_ref, set_args

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]


def timed_lines(cmd: list[str], env: dict[str, str]) -> list[tuple[float, str]]:
    """Run ``cmd`` and return each output line with the seconds since the start."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = [(time.perf_counter() - start, line.rstrip()) for line in proc.stdout]
    proc.wait()
    lines.append((time.perf_counter() - start, f"<exit {proc.returncode}>"))
    if proc.returncode != 0:
        tail = "\n".join(text for _, text in lines[-30:])
        raise SystemExit(f"`{' '.join(cmd)}` failed:\n{tail}")
    return lines


def first(lines: list[tuple[float, str]], needle: str, after: float = 0.0) -> float:
    for t, text in lines:
        if t >= after and needle in text:
            return t
    raise SystemExit(f"no line with {needle!r} in the trial's output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument(
        "--lr-scale", type=float, default=0.999, help="the trial's lr = the model's lr x this"
    )
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_trial.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = load_config(REPO / "params.yaml")
    spec = config.model(args.model)
    name = f"bench-trial-{int(time.time())}"
    overrides = {f"models.{args.model}.lr": spec.train.lr * args.lr_scale}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        "dvc",
        "exp",
        "run",
        "--temp",
        "-n",
        name,
        *set_args(overrides),
        f"evaluate@{args.model}",
    ]
    log.info("$ %s", " ".join(cmd))
    lines = timed_lines(cmd, env)

    wall = lines[-1][0]
    train_start = first(lines, f"Running stage 'train@{args.model}'")
    tracked = first(lines, "MLflow run", train_start)
    fitted = first(lines, f"train {args.model}: best val accuracy", train_start)
    eval_start = first(lines, f"Running stage 'evaluate@{args.model}'", train_start)
    ran = first(lines, "Ran experiment", eval_start)
    record = json.loads(
        subprocess.run(
            ["git", "show", f"{experiment_ref(REPO, name)}:runs/{args.model}/train.json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    n_train = _n_train(config, record["mlflow_run_id"])
    epochs_s = sum(n_train / ips for ips in record["images_per_s"])
    fit_s = record["train_seconds"]
    result = {
        "machine": machine(),
        "model": args.model,
        "epochs": len(record["images_per_s"]),
        "wall_s": round(wall, 2),
        "training_epochs_s": round(epochs_s, 2),
        "ratio_wall_to_epochs": round(wall / epochs_s, 3),
        "parts_s": {
            "dvc_setup_and_upstream_checks": round(train_start, 2),
            "train_process_before_fit": round(tracked - train_start, 2),
            "fit_with_validation": round(fit_s, 2),
            "train_process_after_fit": round(eval_start - tracked - fit_s, 2),
            "evaluate_process": round(ran - eval_start, 2),
            "dvc_commit_of_the_experiment": round(wall - ran, 2),
        },
        "validation_in_fit_s": round(fit_s - epochs_s, 2),
        "after_fit_until_last_log_s": round(fitted - tracked - fit_s, 2),
    }
    subprocess.run(["dvc", "exp", "remove", name], cwd=REPO, capture_output=True, check=False)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))  # the benchmark's report


def _n_train(config: Config, run_id: str) -> int:
    from mlflow.tracking import MlflowClient

    from trackvision.tracking import resolve_tracking_uri

    run = MlflowClient(resolve_tracking_uri(config.mlflow.tracking_uri)).get_run(run_id)
    return int(run.data.params["data.n_train"])


if __name__ == "__main__":
    sys.exit(main())
