"""What a stage command and the stage server agree on: the variable, the request, the checks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ENV_VAR = "TRACKVISION_STAGE_SERVER"  # the server's socket; unset = every stage runs itself
# Stages that import torch and MLflow. Stages with settings of their own in STAGE_ENVIRONMENT
# (read by libraries as they load) always run themselves.
SERVED_STAGES = frozenset({"plan", "train", "evaluate", "compare"})
# Variables that libraries read as they load (thread pools, allocators, caches, the interpreter):
# a forked child would inherit the server's values, so they must be the command's.
IMPORT_TIME_PREFIXES = (
    "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCH", "PYTORCH_", "CUDA_", "NVIDIA_", "LD_",
    "MALLOC_", "GLIBC_", "THP_", "MPL", "HF_", "XDG_", "PYTHON",
)  # fmt: skip
NOT_IMPORT_TIME = frozenset({"PYTHONPATH"})  # sys.path travels with the request
MAX_REQUEST = 16 << 20
RAN_ITSELF = "the stage runs in this process"  # how a command says it was not served
# What a child can become: a stage command, or DVC itself (a search's `dvc exp run` per trial).
PROGRAMS = ("trackvision", "dvc")


def private_socket() -> Path:
    """A socket path in a new folder of mode 0700: only this user can reach the server."""
    import tempfile  # here: the client, which imports this module, starts in milliseconds

    return Path(tempfile.mkdtemp(prefix="trackvision-stages-")) / "socket"


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in env.items()
        if key.startswith(IMPORT_TIME_PREFIXES) and key not in NOT_IMPORT_TIME
    }


def interpreter() -> dict[str, str]:
    """What must be the same in the server and the command for a fork to stand in for it."""
    return {"executable": sys.executable, "prefix": sys.prefix, "flags": repr(sys.flags)}


def request(
    argv: list[str],
    program: str = "trackvision",
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``program argv`` as this process would start it, in ``cwd`` with ``env`` (by default
    this process's own), with this process's ``sys.path``."""
    here = os.getcwd()
    return {
        "program": program,
        "argv": argv,
        "cwd": cwd or here,
        "env": dict(os.environ if env is None else env),
        # Absolute, since the server resolves modules against it from its own directory.
        "path": [os.path.join(here, entry) for entry in sys.path],
        "interpreter": interpreter(),
    }


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return len(body).to_bytes(8, "big") + body


def decode_length(header: bytes) -> int:
    length = int.from_bytes(header, "big")
    if length > MAX_REQUEST:
        raise ValueError(f"message of {length} bytes, more than {MAX_REQUEST}")
    return length
