"""`trackvision tune` as a user runs it: real Optuna, dvc experiments, MLflow; killed, continued."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import tiny_params
from tests.integration.repos import (
    client,
    copy_repo,
    kill_dvc_while_it_prepares,
    run,
    wait_until_group_gone,
    wait_until_nothing_runs_in,
)

pytestmark = pytest.mark.integration

TRIALS = 3
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _tiny_search(params: dict) -> dict:
    p = tiny_params(params, **{"train.models": ["cnn"], "mlflow.enabled": True})
    p["data"]["synthetic_text"]["count"] = 120
    p["tune"].update(trials=TRIALS, seed=1)
    p["tune"]["pruner"].update(startup_trials=1, warmup_epochs=1)
    return p


def _finished(study_name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # not created yet
        return []
    return study.get_trials(deepcopy=False, states=DONE)


def test_a_killed_search_continues_and_every_trial_is_an_experiment_and_a_run(
    tmp_path: Path,
) -> None:
    repo, env = copy_repo(tmp_path / "repo", _tiny_search)
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "dvc repro"], repo, env)
    storage, study_name = f"sqlite:///{repo / 'optuna.db'}", "cnn-search"

    # Two trials side by side; killed (the whole process group) once one has finished.
    first = subprocess.Popen(
        ["trackvision", "tune", "--jobs", "2"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not _finished(study_name, storage) and first.poll() is None:
        assert time.monotonic() < deadline, "no trial finished in 300 s"
        time.sleep(2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    wait_until_group_gone(first.pid)
    wait_until_nothing_runs_in(repo)  # DVC's locks name its processes until they are gone
    before = _finished(study_name, storage)
    assert 1 <= len(before) < TRIALS
    # DVC prepares a trial in this repository before it copies it: a kill in that moment
    # leaves HEAD detached, the trial's -S values in params.yaml and DVC's repro.dat staged.
    # Nothing else may change. The kill above lands there only by chance: this one always does.
    # The kill may land while DVC writes git's index: `trackvision recover` removes the lock it
    # leaves (tune does the same before its trials), so a plain `dvc exp run` works next.
    run(["trackvision", "recover"], repo, env)
    assert not (repo / ".git" / "index.lock").exists()
    changed = run(["git", "status", "--porcelain"], repo, env).stdout.splitlines()
    assert {line[3:] for line in changed} <= {"params.yaml", ".dvc/tmp/repro.dat"}, changed
    kill_dvc_while_it_prepares(repo, env, "++models.cnn.lr=0.5")
    run(["git", "checkout", "HEAD", "--", "params.yaml"], repo, env)  # as tune's warning says

    second = run(["trackvision", "tune", "--jobs", "2"], repo, env)
    out = second.stdout
    assert "left HEAD detached: put back on main" in second.stderr
    assert run(["git", "symbolic-ref", "HEAD"], repo, env).stdout.strip() == "refs/heads/main"

    study = optuna.load_study(study_name=study_name, storage=storage)
    done = study.get_trials(deepcopy=False, states=DONE)
    assert len(done) >= TRIALS  # the second run made up the rest, not all of them again
    assert {t.number for t in before} <= {t.number for t in done}
    chosen = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(chosen)) == len(chosen), "a trial was repeated"
    best = study.best_trial
    assert f"best trial cnn-search-{best.number}:" in out
    assert f"apply it: dvc exp apply cnn-search-{best.number}" in out

    # Each finished trial: a DVC experiment under its name, and an MLflow run tagged with the
    # study and the trial, marked pruned exactly when Optuna pruned it.
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], repo, env).stdout
    names = {ref.rsplit("/", 1)[-1] for ref in refs.split()}
    mlflow = client(repo)
    exp = mlflow.get_experiment_by_name("synthetic_text")
    registered = {
        v.run_id for v in mlflow.search_model_versions("name = 'synthetic_text-classifier'")
    }
    for trial in done:
        name = f"cnn-search-{trial.number}"
        assert name in names
        (found,) = mlflow.search_runs([exp.experiment_id], f"tags.`tune.trial` = '{trial.number}'")
        assert found.info.status == "FINISHED"
        assert found.data.tags["tune.study"] == study_name
        assert found.info.run_name == f"cnn @ {name}"
        assert "test_accuracy" in found.data.metrics
        pruned = trial.state == TrialState.PRUNED
        assert (found.data.tags.get("tune.pruned") == "true") == pruned
        epochs = len(trial.intermediate_values)
        assert epochs == (1 if pruned else 2)
        # A pruned model never becomes a registry version (nor so the champion).
        assert (found.info.run_id in registered) == (not pruned)
        # Artifacts live in the real repo, not in DVC's deleted temporary copy.
        local = mlflow.download_artifacts(found.info.run_id, "evaluation/confusion.png")
        assert Path(local).stat().st_size > 0

    # After a search that was not killed, the workspace is as it was (trials ran in DVC's
    # temporary copies)...
    assert run(["git", "status", "--porcelain"], repo, env).stdout == ""
    # ...until they apply the best trial, whose params are then those Optuna chose.
    run(["dvc", "exp", "apply", f"cnn-search-{best.number}"], repo, env)
    applied = yaml.safe_load((repo / "params.yaml").read_text())["models"]["cnn"]
    for key, value in best.params.items():
        assert applied[key.rsplit(".", 1)[-1]] == pytest.approx(value)
