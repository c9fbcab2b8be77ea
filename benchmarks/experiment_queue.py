"""Benchmark: wall time of a 4-experiment DVC queue on one worker against two workers.

Clones this repository (committed state) into a temporary folder, pulls its data from the
default remote (run `dvc push` first), then queues the same 4 experiments twice (`train.lr`
varied, `train.models` as given) and runs them with `dvc queue start -j 1` and `-j 2`.
Prints both wall times and their ratio. Usage:
    python benchmarks/experiment_queue.py [--models cnn] [--timeout 3600] [--poll 10]
        [--out reports/bench_queue.json]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trackvision.atomic import write_json
from trackvision.evaluation.footprint import machine

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]


def sh(args: list[str], cwd: Path, hint: str = "") -> str:
    """Run a command and return its stdout; on failure exit with its stderr (and ``hint``)."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"`{' '.join(args)}` failed (exit {done.returncode}) in {cwd}:\n"
            f"{done.stderr.strip()[-2000:]}\n{hint}".rstrip()
        )
    return done.stdout


def worker_logs(repo: Path, lines: int = 20) -> str:
    """The last lines of each DVC queue worker's log (the clone is deleted when the bench ends)."""
    tails = []
    for out in sorted((repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.out")):
        tail = out.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {out.name}\n" + "\n".join(tail))
    return "\n" + "\n".join(tails) if tails else ""


def threads_per_worker(jobs: int) -> int:
    """Each worker's share of the cores: two workers each using every core oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_queue(
    repo: Path, lrs: list[str], models: str, jobs: int, timeout: float, poll: float
) -> float:
    """Queue one experiment per learning rate, run them on ``jobs`` workers; wall seconds.

    The wall time is read at the first poll that finds the queue done, so it is at most
    ``poll`` seconds late. Polling more often is no better: each `dvc queue status` is a
    Python process of about 0.6 CPU-s, and every 2 s it took a queued training from 340-390
    (polled every 20 s) to 250-280 images/s on 2 cores.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads_per_worker(jobs))
    for lr in lrs:
        sh(
            [
                "dvc",
                "exp",
                "run",
                "--queue",
                "-S",
                f"train.lr={lr}",
                "-S",
                f"train.models=[{models}]",
            ],
            repo,
        )
    start = time.perf_counter()
    try:
        # Output not captured: the workers it forks hold inherited pipes open until the queue ends.
        subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, check=True)
        while True:
            time.sleep(poll)
            status = sh(["dvc", "queue", "status"], repo)
            if "Queued" not in status and "Running" not in status:
                break
            if time.perf_counter() - start > timeout:
                raise SystemExit(
                    f"the queue ({jobs} worker(s)) did not finish in {timeout:.0f} s "
                    f"(--timeout):\n{status}{worker_logs(repo)}"
                )
        seconds = time.perf_counter() - start
        # Idle workers linger and keep their thread count: stop them so the next run starts
        # only its own.
        sh(["dvc", "queue", "stop"], repo)
        while "0 active, 0 idle" not in sh(["dvc", "queue", "status"], repo):
            if time.perf_counter() - start > timeout:
                raise SystemExit(f"the queue's workers did not stop:{worker_logs(repo)}")
            time.sleep(poll)
    except BaseException:
        # Ctrl-C, a timeout or a failed call must not leave workers training in the background.
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, check=False)
        raise
    if "Failed" in status:
        raise SystemExit(f"an experiment failed:\n{status}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn", help="comma-separated train.models per exp")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_queue.json")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds a queue may run before it is stopped"
    )
    parser.add_argument("--poll", type=float, default=10, help="seconds between status checks")
    parser.add_argument("--experiments", type=int, default=4, help="experiments per queue")
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository to clone")
    args = parser.parse_args()
    n = args.experiments
    if n < 1:
        parser.error(f"--experiments: expected 1 or more, got {n}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        sh(["git", "clone", "-q", str(args.repo.resolve()), str(repo)], Path(tmp))
        sh(["dvc", "pull"], repo, hint="The bench pulls its data: run `dvc push` first.")
        # Create the MLflow store before two workers race on its schema migration.
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").search_experiments()
        # Learning rates that differ in every experiment of both queues.
        lrs = [f"{0.002 + 0.0001 * k:.4f}" for k in range(2 * n)]
        one = run_queue(repo, lrs[:n], args.models, 1, args.timeout, args.poll)
        log.info("%d experiments, 1 worker: %.0f s", n, one)
        two = run_queue(repo, lrs[n:], args.models, 2, args.timeout, args.poll)
        log.info("%d experiments, 2 workers: %.0f s", n, two)
    result = {
        "experiments": n,
        "models": args.models,
        "one_worker_s": round(one, 1),
        "two_workers_s": round(two, 1),
        "speedup": round(one / two, 2),
        "poll_s": args.poll,
        "threads_per_worker": {str(j): threads_per_worker(j) for j in (1, 2)},
        "machine": machine(),
    }
    log.info("speed-up of 2 workers over 1: %.2fx", result["speedup"])
    write_json(args.out, result)


if __name__ == "__main__":
    main()
