"""A server's child: it becomes the stage command's own process, runs it, and exits."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any, NoReturn

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Forked(BaseException):
    """Raised in a new child: unwinds the server's loop, so the child runs from ``main``."""

    def __init__(self, request: dict[str, Any], fds: list[int], server: int) -> None:
        self.request = request
        self.fds = fds
        self.server = server


def run_child(req: dict[str, Any], fds: list[int], server: int) -> int:
    """Become the command's own process, then run it: its streams, directory, environment,
    sys.path and signals, and trackvision imported afresh from that sys.path."""
    os.setpgid(0, 0)
    # A server killed outright (with its command, say, by a kill of their process group) takes
    # its children along: the kernel sends them SIGTERM (prctl PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != server:  # it died before the call above
        os._exit(128 + signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.path[:] = req["path"]
    program = req["program"]
    sys.argv = [program, *req["argv"]]
    for name in [m for m in sys.modules if m == "trackvision" or m.startswith("trackvision.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    logging.root.handlers.clear()  # the command configures logging as its own process would
    if program == "dvc":
        from dvc.cli import main as dvc_main

        return dvc_main(req["argv"])
    cli = importlib.import_module("trackvision.cli")
    return cli.execute(req["argv"])


def exit_child(code: int) -> NoReturn:
    """End a child as the interpreter would, less its teardown of every module the server
    imported (a third of a second per stage): threads joined, exit handlers run (MLflow's among
    them), streams flushed, then ``os._exit``. CPython has no public call for the handlers
    alone; ``atexit._run_exitfuncs`` is the one its own shutdown makes."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
