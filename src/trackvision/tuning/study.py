"""The study: Optuna's database, sampler and pruner, and the loop that runs trials as experiments.

Everything that makes a search survive is Optuna's own: the study lives in a database
(``load_if_exists``), so a killed ``tune`` continues; heartbeats fail a trial whose process
died and ``RetryHeartbeatStaleTrialCallback`` runs its params again; ``MaxTrialsCallback``
stops every worker once the study holds ``tune.trials`` finished trials, however many workers
there are (trials already running then still finish).
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackvision.config import Config, TuneConfig
from trackvision.tuning.experiment import (
    experiment_history,
    run_experiment,
    search_env,
    trial_env,
)
from trackvision.tuning.leftovers import clean_up_after_killed_trials
from trackvision.tuning.space import check_space, suggest
from trackvision.tuning.trial import TrialLink, direction, make_pruner

log = logging.getLogger(__name__)

HEARTBEAT_S = 20  # a trial whose worker went silent this long (x3) is failed, then retried


def storage_url(tune: TuneConfig, root: Path) -> str:
    return tune.storage or f"sqlite:///{root / 'optuna.db'}"


def trial_name(study: str, number: int) -> str:
    return f"{study}-{number}"


def best_of(history: list[dict[str, float]], metric: str) -> float:
    """The best epoch's value: the epoch the train stage keeps."""
    values = [row[metric] for row in history]
    return min(values) if direction(metric) == "minimize" else max(values)


def open_study(tune: TuneConfig, root: Path):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our log says how each trial went
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            storage_url(tune, root),
            heartbeat_interval=HEARTBEAT_S,
            grace_period=3 * HEARTBEAT_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    study = optuna.create_study(
        study_name=tune.study,
        storage=storage,
        direction=direction(tune.metric),
        pruner=make_pruner(tune.pruner.kind, tune.pruner.startup_trials, tune.pruner.warmup_epochs),
        load_if_exists=True,
    )
    study.sampler = _sampler(tune, joining=bool(study.get_trials(deepcopy=False)))
    return study


def _sampler(tune: TuneConfig, joining: bool):
    """``tune.seed`` fixes the search a fresh study starts; a worker that joins (or continues)
    one draws its own seed, or it would propose the very trials the others already ran."""
    import optuna

    seed = random.SystemRandom().randrange(2**31) if joining else tune.seed
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials running in parallel count as bad guesses, so workers spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


@dataclass
class Objective:
    """One trial: suggest params, run them as a DVC experiment, return the validation metric."""

    config: Config
    root: Path
    env: dict[str, str]  # the search's environment, which each trial's adds to

    def __call__(self, trial: Any) -> float:
        import optuna

        tune = self.config.tune
        overrides = suggest(trial, tune.space)
        name = trial_name(tune.study, trial.number)
        trial.set_user_attr("experiment", name)
        link = TrialLink(
            storage=storage_url(tune, self.root),
            study=tune.study,
            number=trial.number,
            metric=tune.metric,
            pruner=tune.pruner.kind,
            startup_trials=tune.pruner.startup_trials,
            warmup_epochs=tune.pruner.warmup_epochs,
        )
        run_experiment(self.root, name, overrides, tune.model, trial_env(self.env, link.to_env()))
        history = experiment_history(self.root, name, tune.model)
        trial.set_user_attr("epochs_run", len(history))
        value = best_of(history, tune.metric)
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        if "pruned_at_epoch" in frozen.user_attrs:
            log.info("trial %s pruned after epoch %d", name, frozen.user_attrs["pruned_at_epoch"])
            raise optuna.TrialPruned()
        log.info("trial %s: %s %.4f", name, tune.metric, value)
        return value


def run_study(config: Config, root: Path, jobs: int) -> Any:
    """Run trials until the study holds ``tune.trials`` finished ones; returns the study."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    check_space(config)
    tune = config.tune
    study = open_study(tune, root)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = tune.trials - len(study.get_trials(deepcopy=False, states=done))
    log.info(
        "study %s (%s): %d of %d trials to run, %d at a time",
        tune.study,
        storage_url(tune, root).split("@")[-1],  # never log a password in a database URL
        max(remaining, 0),
        tune.trials,
        jobs,
    )
    if remaining > 0:
        from trackvision.tracking.mlflow_adapter import prepare_store

        prepare_store(config)
        clean_up_after_killed_trials(root)
        threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
        env = search_env(threads)
        study.optimize(
            Objective(config, root, env),
            n_jobs=jobs,
            callbacks=[MaxTrialsCallback(tune.trials, states=done)],
        )
    return study


def summary_lines(study: Any, tune: TuneConfig) -> list[str]:
    """What the user reads at the end: the best trial, ready for ``dvc exp apply``."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    best = study.best_trial
    name = best.user_attrs.get("experiment", trial_name(tune.study, best.number))
    settings = " ".join(f"{k}={v}" for k, v in best.params.items())
    return [
        f"study {tune.study}: {count[TrialState.COMPLETE]} complete, "
        f"{count[TrialState.PRUNED]} pruned",
        f"best trial {name}: {tune.metric} {best.value:.4f}  {settings}",
        f"apply it: dvc exp apply {name}",
    ]
