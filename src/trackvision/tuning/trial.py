"""The trial's side of a study: what ``tune`` hands a training process, and the pruner it builds.

``tune`` runs each trial as ``dvc exp run``; the train stage inside finds the trial it belongs to
in the environment (``TRACKVISION_TRIAL``), reports every epoch's validation metric to the
study and stops when the study's pruner says the trial is hopeless. Outside a search the
variable is unset and none of this (nor Optuna) is loaded.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

TRIAL_ENV = "TRACKVISION_TRIAL"


@dataclass(frozen=True)
class TrialLink:
    """Where the trial lives (study database, name, id) and how it is judged."""

    storage: str
    study: str
    number: int
    metric: str  # val_accuracy | val_loss
    pruner: str  # median | none
    startup_trials: int
    warmup_epochs: int

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> TrialLink | None:
        text = os.environ.get(TRIAL_ENV)
        return cls(**json.loads(text)) if text else None

    @property
    def mlflow_tags(self) -> dict[str, str]:
        return {"tune.study": self.study, "tune.trial": str(self.number)}


def make_pruner(kind: str, startup_trials: int, warmup_epochs: int):
    """Optuna's pruner for ``tune.pruner``; the one place both sides of a study build it."""
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs
    )


def direction(metric: str) -> str:
    return "minimize" if metric == "val_loss" else "maximize"


class TrialPruner:
    """A ``training.loop.Pruner`` that reports each epoch to the trial and asks Optuna."""

    def __init__(self, link: TrialLink) -> None:
        import optuna

        self.link = link
        storage = optuna.storages.RDBStorage(link.storage)
        study = optuna.load_study(
            study_name=link.study,
            storage=storage,
            # Suggestions were made by `tune`: this side only reports, so no sampler work.
            sampler=optuna.samplers.RandomSampler(),
            pruner=make_pruner(link.pruner, link.startup_trials, link.warmup_epochs),
        )
        # Optuna's own Trial over the trial `tune` asked for, as its optimize() would build it.
        study_id = storage.get_study_id_from_name(link.study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, link.number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.pruned_at: int | None = None

    def should_stop(self, epoch: int, row: dict[str, float], last: bool) -> bool:
        self.trial.report(float(row[self.link.metric]), step=epoch)
        # Pruning after the last epoch would save nothing and mark a complete trial as cut short.
        if last or not self.trial.should_prune():
            return False
        self.pruned_at = epoch
        self.trial.set_user_attr("pruned_at_epoch", epoch)
        return True


def pruner_from_env() -> TrialPruner | None:
    """The pruner of the trial this process trains for, if ``tune`` started it."""
    link = TrialLink.from_env()
    if link is None:
        return None
    log.info("trial %d of study %s: reporting %s each epoch", link.number, link.study, link.metric)
    return TrialPruner(link)
