"""Where every stage reads and writes, relative to the repository root (dvc.yaml mirrors this)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def repo_root() -> Path:
    """The main repository: DVC_ROOT under DVC (also inside queued/temp experiments), else cwd."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


@dataclass(frozen=True)
class Layout:
    root: Path

    def raw(self, source: str) -> Path:
        return self.root / "data" / "raw" / source

    @property
    def plan(self) -> Path:
        """The decode size the models listed need (the plan stage; read by balance)."""
        return self.root / "data" / "plan.json"

    @property
    def balanced(self) -> Path:
        return self.root / "data" / "balanced"

    @property
    def augmented(self) -> Path:
        return self.root / "data" / "augmented"

    def model_dir(self, model: str) -> Path:
        return self.root / "models" / model

    def resume_state(self, model: str, fingerprint: str) -> Path:
        """Training state saved after every epoch, so a killed run resumes (not a DVC output)."""
        return self.root / ".trackvision" / "resume" / f"{model}-{fingerprint[:16]}.pt"

    def metrics_dir(self, model: str) -> Path:
        return self.root / "metrics" / model

    def run_dir(self, model: str) -> Path:
        """What varies run to run (seconds, images/s, latency, the MLflow run): never in models/
        or metrics/, whose DVC hashes then change only with the params, the data and the code."""
        return self.root / "runs" / model

    def run_record(self, model: str) -> Path:
        """The training's seconds, images/s, MLflow run and weights' sha256."""
        return self.run_dir(model) / "train.json"

    def timing_record(self, model: str) -> Path:
        """The evaluation's CPU latency per image and the threads it was timed with."""
        return self.run_dir(model) / "evaluate.json"

    @property
    def balance_report(self) -> Path:
        return self.root / "metrics" / "balance.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"
