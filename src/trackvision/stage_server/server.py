"""The server: a Unix socket, a fork per stage command, each child reported back as it exits."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from trackvision.stage_server.child import Forked
from trackvision.stage_server.preload import PRELOAD, Preloaded
from trackvision.stage_server.protocol import decode_length

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
RECEIVE_TIMEOUT_S = 10


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
        with contextlib.suppress(OSError):  # it may have set it, or ended, already
            os.setpgid(pid, pid)  # as the child does: signals reach its group from the start
        _close_fds(fds)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (conn, pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, lambda _fd, pid=pid: self._reap(pid))
        self.selector.register(conn, selectors.EVENT_READ, lambda _c, pid=pid: self._hangup(pid))
        _send(conn, {"pid": pid})
        log.debug("pid %d: %s %s", pid, req["program"], " ".join(req["argv"]))

    def _receive(self, conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
        pid, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        try:
            if uid != os.getuid():
                raise ValueError(f"pid {pid} runs as uid {uid}, not {os.getuid()}")
            if len(fds) != 3:
                raise ValueError(f"{len(fds)} file descriptors, not stdin, stdout, stderr")
            length = decode_length(data[:8])
            body = data[8:]
            while len(body) < length:
                chunk = conn.recv(length - len(body))
                if not chunk:
                    raise ValueError("the request ended early")
                body += chunk
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError(f"a request is a JSON object, not {type(req).__name__}")
            # A trial's stages run the client of the code it was queued with, maybe older.
            req.setdefault("program", "trackvision")
            return req, fds
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
        _send(conn, {"exit": code if code >= 0 else 128 - code})
        conn.close()
        log.debug("pid %d: exit %d", pid, code)

    def _hangup(self, pid: int) -> None:
        """The command's connection closed (it was killed): stop its child too."""
        conn, _ = self.children[pid]
        with contextlib.suppress(OSError):
            if conn.recv(4096):
                return  # a command sends nothing more: whatever this was is dropped, read
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
    """A reply; a command that went away gets none (a child's is stopped by ``_hangup``), and
    the server goes on serving the others."""
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def serve(path: Path, modules: tuple[str, ...] = PRELOAD) -> None:
    """Preload, then serve on ``path`` until SIGTERM, SIGINT or SIGHUP (children get SIGTERM).

    Raises ``Forked`` in each child, for the caller to run it with ``child.run_child``.
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
