"""The server: import the stages' libraries once, then fork a child per stage command."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from trackvision.stage_server.protocol import (
    decode_length,
    import_time_env,
    interpreter,
)

log = logging.getLogger(__name__)

# The libraries the served stages import (a module missing here costs only its import in each
# child). Never trackvision's own modules: each child imports those from its command's sys.path.
PRELOAD = (
    "numpy", "pandas", "PIL.Image", "yaml", "pydantic", "tqdm", "safetensors.torch",
    "scipy.special", "scipy.stats", "matplotlib.pyplot", "torch", "torch.distributed",
    "torch.utils.data", "torchvision.transforms", "timm", "timm.data",
    # What the first torch.export in a process imports (MLflow logs models through it).
    "torch.export", "torch._dynamo", "torch._functorch.aot_autograd", "networkx",
    "optuna", "mlflow", "mlflow.pytorch", "mlflow.models", "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
)  # fmt: skip
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
RECEIVE_TIMEOUT_S = 10


class Forked(BaseException):
    """Raised in a new child: unwinds the server's loop, so the child runs from ``main``."""

    def __init__(self, request: dict[str, Any], fds: list[int], server: int) -> None:
        self.request = request
        self.fds = fds
        self.server = server


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
            if top in sys.modules
        }

    def refusal(self, req: dict[str, Any]) -> str | None:
        """Why a fork of this server would not be the command's own process; None if it is."""
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


class Server:
    """Accepts commands on a Unix socket; each runs in a child, reported back when it exits."""

    def __init__(self, path: Path, preloaded: Preloaded) -> None:
        self.path = path
        self.preloaded = preloaded
        self.pid = os.getpid()
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound and listening before the path appears: whoever waits for it can connect at once.
        staging = path.with_name(path.name + ".binding")
        self.listener.bind(str(staging))
        os.chmod(staging, 0o600)
        self.listener.listen(64)
        os.rename(staging, path)
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.children: dict[int, tuple[socket.socket, int]] = {}  # pid -> (connection, pidfd)

    def serve_forever(self) -> None:
        log.info("stage server on %s (pid %d)", self.path, self.pid)
        while True:
            for key, _ in self.selector.select():
                key.data(key.fileobj)

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        conn.settimeout(RECEIVE_TIMEOUT_S)  # a command that connects and stalls holds no one up
        try:
            req, fds = self._receive(conn)
            conn.settimeout(None)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("stage server: a bad request (%s)", exc)
            conn.close()
            return
        why = self.preloaded.refusal(req)
        if why is not None:
            _close_fds(fds)
            _send(conn, {"refused": why})
            conn.close()
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            self.close_in_child()
            raise Forked(req, fds, self.pid)
        os.setpgid(pid, pid)  # as the child does: signals reach its group from the start
        _close_fds(fds)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (conn, pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, lambda _fd, pid=pid: self._reap(pid))
        self.selector.register(conn, selectors.EVENT_READ, lambda _c, pid=pid: self._hangup(pid))
        _send(conn, {"pid": pid})
        log.debug("pid %d: trackvision %s", pid, " ".join(req["argv"]))

    def _receive(self, conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
        pid, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        if uid != os.getuid():
            _close_fds(fds)
            raise ValueError(f"pid {pid} runs as uid {uid}, not {os.getuid()}")
        if len(fds) != 3:
            _close_fds(fds)
            raise ValueError(f"{len(fds)} file descriptors, not stdin, stdout, stderr")
        try:
            length = decode_length(data[:8])
            body = data[8:]
            while len(body) < length:
                chunk = conn.recv(length - len(body))
                if not chunk:
                    raise ValueError("the request ended early")
                body += chunk
            return json.loads(body), fds
        except BaseException:
            _close_fds(fds)
            raise

    def _reap(self, pid: int) -> None:
        conn, pidfd = self.children.pop(pid)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        self.selector.unregister(pidfd)
        if conn in self.selector.get_map():
            self.selector.unregister(conn)
        os.close(pidfd)
        with contextlib.suppress(OSError):  # the command went away: nobody waits for it
            _send(conn, {"exit": code if code >= 0 else 128 - code})
        conn.close()
        log.debug("pid %d: exit %d", pid, code)

    def _hangup(self, pid: int) -> None:
        """The command's connection closed (it was killed): stop its child too."""
        conn, _ = self.children[pid]
        if conn.recv(1, socket.MSG_PEEK):
            return  # nothing else is ever sent; ignore it rather than spin on it
        self.selector.unregister(conn)
        log.warning("pid %d: its command went away; stopping it", pid)
        _kill_group(pid, signal.SIGTERM)

    def close_in_child(self) -> None:
        """A child holds none of the server's sockets."""
        self.selector.close()
        self.listener.close()
        for conn, pidfd in self.children.values():
            conn.close()
            os.close(pidfd)

    def shutdown(self) -> None:
        if os.getpid() != self.pid:
            return
        for pid in self.children:
            _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in list(self.children):
            while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
                time.sleep(0.05)
        self.path.unlink(missing_ok=True)


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def serve(path: Path, modules: tuple[str, ...] = PRELOAD) -> None:
    """Preload, then serve on ``path`` until SIGTERM, SIGINT or SIGHUP (children get SIGTERM).

    Raises ``Forked`` in each child, for the caller to run it with ``run_child``.
    """
    if not hasattr(os, "pidfd_open"):
        raise OSError("the stage server needs Linux 5.3 or newer (os.pidfd_open)")
    preloaded = Preloaded(modules)
    server = Server(path, preloaded)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        server.serve_forever()
    finally:
        server.shutdown()


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
    _close_fds([fd for fd in fds if fd > 2])
    sys.stdout.reconfigure(line_buffering=os.isatty(1))
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.path[:] = req["path"]
    sys.argv = ["trackvision", *req["argv"]]
    for name in [m for m in sys.modules if m == "trackvision" or m.startswith("trackvision.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    logging.root.handlers.clear()  # the command configures logging as its own process would
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
