"""Benchmark: the search `trackvision tune` runs, against random search and the default params.

Runs the study of params.yaml's `tune:` section twice in this repository (whose pipeline must be
up to date: `dvc pull` or `dvc repro` first), once with its sampler (TPE) and pruner and once
with random search and no pruner, the same number of trials and workers, each as a fresh study
(named with the time) in the default study database. Reads the default params' validation
accuracy from `models/<model>/train.json`. Prints and writes to ``reports/bench_tune.json``: the
best validation accuracy of each search and of the default params, the trials pruned and the
share of training epochs the pruner saved. The trials' experiments are removed afterwards
(their MLflow runs stay). Usage:
    python benchmarks/tune_search.py [--jobs 2] [--trials 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from trackvision.atomic import write_json
from trackvision.config import load_config
from trackvision.evaluation.footprint import machine
from trackvision.tuning.study import storage_url

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]


def run_search(
    repo: Path, params: dict[str, Any], jobs: int, folder: Path
) -> tuple[dict[str, Any], float]:
    """`trackvision tune` over a params file with this tune section; (study summary, seconds)."""
    path = folder / f"{params['tune']['study']}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    subprocess.run(
        ["trackvision", "--params", str(path), "tune", "--jobs", str(jobs)], cwd=repo, check=True
    )
    return study_summary(repo, params), time.perf_counter() - start


def study_summary(repo: Path, params: dict[str, Any]) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    tune = params["tune"]
    storage = tune["storage"] or storage_url(load_config(repo / "params.yaml").tune, repo)
    study = optuna.load_study(study_name=tune["study"], storage=storage)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    epochs_each = params["train"]["epochs"]
    epochs_run = sum(int(t.user_attrs.get("epochs_run", 0)) for t in done)
    best = study.best_trial
    return {
        "study": tune["study"],
        "sampler": tune["sampler"],
        "pruner": tune["pruner"]["kind"],
        "trials": len(done),
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "best_val_accuracy": best.value,
        "best_trial": best.user_attrs.get("experiment"),
        "best_params": best.params,
        "epochs_run": epochs_run,
        "epochs_if_none_pruned": epochs_each * len(done),
        "share_of_epochs_saved": round(1 - epochs_run / (epochs_each * len(done)), 3),
        "experiments": [t.user_attrs.get("experiment") for t in done],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_tune.json")
    parser.add_argument("--repo", type=Path, default=REPO, help="a repository with its data")
    args = parser.parse_args()
    repo = args.repo.resolve()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    base = yaml.safe_load((repo / "params.yaml").read_text())
    model = base["tune"]["model"]
    default = json.loads((repo / "models" / model / "train.json").read_text())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    searches = []
    with tempfile.TemporaryDirectory() as folder:
        for sampler, pruner in (("tpe", base["tune"]["pruner"]["kind"]), ("random", "none")):
            params = yaml.safe_load((repo / "params.yaml").read_text())
            params["tune"].update(study=f"bench-{sampler}-{stamp}", sampler=sampler)
            params["tune"]["trials"] = args.trials
            params["tune"]["pruner"]["kind"] = pruner
            summary, seconds = run_search(repo, params, args.jobs, Path(folder))
            summary["wall_s"] = round(seconds, 1)
            searches.append(summary)
    result = {
        "machine": machine(),
        "model": model,
        "jobs": args.jobs,
        "default_params_best_val_accuracy": default["best_val_accuracy"],
        "searches": searches,
    }
    names = [n for s in searches for n in s.pop("experiments") if n]
    subprocess.run(["dvc", "exp", "remove", *names], cwd=repo, capture_output=True, check=False)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))  # the benchmark's report


if __name__ == "__main__":
    sys.exit(main())
