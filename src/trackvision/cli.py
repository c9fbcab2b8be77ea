"""``trackvision <command>``: one thin handler per command, over the functions in ``stages``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackvision.errors import ConfigError, TrackingError, TrackvisionError
from trackvision.stage_environment import STAGE_ENVIRONMENT

if TYPE_CHECKING:
    from trackvision.config import Config

log = logging.getLogger("trackvision")

STAGES = ("download", "plan", "balance", "augment", "train", "evaluate", "compare")

# Set for every command before any library reads them. A user's own value wins.
PROCESS_ENVIRONMENT = {
    # MLflow's usage telemetry (on by default since 3.2): a user's photos and habits stay here.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow's own HTTP retries back off for minutes; ours (tracking/retry.py) keep training going.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def load(args: argparse.Namespace, check_models: bool = False) -> Config:
    """params.yaml (``--params``) validated; ``check_models`` also resolves every model entry."""
    from trackvision.config import load_config

    return load_config(args.params, check_models=check_models)


# --- handlers: each takes the parsed arguments and returns the exit status -------------------


def stage_command(args: argparse.Namespace) -> int:
    """A DVC stage: ``stages.<name>.<name>(config, layout[, model])``."""
    from trackvision.layout import Layout

    stage = getattr(importlib.import_module(f"trackvision.stages.{args.stage}"), args.stage)
    layout = Layout(Path.cwd())
    if args.stage not in ("train", "evaluate"):
        stage(load(args), layout)
        return 0
    # A stage run for named models checks only theirs: a timm name costs seconds of imports
    # that `train --model cnn` need not pay.
    config = load(args, check_models=not args.models)
    names = args.models or list(config.model_names)
    for name in names:  # every named model is valid before the first one runs
        if name not in config.model_names:
            from trackvision.models.zoo import check_model_name

            check_model_name(name, "--model")
        config.model(name)
    for name in names:
        stage(config, layout, name)
    return 0


def check_command(args: argparse.Namespace) -> int:
    load(args, check_models=True)
    log.info("%s: valid", args.params)
    return 0


def sources_command(args: argparse.Namespace) -> int:
    from trackvision.data.sources import available_sources, get_source

    for name in available_sources():
        print(f"{name:18s} {get_source(name).description}")  # the command's output
    return 0


def ui_server_command(tracking_uri: str, root: Path, host: str, port: int) -> list[str]:
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


def experiment_links(tracking_uri: str, base_url: str) -> list[str]:
    """For each experiment in the store, the UI link that opens its training runs.

    MLflow 3.17's UI opens an experiment in its GenAI view unless the sidebar's switch says
    "Model training", whatever the experiment's kind (mlflow/mlflow#24498): the link says it.
    """
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(tracking_uri).search_experiments(order_by=["name"])
    return [
        f"{e.name}: {base_url}/#/experiments/{e.experiment_id}/runs?workflowType=machine_learning"
        for e in experiments
    ]


def ui_command(args: argparse.Namespace) -> int:
    from trackvision.layout import repo_root
    from trackvision.tracking import resolve_tracking_uri

    config = load(args)
    uri = resolve_tracking_uri(config.mlflow.tracking_uri)
    command = ui_server_command(uri, repo_root(), args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    log.info("MLflow UI on %s  (%s)", base, " ".join(command))
    for line in experiment_links(uri, base):
        log.info("training runs of %s", line)
    sys.stdout.flush()
    os.execv(command[0], command)  # the server replaces this process: Ctrl-C stops it
    return 0  # not reached


def serve_server_command(model_uri: str, host: str, port: int) -> list[str]:
    """MLflow's own model server over ``model_uri``, in this environment (no new virtualenv)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "--model-uri",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        host,
        "--port",
        str(port),
    ]


def serve_command(args: argparse.Namespace) -> int:
    from trackvision.tracking import resolve_tracking_uri

    config = load(args)
    uri = args.model
    if uri is None:
        if not config.mlflow.registered_model:
            raise ConfigError(
                "mlflow.registered_model is empty: nothing is registered; pass --model <URI>"
            )
        uri = f"models:/{config.mlflow.registered_model.format(source=config.data.source)}@champion"
    # The server reads the store from the environment, as every mlflow command does.
    os.environ["MLFLOW_TRACKING_URI"] = resolve_tracking_uri(config.mlflow.tracking_uri)
    command = serve_server_command(uri, args.host, args.port)
    log.info(
        "serving %s on http://%s:%d/invocations (JSON: a column 'image' of base64 photos)",
        uri,
        args.host,
        args.port,
    )
    sys.stdout.flush()
    os.execv(command[0], command)  # the server replaces this process: Ctrl-C stops it
    return 0  # not reached


