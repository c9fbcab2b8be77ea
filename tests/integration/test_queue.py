"""Queued experiments as users run them: a grid queued, two workers, one sqlite MLflow store."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.repos import client, run

pytestmark = pytest.mark.integration

# Two experiments for the two workers: a list of values (the grid syntax) and a plain -S.
GRID = {"train.lr": ["0.002", "0.0005"], "train.batch_size": ["8"]}
# Each experiment runs one model's stages (the target): the grid and the workers are what is
# tested, and the shared pipeline's data stages stay as they are.
TARGET, MODEL = "evaluate@cnn", "cnn"


# Under pytest's 600 s, so a stuck queue fails with its workers' logs rather than a bare timeout.
QUEUE_DEADLINE_S = 420
# Workers take seconds to register and idle 10 s before exiting: only a longer gap is a stall.
STALL_S = 30
# Each `dvc queue status` is a Python process of about 0.6 CPU-s: polled every 2 s it took a
# queued cnn from 340-390 to 250-280 images/s on 2 cores (measured), so poll sparingly.
POLL_S = 10


def _start_queue(repo: Path, env: dict[str, str], jobs: int, log: Path) -> None:
    """`dvc queue start`, its output appended to ``log``.

    Not a pipe: the workers it forks inherit stdout/stderr and hold them until they exit, so
    reading a pipe to EOF would block until the whole queue is done.
    """
    with log.open("ab") as out:
        subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)],
            cwd=repo,
            env={**env, "OMP_NUM_THREADS": "1"},  # one core per worker, as the README says
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=True,
        )


def _queue_diagnostics(repo: Path, env: dict[str, str], log: Path) -> str:
    """What a user would look at when a queue does not finish: status, worker logs, processes."""
    parts = [log.read_text(errors="replace")]
    for cmd in (["dvc", "queue", "status"], ["ps", "-eo", "pid,ppid,etime,args"]):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        parts.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    for worker_log in sorted((repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.out")):
        tail = worker_log.read_text(errors="replace")[-3000:]
        parts.append(f"--- {worker_log.name} (tail)\n{tail}")
    return "\n".join(parts)


def _run_queue(repo: Path, env: dict[str, str], jobs: int, log: Path) -> tuple[str, int]:
    """Start ``jobs`` workers and wait until no task is queued or running.

    Returns the final `dvc queue status` and how many times the queue had to be started again:
    DVC's workers can exit while tasks are still queued (treeverse/dvc#10562, #10398), and
    starting the queue again is the workaround users report there. A queue still busy at the
    deadline fails the test with the workers' logs.
    """
    _start_queue(repo, env, jobs, log)
    restarts, deadline = 0, time.monotonic() + QUEUE_DEADLINE_S
    stalled_since: float | None = None
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status, restarts
        if "Running" in status or "Worker status: 0 active, 0 idle" not in status:
            stalled_since = None
        elif stalled_since is None:
            stalled_since = time.monotonic()
        elif time.monotonic() - stalled_since > STALL_S:
            restarts, stalled_since = restarts + 1, None
            _start_queue(repo, env, jobs, log)
        time.sleep(POLL_S)
    raise AssertionError(
        f"queue not done after {QUEUE_DEADLINE_S} s:\n{_queue_diagnostics(repo, env, log)}"
    )


def _exp_rows(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """name -> {'params': params.yaml data, 'metrics': {file: data}} from `dvc exp show --json`."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    rows: dict[str, dict] = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                if rev.get("name"):
                    rows[rev["name"]] = {
                        "params": data["params"]["params.yaml"]["data"],
                        "metrics": {k: v["data"] for k, v in data.get("metrics", {}).items()},
                    }
    return rows


def test_grid_queue_on_two_workers_runs_the_queued_code_into_one_store(pipeline, tmp_path):
    repo, env = pipeline
    # The code at queue time must be the code that runs, even if the workspace changes after.
    marker = tmp_path / "queued-code-ran"
    init = repo / "src" / "trackvision" / "__init__.py"
    original = init.read_text()
    init.write_text(original + f"\nopen({str(marker)!r}, 'a').write('x')  # test marker\n")
    args = ["dvc", "exp", "run", "--queue"]
    for key, values in GRID.items():
        args += ["-S", f"{key}={','.join(values)}"]
    args.append(TARGET)
    queued = run(args, repo, env).stdout
    init.write_text(original)
    assert queued.count("Queued experiment") == 2, queued

    started = time.monotonic()
    try:
        status, restarts = _run_queue(repo, env, jobs=2, log=tmp_path / "queue-start.log")
    finally:  # a failed test must not leave workers training in the background
        subprocess.run(
            ["dvc", "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True, timeout=120
        )
    wall = time.monotonic() - started
    assert "Failed" not in status, (
        status
        + subprocess.run(
            ["dvc", "queue", "logs", "--follow"], cwd=repo, env=env, capture_output=True, text=True
        ).stdout
    )
    assert marker.exists(), "the queued experiments ran the workspace's code, not their own"

    rows = {
        n: r
        for n, r in _exp_rows(repo, env).items()
        if str(r["params"]["train"]["lr"]) in GRID["train.lr"]
    }
    assert len(rows) == 2, sorted(rows)
    grid = {
        (str(r["params"]["train"]["lr"]), str(r["params"]["train"]["batch_size"]))
        for r in rows.values()
    }
    assert grid == {(lr, "8") for lr in GRID["train.lr"]}

    mlflow = client(repo)
    exp_id = mlflow.get_experiment_by_name("synthetic_text").experiment_id
    for name, row in rows.items():
        runs = mlflow.search_runs([exp_id], f"tags.dvc_exp_name = '{name}'")
        assert [r.data.params["model.name"] for r in runs] == [MODEL], name
        for r in runs:
            model = r.data.params["model.name"]
            assert r.info.status == "FINISHED"
            assert float(r.data.params["train.lr"]) == float(row["params"]["train"]["lr"])
            assert r.data.params["train.batch_size"] == str(row["params"]["train"]["batch_size"])
            steps = [m.step for m in mlflow.get_metric_history(r.info.run_id, "val_accuracy")]
            assert steps == [1, 2], (name, model, steps)
            shown = row["metrics"][f"metrics/{model}/test.json"][model]["accuracy"]
            assert r.data.metrics["test_accuracy"] == pytest.approx(shown), (name, model)
    # `dvc exp show` columns: each model's accuracy beside the params, nothing timed.
    header = run(["dvc", "exp", "show", "--csv"], repo, env).stdout.splitlines()[0].split(",")
    assert {"cnn.accuracy", "vit.accuracy", "train.lr", "train.batch_size"} <= set(header), header
    timed = [c for c in header if c.endswith(("latency_ms", "seconds", "images_per_s"))]
    assert timed == [], header
    print(f"2 queued experiments on 2 workers: {wall:.0f} s; queue restarted {restarts} time(s)")
