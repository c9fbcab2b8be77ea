"""Start a stage server for the length of a ``with`` block (``trackvision tune`` does, for its
trials), and stop it after."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trackvision.stage_server.protocol import ENV_VAR, private_socket

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300  # its imports: seconds on a warm disk, longer on a cold one


class _NotReady(Exception):
    """The server did not come up: the search goes on without it."""


@contextmanager
def stage_server(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A server started with ``env`` (the environment its commands will have); yields the
    variables that send a command to it, or none where no server could start (each stage then
    runs as its own process, as without one)."""
    if not hasattr(os, "pidfd_open"):
        log.info("no stage server on this system (it needs Linux): each stage imports its own")
        yield {}
        return
    path = private_socket()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trackvision.stage_server", "--socket", str(path)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        try:
            _wait_ready(proc, path)
        except _NotReady as exc:
            log.warning("%s; each stage imports its own", exc)
            yield {}
        else:
            log.info("stage server ready (pid %d): stage commands skip their imports", proc.pid)
            yield {ENV_VAR: str(path)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(path.parent, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen, path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise _NotReady(f"the stage server exited {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise _NotReady(f"the stage server was not ready in {READY_TIMEOUT_S} s")
        time.sleep(0.05)
