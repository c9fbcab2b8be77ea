"""``trackvision <stage>``: one thin command per DVC stage, over the functions in ``stages``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trackvision.allocator import tune_allocator
from trackvision.errors import TrackingError, TrackvisionError
from trackvision.stage_environment import STAGE_ENVIRONMENT

if TYPE_CHECKING:
    from trackvision.config import Config

log = logging.getLogger("trackvision")

STAGES = ("download", "plan", "balance", "augment", "train", "evaluate", "compare")
# Commands that build models and so validate the model entries of params.yaml up front.
_MODEL_STAGES = ("check", "train", "evaluate", "tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackvision", description="Tracked, reproducible image-classification experiments."
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        if stage in ("train", "evaluate"):
            p.add_argument(
                "--model",
                action="append",
                dest="models",
                metavar="NAME",
                help="model to run (repeatable); default: every name in train.models",
            )
    curve = sub.add_parser(
        "learning-curve",
        help="plot test accuracy against training data share (from a dvc exp sweep, via MLflow)",
    )
    curve.add_argument("--model", required=True, metavar="NAME", help="model swept")
    curve.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="keep only runs with this MLflow param value (repeatable), e.g. train.epochs=2",
    )
    ui = sub.add_parser("ui", help="serve the MLflow UI over this project's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument(
        "--host", default="127.0.0.1", help="interface; 0.0.0.0 exposes the store to the network"
    )
    pred = sub.add_parser(
        "predict", help="classify image files or folders; CSV out, optional copies by class"
    )
    pred.add_argument("inputs", nargs="+", type=Path, metavar="PATH", help="images or folders")
    pred.add_argument(
        "--model",
        help="models/<name>/ or an MLflow URI (models:/<name>@champion); "
        "default: the local model with the best test accuracy",
    )
    pred.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    pred.add_argument(
        "--sort-into",
        type=Path,
        metavar="DIR",
        help="copy each image into DIR/<label>/ (DIR/uncertain/ below --threshold)",
    )
    pred.add_argument("--threshold", type=float, default=0.7, help="confidence (default 0.7)")
    pred.add_argument("--batch-size", type=int, default=64)
    pred.add_argument(
        "--workers", type=int, default=1, help="decoding processes beside the model (default 1)"
    )
    export = sub.add_parser("export", help="write a model as ONNX or TorchScript, verified")
    export.add_argument("--model", required=True, help="models/<name>/ or models:/<name>@<alias>")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("--out", type=Path, help="default: exports/<name>.onnx|.pt")
    tune = sub.add_parser(
        "tune", help="an Optuna search (params.yaml's tune:), each trial a dvc experiment"
    )
    tune.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="trials run side by side by this process (default 1); start `tune` on other "
        "machines against the same tune.storage for more",
    )
    sub.add_parser("check", help="validate params.yaml and exit")
    sub.add_parser("sources", help="list the registered dataset sources")
    return parser


def _process_settings(stage: str) -> None:
    """What this process is, set once by the entry point, before any library code runs."""
    # Before the first tensor exists, so that huge pages apply to every one (see allocator.py).
    tune_allocator()
    # MLflow's own HTTP retries back off for minutes; ours (tracking/retry.py) keep training going.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    for key, value in STAGE_ENVIRONMENT.get(stage, {}).items():
        os.environ.setdefault(key, value)


def ui_command(tracking_uri: str, root: Path, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command that serves the UI over a local store, artifacts included.

    Runs pin their artifacts next to the store (``mlruns/``); runs created through this server
    (a team's clients) put theirs in ``mlartifacts/``, served by the same process.
    """
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        raise TrackingError(
            f"the tracking store is already a server ({tracking_uri}): open it in a browser"
        )
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--artifacts-destination",
        str(root / "mlartifacts"),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _process_settings(args.stage)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.stage == "sources":
        from trackvision.data.sources import available_sources, get_source

        for name in available_sources():
            source = get_source(name)
            print(f"{name:18s} {source.description}")  # the command's output, not a log line
        return 0
    try:
        if args.stage in ("predict", "export"):
            return _use_model(args)
        # Imported here so `--help` is instant and config errors come before heavy imports.
        from trackvision.config import load_config

        # A stage run for named models checks only theirs (the others' own stages check them):
        # a timm name costs seconds of imports that `train --model cnn` need not pay.
        named = getattr(args, "models", None)
        config = load_config(args.params, check_models=args.stage in _MODEL_STAGES and not named)
        if args.stage == "check":
            log.info("%s: valid", args.params)
            return 0
        if args.stage == "ui":
            from trackvision.layout import repo_root
            from trackvision.tracking import resolve_tracking_uri

            command = ui_command(
                resolve_tracking_uri(config.mlflow.tracking_uri), repo_root(), args.host, args.port
            )
            log.info("MLflow UI on http://%s:%d  (%s)", args.host, args.port, " ".join(command))
            sys.stdout.flush()
            os.execv(command[0], command)  # the server replaces this process: Ctrl-C stops it
        if args.stage == "tune":
            return _tune(config, args.jobs)
        if args.stage == "learning-curve":
            from trackvision.experiments.learning_curve import (
                curve_points,
                finished_runs,
                write_learning_curve,
            )
            from trackvision.tracking import resolve_tracking_uri

            runs = finished_runs(
                resolve_tracking_uri(config.mlflow.tracking_uri), config.data.source
            )
            where = dict(item.split("=", 1) for item in args.where if "=" in item)
            points = curve_points(runs, args.model, where)
            write_learning_curve(points, args.model, Path("reports"))
            return 0
        import importlib

        from trackvision.layout import Layout

        stage = getattr(importlib.import_module(f"trackvision.stages.{args.stage}"), args.stage)

        layout = Layout(Path.cwd())
        if args.stage in ("train", "evaluate"):
            names = args.models or list(config.models)
            for name in names:  # every named model is valid before the first one runs
                if name not in config.models:
                    from trackvision.models.zoo import check_model_name

                    check_model_name(name, "--model")
                config.model(name)
            for name in names:
                stage(config, layout, name)
        else:
            stage(config, layout)
    except TrackvisionError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except OSError as exc:  # a full disk, a read-only or unwritable folder: say which, no traceback
        where = exc.filename or "an output"
        log.error(
            "%s: %s. Nothing was half-written (outputs are renamed into place only when complete); "
            "free space or fix permissions and run the stage again",
            where,
            exc.strerror or exc,
        )
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return 0


