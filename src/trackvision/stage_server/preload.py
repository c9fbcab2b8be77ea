"""What the server imports once, and what a command must share with it to be served by a fork."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from typing import Any

from trackvision.stage_server.protocol import PROGRAMS, import_time_env, interpreter

log = logging.getLogger(__name__)

# The libraries the served stages import (a module missing here costs only its import in each
# child). Never trackvision's own modules: each child imports those from its command's sys.path.
PRELOAD = (
    "numpy", "pandas", "PIL.Image", "yaml", "pydantic", "tqdm", "safetensors.torch",
    "scipy.special", "scipy.stats", "matplotlib.pyplot", "torch", "torch.distributed",
    "torch.utils.data", "torchvision.transforms", "timm", "timm.data",
    # What the first torch.export in a process imports (MLflow logs models through it).
    "torch.export", "torch._dynamo", "torch._functorch.aot_autograd", "networkx",
    "tabulate",  # what torch._dynamo's exit handler imports in every child
    "optuna", "mlflow", "mlflow.pytorch", "mlflow.models", "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    # What `dvc exp run --temp` imports, much of it only as it goes: a search runs each trial's
    # DVC through the server too.
    "dvc.cli", "dvc.cli.parser", "dvc.repo", "dvc.repo.experiments.run", "dvc.repo.reproduce",
    "dvc.repo.experiments.queue.celery", "dvc.repo.experiments.queue.tempdir",
    "dvc.repo.experiments.executor.local", "dvc.repo.checkout", "dvc.repo.index",
    "dvc.repo.stage", "dvc.repo.plots", "dvc.stage.cache", "dvc.dvcfile", "dvc.fs.dvc",
    "dvc.data_cloud", "dvc.cachemgr", "dvc.dirs", "dvc.utils.hydra", "dvc.utils.strictyaml",
    "dvc_data.index.checkout", "dvc_render", "scmrepo.git", "scmrepo.git.backend.dulwich",
    "scmrepo.git.backend.pygit2", "dulwich.client", "dulwich.porcelain", "dulwich.stash",
    "dulwich.worktree", "pygit2", "ruamel.yaml", "omegaconf", "platformdirs",
    "hydra.core.override_parser.overrides_parser", "hydra._internal.config_loader_impl",
)  # fmt: skip


class Preloaded:
    """The server's libraries, and what a command must share with it to be served."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.env = import_time_env(dict(os.environ))  # before anything reads or sets them
        self.interpreter = interpreter()
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                log.debug("preload %s: %s", name, exc)
        _warm_up()
        # Children never collect what the server imported: no copy-on-write of its whole heap,
        # no full collections over millions of objects in every child (gc.freeze's purpose).
        gc.collect()
        gc.freeze()
        self.files = {
            top: _file_state(sys.modules[top])
            for top in {name.split(".")[0] for name in modules}
            # A namespace package (ruamel) has no file of its own; the interpreter check
            # already rules out another environment's copy.
            if top in sys.modules and sys.modules[top].__spec__.origin is not None
        }

    def refusal(self, req: dict[str, Any]) -> str | None:
        """Why a fork of this server would not be the command's own process; None if it is."""
        if req["program"] not in PROGRAMS:
            return f"no such program here: {req['program']!r}"
        if req["interpreter"] != self.interpreter:
            return f"another interpreter: {req['interpreter']['executable']}"
        env = import_time_env(req["env"])
        if env != self.env:
            keys = sorted(k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k))
            return f"import-time settings differ: {', '.join(keys)}"
        finder = importlib.machinery.PathFinder
        for top, state in self.files.items():
            spec = finder.find_spec(top, req["path"])
            if spec is None or spec.origin != state[0]:
                return f"{top} resolves to {spec.origin if spec else 'nothing'}, not {state[0]}"
            if _file_state(sys.modules[top]) != state:
                return f"{top} changed on disk since the server imported it"
        return None


def _warm_up() -> None:
    """Fill the caches libraries build on first use and keep for the process, so that no child
    builds them again. Nothing here computes on tensors: a fork must not inherit thread pools."""
    # Logging a model, MLflow checks its requirements against a map of every installed
    # distribution, built once per process from their RECORD files (seconds). An MLflow without
    # this function only makes each child build the map itself.
    try:
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        warn_dependency_requirement_mismatches(["mlflow"])
    except Exception as exc:  # an MLflow that moved it: the children pay, nothing breaks
        log.debug("warm-up of MLflow's requirement check: %s", exc)


def _file_state(module: Any) -> tuple[str, float]:
    origin = module.__spec__.origin
    return origin, os.stat(origin).st_mtime