def tune_command(args: argparse.Namespace) -> int:
    from trackvision.layout import repo_root
    from trackvision.tuning.study import run_study, summary_lines

    config = load(args, check_models=True)
    if config.tune is None:
        raise ConfigError("params.yaml: no tune: section (see the README's Tuning part)")
    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected 1 or more, got {args.jobs}")
    study = run_study(config, repo_root(), args.jobs)
    print("\n".join(summary_lines(study, config.tune)))  # the command's answer
    return 0


def recover_command(args: argparse.Namespace) -> int:
    from trackvision.layout import repo_root
    from trackvision.tuning.leftovers import clean_up_after_killed_trials

    clean_up_after_killed_trials(repo_root())
    return 0


def learning_curve_command(args: argparse.Namespace) -> int:
    from trackvision.experiments.learning_curve import (
        curve_points,
        finished_runs,
        write_learning_curve,
    )
    from trackvision.tracking import resolve_tracking_uri

    config = load(args)
    runs = finished_runs(resolve_tracking_uri(config.mlflow.tracking_uri), config.data.source)
    where = dict(item.split("=", 1) for item in args.where if "=" in item)
    write_learning_curve(curve_points(runs, args.model, where), args.model, Path("reports"))
    return 0


def _optional_config(args: argparse.Namespace) -> Config | None:
    """predict and export work on a trained model, with or without a params.yaml."""
    return load(args) if args.params.is_file() else None


def predict_command(args: argparse.Namespace) -> int:
    from trackvision.predict import predict_gallery

    config = _optional_config(args)
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


def export_command(args: argparse.Namespace) -> int:
    from trackvision.export import export_command as export

    export(args.model, args.format, args.out, Path.cwd(), _optional_config(args))
    return 0


# --- the command line ----------------------------------------------------------------------


def _add(
    sub: Any, name: str, handler: Callable[[argparse.Namespace], int], **kw: Any
) -> argparse.ArgumentParser:
    """A subcommand ``name`` of ``sub`` (argparse's subparsers) that runs ``handler``."""
    parser = sub.add_parser(name, **kw)
    parser.set_defaults(func=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackvision", description="Tracked, reproducible image-classification experiments."
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="COMMAND")
    for stage in STAGES:
        p = _add(sub, stage, stage_command, help=f"run the {stage} stage")
        if stage in ("train", "evaluate"):
            p.add_argument(
                "--model",
                action="append",
                dest="models",
                metavar="NAME",
                help="model to run (repeatable); default: every name in train.models",
            )
    curve = _add(
        sub,
        "learning-curve",
        learning_curve_command,
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
    ui = _add(sub, "ui", ui_command, help="serve the MLflow UI over this project's store")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument(
        "--host", default="127.0.0.1", help="interface; 0.0.0.0 exposes the store to the network"
    )
    serve = _add(
        sub,
        "serve",
        serve_command,
        help="serve a logged model with MLflow's model server: photos in, labels out",
    )
    serve.add_argument(
        "--model",
        help="an MLflow model URI (default: models:/<mlflow.registered_model>@champion)",
    )
    serve.add_argument("--port", type=int, default=5055, help="port (default 5055)")
    serve.add_argument("--host", default="127.0.0.1", help="interface; 0.0.0.0 serves the network")
    pred = _add(
        sub,
        "predict",
        predict_command,
        help="classify image files or folders; CSV out, optional copies by class",
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
    export = _add(
        sub, "export", export_command, help="write a model as ONNX or TorchScript, verified"
    )
    export.add_argument("--model", required=True, help="models/<name>/ or models:/<name>@<alias>")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("--out", type=Path, help="default: exports/<name>.onnx|.pt")
    tune = _add(
        sub,
        "tune",
        tune_command,
        help="an Optuna search (params.yaml's tune:), each trial a dvc experiment",
    )
    tune.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="trials run side by side by this process (default 1); start `tune` on other "
        "machines against the same tune.storage for more",
    )
    _add(
        sub,
        "recover",
        recover_command,
        help="put back what a killed dvc exp run or search left (HEAD, git's index lock, copies)",
    )
    _add(sub, "check", check_command, help="validate params.yaml and exit")
    _add(sub, "sources", sources_command, help="list the registered dataset sources")
    return parser


def configure_process(command: str, verbose: bool) -> None:
    """Everything process-wide, in one place: environment, then logging."""
    settings = {**PROCESS_ENVIRONMENT, **STAGE_ENVIRONMENT.get(command, {})}
    if not sys.stderr.isatty():  # a log file or a pipe: lines, not progress-bar frames
        settings["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run its command; the exit status (errors logged as one line)."""
    args = build_parser().parse_args(argv)
    configure_process(args.stage, args.verbose)
    try:
        return args.func(args)
    except TrackvisionError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except OSError as exc:  # a full disk, a read-only or unwritable folder: say which, no traceback
        log.error(
            "%s: %s. Nothing was half-written (outputs are renamed into place only when complete); "
            "free space or fix permissions and run the stage again",
            exc.filename or "an output",
            exc.strerror or exc,
        )
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