def _tune(config: Config, jobs: int) -> int:
    from trackvision.errors import ConfigError
    from trackvision.layout import repo_root
    from trackvision.tuning.study import run_study, summary_lines

    if config.tune is None:
        raise ConfigError("params.yaml: no tune: section (see the README's Tuning part)")
    if jobs < 1:
        raise ConfigError(f"--jobs: expected 1 or more, got {jobs}")
    study = run_study(config, repo_root(), jobs)
    print("\n".join(summary_lines(study, config.tune)))  # the command's answer, not a log line
    return 0


def _use_model(args: argparse.Namespace) -> int:
    """predict and export: they work on a trained model, with or without a params.yaml."""
    from trackvision.config import load_config

    root = Path.cwd()
    config = load_config(args.params, check_models=False) if args.params.is_file() else None
    if args.stage == "predict":
        from trackvision.predict import predict_gallery

        predict_gallery(
            args.inputs,
            args.model,
            args.out,
            args.sort_into,
            args.threshold,
            args.batch_size,
            args.workers,
            tracking_uri=config.mlflow.tracking_uri if config else "",
        )
        return 0
    from trackvision.export import export_command

    export_command(args.model, args.format, args.out, root, config)
    return 0


def execute(argv: list[str]) -> int:
    """Run one command in this process; the stage server's children call it too."""
    try:
        return run(argv)
    finally:
        # Nothing is collected after this, so the interpreter's exit skips a final garbage
        # collection over every object torch and MLflow made: seconds per stage process, paid
        # by every stage of every experiment. Exit handlers still run.
        gc.freeze()


def main() -> None:
    from trackvision.stage_server.client import run_on_server

    argv = sys.argv[1:]
    stage = build_parser().parse_args(argv).stage  # a bad command line ends here, as in run()
    code = run_on_server(argv, stage)  # None where no stage server is set or it cannot serve this
    sys.exit(execute(argv) if code is None else code)


if __name__ == "__main__":
    main()
